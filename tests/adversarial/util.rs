//! Helpers of the red-team tests: running shell steps as the second user, an ext4 upper.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::{FsMount, ensure_test_user};

/// Runs `script` with `sh -c` as the test user in directory `dir`; returns its output.
pub fn as_user(dir: &Path, script: &str) -> Output {
    let (uid, gid) = ensure_test_user();
    Command::new("sh").arg("-c").arg(script).current_dir(dir).uid(uid).gid(gid).output().unwrap()
}

/// Starts `script` as the test user with piped standard input and output.
pub fn spawn_as_user(dir: &Path, script: &str) -> std::process::Child {
    let (uid, gid) = ensure_test_user();
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Lets every user reach into `dir` (temporary directories are 0700).
pub fn open_up(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A fresh ext4 of `mib` MiB mounted at `at` (ext4 hands a freed inode number to the next
/// file made at once, which tmpfs does not).
pub fn mount_ext4(at: &Path, mib: u64) -> FsMount {
    let img = at.with_extension("img");
    std::fs::File::create(&img).unwrap().set_len(mib << 20).unwrap();
    let ok = Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img).status().unwrap().success();
    assert!(ok, "mkfs.ext4");
    std::fs::create_dir_all(at).unwrap();
    let ok = Command::new("mount").args(["-o", "loop"]).arg(&img).arg(at).status().unwrap().success();
    assert!(ok, "mount ext4 image");
    FsMount(at.to_path_buf(), Some(img))
}

/// The standard output of a command that must succeed.
pub fn stdout_ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The container manager with its own state root under a directory every user may enter
/// (so only the store's own permissions protect it).
pub struct Mgr {
    pub dir: tempfile::TempDir,
    pub root: std::path::PathBuf,
}

impl Mgr {
    pub fn new() -> Mgr {
        let dir = tempfile::Builder::new().prefix("unionfs-adv-mgr-").tempdir().unwrap();
        open_up(dir.path());
        let root = dir.path().join("root");
        Mgr { dir, root }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(crate::common::bin()).arg("--root").arg(&self.root).args(args).output().unwrap()
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        stdout_ok(&self.run(args), &format!("unionfs {args:?}"))
    }

    /// Runs and expects failure with one line on stderr; returns it.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "unionfs {args:?} should fail; stdout {}", String::from_utf8_lossy(&o.stdout));
        assert_eq!(err.trim_end().lines().count(), 1, "one line for {args:?}: {err}");
        err
    }
}

impl Drop for Mgr {
    fn drop(&mut self) {
        // Remove every container of this store (running ones are stopped), whatever the
        // test did. Names are the last column of `ps -a`.
        let out = Command::new(crate::common::bin()).arg("--root").arg(&self.root).args(["ps", "-a"]).output();
        if let Ok(out) = out {
            for line in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
                if let Some(name) = line.split_whitespace().last() {
                    let _ = Command::new(crate::common::bin())
                        .arg("--root")
                        .arg(&self.root)
                        .args(["rm", "-f", name])
                        .output();
                }
            }
        }
    }
}
