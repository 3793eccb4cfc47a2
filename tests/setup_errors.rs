//! A normal user's mount that cannot work says why, in one line with the fix: `/dev/fuse`
//! closed to the user, `fusermount3` missing or not set-user-id, `allow_other` without
//! `user_allow_other`. These tests change `/dev/fuse`'s mode, so they hold the machine
//! alone (`common::machine`), and put everything back, also when they fail.

use crate::common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// Runs `unionfs mount` as the test user with `env`; returns (success, stderr).
fn user_mount(dir: &Path, env: &[(&str, &str)], extra: &[&str]) -> (bool, String) {
    let mut c = Command::new("runuser");
    c.args(["-u", TEST_USER, "--", "env"]);
    for (k, v) in env {
        c.arg(format!("{k}={v}"));
    }
    c.arg(bin()).arg("mount").arg("--lower").arg(dir.join("l")).args(extra).arg(dir.join("m"));
    let o = c.output().unwrap();
    if o.status.success() {
        let _ = Command::new("runuser").args(["-u", TEST_USER, "--", bin(), "umount"]).arg(dir.join("m")).status();
    }
    (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn fixture() -> tempfile::TempDir {
    let (uid, gid) = ensure_test_user();
    let d = user_tempdir(uid, gid);
    for s in ["l", "m"] {
        std::fs::create_dir(d.path().join(s)).unwrap();
        std::os::unix::fs::chown(d.path().join(s), Some(uid), Some(gid)).unwrap();
    }
    d
}

fn one_line(err: &str, needles: &[&str]) {
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for n in needles {
        assert!(err.contains(n), "{err:?} should mention {n:?}");
    }
}

/// Puts `/dev/fuse`'s mode back on drop.
struct DevMode(u32);

impl Drop for DevMode {
    fn drop(&mut self) {
        std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(self.0)).unwrap();
    }
}

#[test]
fn dev_fuse_closed_to_the_user_is_named() {
    need_fuse!();
    need_root!();
    let d = fixture();
    let before = std::fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o7777;
    let _restore = DevMode(before);
    std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(0o600)).unwrap();
    let (ok, err) = user_mount(d.path(), &[], &[]);
    assert!(!ok);
    one_line(&err, &["cannot open /dev/fuse", "chmod 666 /dev/fuse"]);
}

#[test]
fn fusermount3_missing_or_not_setuid_is_named() {
    need_fuse!();
    need_root!();
    let d = fixture();
    let (ok, err) = user_mount(d.path(), &[("FUSERMOUNT_PATH", "/nonexistent/fusermount3")], &[]);
    assert!(!ok);
    one_line(&err, &["fusermount3 is not installed", "fuse3"]);
    // A copy without the set-user-id bit.
    let copy = d.path().join("fusermount3");
    std::fs::copy(unionfs::preflight::fusermount().unwrap(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ok, err) = user_mount(d.path(), &[("FUSERMOUNT_PATH", copy.to_str().unwrap())], &[]);
    assert!(!ok);
    one_line(&err, &["is not set-user-id root", "chmod u+s"]);
    // And the real one works.
    let (ok, err) = user_mount(d.path(), &[], &[]);
    assert!(ok, "{err}");
}

#[test]
fn allow_other_without_user_allow_other_is_named() {
    need_fuse!();
    need_root!();
    let d = fixture();
    let conf = std::fs::read_to_string("/etc/fuse.conf").ok();
    let allowed = conf.as_deref().is_some_and(|t| t.lines().any(|l| l.trim() == "user_allow_other"));
    // Without the line (put back as it was after).
    struct Conf(Option<String>);
    impl Drop for Conf {
        fn drop(&mut self) {
            match &self.0 {
                Some(t) => std::fs::write("/etc/fuse.conf", t).unwrap(),
                None => {
                    let _ = std::fs::remove_file("/etc/fuse.conf");
                }
            }
        }
    }
    let _restore = Conf(conf.clone());
    if allowed {
        let kept: Vec<&str> =
            conf.as_deref().unwrap_or("").lines().filter(|l| l.trim() != "user_allow_other").collect();
        std::fs::write("/etc/fuse.conf", kept.join("\n")).unwrap();
    }
    let (ok, err) = user_mount(d.path(), &[], &["-o", "allow_other"]);
    assert!(!ok);
    one_line(&err, &["allow_other needs `user_allow_other`", "/etc/fuse.conf"]);
}
