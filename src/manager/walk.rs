//! Walking a layer or writable-layer directory by descriptors, never following a symlink,
//! in a stable order (names sorted bytewise, a directory before its contents).

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use crate::error::{Context, Errno, Error};
use crate::sys::open::{self, OFlags};
use crate::sys::stat::{self, Stat};

/// One entry met by [`walk`].
#[derive(Debug)]
pub struct Entry<'a> {
    /// Path relative to the walk's root, `/`-separated, no leading `./`.
    pub rel: &'a [u8],
    /// The directory holding it.
    pub dir: BorrowedFd<'a>,
    /// Its name in `dir`.
    pub name: &'a CString,
    /// Its status.
    pub stat: Stat,
}

/// What to do after visiting a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Visit its contents.
    Descend,
    /// Do not look inside.
    Skip,
}

/// Visits every entry below `root` (not `root` itself) in order.
pub fn walk(root: &Path, visit: &mut dyn FnMut(&Entry<'_>) -> Result<Step, Error>) -> Result<(), Error> {
    let fd = open::open_dir_path(root).context(|| format!("cannot open '{}'", root.display()))?;
    walk_fd(fd.as_fd(), &mut Vec::new(), visit)
}

fn walk_fd(
    dir: BorrowedFd<'_>,
    prefix: &mut Vec<u8>,
    visit: &mut dyn FnMut(&Entry<'_>) -> Result<Step, Error>,
) -> Result<(), Error> {
    let rd = open::open_dir_for_read(dir)
        .map_err(|e| Error::io(format!("cannot read '{}'", String::from_utf8_lossy(prefix)), e))?;
    let mut names: Vec<Vec<u8>> = crate::sys::dir::read_all(&rd)
        .map_err(|e| Error::io(format!("cannot read '{}'", String::from_utf8_lossy(prefix)), e))?
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    for n in names {
        let name = CString::new(n.clone()).map_err(|_| Error::msg("bad name"))?;
        let st = match stat::statat(dir, &name) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(Error::io(format!("cannot stat '{}'", String::from_utf8_lossy(&n)), e)),
        };
        let len = prefix.len();
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(&n);
        let step = visit(&Entry { rel: prefix, dir, name: &name, stat: st })?;
        if st.is_dir() && step == Step::Descend {
            let sub: OwnedFd = open::openat(dir, &name, OFlags::PATH | OFlags::DIRECTORY, 0)
                .map_err(|e| Error::io(format!("cannot open '{}'", String::from_utf8_lossy(prefix)), e))?;
            walk_fd(sub.as_fd(), prefix, visit)?;
        }
        prefix.truncate(len);
    }
    Ok(())
}

/// The bytes a tree holds: the sizes of its non-directories, each hard-linked inode once
/// (what `docker ps -s` counts).
pub fn tree_size(root: &Path) -> Result<u64, Error> {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    walk(root, &mut |e| {
        if !e.stat.is_dir() && (e.stat.nlink <= 1 || seen.insert((e.stat.dev, e.stat.ino))) {
            total += e.stat.size;
        }
        Ok(Step::Descend)
    })?;
    Ok(total)
}
