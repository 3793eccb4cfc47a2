//! Docker 20.10 takes unionfs's docker-archive: `docker load` of `unionfs save --format
//! docker-archive`, the same image id, and `docker run` of it. A dockerd of the test's own
//! (data, exec root and socket in a scratch directory; no iptables, no bridge) is started
//! and stopped here. (Docker before 25 reads no OCI archives.)

use crate::common::*;
use std::path::Path;
use std::process::{Child, Command, Output};

/// Debian's docker.io (the client that matches its daemon).
const DOCKER: &str = "/usr/bin/docker";
const DOCKERD: &str = "/usr/sbin/dockerd";

struct Dockerd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Dockerd {
    fn start() -> Option<Dockerd> {
        if !Path::new(DOCKERD).exists() || !Path::new(DOCKER).exists() {
            crate::common::skip("docker.io is not installed");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("unionfs-docker-").tempdir().unwrap();
        let d = dir.path();
        let log = std::fs::File::create(d.join("log")).unwrap();
        let child = Command::new(DOCKERD)
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .arg("-H")
            .arg(format!("unix://{}", d.join("sock").display()))
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let c = Dockerd { dir, child };
        // Ready when it answers (a bound on a hung start, not a measure).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !c.docker(&["version"]).status.success() {
            assert!(std::time::Instant::now() < deadline, "dockerd did not start: {}", c.log());
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Some(c)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .arg("-H")
            .arg(format!("unix://{}", self.dir.path().join("sock").display()))
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(o.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(self.child.id() as i32).unwrap(),
            rustix::process::Signal::TERM,
        );
        let _ = self.child.wait();
        unmount_below(self.dir.path());
    }
}

#[test]
fn docker_loads_and_runs_a_unionfs_docker_archive() {
    need_root!();
    if !Path::new("/bin/busybox").exists() {
        crate::common::skip("busybox-static is not installed");
        return;
    }
    let Some(dk) = Dockerd::start() else { return };
    let d = dk.dir.path();
    let img = d.join("img");
    std::fs::create_dir_all(img.join("bin")).unwrap();
    std::fs::create_dir_all(img.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", img.join("bin/busybox")).unwrap();
    for a in ["sh", "cat"] {
        std::os::unix::fs::symlink("busybox", img.join("bin").join(a)).unwrap();
    }
    std::fs::write(img.join("etc/motd"), "from a unionfs archive\n").unwrap();
    let u = |args: &[&str]| {
        let o = Command::new(bin()).arg("--root").arg(d.join("ufs")).args(args).output().unwrap();
        assert!(o.status.success(), "unionfs {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let id = u(&["image", "import", "localhost/bb:1", img.to_str().unwrap()]).trim().to_string();
    let out = d.join("bb.tar");
    u(&["save", "--format", "docker-archive", "-o", out.to_str().unwrap(), "localhost/bb:1"]);
    assert_eq!(dk.ok(&["load", "-i", out.to_str().unwrap()]), "Loaded image: localhost/bb:1\n");
    assert_eq!(dk.ok(&["image", "inspect", "--format", "{{.Id}}", "localhost/bb:1"]).trim(), id);
    let ran = dk.ok(&["run", "--rm", "--network=none", "localhost/bb:1", "cat", "/etc/motd"]);
    assert_eq!(ran, "from a unionfs archive\n");
}
