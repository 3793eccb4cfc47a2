//! The operating-system boundary.
//!
//! Every system call the daemon makes on a layer goes through a safe wrapper in this module,
//! and every wrapper returns [`Res`], so errno mapping happens here and
//! nowhere else. Wrappers take `BorrowedFd`/`impl AsFd` and `&CStr`, and return `OwnedFd`.
//!
//! Rules for adding a wrapper:
//! * name it after the syscall and document it as "Safe wrapper for `x(2)`";
//! * anything that resolves a multi-component path inside a layer goes through
//!   [`open::resolve_beneath`] (openat2 with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), so a
//!   symlink inside a layer is never followed by the daemon;
//! * single-component operations take a directory fd plus a name that has no `/`
//!   ([`name_ok`] checks it) and never follow a final symlink;
//! * `unsafe` is allowed only here (`#[allow(unsafe_code)]` on the module or the item:
//!   [`handle`], [`inherit`], [`uring`], [`fileattr`], [`io`], [`xattr`], [`proc`]),
//!   with one `// SAFETY:` comment
//!   per block.

pub mod dir;
pub mod fileattr;
pub mod fs;
pub mod handle;
pub mod inherit;
pub mod io;
pub mod notify;
pub mod open;
pub mod proc;
pub mod stat;
pub mod uring;
pub mod xattr;

use std::ffi::{CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;

use crate::error::{Errno, Res};

/// Longest file name the union accepts (as ext4 and the kernel's `NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// Checks that `name` is one path component: not empty, not `.` or `..`, no `/`, at most
/// [`NAME_MAX`] bytes.
pub fn name_ok(name: &[u8]) -> Res<()> {
    if name.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// Converts an `OsStr` name from the kernel into a `CString` component.
pub fn cname(name: &OsStr) -> Res<CString> {
    name_ok(name.as_bytes())?;
    CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)
}

/// `"."`, the name used to operate on a directory fd itself.
pub const DOT: &CStr = c".";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rules() {
        assert!(name_ok(b"a").is_ok());
        assert_eq!(name_ok(b""), Err(Errno::EINVAL));
        assert_eq!(name_ok(b".."), Err(Errno::EINVAL));
        assert_eq!(name_ok(b"a/b"), Err(Errno::EINVAL));
        assert!(name_ok(&[b'x'; 255]).is_ok());
        assert_eq!(name_ok(&[b'x'; 256]), Err(Errno::ENAMETOOLONG));
    }
}
