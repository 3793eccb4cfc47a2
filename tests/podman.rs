//! A real container engine on unionfs: podman (with runc) using the freshly built binary as
//! its overlay `mount_program`. Skipped (saying so) when podman is not installed; under
//! `UNIONFS_TEST_REQUIRE=all` (`scripts/test.sh` as root, which installs it) that fails.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Podman {
    dir: tempfile::TempDir,
    conf: PathBuf,
    /// Rootless: podman runs as the test user, in its own user namespace (subordinate ids
    /// from `/etc/subuid`), with its state under `dir`.
    user: Option<&'static str>,
}

impl Podman {
    fn new() -> Option<Podman> {
        let have = Command::new("podman").arg("--version").output().is_ok_and(|o| o.status.success())
            && Path::new("/bin/busybox").exists();
        if !have {
            crate::common::skip("podman, runc or busybox-static is not installed");
            return None;
        }
        let dir = tempfile::Builder::new().prefix("unionfs-podman-").tempdir().unwrap();
        let conf = dir.path().join("storage.conf");
        std::fs::write(
            &conf,
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n\
                 [storage.options.overlay]\nmount_program = \"{1}\"\n",
                dir.path().display(),
                bin()
            ),
        )
        .unwrap();
        Some(Podman { dir, conf, user: None })
    }

    /// Podman run by the test user (rootless), its storage and runtime state in a directory
    /// that user owns.
    fn rootless() -> Option<Podman> {
        let mut p = Podman::new()?;
        let (uid, gid) = ensure_test_user();
        let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
        assert!(
            subuid.lines().any(|l| l.starts_with(&format!("{TEST_USER}:"))),
            "{TEST_USER} has no subordinate ids in /etc/subuid"
        );
        for d in ["home", "run"] {
            std::fs::create_dir(p.dir.path().join(d)).unwrap();
        }
        Command::new("chown").arg("-R").arg(format!("{uid}:{gid}")).arg(p.dir.path()).status().unwrap();
        std::fs::set_permissions(p.dir.path().join("run"), std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        p.user = Some(TEST_USER);
        Some(p)
    }

    fn run(&self, args: &[&str]) -> Output {
        let common = ["--runtime", "runc", "--cgroup-manager=cgroupfs", "--events-backend=file"];
        let mut cmd = match self.user {
            None => Command::new("podman"),
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--", "env"])
                    .arg(format!("HOME={}", self.dir.path().join("home").display()))
                    .arg(format!("XDG_RUNTIME_DIR={}", self.dir.path().join("run").display()))
                    .arg("podman");
                c
            }
        };
        cmd.args(common).args(args).env("CONTAINERS_STORAGE_CONF", &self.conf).current_dir("/").output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "podman {args:?}: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn container(&self, args: &[&str]) -> String {
        let mut a = vec!["run", "--network=none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"];
        a.extend_from_slice(args);
        self.ok(&a)
    }

    /// A busybox image made without a registry.
    fn busybox_image(&self, name: &str) {
        let img = self.dir.path().join("img");
        std::fs::create_dir_all(img.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", img.join("bin/busybox")).unwrap();
        for a in [
            "sh", "ls", "cat", "echo", "rm", "mv", "mkdir", "touch", "cp", "sleep", "stat", "test", "wc", "head",
            "sort",
        ] {
            std::os::unix::fs::symlink("busybox", img.join("bin").join(a)).unwrap();
        }
        for d in ["etc", "tmp", "root", "var/lib"] {
            std::fs::create_dir_all(img.join(d)).unwrap();
        }
        std::fs::write(img.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        std::fs::write(img.join("etc/motd"), "base image\n").unwrap();
        let tar = self.dir.path().join("img.tar");
        assert!(
            Command::new("tar")
                .arg("-C")
                .arg(&img)
                .args(["--owner=0", "--group=0", "-cf"])
                .arg(&tar)
                .arg(".")
                .status()
                .unwrap()
                .success()
        );
        std::fs::set_permissions(&tar, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        self.ok(&["import", tar.to_str().unwrap(), name]);
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-a", "-f", "-t", "0"]);
        let _ = self.run(&["rmi", "-a", "-f"]);
        if self.user.is_some() {
            // Its storage (owned by subordinate ids) and the pause process of its namespace.
            let _ = self.run(&["system", "reset", "-f"]);
        }
        unmount_below(self.dir.path());
    }
}

#[test]
fn podman_runs_builds_diffs_and_commits_on_unionfs() {
    need_fuse!();
    need_root!();
    let Some(p) = Podman::new() else { return };
    p.busybox_image("localhost/bb:1");
    // Read, write, delete, rename, sh -c.
    let out = p.container(&[
        "--rm",
        "localhost/bb:1",
        "sh",
        "-c",
        "cat /etc/motd; echo new > /tmp/f; cat /tmp/f; rm /etc/motd; mv /etc/passwd /etc/pw; ls /etc",
    ]);
    assert!(
        out.contains("base image") && out.contains("new") && out.contains("pw") && !out.contains("motd\n"),
        "{out}"
    );
    // podman build with RUN steps that add, change and delete files and directories.
    let ctx = p.dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Containerfile"),
        "FROM localhost/bb:1\n\
         RUN mkdir -p /app/data && echo v1 > /app/version && echo x > /app/data/old && echo cfg > /etc/app.conf\n\
         RUN echo v2 > /app/version && rm /etc/app.conf && rm /etc/motd && mkdir /app/logs\n\
         RUN rm -rf /app/data && mkdir /app/data && echo fresh > /app/data/new\n",
    )
    .unwrap();
    p.ok(&["build", "--network=none", "-t", "localhost/app:1", ctx.to_str().unwrap()]);
    let out = p.container(&[
        "--rm",
        "localhost/app:1",
        "sh",
        "-c",
        "cat /app/version; ls /app/data; ls /etc; test -e /etc/app.conf || echo no-conf",
    ]);
    assert!(out.contains("v2") && out.contains("new") && !out.contains("old") && out.contains("no-conf"), "{out}");
    assert!(!out.contains("motd"), "a file deleted by a build step stays deleted: {out}");
    // A container's changes: podman diff, commit, run from the committed image.
    p.container(&[
        "--name",
        "changer",
        "localhost/app:1",
        "sh",
        "-c",
        "echo hi > /tmp/new; rm /app/version; mv /etc/passwd /etc/passwd.bak; mkdir /made",
    ]);
    let diff = p.ok(&["diff", "changer"]);
    for want in ["A /tmp/new", "D /app/version", "A /etc/passwd.bak", "D /etc/passwd", "A /made"] {
        assert!(diff.lines().any(|l| l == want), "podman diff lacks {want}:\n{diff}");
    }
    p.ok(&["commit", "changer", "localhost/app:2"]);
    let out = p.container(&["--rm", "localhost/app:2", "sh", "-c", "cat /tmp/new; ls /app; ls -d /made; ls /etc"]);
    assert!(
        out.contains("hi")
            && out.contains("logs")
            && !out.contains("version")
            && out.contains("/made")
            && out.contains("passwd.bak"),
        "{out}"
    );
    // Two containers of one image at once, each on its own unionfs mount.
    p.container(&["-d", "--name", "one", "localhost/app:1", "sleep", "60"]);
    p.container(&["-d", "--name", "two", "localhost/app:1", "sleep", "60"]);
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let ours =
        mounts.lines().filter(|l| l.contains(" fuse.unionfs ") && l.contains(p.dir.path().to_str().unwrap())).count();
    assert!(ours >= 2, "both containers are on unionfs mounts:\n{mounts}");
    p.ok(&["exec", "one", "sh", "-c", "echo mine > /tmp/one"]);
    let two = p.ok(&["exec", "two", "sh", "-c", "test -e /tmp/one && echo leaked || echo isolated"]);
    assert!(two.contains("isolated"), "{two}");
    p.ok(&["rm", "-f", "-t", "0", "one", "two", "changer"]);
}

/// Issue 18 item 16: rootless podman (a normal user, fusermount-free inside its user
/// namespace) with unionfs as `mount_program` shows the owners fuse-overlayfs shows, with the
/// engine's id mappings: `--userns=keep-id` (the user's own id inside, the image's root as
/// root) and `--uidmap 0:1:65535` (podman's own root, which no mapping covers, makes
/// `/etc/mtab` before the container starts), and the default.
#[test]
fn rootless_podman_maps_owners_as_fuse_overlayfs_does() {
    need_fuse!();
    need_root!();
    let Some(p) = Podman::rootless() else { return };
    p.busybox_image("localhost/bb:1");
    let (uid, _) = ensure_test_user();
    let script = "id -u; stat -c '%u:%g %n' /etc/passwd /bin/busybox; touch /etc/new; stat -c '%u:%g' /etc/new";
    let out = p.container(&["--rm", "--userns=keep-id", "--user", "root", "localhost/bb:1", "sh", "-c", script]);
    assert_eq!(out, "0\n0:0 /etc/passwd\n0:0 /bin/busybox\n0:0\n", "keep-id as root");
    let out =
        p.container(&["--rm", "--userns=keep-id", "localhost/bb:1", "sh", "-c", "id -u; stat -c '%u:%g' /etc/passwd"]);
    assert_eq!(out, format!("{uid}\n0:0\n"), "keep-id: the user's own id, the image's root as root");
    for map in [&["--uidmap", "0:1:65535", "--gidmap", "0:1:65535"][..], &[][..]] {
        let mut args = vec!["--rm"];
        args.extend_from_slice(map);
        args.extend_from_slice(&[
            "localhost/bb:1",
            "sh",
            "-c",
            "id -u; stat -c '%u:%g' /etc/passwd; touch /tmp/x; stat -c '%u:%g' /tmp/x; ls -l /etc/mtab",
        ]);
        let out = p.container(&args);
        assert!(out.starts_with("0\n0:0\n0:0\n"), "{map:?}: {out}");
        assert!(out.contains("/etc/mtab -> /proc/mounts"), "{map:?}: {out}");
    }
}

/// `unionfs` with its own state root in `dir`.
fn mgr(dir: &Path, args: &[&str]) -> String {
    let o = Command::new(bin()).arg("--root").arg(dir.join("ufs")).args(args).output().unwrap();
    assert!(o.status.success(), "unionfs {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn podman_archives_load_into_unionfs_and_unionfs_archives_load_into_podman() {
    need_fuse!();
    need_root!();
    let Some(p) = Podman::new() else { return };
    p.busybox_image("localhost/bb:1");
    let d = p.dir.path().to_path_buf();
    let tar = d.join("img.tar");
    let cmd = r#"CMD ["/bin/sh","-c","cat /etc/motd; echo FOO=$FOO"]"#;
    p.ok(&["import", "--change", "ENV FOO=bar", "--change", cmd, tar.to_str().unwrap(), "localhost/bb:cfg"]);
    let podman_id = p.ok(&["inspect", "--format", "{{.Id}}", "localhost/bb:cfg"]).trim().to_string();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    p.ok(&["save", "--format", "docker-archive", "-o", &s(&d.join("da.tar")), "localhost/bb:cfg"]);
    p.ok(&["save", "--format", "oci-archive", "-o", &s(&d.join("oa.tar")), "localhost/bb:cfg"]);
    p.ok(&["save", "--format", "oci-dir", "-o", &s(&d.join("odir")), "localhost/bb:cfg"]);

    // Every form loads as the same image, named as podman named it; layers are stored once.
    for (i, f) in ["da.tar", "oa.tar", "odir"].iter().enumerate() {
        let out = mgr(&d, &["load", "-i", &s(&d.join(f))]);
        assert_eq!(out, "Loaded image: localhost/bb:cfg\n", "{f}");
        let ids = mgr(&d, &["images", "--format", "{{.Digest}}"]);
        assert_eq!(ids.trim(), format!("sha256:{}", podman_id.trim_start_matches("sha256:")), "{f} (load {i})");
        assert_eq!(std::fs::read_dir(d.join("ufs/layers")).unwrap().count(), 1, "{f}: one layer stored");
    }
    let inspect = mgr(&d, &["inspect", "localhost/bb:cfg"]);
    assert!(inspect.contains("\"FOO=bar\"") && inspect.contains("cat /etc/motd"), "config kept: {inspect}");

    // A container's changes committed, saved, loaded and run by podman.
    let m = PathBuf::from(mgr(&d, &["run", "--name", "c1", "localhost/bb:cfg"]).trim());
    std::fs::write(m.join("etc/motd"), "changed on unionfs\n").unwrap();
    mgr(&d, &["stop", "c1"]);
    let new_id = mgr(&d, &["commit", "c1", "localhost/bb:2"]).trim().to_string();
    for format in ["oci-archive", "docker-archive"] {
        let out = d.join(format!("ours-{format}.tar"));
        mgr(&d, &["save", "--format", format, "-o", &s(&out), "localhost/bb:2"]);
        let _ = p.run(&["rmi", "-f", "localhost/bb:2"]);
        p.ok(&["load", "-i", &s(&out)]);
        assert_eq!(
            p.ok(&["inspect", "--format", "{{.Id}}", "localhost/bb:2"]).trim(),
            new_id.trim_start_matches("sha256:"),
            "{format}"
        );
        let ran = p.container(&["--rm", "localhost/bb:2"]);
        assert_eq!(ran, "changed on unionfs\nFOO=bar\n", "{format}");
        // And back: the same ids in a fresh store.
        let fresh = d.join(format!("fresh-{format}"));
        std::fs::create_dir(&fresh).unwrap();
        assert_eq!(mgr(&fresh, &["load", "-q", "-i", &s(&out)]).trim(), new_id);
    }
    mgr(&d, &["rm", "c1"]);
}
