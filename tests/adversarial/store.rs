//! The container manager's store as another local user sees it. [5] Image layers and root
//! container mounts hold set-user-id binaries and device nodes (a root container mount
//! honours both, as containers need): no other user may reach them.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::util::{Mgr, as_user};

#[test]
fn other_users_cannot_reach_set_id_binaries_or_devices_of_the_store() {
    need_fuse!();
    need_root!();
    let mgr = Mgr::new();
    let img = mgr.dir.path().join("img");
    std::fs::create_dir(&img).unwrap();
    std::fs::copy("/usr/bin/id", img.join("id")).unwrap();
    std::fs::set_permissions(img.join("id"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    let null = std::ffi::CString::new(img.join("null").into_os_string().into_encoded_bytes()).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        null.as_c_str(),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    mgr.ok(&["image", "import", "suid:1", img.to_str().unwrap()]);
    let merged = mgr.ok(&["run", "--name", "c1", "suid:1"]).trim().to_string();
    // As root, the container works: set-id bits and the device are there.
    assert_eq!(std::fs::metadata(format!("{merged}/id")).unwrap().mode() & 0o7777, 0o4755);
    assert_eq!(std::fs::metadata(&mgr.root).unwrap().mode() & 0o777, 0o700, "the state root must be private");
    let layer = std::fs::read_dir(mgr.root.join("layers")).unwrap().next().unwrap().unwrap().path();
    let script = format!(
        "for p in {layer}/diff/id {merged}/id; do $p -u 2>/dev/null || echo denied; done; \
         for d in {layer}/diff/null {merged}/null; do (echo x > $d) 2>/dev/null && echo wrote || echo denied; done",
        layer = layer.display()
    );
    let out = as_user(mgr.dir.path(), &script);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().collect::<Vec<_>>(), ["denied"; 4], "another user reached the store: {text}");
    // A store made open by an older version is closed when next used.
    std::fs::set_permissions(&mgr.root, std::fs::Permissions::from_mode(0o755)).unwrap();
    mgr.ok(&["ps", "-a"]);
    assert_eq!(std::fs::metadata(&mgr.root).unwrap().mode() & 0o777, 0o700);
    mgr.ok(&["rm", "-f", "c1"]);
}

/// Imports a one-directory image and runs container `c1` from it; returns its mount path.
fn container(mgr: &Mgr) -> String {
    let img = mgr.dir.path().join("img1");
    std::fs::create_dir_all(img.join("etc")).unwrap();
    std::fs::write(img.join("etc/hostname"), "box\n").unwrap();
    mgr.ok(&["image", "import", "base:1", img.to_str().unwrap()]);
    mgr.ok(&["run", "--name", "c1", "base:1"]).trim().to_string()
}

/// [10] `export-layer -o DIR/x.tar` into a directory another user can write: a symlink she
/// planted at any name there is never followed, and a failed export leaves nothing.
#[test]
fn export_into_a_shared_directory_never_follows_a_planted_symlink() {
    need_fuse!();
    need_root!();
    let mgr = Mgr::new();
    let merged = container(&mgr);
    std::fs::write(format!("{merged}/new"), "container data").unwrap();
    let shared = mgr.dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let victim = mgr.dir.path().join("victim");
    std::fs::write(&victim, "root's").unwrap();
    for planted in ["x.tar", "x.partial", "x.tar.partial", ".x.tar.tmp"] {
        std::os::unix::fs::symlink(&victim, shared.join(planted)).unwrap();
    }
    let out = shared.join("x.tar");
    mgr.ok(&["export-layer", "c1", "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's", "the export wrote through a planted symlink");
    let meta = std::fs::symlink_metadata(&out).unwrap();
    assert!(meta.is_file() && meta.len() > 0);
    let names = tar::Archive::new(std::fs::File::open(&out).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect::<Vec<_>>();
    assert!(names.contains(&"new".to_string()), "{names:?}");
    // A failed export (the container does not exist) leaves no file behind.
    let before = crate::common::ls(&shared);
    mgr.fails(&["export-layer", "nosuch", "-o", shared.join("y.tar").to_str().unwrap()]);
    assert_eq!(crate::common::ls(&shared), before);
    mgr.ok(&["rm", "-f", "c1"]);
}

/// [11] Every name the manager turns into a path is checked against one grammar: a volume,
/// container or layer "name" that is a path reaches nothing outside its own directory.
#[test]
fn path_shaped_names_reach_nothing() {
    need_fuse!();
    need_root!();
    let mgr = Mgr::new();
    let merged = container(&mgr);
    mgr.ok(&["volume", "create", "v1"]);
    let layer = std::fs::read_dir(mgr.root.join("layers")).unwrap().next().unwrap().unwrap().file_name();
    let layer = layer.to_str().unwrap();
    let elsewhere = mgr.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("meta"), "kind: volume\nname: x\n").unwrap();
    let bad = [
        "../containers/c1".to_string(),
        format!("../layers/{layer}"),
        elsewhere.display().to_string(),
        "..".into(),
        "v1/../../containers/c1".into(),
        "x\ny".into(),
    ];
    for b in &bad {
        mgr.fails(&["volume", "rm", b]);
        mgr.fails(&["rm", "-f", b]);
        mgr.fails(&["stop", b]);
        mgr.fails(&["diff", b]);
        mgr.fails(&["volume", "create", b]);
        mgr.fails(&["start", b]);
        mgr.fails(&["mount-path", b]);
        mgr.fails(&["export-layer", b]);
        mgr.fails(&["run", "--name", b, "base:1"]);
        mgr.fails(&["commit", "c1", b]);
        mgr.fails(&["image", "rm", b]);
    }
    assert!(std::fs::metadata(format!("{merged}/etc/hostname")).is_ok(), "the container lost its layer");
    assert!(mgr.root.join("containers/c1/upper").is_dir());
    assert!(mgr.root.join("layers").join(layer).join("diff").is_dir());
    assert!(elsewhere.join("meta").exists());
    assert!(mgr.root.join("volumes/v1/_data").is_dir());
    // Error lines never carry raw control characters.
    let err = mgr.fails(&["volume", "rm", "x\ny"]);
    assert!(!err.trim_end().contains('\n'), "{err:?}");
    mgr.ok(&["rm", "-f", "c1"]);
}

/// [15] `diff` prints names so that none can forge another line: a directory named
/// `x⏎D ` holding `etc/passwd` does not print `D /etc/passwd`; `-z` gives them raw.
#[test]
fn diff_escapes_names_that_would_forge_lines() {
    need_fuse!();
    need_root!();
    let mgr = Mgr::new();
    let merged = container(&mgr);
    let evil = format!("{merged}/x\nD ");
    std::fs::create_dir_all(format!("{evil}/etc")).unwrap();
    std::fs::write(format!("{evil}/etc/passwd"), "root::0:0::/:/bin/sh\n").unwrap();
    std::fs::write(format!("{merged}/tab\there"), "t").unwrap();
    let out = mgr.ok(&["diff", "c1"]);
    assert!(!out.lines().any(|l| l == "D /etc/passwd"), "a forged line:\n{out}");
    assert!(out.lines().any(|l| l == "A \"/x\\nD \""), "{out}");
    assert!(out.lines().any(|l| l == "A \"/x\\nD /etc/passwd\""), "{out}");
    assert!(out.lines().any(|l| l == "A \"/tab\\there\""), "{out}");
    assert!(out.lines().all(|l| l.starts_with("A ") || l.starts_with("C ") || l.starts_with("D ")), "{out}");
    let raw = crate::common::bin();
    let z = std::process::Command::new(raw).arg("--root").arg(&mgr.root).args(["diff", "-z", "c1"]).output().unwrap();
    assert!(z.status.success());
    let entries: Vec<&[u8]> = z.stdout.split(|&b| b == 0).filter(|e| !e.is_empty()).collect();
    assert!(entries.contains(&&b"A /x\nD /etc/passwd"[..]), "{entries:?}");
    mgr.ok(&["rm", "-f", "c1"]);
}

/// A tarball of `entries` (path, contents) built with the `tar` crate.
fn tarball(entries: &[(String, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, p, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Whether the store's `tmp` holds nothing (a refused import must leave nothing behind).
fn tmp_is_empty(mgr: &Mgr) -> bool {
    std::fs::read_dir(mgr.root.join("tmp")).map(|mut d| d.next().is_none()).unwrap_or(true)
}

/// [12] [13] [14] Hostile layer tarballs: a zstd stream whose content checksum is wrong, a
/// blob whose name says another digest, a 10 KB sparse tarball holding a 5 GiB file,
/// `/dev/zero`, a 20,000-level tree, an empty file. Each is refused with one line (or, the
/// sparse one, imported with its holes as holes), and leaves nothing in the store.
#[test]
fn hostile_archives_are_refused_or_kept_small_and_leave_nothing() {
    need_root!();
    let mgr = Mgr::new();
    mgr.ok(&["images"]);
    let d = mgr.dir.path();
    let tar_bytes = tarball(&[("etc/motd".into(), &b"hello\n"[..]), ("big".into(), &vec![7u8; 300_000][..])]);
    std::fs::write(d.join("l.tar"), &tar_bytes).unwrap();
    // zstd with a content checksum; the checksum (last 4 bytes) damaged.
    let ok = std::process::Command::new("zstd").args(["-q", "--check", "-f"]).arg(d.join("l.tar")).status();
    assert!(ok.unwrap().success(), "zstd is needed (Debian: zstd)");
    let mut z = std::fs::read(d.join("l.tar.zst")).unwrap();
    let n = z.len();
    z[n - 2] ^= 0x55;
    std::fs::write(d.join("bad.tar.zst"), &z).unwrap();
    let err = mgr.fails(&["image", "import", "z:1", d.join("bad.tar.zst").to_str().unwrap()]);
    assert!(err.contains("checksum"), "{err}");
    // The undamaged one imports.
    mgr.ok(&["image", "import", "z:1", d.join("l.tar.zst").to_str().unwrap()]);
    // A blob named by a digest it does not have.
    let blobs = d.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let wrong = blobs.join("0".repeat(64));
    std::fs::write(&wrong, &tar_bytes).unwrap();
    let err = mgr.fails(&["image", "import", "w:1", wrong.to_str().unwrap()]);
    assert!(err.contains("digest"), "{err}");
    // /dev/zero, an empty file, a directory nested 20,000 levels.
    let err = mgr.fails(&["image", "import", "zero:1", "/dev/zero"]);
    assert!(err.contains("not a regular file"), "{err}");
    std::fs::write(d.join("empty.tar"), b"").unwrap();
    mgr.fails(&["image", "import", "e:1", d.join("empty.tar").to_str().unwrap()]);
    let deep: String = "d/".repeat(20_000) + "f";
    std::fs::write(d.join("deep.tar"), tarball(&[(deep, &b"x"[..])])).unwrap();
    let err = mgr.fails(&["image", "import", "deep:1", d.join("deep.tar").to_str().unwrap()]);
    assert!(err.contains("deep"), "{err}");
    assert!(tmp_is_empty(&mgr), "a refused import left files in the store's tmp");
    // A sparse file: 5 GiB, almost no data. Stored with its holes.
    let sparse = d.join("sparse");
    std::fs::create_dir(&sparse).unwrap();
    let f = std::fs::File::create(sparse.join("huge")).unwrap();
    f.set_len(5 << 30).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"tail", (5 << 30) - 4).unwrap();
    drop(f);
    let ok = std::process::Command::new("tar")
        .args(["--sparse", "-C"])
        .arg(&sparse)
        .arg("-cf")
        .arg(d.join("sparse.tar"))
        .arg("huge")
        .status();
    assert!(ok.unwrap().success());
    assert!(std::fs::metadata(d.join("sparse.tar")).unwrap().len() < 100_000);
    let id = mgr.ok(&["image", "import", "sparse:1", d.join("sparse.tar").to_str().unwrap()]);
    assert!(!id.is_empty());
    let layers: Vec<_> = std::fs::read_dir(mgr.root.join("layers")).unwrap().map(|e| e.unwrap().path()).collect();
    let huge = layers.iter().map(|l| l.join("diff/huge")).find(|p| p.exists()).expect("the sparse layer");
    let m = std::fs::metadata(&huge).unwrap();
    assert_eq!(m.len(), 5 << 30);
    assert!(m.blocks() * 512 < 1 << 20, "the holes were written as zeros: {} blocks", m.blocks());
    assert!(tmp_is_empty(&mgr));
}
