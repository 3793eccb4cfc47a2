//! Extended attributes of real files in layers.
//!
//! A file is named either by an open descriptor ([`XTarget::Fd`], the `f*xattr` calls) or as
//! entry `name` of an open directory ([`XTarget::At`]: the `*xattrat` calls of Linux 6.13+
//! where the kernel has them, else the `l*xattr` calls on `/proc/self/fd/DIR/name`), so
//! symlinks are never followed and no path is re-walked.

use std::ffi::CStr;
use std::os::fd::BorrowedFd;

use rustix::fs::XattrFlags;

use crate::error::{Errno, Res};
use crate::sys::open::{proc_fd_path, proc_path};

/// The file whose extended attributes are read or written.
#[derive(Clone, Copy, Debug)]
pub enum XTarget<'a> {
    /// An open (not `O_PATH`) descriptor.
    Fd(BorrowedFd<'a>),
    /// Entry `name` of directory `dir` (`"."` for the directory itself; empty: the object
    /// `dir` holds, an `O_PATH` descriptor of anything but a symlink).
    At(BorrowedFd<'a>, &'a CStr),
}

/// How [`set`] treats an existing attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetMode {
    /// Create or replace.
    Any,
    /// Fail with `EEXIST` if it exists.
    Create,
    /// Fail with `ENODATA` if it does not exist.
    Replace,
}

impl SetMode {
    /// From the `flags` argument of `setxattr(2)`.
    pub fn from_flags(flags: i32) -> Res<SetMode> {
        match flags {
            0 => Ok(SetMode::Any),
            libc::XATTR_CREATE => Ok(SetMode::Create),
            libc::XATTR_REPLACE => Ok(SetMode::Replace),
            _ => Err(Errno::EINVAL),
        }
    }

    fn flags(self) -> XattrFlags {
        match self {
            SetMode::Any => XattrFlags::empty(),
            SetMode::Create => XattrFlags::CREATE,
            SetMode::Replace => XattrFlags::REPLACE,
        }
    }
}

/// The `*xattrat` system calls (Linux 6.13), where this kernel has them: they name an entry
/// of an open directory directly, where the `l*xattr` calls need a `/proc/self/fd/DIR/NAME`
/// path the kernel resolves through procfs, a walk that costs several times the call
/// itself (`docs/performance.md`, "Where the time goes").
#[allow(unsafe_code)]
mod at {
    use std::ffi::CStr;
    use std::os::fd::{AsRawFd, BorrowedFd};
    use std::sync::OnceLock;

    use rustix::io::{Errno, Result};

    // The generic system call table's numbers, the same on every architecture Linux 6.13 has.
    const SETXATTRAT: libc::c_long = 463;
    const GETXATTRAT: libc::c_long = 464;
    const LISTXATTRAT: libc::c_long = 465;
    const REMOVEXATTRAT: libc::c_long = 466;

    /// `struct xattr_args`.
    #[repr(C)]
    struct XattrArgs {
        value: u64,
        size: u32,
        flags: u32,
    }

    fn ret(r: libc::c_long) -> Result<usize> {
        if r < 0 {
            Err(Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)))
        } else {
            Ok(r as usize)
        }
    }

    fn get_raw(dir: libc::c_int, path: &CStr, attr: &CStr, buf: &mut [u8]) -> Result<usize> {
        let args =
            XattrArgs { value: buf.as_mut_ptr() as u64, size: buf.len().min(u32::MAX as usize) as u32, flags: 0 };
        // SAFETY: the strings are NUL-terminated, `args` points at `buf` (writable for
        // `size` bytes) and lives for the call; the kernel reads `size_of::<XattrArgs>()` bytes.
        ret(unsafe {
            libc::syscall(
                GETXATTRAT,
                dir,
                path.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
                attr.as_ptr(),
                &args as *const XattrArgs,
                size_of::<XattrArgs>(),
            )
        })
    }

    /// Whether the kernel has them (tried once; a seccomp filter that refuses unknown system
    /// calls answers `ENOSYS` or `EPERM`).
    pub fn available() -> bool {
        static ANSWER: OnceLock<bool> = OnceLock::new();
        *ANSWER.get_or_init(|| {
            !matches!(get_raw(libc::AT_FDCWD, c"/", c"user.unionfs.probe", &mut []), Err(Errno::NOSYS | Errno::PERM))
        })
    }

    /// `getxattrat`; an empty `buf` asks for the size.
    pub fn get(dir: BorrowedFd<'_>, name: &CStr, attr: &CStr, buf: &mut [u8]) -> Result<usize> {
        get_raw(dir.as_raw_fd(), name, attr, buf)
    }

    /// `listxattrat`; an empty `buf` asks for the size.
    pub fn list(dir: BorrowedFd<'_>, name: &CStr, buf: &mut [u8]) -> Result<usize> {
        // SAFETY: the name is NUL-terminated; `buf` is writable for its length.
        ret(unsafe {
            libc::syscall(
                LISTXATTRAT,
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
                buf.as_mut_ptr(),
                buf.len(),
            )
        })
    }

    /// `setxattrat` with `XATTR_CREATE`/`XATTR_REPLACE` `flags`.
    pub fn set(dir: BorrowedFd<'_>, name: &CStr, attr: &CStr, value: &[u8], flags: u32) -> Result<()> {
        let args = XattrArgs { value: value.as_ptr() as u64, size: value.len().min(u32::MAX as usize) as u32, flags };
        // SAFETY: the strings are NUL-terminated, `args` points at `value` (readable for
        // `size` bytes) and lives for the call.
        ret(unsafe {
            libc::syscall(
                SETXATTRAT,
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
                attr.as_ptr(),
                &args as *const XattrArgs,
                size_of::<XattrArgs>(),
            )
        })
        .map(|_| ())
    }

    /// `removexattrat`.
    pub fn remove(dir: BorrowedFd<'_>, name: &CStr, attr: &CStr) -> Result<()> {
        // SAFETY: the strings are NUL-terminated.
        ret(unsafe {
            libc::syscall(REMOVEXATTRAT, dir.as_raw_fd(), name.as_ptr(), libc::AT_SYMLINK_NOFOLLOW, attr.as_ptr())
        })
        .map(|_| ())
    }
}

fn get_into(t: XTarget<'_>, name: &CStr, buf: &mut [u8]) -> rustix::io::Result<usize> {
    match t {
        XTarget::Fd(fd) => rustix::fs::fgetxattr(fd, name, buf),
        XTarget::At(dir, n) if n.is_empty() => rustix::fs::getxattr(proc_fd_path(dir).as_c_str(), name, buf),
        XTarget::At(dir, n) if at::available() => at::get(dir, n, name, buf),
        XTarget::At(dir, n) => rustix::fs::lgetxattr(proc_path(dir, n).as_c_str(), name, buf),
    }
}

/// Safe wrapper for `getxattr(2)`: `Ok(None)` when the attribute does not exist.
pub fn get(t: XTarget<'_>, name: &CStr) -> Res<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    loop {
        match get_into(t, name, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(rustix::io::Errno::NODATA) => return Ok(None),
            // Unsupported by the filesystem, or a namespace this process may not read: for
            // the union that is the same as "not there".
            Err(rustix::io::Errno::NOTSUP) => return Ok(None),
            Err(rustix::io::Errno::RANGE) if buf.len() < 65536 * 2 => {
                let want = size_of(t, name)?;
                buf.resize(want.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn size_of(t: XTarget<'_>, name: &CStr) -> Res<usize> {
    Ok(match t {
        XTarget::Fd(fd) => rustix::fs::fgetxattr_query(fd, name)?,
        XTarget::At(dir, n) if n.is_empty() => rustix::fs::getxattr_query(proc_fd_path(dir).as_c_str(), name)?,
        XTarget::At(dir, n) if at::available() => at::get(dir, n, name, &mut [])?,
        XTarget::At(dir, n) => rustix::fs::lgetxattr_query(proc_path(dir, n).as_c_str(), name)?,
    })
}

/// Whether the attribute exists and equals `value`.
pub fn has_value(t: XTarget<'_>, name: &CStr, value: &[u8]) -> Res<bool> {
    Ok(get(t, name)?.as_deref() == Some(value))
}

/// Safe wrapper for `listxattr(2)`: the names, without their NUL terminators.
pub fn list(t: XTarget<'_>) -> Res<Vec<Vec<u8>>> {
    let mut buf = vec![0u8; 1024];
    let n = loop {
        let r = match t {
            XTarget::Fd(fd) => rustix::fs::flistxattr(fd, &mut buf[..]),
            XTarget::At(dir, n) if n.is_empty() => rustix::fs::listxattr(proc_fd_path(dir).as_c_str(), &mut buf[..]),
            XTarget::At(dir, n) if at::available() => at::list(dir, n, &mut buf[..]),
            XTarget::At(dir, n) => rustix::fs::llistxattr(proc_path(dir, n).as_c_str(), &mut buf[..]),
        };
        match r {
            Ok(n) => break n,
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(rustix::io::Errno::RANGE) if buf.len() < 1 << 20 => {
                let want = match t {
                    XTarget::Fd(fd) => rustix::fs::flistxattr_query(fd)?,
                    XTarget::At(dir, n) if n.is_empty() => rustix::fs::listxattr_query(proc_fd_path(dir).as_c_str())?,
                    XTarget::At(dir, n) if at::available() => at::list(dir, n, &mut [])?,
                    XTarget::At(dir, n) => rustix::fs::llistxattr_query(proc_path(dir, n).as_c_str())?,
                };
                buf.resize(want.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(e.into()),
        }
    };
    Ok(buf[..n].split(|&b| b == 0).filter(|s| !s.is_empty()).map(<[u8]>::to_vec).collect())
}

/// Safe wrapper for `setxattr(2)`.
pub fn set(t: XTarget<'_>, name: &CStr, value: &[u8], mode: SetMode) -> Res<()> {
    let _: () = match t {
        XTarget::Fd(fd) => rustix::fs::fsetxattr(fd, name, value, mode.flags())?,
        XTarget::At(dir, n) if n.is_empty() => {
            rustix::fs::setxattr(proc_fd_path(dir).as_c_str(), name, value, mode.flags())?
        }
        XTarget::At(dir, n) if at::available() => at::set(dir, n, name, value, mode.flags().bits())?,
        XTarget::At(dir, n) => rustix::fs::lsetxattr(proc_path(dir, n).as_c_str(), name, value, mode.flags())?,
    };
    Ok(())
}

/// Safe wrapper for `removexattr(2)`.
pub fn remove(t: XTarget<'_>, name: &CStr) -> Res<()> {
    let _: () = match t {
        XTarget::Fd(fd) => rustix::fs::fremovexattr(fd, name)?,
        XTarget::At(dir, n) if n.is_empty() => rustix::fs::removexattr(proc_fd_path(dir).as_c_str(), name)?,
        XTarget::At(dir, n) if at::available() => at::remove(dir, n, name)?,
        XTarget::At(dir, n) => rustix::fs::lremovexattr(proc_path(dir, n).as_c_str(), name)?,
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// Both ways of naming an entry of a directory (the `*xattrat` calls and the procfs
    /// path) see and change the same attributes, and never follow a symlink.
    #[test]
    fn entries_of_a_directory_by_either_call() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("link")).unwrap();
        let d = crate::sys::open::open_plain(dir.path(), rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY, 0)
            .unwrap();
        let d = d.as_fd();
        let t = XTarget::At(d, c"f");
        if set(t, c"user.t", b"one", SetMode::Create).is_err() {
            eprintln!("skipped: no user xattrs here");
            return;
        }
        assert!(at::available(), "this kernel (6.13+) has getxattrat");
        assert_eq!(get(t, c"user.t").unwrap().as_deref(), Some(&b"one"[..]));
        assert!(list(t).unwrap().contains(&b"user.t".to_vec()));
        assert_eq!(set(t, c"user.t", b"two", SetMode::Create), Err(Errno::EEXIST));
        assert_eq!(set(t, c"user.none", b"two", SetMode::Replace), Err(Errno::ENODATA));
        // A long value: the size is asked for, then read.
        let long = vec![7u8; 3000];
        set(t, c"user.long", &long, SetMode::Any).unwrap();
        assert_eq!(get(t, c"user.long").unwrap(), Some(long));
        // The procfs path sees the same.
        let p = proc_path(d, c"f");
        let mut buf = [0u8; 16];
        let n = rustix::fs::lgetxattr(p.as_c_str(), c"user.t", &mut buf).unwrap();
        assert_eq!(&buf[..n], b"one");
        remove(t, c"user.t").unwrap();
        assert_eq!(get(t, c"user.t").unwrap(), None);
        // The symlink itself, not its target (user xattrs on a symlink are refused).
        assert!(get(XTarget::At(d, c"link"), c"user.long").unwrap().is_none());
        assert!(set(XTarget::At(d, c"link"), c"user.t", b"x", SetMode::Any).is_err());
        // The directory itself.
        set(XTarget::At(d, c"."), c"user.d", b"d", SetMode::Any).unwrap();
        assert_eq!(get(XTarget::Fd(d), c"user.d").unwrap().as_deref(), Some(&b"d"[..]));
    }
}
