//! Whole images in and out: `unionfs load` reads docker-archives (`docker save`,
//! `podman save`), OCI archives and OCI image layouts; `unionfs save` writes an OCI archive
//! or a docker-archive that podman, docker and containerd load.
//!
//! Loading unpacks an archive into a private directory under the store's `tmp/` (only
//! regular files and directories are made; links inside the archive are followed by name,
//! within it), then reads it as a directory: every blob's sha256 is checked against its
//! name, each layer is imported unless the store has it, and its id must be the config's
//! `diff_id`. Saving writes each layer's tarball back byte for byte
//! ([`crate::manager::tarsplit`]), so the archive's config and ids are the stored ones.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::error::{Context, Error};
use crate::manager::images::{self, Image};
use crate::manager::oci::{self, Descriptor, DockerEntry, media};
use crate::manager::store::{ImageRef, Store, printable};
use crate::manager::streams::{self, Hashing};
use crate::manager::tarball;
use crate::manager::units::Progress;
use crate::manager::{layers, tarsplit};

/// An unpacked archive (or an OCI layout directory): where it is, and its links.
struct Unpacked {
    dir: PathBuf,
    /// Symbolic and hard links in the archive: path → target path (both archive-relative).
    links: HashMap<String, String>,
}

impl Unpacked {
    /// The file at an archive path, following the archive's links (within it).
    fn path(&self, rel: &str) -> Result<PathBuf, Error> {
        let mut cur = normalize("", rel)?;
        for _ in 0..40 {
            match self.links.get(&cur) {
                Some(t) => cur = t.clone(),
                None => return Ok(self.dir.join(&cur)),
            }
        }
        Err(Error::msg(format!("the archive's links from '{}' go round in a loop", printable(rel))))
    }

    fn read(&self, rel: &str, what: &str) -> Result<Vec<u8>, Error> {
        let p = self.path(rel)?;
        std::fs::read(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::msg(format!("the archive has no {what} ('{}' is missing)", printable(rel)))
            }
            _ => Error::io(format!("cannot read '{}'", p.display()), e),
        })
    }

    fn exists(&self, rel: &str) -> bool {
        self.path(rel).is_ok_and(|p| p.exists())
    }

    /// A blob by digest, its content checked against it.
    fn blob(&self, d: &Descriptor, what: &str) -> Result<Vec<u8>, Error> {
        let hex = blob_hex(&d.digest)?;
        let bytes = self.read(&format!("blobs/sha256/{hex}"), what)?;
        let got = images::digest(&bytes);
        if got != d.digest {
            return Err(Error::msg(format!(
                "the archive's {what} has digest {got}, not {} as its name says",
                d.digest
            )));
        }
        Ok(bytes)
    }
}

/// The hex of a `sha256:` digest, checked.
fn blob_hex(digest: &str) -> Result<&str, Error> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    hex.ok_or_else(|| Error::msg(format!("unsupported digest '{}' (sha256 only)", printable(digest))))
}

/// `rel` (relative to directory `base`) as a clean archive path: no `..` above the root.
fn normalize(base: &str, rel: &str) -> Result<String, Error> {
    let mut parts: Vec<&str> = if rel.starts_with('/') { Vec::new() } else { base.split('/').collect() };
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(Error::msg(format!("archive path '{}' leads outside it", printable(rel))));
                }
            }
            c => parts.push(c),
        }
    }
    parts.retain(|p| !p.is_empty());
    Ok(parts.join("/"))
}

/// Unpacks an image archive (plain, gzip or zstd tar) into `dir`.
fn unpack(input: impl Read + 'static, dir: &Path) -> Result<HashMap<String, String>, Error> {
    let mut archive = tar::Archive::new(streams::open_decompressed(input)?);
    let mut links = HashMap::new();
    let entries = archive.entries().map_err(|e| streams::read_error(&e, 0))?;
    for (seen, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| streams::read_error(&e, seen as u64))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let rel = normalize("", &raw)?;
        if rel.is_empty() {
            continue;
        }
        let target = dir.join(&rel);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&target).context(|| format!("cannot create '{}'", target.display()))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(p) = target.parent() {
                    std::fs::create_dir_all(p).context(|| format!("cannot create '{}'", p.display()))?;
                }
                let mut f =
                    std::fs::File::create(&target).context(|| format!("cannot create '{}'", target.display()))?;
                copy_out(&mut entry, &mut f)?;
            }
            t @ (tar::EntryType::Symlink | tar::EntryType::Link) => {
                let to = String::from_utf8_lossy(&entry.link_name_bytes().unwrap_or_default()).into_owned();
                let base = if t == tar::EntryType::Symlink { rel.rsplit_once('/').map_or("", |(d, _)| d) } else { "" };
                let target = normalize(base, &to)?;
                links.insert(rel, target);
            }
            _ => {}
        }
    }
    Ok(links)
}

/// Copies an archive member out: a read error is the archive's, a write error the disk's.
fn copy_out(entry: &mut impl Read, f: &mut std::fs::File) -> Result<(), Error> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(streams::read_error(&e, 1)),
        };
        f.write_all(&buf[..n]).context(|| "cannot unpack the archive into the store".into())?;
    }
}

/// Where `load` reads from.
pub enum Input<'a> {
    /// A file (archive) or a directory (OCI layout).
    Path(&'a Path),
    /// Standard input (an archive).
    Stdin,
}

/// What one image of an archive became.
pub struct Loaded {
    /// The image.
    pub id: String,
    /// The names it got.
    pub tags: Vec<ImageRef>,
}

/// `unionfs load`: every image of the archive, stored and named (by the archive's names,
/// or `tag` for an archive of one image).
pub fn load(store: &Store, input: Input<'_>, tag: Option<&ImageRef>) -> Result<Vec<Loaded>, Error> {
    let staging = store.temp_dir("load")?;
    let result = (|| {
        let un = match input {
            Input::Path(p) if p.is_dir() => Unpacked { dir: p.to_path_buf(), links: HashMap::new() },
            Input::Path(p) => {
                let f = std::fs::File::open(p).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => Error::msg(format!("'{}' does not exist", p.display())),
                    _ => Error::io(format!("cannot open '{}'", p.display()), e),
                })?;
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                if len == 0 {
                    return Err(Error::msg(format!("'{}' is empty, not an image archive", p.display())));
                }
                let progress = Progress::new("reading the archive", len);
                let links = unpack(progress.wrap_read(std::io::BufReader::new(f)), &staging);
                match &links {
                    Ok(_) => progress.finish(),
                    Err(_) => progress.abandon(),
                }
                let links = links?;
                Unpacked { dir: staging.clone(), links }
            }
            Input::Stdin => {
                if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                    return Err(Error::msg("refusing to read an archive from a terminal; use -i FILE or a pipe"));
                }
                let links = unpack(std::io::stdin(), &staging)?;
                Unpacked { dir: staging.clone(), links }
            }
        };
        load_unpacked(store, &un, tag)
    })();
    let _cleanup = std::fs::remove_dir_all(&staging);
    if result.is_err() {
        // Layers stored for an image that did not come to be.
        let _gc = images::gc_layers(store);
    }
    result
}

fn load_unpacked(store: &Store, un: &Unpacked, tag: Option<&ImageRef>) -> Result<Vec<Loaded>, Error> {
    let plans = if un.exists("manifest.json") {
        docker_plans(un)?
    } else if un.exists("index.json") {
        let index: oci::Index = oci::parse(&un.read("index.json", "index")?, "index.json")?;
        let mut plans = Vec::new();
        for d in &index.manifests {
            plans.push(oci_plan(un, d, 0)?);
        }
        plans
    } else {
        return Err(Error::msg(
            "not an image archive: it has neither manifest.json (docker-archive) nor index.json (OCI); \
             for a single layer tarball use `unionfs image import`",
        ));
    };
    if plans.is_empty() {
        return Err(Error::msg("the archive holds no image"));
    }
    if tag.is_some() && plans.len() > 1 {
        return Err(Error::msg(format!("the archive holds {} images; -t names one", plans.len())));
    }
    let mut out = Vec::new();
    for p in plans {
        let img = store_plan(store, un, &p)?;
        let tags: Vec<ImageRef> = match tag {
            Some(t) => vec![t.clone()],
            None => p.names,
        };
        for t in &tags {
            images::tag(store, &img.id, t)?;
        }
        out.push(Loaded { id: img.id, tags });
    }
    Ok(out)
}

/// One image to load: its config, its layer files (with the blob digest each must have,
/// for OCI), its names.
struct Plan {
    config: Vec<u8>,
    layers: Vec<(String, Option<String>)>,
    names: Vec<ImageRef>,
}

fn docker_plans(un: &Unpacked) -> Result<Vec<Plan>, Error> {
    let entries: Vec<DockerEntry> = oci::parse(&un.read("manifest.json", "manifest")?, "manifest.json")?;
    let mut plans = Vec::new();
    for e in entries {
        let config = un.read(&e.config, "image config")?;
        // A config named by its digest (`<hex>.json`, `blobs/sha256/<hex>`) must have it.
        let stem = e.config.rsplit('/').next().unwrap_or("").trim_end_matches(".json");
        if stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit()) {
            let got = images::digest(&config);
            if got != format!("sha256:{stem}") {
                return Err(Error::msg(format!(
                    "the archive's image config has digest {got}, not sha256:{stem} as its name says"
                )));
            }
        }
        let names = e.repo_tags.unwrap_or_default().iter().filter_map(|t| parse_name(t)).collect();
        plans.push(Plan { config, layers: e.layers.into_iter().map(|l| (l, None)).collect(), names });
    }
    Ok(plans)
}

/// An image name from an archive, as the manager writes it (`docker.io/library/` dropped).
fn parse_name(s: &str) -> Option<ImageRef> {
    let s = s.strip_prefix("docker.io/library/").unwrap_or(s);
    ImageRef::parse(s).ok()
}

fn oci_plan(un: &Unpacked, d: &Descriptor, depth: usize) -> Result<Plan, Error> {
    if depth > 4 {
        return Err(Error::msg("the archive's indexes nest too deep"));
    }
    if d.media_type == media::INDEX || d.media_type == media::DOCKER_LIST {
        let index: oci::Index = oci::parse(&un.blob(d, "image index")?, "image index")?;
        let pick = index
            .manifests
            .iter()
            .find(|m| m.platform.as_ref().is_some_and(|p| p["architecture"] == oci::host_arch() && p["os"] == "linux"))
            .or_else(|| index.manifests.first())
            .ok_or_else(|| Error::msg("an image index in the archive lists no image"))?;
        let mut plan = oci_plan(un, pick, depth + 1)?;
        plan.names = names_of(d);
        return Ok(plan);
    }
    let manifest: oci::Manifest = oci::parse(&un.blob(d, "image manifest")?, "image manifest")?;
    let config = un.blob(&manifest.config, "image config")?;
    let layers = manifest
        .layers
        .iter()
        .map(|l| Ok((format!("blobs/sha256/{}", blob_hex(&l.digest)?), Some(l.digest.clone()))))
        .collect::<Result<_, Error>>()?;
    Ok(Plan { config, layers, names: names_of(d) })
}

/// The name an index gives a manifest: containerd's full name, else `ref.name` when it is
/// a whole `NAME:TAG` (a bare tag names nothing).
fn names_of(d: &Descriptor) -> Vec<ImageRef> {
    let Some(a) = &d.annotations else { return Vec::new() };
    let full = a.get("io.containerd.image.name").or_else(|| a.get(oci::REF_NAME).filter(|r| r.contains(':')));
    full.and_then(|n| parse_name(n)).into_iter().collect()
}

/// Stores one image's layers (those the store lacks) and config.
fn store_plan(store: &Store, un: &Unpacked, p: &Plan) -> Result<Image, Error> {
    let config: Value = oci::parse(&p.config, "image config")?;
    let diff_ids = oci::diff_ids(&config)?;
    if diff_ids.len() != p.layers.len() {
        return Err(Error::msg(format!(
            "the image config lists {} layers but the manifest {}",
            diff_ids.len(),
            p.layers.len()
        )));
    }
    for (i, ((path, blob), want)) in p.layers.iter().zip(&diff_ids).enumerate() {
        let file = un.path(path)?;
        if layers::exists(store, want) {
            if let Some(b) = blob {
                verify_file(&file, b)?;
            }
            continue;
        }
        if !file.is_file() {
            return Err(Error::msg(format!("the archive has no layer {} ('{}' is missing)", i + 1, printable(path))));
        }
        let got = layers::import(store, &file)?;
        if got != *want {
            return Err(Error::msg(format!(
                "layer {} of the archive is {got}, but the image config says {want}",
                i + 1
            )));
        }
    }
    let created = oci::created_secs(&config).unwrap_or_else(crate::manager::store::now_secs);
    images::create(store, p.config.clone(), created)
}

/// Checks that a file's sha256 is `digest`.
fn verify_file(path: &Path, digest: &str) -> Result<(), Error> {
    let f = std::fs::File::open(path).context(|| format!("cannot open '{}'", path.display()))?;
    let mut h = Hashing::new(std::io::BufReader::new(f));
    std::io::copy(&mut h, &mut std::io::sink()).context(|| format!("cannot read '{}'", path.display()))?;
    let got = h.digest();
    if got != digest {
        return Err(Error::msg(format!("an archive blob has digest {got}, not {digest} as its name says")));
    }
    Ok(())
}

/// The format `save` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An OCI image layout in a tar archive (podman, skopeo, containerd, docker 25+).
    OciArchive,
    /// Docker's `docker save` format (`manifest.json`; docker 20.10 and later).
    DockerArchive,
}

/// One image to save: its names as asked.
pub struct Saved {
    img: Image,
    names: Vec<ImageRef>,
}

/// Resolves the images `save` was asked for (a name saves that name; an id, every name).
pub fn resolve(store: &Store, asked: &[String]) -> Result<Vec<Saved>, Error> {
    let mut out: Vec<Saved> = Vec::new();
    for a in asked {
        let img = images::resolve(store, a)?;
        let names = match ImageRef::parse(a).ok().filter(|r| img.tags.contains(r)) {
            Some(r) => vec![r],
            None => img.tags.clone(),
        };
        match out.iter_mut().find(|s| s.img.id == img.id) {
            Some(s) => s.names.extend(names),
            None => out.push(Saved { img, names }),
        }
    }
    Ok(out)
}

/// A layer's tarball: its length (from the tar-split record or a temporary copy).
struct LayerTar {
    id: String,
    len: u64,
    temp: Option<PathBuf>,
}

fn layer_tar(store: &Store, id: &str) -> Result<LayerTar, Error> {
    let split = store.layer_dir(id)?.join(layers::TAR_SPLIT);
    if split.exists() {
        return Ok(LayerTar { id: id.into(), len: tarsplit::stream_len(&split)?, temp: None });
    }
    // Stored by a version that kept no record: the deterministic form, if it is the id.
    let tmp = store.temp_dir("save")?.join("layer.tar");
    let f = std::fs::File::create(&tmp).context(|| format!("cannot create '{}'", tmp.display()))?;
    let hw = tarball::write_layer(&layers::diff_dir(store, id)?, streams::HashingWriter::new(f))?;
    let (got, _f) = hw.finish();
    if got != id {
        return Err(Error::msg(format!(
            "layer {id} was stored by an older unionfs and cannot be written back as it was imported; \
             import its image again"
        )));
    }
    let len = std::fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0);
    Ok(LayerTar { id: id.into(), len, temp: Some(tmp) })
}

impl LayerTar {
    fn write(&self, store: &Store, out: &mut dyn Write) -> Result<(), Error> {
        match &self.temp {
            Some(t) => {
                let mut f = std::fs::File::open(t).context(|| format!("cannot open '{}'", t.display()))?;
                std::io::copy(&mut f, out).map_err(|e| Error::io("cannot write the archive", e))?;
            }
            None => {
                let dir = store.layer_dir(&self.id)?;
                let got = tarsplit::replay(&dir.join(layers::TAR_SPLIT), &dir.join("diff"), out)?;
                if got != self.id {
                    return Err(Error::msg(format!(
                        "layer {} changed since it was stored (its tarball is now {got})",
                        self.id
                    )));
                }
            }
        }
        Ok(())
    }
}

impl Drop for LayerTar {
    fn drop(&mut self) {
        if let Some(t) = self.temp.as_ref().and_then(|t| t.parent()) {
            let _cleanup = std::fs::remove_dir_all(t);
        }
    }
}

/// Writes a tar header for a file of `len` bytes at `path`.
fn header(path: &str, len: u64) -> Result<tar::Header, Error> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).map_err(|e| Error::msg(format!("bad archive path '{path}': {e}")))?;
    h.set_size(len);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

/// A tar archive being written entry by entry.
struct Out<'a> {
    w: &'a mut dyn Write,
    progress: Progress,
}

impl Out<'_> {
    fn bytes(&mut self, path: &str, data: &[u8]) -> Result<(), Error> {
        let h = header(path, data.len() as u64)?;
        self.raw(h.as_bytes())?;
        self.raw(data)?;
        self.pad(data.len() as u64)
    }

    fn raw(&mut self, b: &[u8]) -> Result<(), Error> {
        self.w.write_all(b).map_err(write_error)
    }

    fn pad(&mut self, len: u64) -> Result<(), Error> {
        let rest = (512 - len % 512) % 512;
        self.raw(&vec![0u8; rest as usize])
    }

    fn layer(&mut self, store: &Store, path: &str, l: &LayerTar) -> Result<(), Error> {
        self.raw(header(path, l.len)?.as_bytes())?;
        let mut counted = self.progress.wrap_write(&mut *self.w);
        l.write(store, &mut counted)?;
        self.pad(l.len)
    }
}

/// The error for a failed write of the archive: a full disk says so.
fn write_error(e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        Error::msg("no space left on device")
    } else {
        Error::io("cannot write the archive", e)
    }
}

/// `unionfs save`: writes the images as one archive.
pub fn save(store: &Store, saved: &[Saved], format: Format, w: &mut dyn Write) -> Result<(), Error> {
    let mut tars: Vec<LayerTar> = Vec::new();
    for s in saved {
        for l in &s.img.layers {
            if !tars.iter().any(|t| t.id == *l) {
                tars.push(layer_tar(store, l)?);
            }
        }
    }
    let total = tars.iter().map(|t| t.len).sum();
    let mut out = Out { w, progress: Progress::new("writing the archive", total) };
    match format {
        Format::OciArchive => save_oci(store, saved, &tars, &mut out)?,
        Format::DockerArchive => save_docker(store, saved, &tars, &mut out)?,
    }
    out.raw(&[0u8; 1024])?;
    out.progress.finish();
    out.w.flush().map_err(write_error)
}

fn save_oci(store: &Store, saved: &[Saved], tars: &[LayerTar], out: &mut Out<'_>) -> Result<(), Error> {
    out.bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut index = Vec::new();
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    for s in saved {
        let layers: Vec<Value> = s
            .img
            .layers
            .iter()
            .map(|l| {
                let len = tars.iter().find(|t| t.id == *l).map_or(0, |t| t.len);
                json!({ "mediaType": media::LAYER, "digest": l, "size": len })
            })
            .collect();
        let manifest = oci::to_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": media::MANIFEST,
            "config": { "mediaType": media::CONFIG, "digest": s.img.id, "size": s.img.config.len() },
            "layers": layers,
        }));
        let md = images::digest(&manifest);
        let desc = |name: Option<&ImageRef>| {
            let mut d = json!({ "mediaType": media::MANIFEST, "digest": md, "size": manifest.len() });
            if let Some(n) = name {
                d["annotations"] = json!({
                    oci::REF_NAME: n.to_string(),
                    "io.containerd.image.name": full_name(n),
                });
            }
            d
        };
        if s.names.is_empty() {
            index.push(desc(None));
        }
        for n in &s.names {
            index.push(desc(Some(n)));
        }
        blobs.push((md, manifest));
        blobs.push((s.img.id.clone(), s.img.config.clone()));
    }
    let index = oci::to_bytes(&json!({ "schemaVersion": 2, "mediaType": media::INDEX, "manifests": index }));
    out.bytes("index.json", &index)?;
    let mut written = std::collections::HashSet::new();
    for (d, b) in &blobs {
        if written.insert(d.clone()) {
            out.bytes(&format!("blobs/sha256/{}", blob_hex(d)?), b)?;
        }
    }
    for t in tars {
        out.layer(store, &format!("blobs/sha256/{}", blob_hex(&t.id)?), t)?;
    }
    Ok(())
}

/// A name as registries spell it in full (`docker.io/library/` for a bare name).
fn full_name(n: &ImageRef) -> String {
    let first = n.name.split('/').next().unwrap_or("");
    if first.contains('.') || first.contains(':') || first == "localhost" {
        n.to_string()
    } else if n.name.contains('/') {
        format!("docker.io/{n}")
    } else {
        format!("docker.io/library/{n}")
    }
}

fn save_docker(store: &Store, saved: &[Saved], tars: &[LayerTar], out: &mut Out<'_>) -> Result<(), Error> {
    let mut manifest = Vec::new();
    for s in saved {
        let config = format!("{}.json", blob_hex(&s.img.id)?);
        out.bytes(&config, &s.img.config)?;
        let layers =
            s.img.layers.iter().map(|l| Ok(format!("{}/layer.tar", blob_hex(l)?))).collect::<Result<_, Error>>()?;
        manifest.push(DockerEntry { config, repo_tags: Some(s.names.iter().map(|n| n.to_string()).collect()), layers });
    }
    let bytes = serde_json::to_vec(&manifest).map_err(|e| Error::msg(format!("cannot write manifest.json: {e}")))?;
    out.bytes("manifest.json", &bytes)?;
    for t in tars {
        out.layer(store, &format!("{}/layer.tar", blob_hex(&t.id)?), t)?;
    }
    Ok(())
}
