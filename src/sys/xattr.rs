//! Extended attributes of real files in layers.
//!
//! A file is named either by an open descriptor ([`XTarget::Fd`], the `f*xattr` calls) or as
//! entry `name` of an open directory ([`XTarget::At`], the `l*xattr` calls on
//! `/proc/self/fd/DIR/name`), so symlinks are never followed and no path is re-walked.

use std::ffi::CStr;
use std::os::fd::BorrowedFd;

use rustix::fs::XattrFlags;

use crate::error::{Errno, Res};
use crate::sys::open::proc_path;

/// The file whose extended attributes are read or written.
#[derive(Clone, Copy, Debug)]
pub enum XTarget<'a> {
    /// An open (not `O_PATH`) descriptor.
    Fd(BorrowedFd<'a>),
    /// Entry `name` of directory `dir` (`"."` for the directory itself).
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

fn get_into(t: XTarget<'_>, name: &CStr, buf: &mut [u8]) -> rustix::io::Result<usize> {
    match t {
        XTarget::Fd(fd) => rustix::fs::fgetxattr(fd, name, buf),
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
            XTarget::At(dir, n) => rustix::fs::llistxattr(proc_path(dir, n).as_c_str(), &mut buf[..]),
        };
        match r {
            Ok(n) => break n,
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(rustix::io::Errno::RANGE) if buf.len() < 1 << 20 => {
                let want = match t {
                    XTarget::Fd(fd) => rustix::fs::flistxattr_query(fd)?,
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
        XTarget::At(dir, n) => rustix::fs::lsetxattr(proc_path(dir, n).as_c_str(), name, value, mode.flags())?,
    };
    Ok(())
}

/// Safe wrapper for `removexattr(2)`.
pub fn remove(t: XTarget<'_>, name: &CStr) -> Res<()> {
    let _: () = match t {
        XTarget::Fd(fd) => rustix::fs::fremovexattr(fd, name)?,
        XTarget::At(dir, n) => rustix::fs::lremovexattr(proc_path(dir, n).as_c_str(), name)?,
    };
    Ok(())
}
