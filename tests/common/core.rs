//! The union's core without FUSE: a [`Core`] is the `UnionFs` a mount of the same arguments
//! would serve (built by `daemon::build_core`), driven by direct calls. [`Core::apply`] runs
//! one scenario step ([`Op`]) as the kernel would turn the system call into requests — the
//! path walk, the checks the VFS makes before it asks a filesystem (`EEXIST`, `EISDIR`,
//! `ENOTDIR`, `EINVAL` for a directory moved into itself, `EPERM` for a hard link to a
//! directory), then the request — and returns the errno; [`Core::tree`] lists the merged tree
//! in the form of [`super::tree`], so both compare with kernel overlayfs the same way.

use super::scenario::Op;
use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use unionfs::error::Errno;
use unionfs::sys::stat::FileKind;
use unionfs::union::inode::SetAttr;
use unionfs::union::rename::RenameFlags;
use unionfs::union::{Attr, Ctx, UnionFs};

/// The root's inode number.
const ROOT: u64 = 1;
/// The longest name (`NAME_MAX`).
const NAME_MAX: usize = 255;
/// Symbolic links followed in one walk before `ELOOP`, as the kernel's limit.
const MAX_LINKS: usize = 40;

type R<T> = Result<T, Errno>;

/// A union core over a lower stack and an upper directory, as `unionfs mount ARGS` builds it.
pub struct Core {
    /// The core.
    pub fs: Arc<UnionFs>,
    /// The caller every request comes from.
    ctx: Ctx,
    /// The caller's umask (the kernel applies it before a create reaches the filesystem).
    umask: u32,
}

/// Where a path leads: its parent directory, its last name, and what the name is, if anything.
struct Walked {
    /// The directories walked through, from the root to the parent.
    dirs: Vec<u64>,
    parent: u64,
    name: CString,
    found: Option<Attr>,
}

impl Core {
    /// The core `unionfs mount --lower LOWERS --upper UPPER --work WORK -o OPTS MNT` serves
    /// (nothing is mounted on `mnt`, which must exist).
    pub fn new(lowers: &str, upper: &Path, work: &Path, mnt: &Path, opts: &str) -> Core {
        let mut options = unionfs::config::MountOptions::default();
        if !opts.is_empty() {
            options.apply(opts);
        }
        let req = unionfs::config::MountRequest {
            lower: Some(lowers.to_string()),
            upper: Some(upper.to_path_buf()),
            work: Some(work.to_path_buf()),
            mountpoint: mnt.to_path_buf(),
            options,
            foreground: true,
            debug: false,
            log: None,
            volumes: Vec::new(),
        };
        let cfg = unionfs::config::MountConfig::validate(req).unwrap_or_else(|e| panic!("mount arguments: {e}"));
        let fs = unionfs::daemon::build_core(&cfg).unwrap_or_else(|e| panic!("building the core: {e}"));
        let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
        rustix::process::umask(old);
        let ctx = Ctx { uid: rustix::process::geteuid().as_raw(), gid: rustix::process::getegid().as_raw() };
        Core { fs, ctx, umask: old.bits() }
    }

    /// Walks `path` (relative to the root) to its last name, following symbolic links on the
    /// way and, with `follow`, at the end.
    fn walk(&self, path: &str, follow: bool) -> R<Walked> {
        let mut links = 0;
        self.walk_from(vec![ROOT], path, follow, &mut links)
    }

    /// Walks `path` from the last directory of `chain` (the directories from the root to it).
    fn walk_from(&self, mut chain: Vec<u64>, path: &str, follow: bool, links: &mut usize) -> R<Walked> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
        let Some((last, dirs)) = parts.split_last() else {
            return Err(Errno::EINVAL);
        };
        for part in dirs {
            let dir = *chain.last().ok_or(Errno::EINVAL)?;
            if *part == ".." {
                if chain.len() > 1 {
                    chain.pop();
                }
                continue;
            }
            let a = self.lookup(dir, part)?.ok_or(Errno::ENOENT)?;
            match a.kind {
                FileKind::Directory => chain.push(a.ino),
                FileKind::Symlink => chain = self.follow(chain, a.ino, links)?,
                _ => return Err(Errno::ENOTDIR),
            };
        }
        let dir = *chain.last().ok_or(Errno::EINVAL)?;
        let name = CString::new(*last).map_err(|_| Errno::EINVAL)?;
        let found = self.lookup(dir, last)?;
        if follow && let Some(a) = found.filter(|a| a.kind == FileKind::Symlink) {
            let target = String::from_utf8(self.fs.readlink(a.ino)?).map_err(|_| Errno::EINVAL)?;
            *links += 1;
            if *links > MAX_LINKS {
                return Err(Errno::ELOOP);
            }
            let from = if target.starts_with('/') { vec![ROOT] } else { chain };
            return self.walk_from(from, &target, true, links);
        }
        Ok(Walked { dirs: chain, parent: dir, name, found })
    }

    /// The directories (from the root) of the directory a symbolic link met in the last
    /// directory of `chain` leads to.
    fn follow(&self, chain: Vec<u64>, link: u64, links: &mut usize) -> R<Vec<u64>> {
        *links += 1;
        if *links > MAX_LINKS {
            return Err(Errno::ELOOP);
        }
        let target = String::from_utf8(self.fs.readlink(link)?).map_err(|_| Errno::EINVAL)?;
        let from = if target.starts_with('/') { vec![ROOT] } else { chain };
        let mut w = self.walk_from(from, &target, true, links)?;
        match w.found {
            Some(a) if a.kind == FileKind::Directory => {
                w.dirs.push(a.ino);
                Ok(w.dirs)
            }
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    /// `lookup`: the attributes of `name` in `dir`, `None` if there is none.
    fn lookup(&self, dir: u64, name: &str) -> R<Option<Attr>> {
        if name.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        let c = CString::new(name).map_err(|_| Errno::EINVAL)?;
        match self.fs.lookup(dir, &c) {
            // Requests name the node (`e.ino`), which can differ from the number `stat` shows.
            Ok(e) => Ok(Some(Attr { ino: e.ino, ..e.attr })),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `open(path, flags)` for writing (as `scenario::apply` opens: non-blocking), creating it
    /// with `O_CREAT`; the handle.
    fn open_write(&self, path: &str, flags: i32) -> R<u64> {
        let w = self.walk(path, flags & libc::O_EXCL == 0)?;
        match w.found {
            Some(_) if flags & libc::O_EXCL != 0 => Err(Errno::EEXIST),
            Some(a) => match a.kind {
                FileKind::Directory => Err(Errno::EISDIR),
                // A FIFO opened for writing without a reader, non-blocking.
                FileKind::Fifo => Err(Errno::ENXIO),
                _ => Ok(self.fs.open(a.ino, flags & !(libc::O_CREAT | libc::O_EXCL), None)?.fh),
            },
            None if flags & libc::O_CREAT != 0 => {
                let mode = libc::S_IFREG | (0o666 & !self.umask);
                Ok(self.fs.create(self.ctx, w.parent, &w.name, mode, flags & !(libc::O_CREAT | libc::O_EXCL))?.1.fh)
            }
            None => Err(Errno::ENOENT),
        }
    }

    /// Writes `data` at the end (`append`) or at 0 through a fresh handle, then closes it.
    fn write(&self, path: &str, flags: i32, data: &str) -> R<()> {
        let fh = self.open_write(path, flags)?;
        let r = (|| {
            let at = if flags & libc::O_APPEND != 0 {
                self.fs.getattr(self.fs.file_handle(fh)?.node.ino, Some(fh))?.size
            } else {
                0
            };
            self.fs.write(fh, at, data.as_bytes(), None).map(drop)
        })();
        self.fs.release(fh);
        r
    }

    /// A name that must not exist yet (mkdir, mknod, symlink, link): its parent and name.
    fn new_name(&self, path: &str) -> R<(u64, CString)> {
        let w = self.walk(path, false)?;
        match w.found {
            Some(_) => Err(Errno::EEXIST),
            None => Ok((w.parent, w.name)),
        }
    }

    /// The object `path` names (following a final symbolic link with `follow`).
    fn object(&self, path: &str, follow: bool) -> R<Attr> {
        self.walk(path, follow)?.found.ok_or(Errno::ENOENT)
    }

    /// `rename`/`renameat2` after the VFS's checks.
    fn rename(&self, from: &str, to: &str, flags: RenameFlags) -> R<()> {
        let a = self.walk(from, false)?;
        let b = self.walk(to, false)?;
        let src = a.found.ok_or(Errno::ENOENT)?;
        let exchange = flags.exchange;
        match (&b.found, exchange) {
            (None, true) => return Err(Errno::ENOENT),
            (Some(_), false) if flags.noreplace => return Err(Errno::EEXIST),
            _ => {}
        }
        if let Some(dst) = &b.found {
            if dst.ino == src.ino {
                return Ok(());
            }
            if !exchange {
                match (src.kind == FileKind::Directory, dst.kind == FileKind::Directory) {
                    (true, false) => return Err(Errno::ENOTDIR),
                    (false, true) => return Err(Errno::EISDIR),
                    _ => {}
                }
            }
        }
        // A directory cannot move beneath itself (nor, exchanged, the target beneath it).
        if src.kind == FileKind::Directory && b.dirs.contains(&src.ino) {
            return Err(Errno::EINVAL);
        }
        if exchange
            && let Some(dst) = &b.found
            && dst.kind == FileKind::Directory
            && a.dirs.contains(&dst.ino)
        {
            return Err(Errno::EINVAL);
        }
        self.fs.rename(a.parent, &a.name, b.parent, &b.name, flags)
    }

    /// Runs one scenario step as the kernel would; the errno (0 for success).
    pub fn apply(&self, op: &Op) -> i32 {
        let r: R<()> = match op {
            Op::Write(f, d) => self.write(f, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NONBLOCK, d),
            Op::Append(f, d) => self.write(f, libc::O_WRONLY | libc::O_APPEND | libc::O_NONBLOCK, d),
            Op::CreateExcl(f) => self.close(self.open_write(f, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL)),
            Op::Trunc(f) => self.close(self.open_write(f, libc::O_WRONLY | libc::O_TRUNC | libc::O_NONBLOCK)),
            Op::Truncate(f, n) => self.open_write(f, libc::O_WRONLY | libc::O_NONBLOCK).and_then(|fh| {
                let ino = self.fs.file_handle(fh).map(|h| h.node.ino);
                let r = ino.and_then(|ino| {
                    self.fs.setattr(ino, SetAttr { size: Some(*n), fh: Some(fh), ..SetAttr::default() })
                });
                self.fs.release(fh);
                r.map(drop)
            }),
            Op::Mkdir(d) => {
                self.new_name(d).and_then(|(p, n)| self.fs.mkdir(self.ctx, p, &n, 0o777 & !self.umask).map(drop))
            }
            Op::Rmdir(d) => self.walk(d, false).and_then(|w| match w.found {
                None => Err(Errno::ENOENT),
                Some(a) if a.kind != FileKind::Directory => Err(Errno::ENOTDIR),
                Some(_) => self.fs.rmdir(w.parent, &w.name),
            }),
            Op::Unlink(f) => self.walk(f, false).and_then(|w| match w.found {
                None => Err(Errno::ENOENT),
                Some(a) if a.kind == FileKind::Directory => Err(Errno::EISDIR),
                Some(_) => self.fs.unlink(w.parent, &w.name),
            }),
            Op::RmRf(d) => self.rm_rf(d),
            Op::Rename(a, b) => self.rename(a, b, RenameFlags::default()),
            Op::Rename2(a, b, f) => RenameFlags::from_raw(f.bits()).and_then(|f| self.rename(a, b, f)),
            Op::Symlink(t, l) => self.new_name(l).and_then(|(p, n)| {
                let t = CString::new(*t).map_err(|_| Errno::EINVAL)?;
                self.fs.symlink(self.ctx, p, &n, &t).map(drop)
            }),
            Op::Link(a, b) => self.object(a, false).and_then(|src| {
                if src.kind == FileKind::Directory {
                    return Err(Errno::EPERM);
                }
                let (p, n) = self.new_name(b)?;
                self.fs.link(src.ino, p, &n).map(drop)
            }),
            Op::Chmod(f, m) => self.object(f, true).and_then(|a| {
                self.fs.setattr(a.ino, SetAttr { mode: Some(m & 0o7777), ..SetAttr::default() }).map(drop)
            }),
            Op::Chown(f, u, g) => self.object(f, false).and_then(|a| {
                self.fs.setattr(a.ino, SetAttr { uid: Some(*u), gid: Some(*g), ..SetAttr::default() }).map(drop)
            }),
            Op::Mkfifo(f) => self
                .new_name(f)
                .and_then(|(p, n)| self.fs.mknod(self.ctx, p, &n, libc::S_IFIFO | (0o644 & !self.umask), 0).map(drop)),
            Op::SetXattr(f, n, v) => self
                .object(f, false)
                .and_then(|a| self.fs.setxattr(a.ino, &CString::new(*n).map_err(|_| Errno::EINVAL)?, v.as_bytes(), 0)),
            Op::RemoveXattr(f, n) => self
                .object(f, false)
                .and_then(|a| self.fs.removexattr(a.ino, &CString::new(*n).map_err(|_| Errno::EINVAL)?)),
            Op::GetXattr(f, n) => self.object(f, false).and_then(|a| {
                let v = self.fs.getxattr(a.ino, &CString::new(*n).map_err(|_| Errno::EINVAL)?)?;
                if v.len() > 256 { Err(Errno::ERANGE) } else { Ok(()) }
            }),
            Op::Stat(f) => self.object(f, false).map(drop),
            Op::LongName => self.write(&"n".repeat(256), libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, "x"),
        };
        match r {
            Ok(()) => 0,
            Err(e) => e.raw(),
        }
    }

    fn close(&self, fh: R<u64>) -> R<()> {
        fh.map(|fh| self.fs.release(fh))
    }

    /// `rm -rf` as `std::fs::remove_dir_all` does it: children first, then the directory.
    fn rm_rf(&self, path: &str) -> R<()> {
        let w = self.walk(path, false)?;
        let a = w.found.ok_or(Errno::ENOENT)?;
        if a.kind != FileKind::Directory {
            return self.fs.unlink(w.parent, &w.name);
        }
        for (name, kind) in self.list(a.ino)? {
            let child = format!("{path}/{}", name.to_str().map_err(|_| Errno::EINVAL)?);
            if kind == FileKind::Directory {
                self.rm_rf(&child)?;
            } else {
                self.fs.unlink(a.ino, &name)?;
            }
        }
        self.fs.rmdir(w.parent, &w.name)
    }

    /// The names in directory `dir` (without `.` and `..`), sorted, with their types.
    fn list(&self, dir: u64) -> R<Vec<(CString, FileKind)>> {
        let l = self.fs.readdir(dir, 0)?;
        let mut out: Vec<(CString, FileKind)> = l.entries[l.start..]
            .iter()
            .map(|e| (CString::new(e.name.to_bytes()).unwrap_or_default(), e.kind))
            .filter(|(n, _)| n.as_bytes() != b"." && n.as_bytes() != b"..")
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The whole file `ino`'s data.
    fn read_all(&self, ino: u64) -> R<Vec<u8>> {
        let fh = self.fs.open(ino, libc::O_RDONLY, None)?.fh;
        let mut data = Vec::new();
        let r = loop {
            match self.fs.read(fh, data.len() as u64, 1 << 20) {
                Ok(b) if b.is_empty() => break Ok(()),
                Ok(b) => data.extend_from_slice(&b),
                Err(e) => break Err(e),
            }
        };
        self.fs.release(fh);
        r.map(|()| data)
    }

    /// The merged tree, line for line as [`super::tree`] lists a mount of it.
    pub fn tree(&self) -> String {
        let mut lines = BTreeMap::new();
        let root = self.fs.getattr(ROOT, None).unwrap_or_else(|e| panic!("getattr of the root: {e:?}"));
        self.tree_walk(PathBuf::new(), &root, &mut lines);
        lines.into_values().collect::<Vec<_>>().join("\n")
    }

    fn tree_walk(&self, rel: PathBuf, a: &Attr, out: &mut BTreeMap<Vec<u8>, String>) {
        use std::os::unix::ffi::OsStrExt;
        let name = if rel.as_os_str().is_empty() { ".".to_string() } else { rel.to_string_lossy().into_owned() };
        let kind = match a.kind {
            FileKind::Directory => "d",
            FileKind::Symlink => "l",
            FileKind::Regular => "f",
            FileKind::Fifo => "p",
            FileKind::Socket => "s",
            FileKind::CharDev => "c",
            FileKind::BlockDev => "b",
        };
        let mut line = format!("{name} {kind} {:o} {}:{}", a.perm & 0o7777, a.uid, a.gid);
        match a.kind {
            FileKind::Regular => {
                let data = self.read_all(a.ino).unwrap_or_else(|e| panic!("reading {name}: {e:?}"));
                line.push_str(&format!(" size={} #{:016x} nlink={}", data.len(), super::fnv(&data), a.nlink));
            }
            FileKind::Symlink => {
                let t = self.fs.readlink(a.ino).unwrap_or_else(|e| panic!("readlink {name}: {e:?}"));
                line.push_str(&format!(" -> {}", String::from_utf8_lossy(&t)));
            }
            FileKind::CharDev | FileKind::BlockDev => line.push_str(&format!(" rdev={}", a.rdev)),
            _ => {}
        }
        if a.kind != FileKind::Symlink {
            let xs = self.user_xattrs(a.ino);
            if !xs.is_empty() {
                line.push_str(&format!(" [{}]", xs.join(",")));
            }
        }
        out.insert(rel.as_os_str().as_bytes().to_vec(), line);
        if a.kind == FileKind::Directory {
            for (n, _) in self.list(a.ino).unwrap_or_else(|e| panic!("listing {name}: {e:?}")) {
                let child = self.fs.lookup(a.ino, &n).unwrap_or_else(|e| panic!("lookup {name}/{n:?}: {e:?}"));
                let a = Attr { ino: child.ino, ..child.attr };
                self.tree_walk(rel.join(std::ffi::OsStr::from_bytes(n.as_bytes())), &a, out);
            }
        }
    }

    /// `user.*` attributes of `ino`, as `name=value`, in the order listed.
    fn user_xattrs(&self, ino: u64) -> Vec<String> {
        let list = self.fs.listxattr(ino).unwrap_or_default();
        list.split(|b| *b == 0)
            .filter(|n| n.starts_with(b"user."))
            .map(|n| {
                let c = CStr::from_bytes_with_nul(&[n, b"\0"].concat()).map(CStr::to_owned).unwrap_or_default();
                let v = self.fs.getxattr(ino, &c).unwrap_or_default();
                format!("{}={}", String::from_utf8_lossy(n), String::from_utf8_lossy(&v))
            })
            .collect()
    }
}
