//! OCI/Docker layer tarballs.
//!
//! * [`extract`] unpacks a layer tarball (plain, gzip or zstd) into a layer directory,
//!   turning `.wh.NAME` into the union's whiteout (0/0 character device) and `.wh..wh..opq`
//!   into its opaque marker. It refuses any entry that would land outside the layer: `..`,
//!   absolute paths, and paths through a symlink or a file already in the layer (every
//!   directory is entered with `O_NOFOLLOW`).
//! * [`write_layer`] writes a layer directory (union format) as a deterministic OCI layer
//!   tarball: entries sorted, whiteouts as `.wh.` entries, opaque directories with
//!   `.wh..wh..opq`, xattrs as PAX `SCHILY.xattr.*` records, hard links as link entries,
//!   no user/group names, no access or change times.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use tar::{EntryType, Header};

use crate::error::{Context, Errno, Error};
use crate::manager::streams::read_error;
use crate::manager::tarsplit;
use crate::manager::walk::{self, Step};
use crate::sys::fs::{self as sfs, SetTime};
use crate::sys::open::{self, OFlags};
use crate::sys::stat::{self, FileKind, Timespec};
use crate::sys::xattr::{self, SetMode, XTarget};
use crate::union::whiteout::{self, Dialect};

/// How to unpack.
#[derive(Clone, Copy, Debug)]
pub struct ExtractOptions {
    /// Which namespace opaque markers are written in.
    pub dialect: Dialect,
    /// Whether owners and device nodes can be recreated (root).
    pub privileged: bool,
}

/// What unpacking did.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExtractStats {
    /// Entries unpacked.
    pub entries: u64,
    /// Device nodes left out (not privileged).
    pub skipped_devices: u64,
}

/// Deepest entry a layer tarball may hold (directories above it): deeper trees are refused,
/// as no tool could reach their files by path, and every entry's directories are entered one
/// by one from the layer root.
pub const MAX_DEPTH: usize = 1024;

/// Most bytes a tarball may carry after its end-of-archive marker (they are hashed into the
/// layer id, as tar pads its output: a stream of zeros without end is refused).
pub const MAX_TRAILER: u64 = 1 << 20;

/// Splits and checks a tarball entry path: relative, no `..`, at most [`MAX_DEPTH`] deep.
/// Leading `./` is allowed.
pub fn clean_path(raw: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    let shown = || String::from_utf8_lossy(raw).into_owned();
    if raw.starts_with(b"/") {
        return Err(Error::msg(format!("tarball entry '{}' is an absolute path, outside the layer", shown())));
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => continue,
            b".." => return Err(Error::msg(format!("tarball entry '{}' would land outside the layer", shown()))),
            c => {
                crate::sys::name_ok(c)
                    .map_err(|_| Error::msg(format!("tarball entry '{}' has a bad name", shown())))?;
                out.push(c.to_vec());
                if out.len() > MAX_DEPTH {
                    return Err(Error::msg(format!(
                        "tarball entry '{}…' is nested more than {MAX_DEPTH} directories deep",
                        String::from_utf8_lossy(&raw[..raw.len().min(60)])
                    )));
                }
            }
        }
    }
    Ok(out)
}

/// Copies a file's data from `src` to the new file `f`, leaving runs of zeros as holes (a
/// sparse file in a tarball stays sparse, however large it says it is), and counts the
/// bytes that take space into `budget`, refusing to go past it.
fn copy_sparse(src: &mut impl Read, f: &mut std::fs::File, budget: &mut Budget) -> Result<(), Error> {
    use std::io::{Seek, SeekFrom};
    let corrupt = |e: std::io::Error| read_error(&e, 1);
    let mut buf = vec![0u8; 64 << 10];
    let mut len = 0u64;
    loop {
        let mut n = 0;
        while n < buf.len() {
            match src.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(corrupt(e)),
            }
        }
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|&b| b == 0) {
            f.seek(SeekFrom::Current(n as i64)).map_err(|e| Error::io("cannot write a file", e))?;
        } else {
            budget.spend(n as u64)?;
            f.write_all(&buf[..n]).map_err(|e| Error::io("cannot write a file", e))?;
        }
        len += n as u64;
    }
    f.set_len(len).map_err(|e| Error::io("cannot write a file", e))
}

/// How many bytes of file data an import may still write: what the store's filesystem had
/// free when it started.
#[derive(Debug)]
pub struct Budget {
    left: u64,
}

impl Budget {
    /// The free space of the filesystem holding `dir`.
    pub fn free_space_of(dir: &Path) -> Result<Budget, Error> {
        let fd = open::open_dir_path(dir).context(|| format!("cannot open '{}'", dir.display()))?;
        let st = stat::fstatvfs(&fd).map_err(|e| Error::io("cannot read the free space", e))?;
        Ok(Budget { left: st.bavail.saturating_mul(u64::from(st.frsize.max(1))) })
    }

    fn spend(&mut self, n: u64) -> Result<(), Error> {
        self.left = self.left.checked_sub(n).ok_or_else(|| {
            Error::msg("no space left on device: the layer holds more data than the store's filesystem has free")
        })?;
        Ok(())
    }
}

/// Opens (creating as needed) the directory `comps` below `root`, entering every component
/// with `O_NOFOLLOW`: a symlink or a file on the way is an error.
fn ensure_dir(root: BorrowedFd<'_>, comps: &[Vec<u8>], entry: &[u8]) -> Result<OwnedFd, Error> {
    let mut cur = open::openat(root, c".", OFlags::PATH | OFlags::DIRECTORY, 0)
        .map_err(|e| Error::io("cannot open the layer", e))?;
    for c in comps {
        let name = CString::new(c.clone()).map_err(|_| Error::msg("bad name"))?;
        let next = match open::openat(&cur, &name, OFlags::PATH | OFlags::DIRECTORY, 0) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                sfs::mkdirat(&cur, &name, 0o755).map_err(|e| Error::io("cannot create a directory", e))?;
                open::openat(&cur, &name, OFlags::PATH | OFlags::DIRECTORY, 0)
                    .map_err(|e| Error::io("cannot open a directory", e))?
            }
            Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => {
                return Err(Error::msg(format!(
                    "tarball entry '{}' goes through a symlink or a file, outside the layer",
                    String::from_utf8_lossy(entry)
                )));
            }
            Err(e) => return Err(Error::io("cannot open a directory", e)),
        };
        cur = next;
    }
    Ok(cur)
}

/// Removes whatever is at `name` in `dir` (a file, a whiteout, a tree).
fn clear(dir: BorrowedFd<'_>, name: &CStr) -> Result<(), Error> {
    match stat::statat(dir, name) {
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::io("cannot stat", e)),
        Ok(st) if st.is_dir() => {
            let sub =
                open::openat(dir, name, OFlags::RDONLY | OFlags::DIRECTORY, 0).map_err(|e| Error::io("open", e))?;
            for e in crate::sys::dir::read_all(&sub).map_err(|e| Error::io("readdir", e))? {
                let n = CString::new(e.name).map_err(|_| Error::msg("bad name"))?;
                clear(sub.as_fd(), &n)?;
            }
            sfs::rmdirat(dir, name).map_err(|e| Error::io("rmdir", e))
        }
        Ok(_) => sfs::unlinkat(dir, name).map_err(|e| Error::io("unlink", e)),
    }
}

fn opaque_name(d: Dialect) -> &'static CStr {
    d.names().opaque
}

/// Unpacks a (decompressed) layer tarball into the empty directory `dest`. With `split`
/// (fed by a [`tarsplit::Recorder`] under `reader`), marks where each regular file's data
/// is read, so the tarball can be written back byte for byte.
pub fn extract(
    reader: impl Read,
    dest: &Path,
    opts: ExtractOptions,
    split: Option<&tarsplit::Split>,
) -> Result<ExtractStats, Error> {
    let root = open::open_dir_path(dest).context(|| format!("cannot open '{}'", dest.display()))?;
    let mut un = Unpacker {
        root,
        opts,
        budget: Budget::free_space_of(dest)?,
        stats: ExtractStats::default(),
        dir_times: Vec::new(),
        split: split.cloned(),
    };
    let mut archive = tar::Archive::new(Counted { inner: reader, bytes: 0 });
    let entries = archive.entries().map_err(|e| read_error(&e, 0))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| read_error(&e, un.stats.entries))?;
        un.entry(&mut entry)?;
    }
    if un.stats.entries == 0 && archive.into_inner().bytes < 1024 {
        return Err(Error::msg("not a tar archive (too short to hold one)"));
    }
    un.set_dir_times()?;
    Ok(un.stats)
}

/// Counts the bytes the tar parser reads.
struct Counted<R> {
    inner: R,
    bytes: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// The state of one [`extract`].
struct Unpacker {
    root: OwnedFd,
    opts: ExtractOptions,
    budget: Budget,
    stats: ExtractStats,
    /// Directories unpacked (their paths) and their times, set at the end.
    dir_times: Vec<(Vec<Vec<u8>>, i64)>,
    /// The tar-split record, if one is kept.
    split: Option<tarsplit::Split>,
}

impl Unpacker {
    /// Unpacks one entry: an OCI marker, or an object with its metadata.
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), Error> {
        let raw = entry.path_bytes().into_owned();
        let comps = clean_path(&raw)?;
        let Some((leaf, parents)) = comps.split_last() else {
            return Ok(()); // the layer root itself
        };
        let etype = entry.header().entry_type();
        if matches!(
            etype,
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let pdir = ensure_dir(self.root.as_fd(), parents, &raw)?;
        self.stats.entries += 1;
        if self.marker(pdir.as_fd(), leaf)? {
            return Ok(());
        }
        let leaf_c = CString::new(leaf.clone()).map_err(|_| Error::msg("bad name"))?;
        // Replace what is there, except a directory by a directory (tar merges those).
        let existing = stat::statat(&pdir, &leaf_c).ok();
        if !(etype == EntryType::Directory && existing.is_some_and(|s| s.is_dir())) && existing.is_some() {
            clear(pdir.as_fd(), &leaf_c)?;
        }
        let at = At { dir: pdir.as_fd(), name: &leaf_c, raw: &raw, rel: comps.join(&b'/') };
        let made = match etype {
            EntryType::Directory => {
                if existing.is_none_or(|s| !s.is_dir()) {
                    sfs::mkdirat(at.dir, at.name, 0o700).map_err(at.err("mkdir"))?;
                }
                let mut path = parents.to_vec();
                path.push(leaf.clone());
                self.dir_times.push((path, entry.header().mtime().unwrap_or(0) as i64));
                true
            }
            EntryType::Link => {
                self.hard_link(entry, &at)?;
                false // shares the target's metadata
            }
            _ => self.object(entry, etype, &at)?,
        };
        if made {
            set_metadata(entry, etype, &at, self.opts.privileged)?;
        }
        Ok(())
    }

    /// An OCI marker (`.wh..wh..opq`, `.wh.NAME`, other AUFS metadata) in `pdir`: applied
    /// in the dialect of the layer; whether `leaf` was one.
    fn marker(&self, pdir: BorrowedFd<'_>, leaf: &[u8]) -> Result<bool, Error> {
        if leaf == whiteout::OPAQUE_MARKER.to_bytes() {
            xattr::set(XTarget::At(pdir, c"."), opaque_name(self.opts.dialect), b"y", SetMode::Any)
                .map_err(|e| Error::io("cannot mark a directory opaque", e))?;
            return Ok(true);
        }
        if let Some(target) = whiteout::whiteout_target(leaf) {
            let t = CString::new(target.to_vec()).map_err(|_| Error::msg("bad name"))?;
            // A name present in the same layer stays: a whiteout only hides lower layers.
            if matches!(stat::statat(pdir, &t), Err(Errno::ENOENT)) {
                sfs::mknodat(pdir, &t, FileKind::CharDev, 0, 0)
                    .map_err(|e| Error::io("cannot create a whiteout", e))?;
            }
            return Ok(true);
        }
        Ok(whiteout::is_marker_name(leaf))
    }

    /// A regular file, symlink, device or FIFO: whether one was made (devices are left out
    /// unless privileged, unknown types always).
    fn object<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, etype: EntryType, at: &At<'_>) -> Result<bool, Error> {
        match etype {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let fd = open::openat(at.dir, at.name, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL, 0o600)
                    .map_err(at.err("create"))?;
                let mut f = std::fs::File::from(fd);
                // A GNU sparse entry's data is not the file's bytes: it stays in the record.
                let split = self.split.as_ref().filter(|_| etype != EntryType::GNUSparse);
                if let Some(s) = split {
                    s.file_start(at.rel.clone());
                }
                copy_sparse(entry, &mut f, &mut self.budget)?;
                if let Some(s) = split {
                    s.file_end();
                }
            }
            EntryType::Symlink => {
                let target = entry.link_name_bytes().ok_or_else(|| Error::msg("symlink without a target"))?;
                let t = CString::new(target.into_owned()).map_err(|_| Error::msg("bad link target"))?;
                sfs::symlinkat(&t, at.dir, at.name).map_err(at.err("symlink"))?;
            }
            EntryType::Char | EntryType::Block => {
                if !self.opts.privileged {
                    self.stats.skipped_devices += 1;
                    return Ok(false);
                }
                let kind = if etype == EntryType::Char { FileKind::CharDev } else { FileKind::BlockDev };
                let h = entry.header();
                let dev = stat::makedev(
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0),
                );
                sfs::mknodat(at.dir, at.name, kind, 0o600, dev).map_err(at.err("mknod"))?;
            }
            EntryType::Fifo => sfs::mknodat(at.dir, at.name, FileKind::Fifo, 0o600, 0).map_err(at.err("mkfifo"))?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// A hard link to an entry unpacked before.
    fn hard_link<R: Read>(&self, entry: &tar::Entry<'_, R>, at: &At<'_>) -> Result<(), Error> {
        let target = entry.link_name_bytes().ok_or_else(|| Error::msg("hard link without a target"))?.into_owned();
        let tc = clean_path(&target)?;
        let (tleaf, tparents) = tc.split_last().ok_or_else(|| Error::msg("hard link to the layer root"))?;
        let tdir = ensure_dir(self.root.as_fd(), tparents, &target)?;
        let tl = CString::new(tleaf.clone()).map_err(|_| Error::msg("bad name"))?;
        sfs::linkat(&tdir, &tl, at.dir, at.name).map_err(at.err("link"))
    }

    /// Directory times last: creating entries inside changed them.
    fn set_dir_times(&self) -> Result<(), Error> {
        for (path, mtime) in self.dir_times.iter().rev() {
            if let Some((leaf, parents)) = path.split_last() {
                let pdir = ensure_dir(self.root.as_fd(), parents, leaf)?;
                let l = CString::new(leaf.clone()).map_err(|_| Error::msg("bad name"))?;
                let t = SetTime::At(Timespec { sec: *mtime, nsec: 0 });
                sfs::utimensat(&pdir, &l, t, t).map_err(|e| Error::io("cannot set directory times", e))?;
            }
        }
        Ok(())
    }
}

/// Where an entry is unpacked: its directory, its name there, and its path in the tarball
/// (for messages).
struct At<'a> {
    dir: BorrowedFd<'a>,
    name: &'a CStr,
    raw: &'a [u8],
    /// Its cleaned path in the layer, `/`-separated.
    rel: Vec<u8>,
}

impl At<'_> {
    /// The error for a failed `what` on this entry.
    fn err(&self, what: &str) -> impl FnOnce(Errno) -> Error + use<> {
        let what = format!("cannot unpack '{}' ({what})", String::from_utf8_lossy(self.raw));
        move |e: Errno| Error::io(what, e)
    }
}

/// An unpacked object's xattrs (never the union's own markers), owner (when privileged),
/// mode and time, from its tar header.
fn set_metadata<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    etype: EntryType,
    at: &At<'_>,
    privileged: bool,
) -> Result<(), Error> {
    if let Ok(Some(pax)) = entry.pax_extensions() {
        for ext in pax.flatten() {
            let Ok(key) = ext.key() else { continue };
            let Some(name) = key.strip_prefix("SCHILY.xattr.") else { continue };
            if whiteout::is_private_xattr(name.as_bytes()) {
                continue;
            }
            let Ok(n) = CString::new(name) else { continue };
            match xattr::set(XTarget::At(at.dir, at.name), &n, ext.value_bytes(), SetMode::Any) {
                Ok(()) | Err(Errno::EPERM) | Err(Errno::EOPNOTSUPP) | Err(Errno::EACCES) => {}
                Err(e) => return Err(Error::io(format!("cannot set xattr {name}"), e)),
            }
        }
    }
    let h = entry.header();
    if privileged {
        let (u, g) = (h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32);
        sfs::chownat(at.dir, at.name, Some(u), Some(g)).map_err(at.err("chown"))?;
    }
    if etype != EntryType::Symlink {
        sfs::chmodat(at.dir, at.name, h.mode().unwrap_or(0o644) & 0o7777).map_err(at.err("chmod"))?;
    }
    let t = SetTime::At(Timespec { sec: h.mtime().unwrap_or(0) as i64, nsec: 0 });
    sfs::utimensat(at.dir, at.name, t, t).map_err(at.err("utimens"))
}

/// PAX extended-header data for `records` (`LEN key=value\n`, LEN counting itself).
fn pax_data(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let body = k.len() + v.len() + 3; // ' ' '=' '\n'
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

fn base_header(kind: EntryType, mode: u32, st: Option<&stat::Stat>) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(st.map_or(0, |s| u64::from(s.uid)));
    h.set_gid(st.map_or(0, |s| u64::from(s.gid)));
    h.set_mtime(st.map_or(0, |s| s.mtime.sec.max(0) as u64));
    h.set_size(0);
    h
}

/// Writes layer directory `layer` (union on-disk format: 0/0 whiteouts, `overlay.opaque`
/// markers in either namespace, or OCI markers already) as a deterministic OCI layer tarball
/// to `out`; returns the writer.
pub fn write_layer<W: Write>(layer: &Path, out: W) -> Result<W, Error> {
    write_layer_filtered(layer, out, None)
}

/// Says, for the path of a whiteout, whether it still hides something.
pub type KeepWhiteout<'a> = &'a (dyn Fn(&[u8]) -> bool + Sync);

/// [`write_layer`], normalising on the way when `keep_whiteout` is given: a whiteout inside
/// an opaque directory, or one for which `keep_whiteout(path)` is false (it hides nothing),
/// is left out.
pub fn write_layer_filtered<W: Write>(
    layer: &Path,
    out: W,
    keep_whiteout: Option<KeepWhiteout<'_>>,
) -> Result<W, Error> {
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Deterministic);
    let mut p = Packer { b, keep_whiteout, opaque_dirs: Vec::new(), links: HashMap::new(), xwh_dirs: HashSet::new() };
    walk::walk(layer, &mut |e| p.entry(e))?;
    p.b.into_inner().map_err(werr)
}

/// The error of a failed write to the tarball.
fn werr(e: std::io::Error) -> Error {
    Error::io("cannot write the tarball", e)
}

/// The state of one [`write_layer_filtered`].
struct Packer<'k, W: Write> {
    b: tar::Builder<W>,
    keep_whiteout: Option<KeepWhiteout<'k>>,
    /// Opaque directories written so far.
    opaque_dirs: Vec<Vec<u8>>,
    /// The first path of each multiply linked file (by device and inode).
    links: HashMap<(u64, u64), Vec<u8>>,
    /// Directories whose whiteouts may be xattr whiteouts (marked so).
    xwh_dirs: HashSet<Vec<u8>>,
}

impl<W: Write> Packer<'_, W> {
    /// Writes one entry of the layer: a whiteout as `.wh.NAME`, else the object with its
    /// exported xattrs.
    fn entry(&mut self, e: &walk::Entry<'_>) -> Result<Step, Error> {
        let st = e.stat;
        let kind = st.kind().ok_or_else(|| Error::msg("unknown file type"))?;
        let parent: &[u8] = e.rel.rsplit_once_bytes().map_or(b"", |(p, _)| p);
        let is_whiteout = st.is_chardev_whiteout()
            || (kind == FileKind::Regular
                && st.size == 0
                && self.xwh_dirs.contains(parent)
                && whiteout::is_xattr_whiteout(e.dir, e.name, whiteout::Dialects::ANY).unwrap_or(false));
        if is_whiteout {
            self.whiteout(e, parent)?;
            return Ok(Step::Skip);
        }
        let xattrs = exported_xattrs(e.dir, e.name, kind)?;
        if !xattrs.is_empty() {
            let data =
                pax_data(&xattrs.iter().map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.clone())).collect::<Vec<_>>());
            let mut h = base_header(EntryType::XHeader, 0o644, None);
            h.set_size(data.len() as u64);
            append(&mut self.b, h, b"././@PaxHeader", &data[..]).map_err(werr)?;
        }
        let mode = st.perm();
        match kind {
            FileKind::Directory => self.directory(e, mode)?,
            FileKind::Regular => self.regular(e, mode)?,
            FileKind::Symlink => {
                let target = sfs::readlinkat(e.dir, e.name).map_err(|x| Error::io("cannot read a link", x))?;
                let mut h = base_header(EntryType::Symlink, 0o777, Some(&st));
                h.set_link_name_literal(&target).map_err(werr)?;
                append(&mut self.b, h, e.rel, &[][..]).map_err(werr)?;
            }
            FileKind::CharDev | FileKind::BlockDev | FileKind::Fifo => {
                let t = match kind {
                    FileKind::CharDev => EntryType::Char,
                    FileKind::BlockDev => EntryType::Block,
                    _ => EntryType::Fifo,
                };
                let mut h = base_header(t, mode, Some(&st));
                let (major, minor) = stat::major_minor(st.rdev);
                h.set_device_major(major).map_err(werr)?;
                h.set_device_minor(minor).map_err(werr)?;
                append(&mut self.b, h, e.rel, &[][..]).map_err(werr)?;
            }
            FileKind::Socket => {} // sockets are not archived
        }
        Ok(Step::Descend)
    }

    /// A whiteout, as `.wh.NAME` beside where it is (unless the filter leaves it out, or an
    /// opaque directory above already hides everything below).
    fn whiteout(&mut self, e: &walk::Entry<'_>, parent: &[u8]) -> Result<(), Error> {
        if let Some(keep) = self.keep_whiteout {
            let in_opaque = self.opaque_dirs.iter().any(|d| e.rel.starts_with(d) && e.rel.get(d.len()) == Some(&b'/'));
            if in_opaque || !keep(e.rel) {
                return Ok(());
            }
        }
        let mut p = parent.to_vec();
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(whiteout::WH_PREFIX);
        p.extend_from_slice(e.name.to_bytes());
        append(&mut self.b, base_header(EntryType::Regular, 0o644, None), &p, &[][..]).map_err(werr)
    }

    /// A directory, and the OCI opaque marker inside it if it is opaque.
    fn directory(&mut self, e: &walk::Entry<'_>, mode: u32) -> Result<(), Error> {
        let mut p = e.rel.to_vec();
        p.push(b'/');
        append(&mut self.b, base_header(EntryType::Directory, mode, Some(&e.stat)), &p, &[][..]).map_err(werr)?;
        let marks = whiteout::dir_marks(e.dir, e.name, None, whiteout::Dialects::ANY)
            .map_err(|x| Error::io("cannot read markers", x))?;
        if marks.xwhiteouts {
            self.xwh_dirs.insert(e.rel.to_vec());
        }
        if marks.opaque {
            self.opaque_dirs.push(e.rel.to_vec());
        }
        if marks.opaque && !has_oci_opaque(e.dir, e.name) {
            let mut q = e.rel.to_vec();
            q.extend_from_slice(b"/");
            q.extend_from_slice(whiteout::OPAQUE_MARKER.to_bytes());
            append(&mut self.b, base_header(EntryType::Regular, 0o644, None), &q, &[][..]).map_err(werr)?;
        }
        Ok(())
    }

    /// A regular file: its data, or a hard link to the first path of a file seen before.
    fn regular(&mut self, e: &walk::Entry<'_>, mode: u32) -> Result<(), Error> {
        let st = e.stat;
        if st.nlink > 1 {
            if let Some(first) = self.links.get(&(st.dev, st.ino)) {
                let mut h = base_header(EntryType::Link, mode, Some(&st));
                h.set_link_name_literal(first).map_err(werr)?;
                return append(&mut self.b, h, e.rel, &[][..]).map_err(werr);
            }
            self.links.insert((st.dev, st.ino), e.rel.to_vec());
        }
        let f = open::openat(e.dir, e.name, OFlags::RDONLY, 0).map_err(|x| Error::io("cannot open a file", x))?;
        let mut h = base_header(EntryType::Regular, mode, Some(&st));
        h.set_size(st.size);
        append(&mut self.b, h, e.rel, std::fs::File::from(f).take(st.size)).map_err(werr)
    }
}

/// Appends an entry, using a GNU long-name record when the path does not fit the header.
fn append<W: Write>(b: &mut tar::Builder<W>, mut h: Header, path: &[u8], data: impl Read) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    b.append_data(&mut h, std::ffi::OsStr::from_bytes(path), data)
}

fn has_oci_opaque(dir: BorrowedFd<'_>, name: &CStr) -> bool {
    open::openat(dir, name, OFlags::PATH | OFlags::DIRECTORY, 0)
        .is_ok_and(|d| stat::statat(&d, whiteout::OPAQUE_MARKER).is_ok())
}

/// The xattrs a tarball records: everything but the union's markers.
fn exported_xattrs(dir: BorrowedFd<'_>, name: &CStr, kind: FileKind) -> Result<Vec<(String, Vec<u8>)>, Error> {
    if kind == FileKind::Symlink {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut names = xattr::list(XTarget::At(dir, name)).map_err(|e| Error::io("cannot list xattrs", e))?;
    names.sort();
    for n in names {
        if whiteout::is_private_xattr(&n) {
            continue;
        }
        let Ok(c) = CString::new(n.clone()) else { continue };
        if let Some(v) = xattr::get(XTarget::At(dir, name), &c).map_err(|e| Error::io("cannot read xattrs", e))? {
            out.push((String::from_utf8_lossy(&n).into_owned(), v));
        }
    }
    Ok(out)
}

/// Splitting a byte path at its last `/`.
trait RsplitBytes {
    fn rsplit_once_bytes(&self) -> Option<(&[u8], &[u8])>;
}

impl RsplitBytes for [u8] {
    fn rsplit_once_bytes(&self) -> Option<(&[u8], &[u8])> {
        let i = self.iter().rposition(|&b| b == b'/')?;
        Some((&self[..i], &self[i + 1..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_are_checked() {
        assert_eq!(clean_path(b"./a/b").unwrap(), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(clean_path(b"a//b/").unwrap().len(), 2);
        assert!(clean_path(b"./").unwrap().is_empty());
        assert!(clean_path(b"../etc/passwd").is_err());
        assert!(clean_path(b"a/../../b").is_err());
        assert!(clean_path(b"/etc/shadow").is_err());
    }

    #[test]
    fn pax_records_count_their_own_length() {
        let d = pax_data(&[("SCHILY.xattr.user.a".into(), b"1".to_vec())]);
        let s = String::from_utf8(d).unwrap();
        let (len, rest) = s.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), s.len());
        assert_eq!(rest, "SCHILY.xattr.user.a=1\n");
        let long = pax_data(&[("k".into(), vec![b'v'; 95])]);
        let (len, _) = std::str::from_utf8(&long).unwrap().split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), long.len());
    }
}
