//! Why a normal user's mount failed, in words: the kernel and fuser only say "permission
//! denied" whether `/dev/fuse` is closed to the user, `fusermount3` is missing or not
//! set-user-id, or `allow_other` needs `user_allow_other` in `/etc/fuse.conf`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The `fusermount3` a mount by this process runs, as fuser looks for it:
/// `$FUSERMOUNT_PATH`, else `fusermount3` or `fusermount` on `PATH`, in `/sbin`, in `/bin`.
pub fn fusermount() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FUSERMOUNT_PATH") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    dirs.extend([PathBuf::from("/sbin"), PathBuf::from("/bin")]);
    for name in ["fusermount3", "fusermount"] {
        if let Some(p) = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) {
            return Some(p);
        }
    }
    None
}

/// What keeps a normal user's mount from working, as one sentence with the fix, if this
/// machine shows a cause; `None` when everything a user mount needs is in place.
pub fn explain(allow_other: bool) -> Option<String> {
    let dev = Path::new("/dev/fuse");
    if !dev.exists() {
        return Some("/dev/fuse does not exist: load the fuse module (`modprobe fuse`, as root)".into());
    }
    if let Ok(false) = crate::sys::fs::can_read_write(dev) {
        return Some(
            "this user cannot open /dev/fuse: as root, run `chmod 666 /dev/fuse` (or add the user to the group \
             that owns it)"
                .into(),
        );
    }
    let Some(fm) = fusermount() else {
        return Some(
            "fusermount3 is not installed (or not on PATH): install the fuse3 package (`apt-get install fuse3`)".into(),
        );
    };
    let setuid_root = std::fs::metadata(&fm).is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0 && m.permissions().mode() & 0o4000 != 0
    });
    if !setuid_root {
        return Some(format!(
            "{} is not set-user-id root, so a normal user cannot mount with it: as root, run `chmod u+s {}` \
             (or reinstall fuse3)",
            fm.display(),
            fm.display()
        ));
    }
    if allow_other && !user_allow_other() {
        return Some(
            "-o allow_other needs `user_allow_other` in /etc/fuse.conf (add that line as root), or leave the option out"
                .into(),
        );
    }
    None
}

/// Whether `/etc/fuse.conf` lets normal users mount with `allow_other`.
fn user_allow_other() -> bool {
    std::fs::read_to_string("/etc/fuse.conf")
        .is_ok_and(|t| t.lines().any(|l| l.split('#').next().unwrap_or("").trim() == "user_allow_other"))
}
