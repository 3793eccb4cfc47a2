//! Permissions as on a plain filesystem for other users of a root mount (`allow_other`,
//! `default_permissions`), checked against kernel overlayfs over the same layers: the same
//! operations by a second user give the same errno and leave the same modes.

use crate::common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const DIRS_ENV: &str = "UNIONFS_PERM_DIRS";

/// Files of the lower layer: name, mode, owner.
const FILES: &[(&str, u32, u32)] = &[
    ("suid", 0o4777, 0),
    ("sgid-gx", 0o2777, 0),
    ("sgid-nogx", 0o2767, 0),
    ("suid-trunc", 0o4777, 0),
    ("suid-ftrunc", 0o4777, 0),
    ("suid-root-writes", 0o4777, 0),
    ("plain", 0o666, 0),
    ("private", 0o600, 0),
    ("readonly", 0o644, 0),
];

/// What the second user does, on the mount at `m`; returns one line per step.
fn user_steps(m: &Path) -> Vec<String> {
    use std::io::Write;
    let mut out = Vec::new();
    let mut log = |what: &str, r: std::io::Result<()>| out.push(format!("{what}: {}", errno(r)));
    let append =
        |p: PathBuf| -> std::io::Result<()> { std::fs::OpenOptions::new().append(true).open(p)?.write_all(b"more\n") };
    log("append suid", append(m.join("suid")));
    log("append sgid-gx", append(m.join("sgid-gx")));
    log("append sgid-nogx", append(m.join("sgid-nogx")));
    log(
        "open O_TRUNC suid-trunc",
        std::fs::OpenOptions::new().write(true).truncate(true).open(m.join("suid-trunc")).map(|_| ()),
    );
    log(
        "ftruncate suid-ftrunc",
        std::fs::OpenOptions::new().write(true).open(m.join("suid-ftrunc")).and_then(|f| f.set_len(1)),
    );
    log("append plain", append(m.join("plain")));
    log("read private", std::fs::read(m.join("private")).map(|_| ()));
    log("append readonly", append(m.join("readonly")));
    log("chmod plain", std::fs::set_permissions(m.join("plain"), std::fs::Permissions::from_mode(0o600)));
    log("chown plain", std::os::unix::fs::chown(m.join("plain"), Some(0), None));
    log("unlink in root-owned dir", std::fs::remove_file(m.join("plain")));
    log("create in root-owned dir", std::fs::write(m.join("mine"), "x"));
    log("mkdir in root-owned dir", std::fs::create_dir(m.join("mydir")));
    log("unlink another's file in sticky dir", std::fs::remove_file(m.join("sticky/rootfile")));
    log("rename another's file in sticky dir", std::fs::rename(m.join("sticky/rootfile"), m.join("sticky/taken")));
    log("create in sticky dir", std::fs::write(m.join("sticky/mine"), "x"));
    log("unlink own file in sticky dir", std::fs::remove_file(m.join("sticky/mine")));
    log("write into another's file in sticky dir", std::fs::write(m.join("sticky/rootfile"), "x"));
    out
}

/// The unprivileged half: runs the steps on both mounts and writes what happened.
#[test]
#[ignore = "the unprivileged half of another_user_gets_the_kernels_permissions_and_clears_set_id_bits_by_writing, which runs it as the test user"]
fn other_user_inner() {
    let dirs = std::env::var_os(DIRS_ENV).expect("started as the test user by its outer test");
    assert!(!is_root());
    let dirs: Vec<PathBuf> = std::env::split_paths(&dirs).collect();
    let kernel = user_steps(&dirs[0]);
    let ours = user_steps(&dirs[1]);
    std::fs::write(dirs[2].join("kernel"), kernel.join("\n")).unwrap();
    std::fs::write(dirs[2].join("unionfs"), ours.join("\n")).unwrap();
}

fn modes(m: &Path) -> String {
    FILES
        .iter()
        .map(|(n, _, _)| match std::fs::symlink_metadata(m.join(n)) {
            Ok(md) => format!("{n} {:o} size={}", md.mode() & 0o7777, md.len()),
            Err(e) => format!("{n} {e}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn another_user_gets_the_kernels_permissions_and_clears_set_id_bits_by_writing() {
    need_fuse!();
    need_root!();
    let (uid, gid) = ensure_test_user();
    let s = Stack::empty(1);
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(s.lower(0).join("sticky")).unwrap();
    std::fs::set_permissions(s.lower(0).join("sticky"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(s.lower(0).join("sticky/rootfile"), "root\n").unwrap();
    for (name, mode, owner) in FILES {
        let p = s.lower(0).join(name);
        std::fs::write(&p, "0123456789\n").unwrap();
        std::os::unix::fs::chown(&p, Some(*owner), Some(*owner)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    // Kernel overlayfs over the same lower, its own upper.
    let k = s.dir.path().join("k");
    for d in ["upper", "work", "mnt"] {
        std::fs::create_dir_all(k.join(d)).unwrap();
    }
    let kmnt = k.join("mnt");
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={},upperdir={},workdir={}",
            s.lower(0).display(),
            k.join("upper").display(),
            k.join("work").display()
        ))
        .arg(&kmnt)
        .status()
        .unwrap();
    assert!(st.success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _k = Unmount(kmnt.clone());
    let m = s.mount();
    // Root writing to a set-user-id file keeps the bit (CAP_FSETID), on both.
    for root in [&kmnt, &m.path] {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(root.join("suid-root-writes"))
            .unwrap()
            .write_all(b"r\n")
            .unwrap();
    }
    let out_dir = user_tempdir(uid, gid);
    let dirs = std::env::join_paths([&kmnt, &m.path, &out_dir.path().to_path_buf()]).unwrap();
    let out = run_test_as_user(test_name!("other_user_inner"), uid, gid, &[(DIRS_ENV, Path::new(&dirs))]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let kernel = std::fs::read_to_string(out_dir.path().join("kernel")).unwrap();
    let ours = std::fs::read_to_string(out_dir.path().join("unionfs")).unwrap();
    assert_eq!(ours, kernel, "errnos of the second user's steps (unionfs vs kernel)");
    assert!(kernel.contains("append readonly: 13"), "the steps did run as another user: {kernel}");
    assert_eq!(modes(&m.path), modes(&kmnt), "modes after the second user's steps");
    let suid = std::fs::metadata(m.path.join("suid")).unwrap().mode() & 0o7777;
    assert_eq!(suid, 0o777, "a write by another user cleared set-user-id");
}
