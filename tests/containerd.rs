//! containerd takes unionfs's archives: `ctr images import` of `unionfs save` output (OCI
//! archive and docker-archive), then `ctr run` of the image. A containerd of the test's
//! own (its root, state and socket in a scratch directory) is started and stopped here.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Containerd {
    fn start() -> Option<Containerd> {
        if Command::new("containerd").arg("--version").output().is_err() {
            crate::common::skip("containerd is not installed");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("unionfs-ctd-").tempdir().unwrap();
        let d = dir.path();
        let conf = d.join("config.toml");
        std::fs::write(
            &conf,
            format!(
                "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n[grpc]\naddress = \"{0}/sock\"\n",
                d.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("log")).unwrap();
        let child = Command::new("containerd").arg("--config").arg(&conf).stderr(log).spawn().unwrap();
        let c = Containerd { dir, child };
        // Ready when it answers (a bound on a hung start, not a measure).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !c.ctr(&["version"]).status.success() {
            assert!(std::time::Instant::now() < deadline, "containerd did not start: {}", c.log());
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Some(c)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr").arg("--address").arg(self.dir.path().join("sock")).args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.ctr(args);
        assert!(o.status.success(), "ctr {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        unmount_below(self.dir.path());
    }
}

/// A unionfs store in `dir` with a busybox image whose command prints a file and a variable
/// set in its config.
fn busybox_store(dir: &Path) -> PathBuf {
    let root = dir.join("ufs");
    let img = dir.join("img");
    std::fs::create_dir_all(img.join("bin")).unwrap();
    std::fs::create_dir_all(img.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", img.join("bin/busybox")).unwrap();
    for a in ["sh", "cat", "echo"] {
        std::os::unix::fs::symlink("busybox", img.join("bin").join(a)).unwrap();
    }
    std::fs::write(img.join("etc/motd"), "from a unionfs archive\n").unwrap();
    let u = |args: &[&str]| {
        let o = Command::new(bin()).arg("--root").arg(&root).args(args).output().unwrap();
        assert!(o.status.success(), "unionfs {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    u(&["image", "import", "localhost/bb:1", img.to_str().unwrap()]);
    root
}

#[test]
fn containerd_imports_and_runs_unionfs_archives() {
    need_root!();
    let Some(c) = Containerd::start() else { return };
    if !Path::new("/bin/busybox").exists() {
        crate::common::skip("busybox-static is not installed");
        return;
    }
    let root = busybox_store(c.dir.path());
    for (i, format) in ["oci-archive", "docker-archive"].iter().enumerate() {
        let out = c.dir.path().join(format!("{format}.tar"));
        let o = Command::new(bin())
            .arg("--root")
            .arg(&root)
            .args(["save", "--format", format, "-o"])
            .arg(&out)
            .arg("localhost/bb:1")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        c.ok(&["images", "import", out.to_str().unwrap()]);
        assert!(c.ok(&["images", "ls", "-q"]).lines().any(|l| l == "localhost/bb:1"), "{format}");
        let name = format!("t{i}");
        let ran = c.ok(&["run", "--rm", "localhost/bb:1", &name, "cat", "/etc/motd"]);
        assert_eq!(ran, "from a unionfs archive\n", "{format}");
        c.ok(&["images", "rm", "localhost/bb:1"]);
    }
}
