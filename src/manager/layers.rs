//! The layer store: content-addressed, read-only layer directories in the union's on-disk
//! format, shared by every image that uses them, and a read-only view of an image's layers.
//!
//! A layer's id is the sha256 of its uncompressed OCI tar stream (Docker's diff id): for a
//! tarball, of the tarball as imported; for a directory or a commit, of the deterministic
//! stream [`tarball::write_layer`] makes of it. Importing the same content twice stores it
//! once.

use std::cell::RefCell;
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::error::{Context, Error};
use crate::manager::meta::{self, Record};
use crate::manager::store::{Store, now_secs};
use crate::manager::streams::{self, HashingWriter};
use crate::manager::tarball::{self, ExtractOptions};
use crate::manager::tarsplit::{Recorder, Split, SplitWriter};
use crate::manager::units::Progress;
use crate::sys::stat::FileKind;
use crate::union::lookup::{LookupState, Seen, probe};
use crate::union::readdir::{LayerListing, Listed, merge};
use crate::union::tables::Side;
use crate::union::whiteout::{self, Dialect};

/// The file beside a layer's `diff/` that writes its tarball back ([`crate::manager::tarsplit`]).
pub const TAR_SPLIT: &str = "tar-split.gz";

/// What the store knows about a layer.
#[derive(Clone, Debug)]
pub struct LayerInfo {
    /// `sha256:<hex>`.
    pub id: String,
    /// Bytes of its files.
    pub size: u64,
    /// Creation time (seconds since the epoch).
    pub created: u64,
    /// Where it came from.
    pub source: String,
}

/// How the manager writes markers: the kernel's dialect for whoever runs it.
pub fn extract_options() -> ExtractOptions {
    let privileged = crate::sys::proc::privileged();
    ExtractOptions { dialect: if privileged { Dialect::Trusted } else { Dialect::User }, privileged }
}

/// The directory holding a layer's tree.
pub fn diff_dir(store: &Store, id: &str) -> Result<PathBuf, Error> {
    Ok(store.layer_dir(id)?.join("diff"))
}

/// Whether a layer is stored.
pub fn exists(store: &Store, id: &str) -> bool {
    store.layer_dir(id).is_ok_and(|d| d.join("meta").exists())
}

/// A stored layer's record.
pub fn info(store: &Store, id: &str) -> Result<LayerInfo, Error> {
    let r = meta::read(&store.layer_dir(id)?.join("meta"))?;
    Ok(LayerInfo {
        id: id.to_string(),
        size: r.get("size").and_then(|s| s.parse().ok()).unwrap_or(0),
        created: r.get("created").and_then(|s| s.parse().ok()).unwrap_or(0),
        source: r.get("source").unwrap_or("").to_string(),
    })
}

/// Bytes of the files of these stored layers (a layer the store lacks counts 0).
pub fn total_size(store: &Store, ids: &[String]) -> u64 {
    ids.iter().map(|l| info(store, l).map(|i| i.size).unwrap_or(0)).sum()
}

/// Every stored layer id.
pub fn all(store: &Store) -> Result<Vec<String>, Error> {
    let dir = store.root.join("layers");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .context(|| format!("cannot read '{}'", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("meta").exists())
        .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
        .collect();
    v.sort();
    Ok(v)
}

/// Moves an unpacked tree into the store under `id`, or drops it if `id` is there already.
fn settle(store: &Store, id: &str, tree: &Path, source: &str) -> Result<String, Error> {
    let dir = store.layer_dir(id)?;
    if exists(store, id) {
        std::fs::remove_dir_all(tree.parent().unwrap_or(tree))
            .context(|| format!("cannot remove '{}'", tree.display()))?;
        return Ok(id.to_string());
    }
    if dir.exists() {
        // A crash left a half-stored layer: replace it.
        std::fs::remove_dir_all(&dir).context(|| format!("cannot remove '{}'", dir.display()))?;
    }
    let staging = tree.parent().ok_or_else(|| Error::msg("bad staging dir"))?;
    let size = crate::manager::walk::tree_size(tree)?;
    let mut r = Record::new("layer");
    r.set("id", id);
    r.set("size", size.to_string());
    r.set("created", now_secs().to_string());
    r.set("source", source);
    meta::write(&staging.join("meta"), &r)?;
    std::fs::rename(staging, &dir).context(|| format!("cannot store layer '{}'", dir.display()))?;
    Ok(id.to_string())
}

/// Imports a layer from a tarball (plain, gzip or zstd) or a directory. Shows progress on a
/// terminal. Returns the layer id.
pub fn import(store: &Store, src: &Path) -> Result<String, Error> {
    let meta = std::fs::metadata(src).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::msg(format!("layer source '{}' does not exist", src.display())),
        _ => Error::io(format!("cannot read '{}'", src.display()), e),
    })?;
    if meta.is_dir() {
        if let Some(kind) = image_shape(src) {
            return Err(not_a_layer(src, kind));
        }
        if let Some((fixture, name)) = fixture_layer(src) {
            return import_fixture_layer(store, &fixture, &name);
        }
        return import_dir(store, src, None);
    }
    if !meta.is_file() {
        return Err(Error::msg(format!(
            "layer source '{}' is not a regular file or a directory",
            crate::manager::store::printable(&src.display().to_string())
        )));
    }
    if meta.len() == 0 {
        return Err(Error::msg(format!("layer source '{}' is empty, not a layer tarball", src.display())));
    }
    import_tar(store, src, meta.len())
}

/// What a whole image unpacked in `dir` is, if it is one: an OCI layout (`oci-layout`,
/// `index.json`) or a docker-archive (`manifest.json` with `repositories` or layer tars).
pub fn image_shape(dir: &Path) -> Option<&'static str> {
    let file = |n: &str| dir.join(n).is_file();
    if file("oci-layout") && file("index.json") {
        return Some("an OCI image");
    }
    let layer_tars = || {
        std::fs::read_dir(dir)
            .map(|rd| rd.filter_map(|e| e.ok()).any(|e| e.path().join("layer.tar").is_file()))
            .unwrap_or(false)
    };
    if file("manifest.json") && (file("repositories") || dir.join("blobs/sha256").is_dir() || layer_tars()) {
        return Some("a docker-archive");
    }
    None
}

/// The error for an image given where a layer is wanted.
fn not_a_layer(src: &Path, kind: &str) -> Error {
    Error::msg(format!(
        "'{}' is {kind} (a whole image), not a layer; load it with `unionfs load -i {}`",
        src.display(),
        src.display()
    ))
}

/// A raw layer directory of a fixture (`layers-fixtures/NAME/LAYER`, beside a `specials`
/// file that names it): the fixture and the layer's name.
fn fixture_layer(src: &Path) -> Option<(PathBuf, String)> {
    let name = src.file_name()?.to_str()?.to_string();
    let fixture = std::fs::canonicalize(src).ok()?.parent()?.to_path_buf();
    let specials = std::fs::read_to_string(fixture.join("specials")).ok()?;
    let named =
        specials.lines().any(|l| !l.trim_start().starts_with('#') && l.split_whitespace().next() == Some(&name));
    named.then_some((fixture, name))
}

/// Imports one layer of a fixture with its specials applied (whiteouts, opaque directories,
/// modes: what git cannot store), as `build-layers` makes it.
fn import_fixture_layer(store: &Store, fixture: &Path, name: &str) -> Result<String, Error> {
    let tmp = store.temp_dir("fixture")?;
    let result = crate::fixture::build(fixture, &tmp.join("layers"))
        .and_then(|_| import_dir(store, &tmp.join("layers").join(name), None));
    let _cleanup = std::fs::remove_dir_all(&tmp);
    result
}

/// The sha256 a file's name says its content has: an OCI blob is stored as
/// `blobs/sha256/<hex>`, and a file named `sha256:<hex>` says the same.
fn digest_named(src: &Path) -> Option<String> {
    let name = src.file_name()?.to_str()?;
    let hex = match name.strip_prefix("sha256:") {
        Some(h) => h,
        None if src.parent().and_then(|p| p.file_name()).is_some_and(|p| p == "sha256") => name,
        None => return None,
    };
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| hex.to_ascii_lowercase())
}

/// A reader shared with the code that asks for its digest at the end.
struct SharedReader<R>(Rc<RefCell<R>>);

impl<R: Read> Read for SharedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

fn import_tar(store: &Store, src: &Path, len: u64) -> Result<String, Error> {
    let f = File::open(src).context(|| format!("cannot open '{}'", src.display()))?;
    let label = format!("importing {}", src.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    // The file as stored (compressed): its digest, when its name says what it must be.
    let raw = Rc::new(RefCell::new(streams::Hashing::new(std::io::BufReader::with_capacity(1 << 20, f))));
    let progress = Progress::new(label, len);
    let counting = progress.wrap_read(SharedReader(raw.clone()));
    let staging = store.temp_dir("import")?;
    let tree = staging.join("diff");
    std::fs::create_dir(&tree).context(|| format!("cannot create '{}'", tree.display()))?;
    let result = (|| -> Result<String, Error> {
        let decompressed = streams::open_decompressed(counting)?;
        let hashing = Rc::new(RefCell::new(streams::Hashing::new(decompressed)));
        let split = Split::new(SplitWriter::create(&staging.join(TAR_SPLIT))?);
        let mut recorder = Recorder::new(SharedReader(hashing.clone()), split.clone());
        let stats = tarball::extract(&mut recorder, &tree, extract_options(), Some(&split))?;
        // Hash the padding after the end-of-archive marker too: the id is of the stream.
        let trailer = std::io::copy(&mut (&mut recorder).take(tarball::MAX_TRAILER + 1), &mut std::io::sink())
            .map_err(|e| streams::read_error(&e, 1))?;
        if trailer > tarball::MAX_TRAILER {
            return Err(Error::msg(format!(
                "more than {} KiB follow the end of the tarball: not a layer tarball",
                tarball::MAX_TRAILER >> 10
            )));
        }
        // Whatever compression framing is left (a gzip member's end) is read, so the digest
        // of the file is whole.
        std::io::copy(&mut *raw.borrow_mut(), &mut std::io::sink())
            .map_err(|e| Error::io("cannot read the tarball", e))?;
        if let Some(want) = digest_named(src) {
            let got = raw.borrow().digest_so_far();
            if got != format!("sha256:{want}") {
                return Err(Error::msg(format!("its content has digest {got}, not sha256:{want} as its name says")));
            }
        }
        if let Some(kind) = image_shape(&tree) {
            return Err(not_a_layer(src, kind));
        }
        if stats.skipped_devices > 0 {
            eprintln!("unionfs: {} device node(s) left out (creating them needs root)", stats.skipped_devices);
        }
        drop(recorder);
        split.finish()?;
        let digest = hashing.borrow().digest_so_far();
        Ok(digest)
    })();
    match result {
        Ok(id) => {
            progress.finish();
            settle(store, &id, &tree, &src.display().to_string())
        }
        Err(e) => {
            progress.abandon();
            let _cleanup = std::fs::remove_dir_all(&staging);
            let text = e.to_string();
            if text.contains("load it with `unionfs load") {
                return Err(e);
            }
            Err(Error::msg(format!("cannot import '{}': {text}", src.display())))
        }
    }
}

/// Imports a directory (or, for a commit, a writable layer) as a layer: it is streamed as a
/// deterministic OCI tarball (whose digest is the id) into a fresh layer directory, so every
/// marker dialect comes out in the store's one format and the union's private xattrs are
/// dropped. `keep_whiteout`, given a whiteout's path, says whether it is worth keeping.
pub fn import_dir(
    store: &Store,
    src: &Path,
    keep_whiteout: Option<tarball::KeepWhiteout<'_>>,
) -> Result<String, Error> {
    let staging = store.temp_dir("import")?;
    let tree = staging.join("diff");
    std::fs::create_dir(&tree).context(|| format!("cannot create '{}'", tree.display()))?;
    let name = src.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let progress = Progress::new(format!("importing {name}"), crate::manager::walk::tree_size(src).unwrap_or(0));
    let counted = progress.clone();
    let result = std::thread::scope(|scope| -> Result<String, Error> {
        let (rd, wr) = std::io::pipe().context(|| "cannot create a pipe".into())?;
        let writer = scope.spawn(move || -> Result<String, Error> {
            let hw = HashingWriter::new(counted.wrap_write(wr));
            let hw = tarball::write_layer_filtered(src, hw, keep_whiteout)?;
            let (id, _w) = hw.finish();
            Ok(id)
        });
        let split = Split::new(SplitWriter::create(&staging.join(TAR_SPLIT))?);
        let mut recorder = Recorder::new(std::io::BufReader::with_capacity(1 << 20, rd), split.clone());
        let mut extracted = tarball::extract(&mut recorder, &tree, extract_options(), Some(&split));
        if extracted.is_ok() {
            // The writer's zero padding after the end marker belongs to the stream too.
            extracted = std::io::copy(&mut recorder, &mut std::io::sink())
                .map(|_| tarball::ExtractStats::default())
                .map_err(|e| Error::io("cannot read the layer stream", e));
        }
        drop(recorder);
        let written = writer.join().map_err(|_| Error::msg("the layer writer panicked"))?;
        // The unpacking side's failure first: the writer then only saw its pipe close.
        extracted?;
        let id = written?;
        split.finish()?;
        Ok(id)
    });
    match result {
        Ok(id) => {
            progress.finish();
            settle(store, &id, &tree, &src.display().to_string())
        }
        Err(e) => {
            progress.abandon();
            let _cleanup = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// Removes a stored layer.
pub fn remove(store: &Store, id: &str) -> Result<(), Error> {
    let dir = store.layer_dir(id)?;
    // Make the removal atomic for readers: rename away, then delete.
    let gone = store.root.join("tmp").join(format!("rm-{}", id.trim_start_matches("sha256:")));
    std::fs::rename(&dir, &gone).context(|| format!("cannot remove layer '{}'", dir.display()))?;
    std::fs::remove_dir_all(&gone).context(|| format!("cannot remove '{}'", gone.display()))
}

/// A read-only view of an image's layers (topmost first), to ask what the merged image has
/// at a path without mounting it.
pub struct ImageView {
    layers: Vec<OwnedFd>,
}

fn cstr(b: &[u8]) -> Result<CString, Error> {
    CString::new(b.to_vec()).map_err(|_| Error::msg("bad name"))
}

impl ImageView {
    /// Opens the layer directories, topmost first.
    pub fn open(dirs: &[PathBuf]) -> Result<ImageView, Error> {
        let mut layers = Vec::with_capacity(dirs.len());
        for d in dirs {
            layers.push(crate::sys::open::open_dir_path(d).context(|| format!("cannot open layer '{}'", d.display()))?);
        }
        Ok(ImageView { layers })
    }

    /// Resolves a `/`-separated relative path through the layers: the type the image shows
    /// there, and for a directory the layers (indexes) it merges.
    pub fn lookup(&self, rel: &[u8]) -> Result<Option<(FileKind, Vec<usize>)>, Error> {
        let mut live: Vec<(usize, OwnedFd)> = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            live.push((
                i,
                crate::sys::open::open_dir_path_at(l.as_fd()).map_err(|e| Error::io("cannot open a layer", e))?,
            ));
        }
        let comps: Vec<&[u8]> = rel.split(|&b| b == b'/').filter(|c| !c.is_empty()).collect();
        if comps.is_empty() {
            return Ok(Some((FileKind::Directory, live.iter().map(|(i, _)| *i).collect())));
        }
        for (n, c) in comps.iter().enumerate() {
            let name = cstr(c)?;
            let mut state = LookupState::default();
            let mut next: Vec<(usize, OwnedFd)> = Vec::new();
            for (i, fd) in &live {
                let seen = probe(fd.as_fd(), &name, false, true, whiteout::Dialects::ANY)
                    .map_err(|e| Error::io("cannot read a layer", e))?;
                if let Seen::Dir(..) = seen {
                    next.push((
                        *i,
                        crate::sys::open::openat(
                            fd,
                            &name,
                            crate::sys::open::OFlags::PATH | crate::sys::open::OFlags::DIRECTORY,
                            0,
                        )
                        .map_err(|e| Error::io("cannot open a layer dir", e))?,
                    ));
                }
                if !state.feed(Side::Lower(*i as u16), seen) {
                    break;
                }
            }
            let Some((_, st)) = state.top() else { return Ok(None) };
            let kind = st.kind().ok_or_else(|| Error::msg("unknown file type"))?;
            if n + 1 == comps.len() {
                let merged: Vec<usize> = state.lower_layers().iter().map(|l| usize::from(l.idx)).collect();
                return Ok(Some((kind, if kind == FileKind::Directory { merged } else { Vec::new() })));
            }
            if kind != FileKind::Directory {
                return Ok(None);
            }
            let keep: Vec<usize> = state.lower_layers().iter().map(|l| usize::from(l.idx)).collect();
            live = next.into_iter().filter(|(i, _)| keep.contains(i)).collect();
        }
        Ok(None)
    }

    /// The names the image lists in directory `rel`.
    pub fn list(&self, rel: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
        let Some((FileKind::Directory, merged)) = self.lookup(rel)? else { return Ok(Vec::new()) };
        let mut listings = Vec::new();
        for i in merged {
            let dir = if rel.is_empty() {
                crate::sys::open::open_dir_path_at(self.layers[i].as_fd()).map_err(|e| Error::io("open", e))?
            } else {
                crate::sys::open::resolve_beneath(
                    &self.layers[i],
                    &cstr(rel)?,
                    crate::sys::open::OFlags::PATH | crate::sys::open::OFlags::DIRECTORY,
                )
                .map_err(|e| Error::io("open", e))?
            };
            let rd = crate::sys::open::open_dir_for_read(&dir).map_err(|e| Error::io("open", e))?;
            let mut l = LayerListing::default();
            for e in crate::sys::dir::read_all(&rd).map_err(|e| Error::io("readdir", e))? {
                if whiteout::is_marker_name(&e.name) {
                    if let Some(t) = whiteout::whiteout_target(&e.name) {
                        l.hidden_below.push(t.to_vec());
                    }
                    continue;
                }
                let n = cstr(&e.name)?;
                let wh = matches!(probe(dir.as_fd(), &n, false, true, whiteout::Dialects::ANY), Ok(Seen::Whiteout));
                l.entries.push(Listed {
                    name: e.name,
                    ino: e.ino,
                    kind: e.kind.unwrap_or(FileKind::Regular),
                    whiteout: wh,
                });
            }
            listings.push(l);
        }
        Ok(merge(&listings).into_iter().map(|m| m.name).collect())
    }
}
