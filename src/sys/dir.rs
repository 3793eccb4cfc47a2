//! Reading directory entries (`getdents64`).

use std::mem::MaybeUninit;
use std::os::fd::AsFd;

use rustix::fs::RawDir;

use crate::error::Res;
use crate::sys::stat::FileKind;

/// One entry of a real directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEntry {
    /// The name, without NUL.
    pub name: Vec<u8>,
    /// `d_ino`.
    pub ino: u64,
    /// `d_type`, or `None` when the filesystem says `DT_UNKNOWN`.
    pub kind: Option<FileKind>,
}

/// Safe wrapper for `getdents64(2)`: every entry of the directory open (for reading) as
/// `fd`, except `.` and `..`, in the order the filesystem returns them.
pub fn read_all(fd: impl AsFd) -> Res<Vec<RawEntry>> {
    let mut buf = vec![MaybeUninit::<u8>::uninit(); 64 * 1024];
    let mut dir = RawDir::new(fd, &mut buf);
    let mut out = Vec::new();
    while let Some(entry) = dir.next() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        out.push(RawEntry { name: name.to_vec(), ino: entry.ino(), kind: FileKind::from_dirent(entry.file_type()) });
    }
    Ok(out)
}
