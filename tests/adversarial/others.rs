//! A user's own mount against everybody else: without `allow_other` it is hers alone. Root
//! and a third user get `EACCES`, whatever the files' modes say; her set-user-id files do
//! nothing (`nosuid`).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::common::{bin, ensure_test_user, user_tempdir};

#[test]
fn a_users_own_mount_is_hers_alone() {
    need_fuse!();
    need_root!();
    let (uid, gid) = ensure_test_user();
    let d = user_tempdir(uid, gid);
    super::util::open_up(d.path());
    let (lower, mnt) = (d.path().join("lower"), d.path().join("mnt"));
    for p in [&lower, &mnt] {
        std::fs::create_dir(p).unwrap();
        std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
    }
    std::fs::write(lower.join("open"), "for everyone").unwrap();
    std::fs::set_permissions(lower.join("open"), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::copy("/usr/bin/id", lower.join("id")).unwrap();
    std::os::unix::fs::chown(lower.join("id"), Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(lower.join("id"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    let as_her = |args: &[&str]| {
        Command::new(bin()).args(args).uid(uid).gid(gid).env_remove("XDG_RUNTIME_DIR").output().unwrap()
    };
    let upper = d.path().join("upper");
    let out = as_her(&[
        "mount",
        "--lower",
        lower.to_str().unwrap(),
        "--upper",
        upper.to_str().unwrap(),
        mnt.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    struct Unmount<F: Fn()>(F);
    impl<F: Fn()> Drop for Unmount<F> {
        fn drop(&mut self) {
            (self.0)();
        }
    }
    let _guard = Unmount(|| {
        let _ = as_her(&["umount", mnt.to_str().unwrap()]);
    });
    // She sees her files; her set-user-id binary runs as her.
    let mine = Command::new(mnt.join("id")).arg("-u").uid(uid).gid(gid).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&mine.stdout).trim(), uid.to_string(), "nosuid");
    // Root is refused, and so is anybody else.
    let e = std::fs::read(mnt.join("open")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "root read another user's mount: {e}");
    let other = Command::new("cat").arg(mnt.join("open")).uid(65534).gid(65534).output().unwrap();
    assert!(!other.status.success(), "another user read her mount");
    assert!(String::from_utf8_lossy(&other.stderr).contains("Permission denied"));
}
