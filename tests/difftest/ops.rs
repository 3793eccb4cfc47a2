//! Operations, applied by ordinary syscalls to one mount, each answering a line that must be
//! the same on both sides: the errno, and what a read or `fstat` saw.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::difftest::seq::Data;
use rustix::fs::{AtFlags, CWD, Mode, OFlags, RenameFlags, Timestamps, XattrFlags};

/// How a descriptor is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenKind {
    ReadOnly,
    ReadWrite,
    Append,
    Trunc,
    Create,
    Dir,
    TmpFile,
}

impl OpenKind {
    pub const ALL: [OpenKind; 7] = [
        OpenKind::ReadOnly,
        OpenKind::ReadWrite,
        OpenKind::Append,
        OpenKind::Trunc,
        OpenKind::Create,
        OpenKind::Dir,
        OpenKind::TmpFile,
    ];

    fn flags(self) -> OFlags {
        match self {
            OpenKind::ReadOnly => OFlags::RDONLY,
            OpenKind::ReadWrite => OFlags::RDWR,
            OpenKind::Append => OFlags::WRONLY | OFlags::APPEND,
            OpenKind::Trunc => OFlags::RDWR | OFlags::TRUNC,
            OpenKind::Create => OFlags::RDWR | OFlags::CREATE,
            OpenKind::Dir => OFlags::RDONLY | OFlags::DIRECTORY,
            OpenKind::TmpFile => OFlags::RDWR | OFlags::TMPFILE,
        }
    }
}

/// One step. Paths are relative to the mount root; slots index the side's descriptor table.
#[derive(Debug, Clone)]
pub enum Op {
    Write(String, Data),
    Append(String, Data),
    CreateExcl(String),
    OpenTrunc(String),
    Truncate(String, u64),
    Mkdir(String, u32),
    Rmdir(String),
    Unlink(String),
    /// Rename with `0`–`3`: plain; `4`: `RENAME_NOREPLACE`; `5`: `RENAME_EXCHANGE`.
    Rename(String, String, u32),
    Symlink(String, String),
    Link(String, String),
    Chmod(String, u32),
    /// `u32::MAX` keeps an id (`-1`).
    Chown(String, (u32, u32)),
    /// Explicit times, or now.
    Utimes(String, Option<i64>),
    /// An attribute (one of [`XATTR_NAMES`]), with a value.
    SetXattr(String, &'static str, String),
    RemoveXattr(String, &'static str),
    Mkfifo(String),
    Stat(String),
    Open(usize, String, OpenKind),
    Read(usize),
    PWrite(usize, u64, Data),
    /// `write(2)` at the descriptor's position (the end, with `O_APPEND`).
    WriteAt(usize, Data),
    Fstat(usize),
    Fchmod(usize, u32),
    Fchown(usize, (u32, u32)),
    Futimens(usize, i64),
    Fsetxattr(usize, String),
    Fgetxattr(usize),
    Ftruncate(usize, u64),
    Fallocate(usize, i32, u64, u64),
    MmapWrite(usize, u64, Data),
    Readdir(usize),
    /// `linkat(fd, "", AT_EMPTY_PATH)`.
    Linkat(usize, String),
    Fsync(usize),
    Close(usize),
}

/// A side's open descriptors.
pub type Fds = Vec<Option<OwnedFd>>;

fn res<T>(r: rustix::io::Result<T>, ok: impl FnOnce(T) -> String) -> String {
    match r {
        Ok(v) => ok(v),
        Err(e) => format!("errno {}", e.raw_os_error()),
    }
}

fn done<T>(r: rustix::io::Result<T>) -> String {
    res(r, |_| "ok".into())
}

fn ids((u, g): (u32, u32)) -> (Option<rustix::fs::Uid>, Option<rustix::fs::Gid>) {
    let u = (u != u32::MAX).then(|| rustix::fs::Uid::from_raw(u));
    let g = (g != u32::MAX).then(|| rustix::fs::Gid::from_raw(g));
    (u, g)
}

fn ts(t: i64) -> Timestamps {
    let at = rustix::fs::Timespec { tv_sec: t, tv_nsec: 0 };
    Timestamps { last_access: at, last_modification: at }
}

fn now() -> Timestamps {
    let at = rustix::fs::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_NOW };
    Timestamps { last_access: at, last_modification: at }
}

/// The attributes set and removed by path: a user's, a `trusted.` one (root's only), and
/// an overlay marker's name, which is a user's own as root (kernel overlayfs's `trusted.`
/// markers) and is stored escaped (`user.overlay.overlay.opaque`) by a rootless mount, so
/// that it marks nothing when the upper becomes a lower layer.
pub const XATTR_NAMES: [&str; 3] = ["user.t", "trusted.t", "user.overlay.opaque"];

/// What `fstat` of an object shows that must agree (numbers that are the mount's own, such
/// as `st_ino` and `st_dev`, are compared as classes elsewhere).
pub fn stat_line(st: &rustix::fs::Stat) -> String {
    let t = |s: i64| if s < 1_000_000_000 { s.to_string() } else { "now".into() };
    format!(
        "mode={:o} nlink={} {}:{} size={} mtime={}",
        st.st_mode,
        st.st_nlink,
        st.st_uid,
        st.st_gid,
        if st.st_mode & 0o170000 == 0o040000 { 0 } else { st.st_size },
        t(st.st_mtime)
    )
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3))
}

/// Applies `op` under `root`; the line it answers.
pub fn apply(root: &Path, fds: &mut Fds, op: &Op) -> String {
    let p = |x: &str| CString::new(root.join(x).as_os_str().as_bytes()).unwrap();
    fn fd(fds: &Fds, s: usize) -> Option<std::os::fd::BorrowedFd<'_>> {
        fds.get(s).and_then(|f| f.as_ref()).map(|f| f.as_fd())
    }
    let no_fd = || "no descriptor".to_string();
    let open_w = |x: &str, extra: OFlags| {
        rustix::fs::open(
            p(x).as_c_str(),
            OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | extra,
            Mode::from(0o644),
        )
    };
    match op {
        Op::Write(f, d) => {
            done(open_w(f, OFlags::CREATE | OFlags::TRUNC).and_then(|h| rustix::io::write(&h, &d.bytes())))
        }
        Op::Append(f, d) => done(open_w(f, OFlags::APPEND).and_then(|h| rustix::io::write(&h, &d.bytes()))),
        Op::CreateExcl(f) => done(open_w(f, OFlags::CREATE | OFlags::EXCL)),
        Op::OpenTrunc(f) => done(open_w(f, OFlags::TRUNC)),
        Op::Truncate(f, n) => done(
            rustix::fs::open(p(f).as_c_str(), OFlags::WRONLY | OFlags::NONBLOCK, Mode::empty())
                .and_then(|h| rustix::fs::ftruncate(&h, *n)),
        ),
        Op::Mkdir(d, m) => done(rustix::fs::mkdir(p(d).as_c_str(), Mode::from_raw_mode(*m))),
        Op::Rmdir(d) => done(rustix::fs::unlinkat(CWD, p(d).as_c_str(), AtFlags::REMOVEDIR)),
        Op::Unlink(f) => done(rustix::fs::unlink(p(f).as_c_str())),
        Op::Rename(a, b, f) => {
            let flags = match f {
                4 => RenameFlags::NOREPLACE,
                5 => RenameFlags::EXCHANGE,
                _ => RenameFlags::empty(),
            };
            done(rustix::fs::renameat_with(CWD, p(a).as_c_str(), CWD, p(b).as_c_str(), flags))
        }
        Op::Symlink(t, l) => done(rustix::fs::symlink(t.as_str(), p(l).as_c_str())),
        Op::Link(a, b) => done(rustix::fs::link(p(a).as_c_str(), p(b).as_c_str())),
        Op::Chmod(f, m) => done(rustix::fs::chmod(p(f).as_c_str(), Mode::from_raw_mode(*m))),
        Op::Chown(f, o) => {
            let (u, g) = ids(*o);
            done(rustix::fs::chownat(CWD, p(f).as_c_str(), u, g, AtFlags::SYMLINK_NOFOLLOW))
        }
        Op::Utimes(f, t) => {
            let t = t.map_or_else(now, ts);
            done(rustix::fs::utimensat(CWD, p(f).as_c_str(), &t, AtFlags::SYMLINK_NOFOLLOW))
        }
        Op::SetXattr(f, name, v) => {
            done(rustix::fs::lsetxattr(p(f).as_c_str(), *name, v.as_bytes(), XattrFlags::empty()))
        }
        Op::RemoveXattr(f, name) => done(rustix::fs::lremovexattr(p(f).as_c_str(), *name)),
        Op::Mkfifo(f) => {
            done(rustix::fs::mknodat(CWD, p(f).as_c_str(), rustix::fs::FileType::Fifo, Mode::from(0o644), 0))
        }
        Op::Stat(f) => res(rustix::fs::lstat(p(f).as_c_str()), |st| stat_line(&st)),
        Op::Open(s, f, k) => {
            fds[*s] = None;
            let flags = k.flags() | OFlags::NONBLOCK | OFlags::CLOEXEC;
            res(rustix::fs::open(p(f).as_c_str(), flags, Mode::from(0o640)), |h| {
                fds[*s] = Some(h);
                "ok".into()
            })
        }
        Op::Read(s) => match fd(fds, *s) {
            None => no_fd(),
            Some(h) => {
                let mut buf = vec![0u8; 16384];
                res(rustix::io::pread(h, &mut buf, 0), |n| format!("{} bytes #{:x}", n, fnv(&buf[..n])))
            }
        },
        Op::PWrite(s, off, d) => match fd(fds, *s) {
            None => no_fd(),
            Some(h) => res(rustix::io::pwrite(h, &d.bytes(), *off), |n| format!("wrote {n}")),
        },
        Op::WriteAt(s, d) => match fd(fds, *s) {
            None => no_fd(),
            Some(h) => res(rustix::io::write(h, &d.bytes()), |n| format!("wrote {n}")),
        },
        Op::Fstat(s) => match fd(fds, *s) {
            None => no_fd(),
            Some(h) => res(rustix::fs::fstat(h), |st| stat_line(&st)),
        },
        Op::Fchmod(s, m) => fd(fds, *s).map_or_else(no_fd, |h| done(rustix::fs::fchmod(h, Mode::from_raw_mode(*m)))),
        Op::Fchown(s, o) => fd(fds, *s).map_or_else(no_fd, |h| {
            let (u, g) = ids(*o);
            done(rustix::fs::fchown(h, u, g))
        }),
        Op::Futimens(s, t) => fd(fds, *s).map_or_else(no_fd, |h| done(rustix::fs::futimens(h, &ts(*t)))),
        Op::Fsetxattr(s, v) => fd(fds, *s)
            .map_or_else(no_fd, |h| done(rustix::fs::fsetxattr(h, "user.f", v.as_bytes(), XattrFlags::empty()))),
        Op::Fgetxattr(s) => fd(fds, *s).map_or_else(no_fd, |h| {
            let mut b = [0u8; 64];
            res(rustix::fs::fgetxattr(h, "user.f", &mut b[..]), |n| String::from_utf8_lossy(&b[..n]).into_owned())
        }),
        Op::Ftruncate(s, n) => fd(fds, *s).map_or_else(no_fd, |h| done(rustix::fs::ftruncate(h, *n))),
        Op::Fallocate(s, mode, off, len) => fd(fds, *s).map_or_else(no_fd, |h| {
            let m = rustix::fs::FallocateFlags::from_bits_retain(*mode as u32);
            done(rustix::fs::fallocate(h, m, *off, *len))
        }),
        Op::MmapWrite(s, off, d) => fd(fds, *s).map_or_else(no_fd, |h| mmap_write(h, *off, &d.bytes())),
        Op::Readdir(s) => fd(fds, *s).map_or_else(no_fd, |h| {
            let dup = match rustix::io::fcntl_dupfd_cloexec(h, 0) {
                Ok(d) => d,
                Err(e) => return format!("errno {}", e.raw_os_error()),
            };
            res(rustix::fs::Dir::new(dup), |mut dir| {
                dir.rewind();
                let mut names: Vec<String> = Vec::new();
                for e in dir {
                    match e {
                        Ok(e) => names.push(String::from_utf8_lossy(e.file_name().to_bytes()).into_owned()),
                        Err(e) => return format!("errno {}", e.raw_os_error()),
                    }
                }
                names.sort();
                names.join(",")
            })
        }),
        Op::Linkat(s, f) => fd(fds, *s)
            .map_or_else(no_fd, |h| done(rustix::fs::linkat(h, c"", CWD, p(f).as_c_str(), AtFlags::EMPTY_PATH))),
        Op::Fsync(s) => fd(fds, *s).map_or_else(no_fd, |h| done(rustix::fs::fsync(h))),
        Op::Close(s) => {
            let was = fds[*s].take().is_some();
            if was { "closed".into() } else { no_fd() }
        }
    }
}

/// Writes `data` at `off` through a shared mapping of `fd`, where the file is long enough
/// (a store past its end would be `SIGBUS`) and the descriptor is open for writing.
fn mmap_write(fd: std::os::fd::BorrowedFd<'_>, off: u64, data: &[u8]) -> String {
    let size = match rustix::fs::fstat(fd) {
        Ok(st) => st.st_size as u64,
        Err(e) => return format!("errno {}", e.raw_os_error()),
    };
    let end = off + data.len() as u64;
    if data.is_empty() || end > size || rustix::fs::fstat(fd).is_ok_and(|st| st.st_mode & 0o170000 != 0o100000) {
        return "too short".into();
    }
    let len = end as usize;
    // SAFETY: a fresh shared mapping of `len` bytes of a regular file at least that long,
    // written within bounds and unmapped before return; no other reference to it exists.
    #[allow(unsafe_code)]
    let r = unsafe {
        let m = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        );
        if m == libc::MAP_FAILED {
            Err(std::io::Error::last_os_error())
        } else {
            std::ptr::copy_nonoverlapping(data.as_ptr(), (m as *mut u8).add(off as usize), data.len());
            let s = libc::msync(m, len, libc::MS_SYNC);
            libc::munmap(m, len);
            if s == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
        }
    };
    match r {
        Ok(()) => "ok".into(),
        Err(e) => format!("errno {}", e.raw_os_error().unwrap_or(-1)),
    }
}
