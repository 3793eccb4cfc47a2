//! The snapshot directories under `ROOT/snapshots`: `<id>/fs` (the snapshot's tree: an
//! active snapshot's upper, a committed layer), `<id>/work` (the union's work dir), and
//! `new-*` (one being prepared, renamed to `<id>` in the transaction that records it).
//! Everything is reached from a descriptor of `snapshots/`, never through a symlink, and a
//! removal never crosses into another filesystem mounted below.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::error::{Errno, Res};
use crate::sys::fs::{self as sfs, RenameMode};
use crate::sys::open::{self, OFlags};
use crate::sys::{dir as sdir, stat};

use super::meta::Usage;

/// The snapshot directories.
#[derive(Debug)]
pub struct Dirs {
    path: PathBuf,
    fd: OwnedFd,
}

fn cname(s: &str) -> Res<CString> {
    CString::new(s).map_err(|_| Errno::EINVAL)
}

impl Dirs {
    /// Opens (creating it) `path`.
    pub fn open(path: &Path) -> std::io::Result<Dirs> {
        std::fs::create_dir_all(path)?;
        let fd = open::open_dir_path(path)?;
        Ok(Dirs { path: path.to_path_buf(), fd })
    }

    /// Path of snapshot `id`'s tree.
    pub fn fs(&self, id: u64) -> PathBuf {
        self.path.join(id.to_string()).join("fs")
    }

    /// Path of snapshot `id`'s work dir.
    pub fn work(&self, id: u64) -> PathBuf {
        self.path.join(id.to_string()).join("work")
    }

    /// Path of directory `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Makes a `new-*` directory with an empty `fs` (owned by `owner`, when given) and
    /// `work`; returns its name.
    pub fn make_new(&self, owner: Option<(u32, u32)>) -> Res<String> {
        let mut bytes = [0u8; 8];
        crate::sys::io::random(&mut bytes)?;
        let name = format!("new-{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let c = cname(&name)?;
        sfs::mkdirat(&self.fd, &c, 0o700)?;
        let made = (|| {
            let d = open::openat(&self.fd, &c, OFlags::PATH | OFlags::DIRECTORY, 0)?;
            sfs::mkdirat(&d, c"fs", 0o755)?;
            sfs::mkdirat(&d, c"work", 0o700)?;
            if let Some((uid, gid)) = owner {
                sfs::chownat(&d, c"fs", Some(uid), Some(gid))?;
            }
            Ok(())
        })();
        match made {
            Ok(()) => Ok(name),
            Err(e) => {
                let _ignored = self.remove(&name);
                Err(e)
            }
        }
    }

    /// Renames directory `from` to `to`, which must not exist.
    pub fn rename(&self, from: &str, to: &str) -> Res<()> {
        sfs::renameat2(&self.fd, &cname(from)?, &self.fd, &cname(to)?, RenameMode::NoReplace)
    }

    /// The owner of snapshot `id`'s tree.
    pub fn owner(&self, id: u64) -> Res<(u32, u32)> {
        let d = open::openat(&self.fd, &cname(&id.to_string())?, OFlags::PATH | OFlags::DIRECTORY, 0)?;
        let st = stat::statat(&d, c"fs")?;
        Ok((st.uid, st.gid))
    }

    /// The names of every directory entry.
    pub fn names(&self) -> Res<Vec<String>> {
        let rd = open::open_dir_for_read(&self.fd)?;
        Ok(sdir::read_all(&rd)?.into_iter().map(|e| String::from_utf8_lossy(&e.name).into_owned()).collect())
    }

    /// Removes entry `name` and everything below it. A directory on another filesystem (a
    /// mount below) stops the removal with `EBUSY`: nothing of that filesystem is touched.
    pub fn remove(&self, name: &str) -> Res<()> {
        let c = cname(name)?;
        let dev = stat::fstat(&self.fd)?.dev;
        match stat::statat(&self.fd, &c) {
            Ok(st) if st.is_dir() => remove_dir(self.fd.as_fd(), &c, dev),
            Ok(_) => sfs::unlinkat(&self.fd, &c),
            Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Disk use of snapshot `id`'s tree, as `du` counts it: allocated blocks of each inode
    /// once, and the number of inodes, the tree's root included.
    pub fn usage(&self, id: u64) -> Res<Usage> {
        let d = open::openat(&self.fd, &cname(&id.to_string())?, OFlags::PATH | OFlags::DIRECTORY, 0)?;
        let fs = open::openat(&d, c"fs", OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
        let st = stat::fstat(&fs)?;
        let mut seen = std::collections::HashSet::new();
        seen.insert(st.ino);
        let mut blocks = st.blocks;
        count(fs.as_fd(), st.dev, &mut seen, &mut blocks)?;
        Ok(Usage {
            size: i64::try_from(blocks.saturating_mul(512)).unwrap_or(i64::MAX),
            inodes: i64::try_from(seen.len()).unwrap_or(i64::MAX),
        })
    }
}

/// Adds the inodes below `dir` (one filesystem) to `seen` and their blocks to `blocks`.
fn count(dir: BorrowedFd<'_>, dev: u64, seen: &mut std::collections::HashSet<u64>, blocks: &mut u64) -> Res<()> {
    for e in sdir::read_all(dir)? {
        let name = CString::new(e.name).map_err(|_| Errno::EINVAL)?;
        let st = match stat::statat(dir, &name) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        if st.dev != dev || !seen.insert(st.ino) {
            continue;
        }
        *blocks += st.blocks;
        if st.is_dir() {
            let sub = open::openat(dir, &name, OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
            count(sub.as_fd(), dev, seen, blocks)?;
        }
    }
    Ok(())
}

/// Removes directory `name` in `parent` and its contents, staying on filesystem `dev`.
fn remove_dir(parent: BorrowedFd<'_>, name: &CStr, dev: u64) -> Res<()> {
    let d = open::openat(parent, name, OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
    if stat::fstat(&d)?.dev != dev {
        return Err(Errno::EBUSY);
    }
    for e in sdir::read_all(&d)? {
        let child = CString::new(e.name).map_err(|_| Errno::EINVAL)?;
        let st = match stat::statat(&d, &child) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        if st.is_dir() {
            remove_dir(d.as_fd(), &child, dev)?;
        } else {
            match sfs::unlinkat(&d, &child) {
                Err(Errno::ENOENT) => {}
                r => r?,
            }
        }
    }
    sfs::rmdirat(parent, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_never_follows_a_symlink_and_usage_counts_like_du() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"x").unwrap();
        let dirs = Dirs::open(&t.path().join("snapshots")).unwrap();
        let name = dirs.make_new(None).unwrap();
        dirs.rename(&name, "7").unwrap();
        let fs = dirs.fs(7);
        std::fs::write(fs.join("a"), vec![1u8; 10000]).unwrap();
        std::fs::hard_link(fs.join("a"), fs.join("b")).unwrap();
        std::fs::create_dir(fs.join("d")).unwrap();
        std::os::unix::fs::symlink(&outside, fs.join("d/link")).unwrap();
        let du = std::process::Command::new("du").args(["-s", "-B1"]).arg(&fs).output().unwrap();
        let du: i64 = String::from_utf8_lossy(&du.stdout).split_whitespace().next().unwrap().parse().unwrap();
        let u = dirs.usage(7).unwrap();
        assert_eq!(u.size, du);
        assert_eq!(u.inodes, 4, "fs, a (b is the same inode), d, link");
        assert_eq!(dirs.rename(&dirs.make_new(None).unwrap(), "7"), Err(Errno::EEXIST));
        dirs.remove("7").unwrap();
        assert!(outside.join("keep").exists());
        assert!(!dirs.path("7").exists());
    }
}
