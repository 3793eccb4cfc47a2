//! [4] Symlinks swapped in under a name the daemon is about to change. A user who can
//! write to an upper directory (rootless layouts, volumes, `-v /host/dir`) replaces a file
//! with a symlink to a root-owned file while she changes that file through the mount: the
//! root daemon must change only the object it checked, never what a symlink points to.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::common::{Stack, getxattr};

/// Changes through the mount that take a name in the daemon.
const ROUNDS: usize = 4000;

/// Swaps `upper/f` between a regular file and a symlink to `victim` until `stop`.
fn swapper(upper: PathBuf, victim: PathBuf, stop: Arc<AtomicBool>) {
    let (link, file, f) = (upper.join(".l"), upper.join(".r"), upper.join("f"));
    while !stop.load(Ordering::Relaxed) {
        let _ = std::fs::remove_file(&link);
        let _ = std::os::unix::fs::symlink(&victim, &link);
        let _ = std::fs::rename(&link, &f);
        let _ = std::fs::write(&file, "mine");
        let _ = std::fs::rename(&file, &f);
    }
}

/// What the victim looks like: mode, owner, size, mtime, xattrs.
fn fingerprint(p: &Path) -> (u32, u32, u64, i64, Option<Vec<u8>>) {
    let m = std::fs::metadata(p).unwrap();
    (m.mode(), m.uid(), m.len(), m.mtime(), getxattr(p, "user.x"))
}

#[test]
fn changes_through_the_mount_never_follow_a_symlink_swapped_into_the_upper() {
    need_fuse!();
    need_root!();
    let s = Stack::empty(1);
    let victim = s.dir.path().join("victim");
    std::fs::write(&victim, "secret").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = fingerprint(&victim);
    std::fs::write(s.lower(0).join("f"), "lower").unwrap();
    let m = s.mount();
    // Copied up, so the daemon changes the upper file by its name.
    std::fs::write(s.m("f"), "upper").unwrap();
    // The test itself must never follow the symlink: it reaches the mount's file through a
    // descriptor opened before the swaps start (a new lookup of the name could see the
    // symlink, and then the kernel would follow it in this root process, not the daemon).
    let held = std::fs::File::open(s.m("f")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sw = {
        let (u, v, st) = (s.upper.clone(), victim.clone(), stop.clone());
        std::thread::spawn(move || swapper(u, v, st))
    };
    let f = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&held));
    let at = rustix::fs::CWD;
    for i in 0..ROUNDS {
        let _ = match i % 5 {
            0 => std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666 | (i as u32 & 1) << 6)),
            1 => std::os::unix::fs::chown(&f, Some(1000 + (i as u32 & 1)), None),
            2 => std::fs::OpenOptions::new().write(true).open(&f).and_then(|h| h.set_len(1)),
            3 => {
                let t = rustix::fs::Timestamps {
                    last_access: rustix::fs::Timespec { tv_sec: 0, tv_nsec: 0 },
                    last_modification: rustix::fs::Timespec { tv_sec: 0, tv_nsec: 0 },
                };
                rustix::fs::utimensat(at, f.as_str(), &t, rustix::fs::AtFlags::empty()).map_err(std::io::Error::from)
            }
            _ => rustix::fs::setxattr(f.as_str(), "user.x", b"planted", rustix::fs::XattrFlags::empty())
                .map_err(std::io::Error::from),
        };
    }
    stop.store(true, Ordering::Relaxed);
    sw.join().unwrap();
    assert_eq!(fingerprint(&victim), before, "the root daemon changed the file a swapped-in symlink points to");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "secret");
    drop(m);
}
