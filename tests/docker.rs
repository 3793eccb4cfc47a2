//! Docker 20.10 takes unionfs's docker-archive: `docker load` of `unionfs save --format
//! docker-archive`, the same image id, and `docker run` of it. A dockerd of the test's own
//! (data, exec root and socket in a scratch directory; no iptables, no bridge) is started
//! and stopped here. (Docker before 25 reads no OCI archives.)
//!
//! And Docker on unionfs: its `fuse-overlayfs` storage driver running unionfs (the
//! `fuse-overlayfs` first on dockerd's PATH): load, run, diff, commit, `ps -s`, build, save.

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
        Dockerd::start_with(false)
    }

    /// With `on_unionfs`, dockerd uses its `fuse-overlayfs` storage driver with unionfs as
    /// the `fuse-overlayfs` first on its PATH, in a mount namespace of its own.
    fn start_with(on_unionfs: bool) -> Option<Dockerd> {
        if !Path::new(DOCKERD).exists() || !Path::new(DOCKER).exists() {
            crate::common::skip("docker.io is not installed");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("unionfs-docker-").tempdir().unwrap();
        let d = dir.path();
        let log = std::fs::File::create(d.join("log")).unwrap();
        let mut cmd = if on_unionfs {
            let shim = d.join("path");
            std::fs::create_dir(&shim).unwrap();
            std::os::unix::fs::symlink(bin(), shim.join("fuse-overlayfs")).unwrap();
            let mut c = Command::new("unshare");
            c.args(["-m", "--propagation", "private", DOCKERD, "--storage-driver", "fuse-overlayfs"]);
            c.env("PATH", format!("{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", shim.display()));
            c
        } else {
            Command::new(DOCKERD)
        };
        let child = cmd
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .arg("-H")
            .arg(format!("unix://{}", d.join("sock").display()))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--ip-masq=false",
                "--userland-proxy=false",
            ])
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

/// A busybox image in a unionfs store under `d`, saved as a docker-archive: its id and file.
fn busybox_archive(d: &Path) -> (String, std::path::PathBuf) {
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
    (id, out)
}

#[test]
fn docker_loads_and_runs_a_unionfs_docker_archive() {
    need_root!();
    if !Path::new("/bin/busybox").exists() {
        crate::common::skip("busybox-static is not installed");
        return;
    }
    let Some(dk) = Dockerd::start() else { return };
    let (id, out) = busybox_archive(dk.dir.path());
    assert_eq!(dk.ok(&["load", "-i", out.to_str().unwrap()]), "Loaded image: localhost/bb:1\n");
    assert_eq!(dk.ok(&["image", "inspect", "--format", "{{.Id}}", "localhost/bb:1"]).trim(), id);
    let ran = dk.ok(&["run", "--rm", "--network=none", "localhost/bb:1", "cat", "/etc/motd"]);
    assert_eq!(ran, "from a unionfs archive\n");
}

#[test]
fn docker_runs_on_unionfs_through_its_fuse_overlayfs_driver() {
    need_root!();
    if !Path::new("/bin/busybox").exists() {
        crate::common::skip("busybox-static is not installed");
        return;
    }
    let Some(dk) = Dockerd::start_with(true) else { return };
    let d = dk.dir.path();
    assert_eq!(dk.ok(&["info", "--format", "{{.Driver}}"]).trim(), "fuse-overlayfs");
    let (_, out) = busybox_archive(d);
    dk.ok(&["load", "-i", out.to_str().unwrap()]);
    // A container's root is a unionfs mount in dockerd's namespace while it runs.
    let id = dk
        .ok(&[
            "run",
            "-d",
            "--network=none",
            "--name",
            "c1",
            "localhost/bb:1",
            "sh",
            "-c",
            "echo new > /new; rm /etc/motd; mkdir /dir; echo x > /dir/x; sleep 600",
        ])
        .trim()
        .to_string();
    let pid: u32 = read(d.join("pid")).trim().parse().unwrap();
    wait_for("the container's changes", || dk.docker(&["exec", "c1", "cat", "/dir/x"]).status.success());
    let mounts = read(format!("/proc/{pid}/mountinfo"));
    let root = dk.ok(&["inspect", "--format", "{{.GraphDriver.Data.MergedDir}}", &id]);
    assert!(mounts.lines().any(|l| l.contains(" - fuse.unionfs ") && l.contains(root.trim())), "{root} in {mounts}");
    let diff = dk.ok(&["diff", "c1"]);
    for want in ["A /new", "D /etc/motd", "A /dir", "A /dir/x"] {
        assert!(diff.lines().any(|l| l == want), "{want} in {diff}");
    }
    let sizes = dk.ok(&["ps", "-s", "--format", "{{.Size}}"]);
    assert!(sizes.starts_with("6B (virtual "), "/new and /dir/x: {sizes}");
    dk.ok(&["stop", "-t", "1", "c1"]);
    dk.ok(&["commit", "c1", "localhost/committed:1"]);
    let ran = dk.ok(&[
        "run",
        "--rm",
        "--network=none",
        "localhost/committed:1",
        "sh",
        "-c",
        "cat /new /dir/x; test ! -e /etc/motd && echo gone",
    ]);
    assert_eq!(ran, "new\nx\ngone\n");
    // A classic build: RUN steps on unionfs.
    let ctx = d.join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM localhost/committed:1\nRUN rm -r /dir && echo built > /built\n")
        .unwrap();
    let o = Command::new(DOCKER)
        .arg("-H")
        .arg(format!("unix://{}", d.join("sock").display()))
        .args(["build", "--network=none", "-t", "localhost/built:1"])
        .arg(&ctx)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(o.status.success(), "docker build: {}", String::from_utf8_lossy(&o.stderr));
    let ran = dk.ok(&[
        "run",
        "--rm",
        "--network=none",
        "localhost/built:1",
        "sh",
        "-c",
        "cat /built /new; ls /dir 2>&1 || true",
    ]);
    assert!(ran.starts_with("built\nnew\n") && ran.contains("No such file"), "{ran}");
    // Saved, and loaded back by a unionfs store: same id.
    let saved = d.join("built.tar");
    dk.ok(&["save", "-o", saved.to_str().unwrap(), "localhost/built:1"]);
    let o = Command::new(bin()).arg("--root").arg(d.join("ufs2")).args(["load", "-i"]).arg(&saved).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let docker_id = dk.ok(&["image", "inspect", "--format", "{{.Id}}", "localhost/built:1"]);
    let ours = Command::new(bin())
        .arg("--root")
        .arg(d.join("ufs2"))
        .args(["inspect", "--type", "image", "localhost/built:1"])
        .output()
        .unwrap();
    let ours: serde_json::Value = serde_json::from_slice(&ours.stdout).unwrap();
    assert_eq!(ours[0]["Id"].as_str(), Some(docker_id.trim()));
    dk.ok(&["rm", "c1"]);
}
