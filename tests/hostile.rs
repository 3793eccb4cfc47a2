//! Hostile layers: the daemon never follows a symlink stored in a layer, never lets a crafted
//! marker name reach outside its directory, and handles names and depths a careful program
//! would not produce.

use crate::common::*;
use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

#[test]
fn symlinks_in_layers_are_shown_never_followed_by_the_daemon() {
    need_fuse!();
    let s = Stack::empty(2);
    let victim = s.dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    // Top layer: links pointing out of the layer, up, and into the other layer.
    std::os::unix::fs::symlink("/etc", s.lower(0).join("abs")).unwrap();
    std::os::unix::fs::symlink("../../..", s.lower(0).join("up")).unwrap();
    std::os::unix::fs::symlink(s.lower(1), s.lower(0).join("other")).unwrap();
    // A directory below that a symlink in the top layer hides.
    std::os::unix::fs::symlink(&victim, s.lower(0).join("d")).unwrap();
    std::fs::create_dir(s.lower(1).join("d")).unwrap();
    std::fs::write(s.lower(1).join("d/secret"), "lower secret\n").unwrap();
    std::fs::create_dir_all(s.lower(1).join("a/b")).unwrap();
    std::fs::write(s.lower(1).join("a/b/c"), "c\n").unwrap();
    let m = s.mount();
    for (name, target) in
        [("abs", "/etc".to_string()), ("up", "../../..".into()), ("other", s.lower(1).display().to_string())]
    {
        let md = std::fs::symlink_metadata(m.path.join(name)).unwrap();
        assert!(md.file_type().is_symlink(), "{name} is shown as a symlink");
        assert_eq!(std::fs::read_link(m.path.join(name)).unwrap().display().to_string(), target);
    }
    assert!(std::fs::symlink_metadata(m.path.join("d")).unwrap().file_type().is_symlink());
    // The kernel (not the daemon) follows `d` for the caller: the lower `d/` stays hidden.
    assert!(!m.path.join("d/secret").exists() || victim.join("secret").exists());

    // Someone swaps a directory of the upper for a symlink behind the mount's back: a copy-up
    // below it fails instead of writing through the link.
    assert_eq!(read(m.path.join("a/b/c")), "c\n");
    std::fs::create_dir(s.upper.join("a")).unwrap();
    std::os::unix::fs::symlink(&victim, s.upper.join("a/b")).unwrap();
    let r = std::fs::OpenOptions::new().append(true).open(m.path.join("a/b/c")).and_then(|mut f| f.write_all(b"x"));
    let e = errno(r);
    assert_ne!(e, libc::EIO, "a proper errno, not EIO");
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0, "nothing was written through the link (errno {e})");
    m.unmount();
    assert_eq!(read(s.lower(1).join("a/b/c")), "c\n");
}

#[test]
fn crafted_marker_names_stay_inside_their_directory() {
    need_fuse!();
    let s = Stack::empty(2);
    for n in ["keep", "x", "y"] {
        std::fs::write(s.lower(1).join(n), n).unwrap();
    }
    std::fs::create_dir(s.lower(1).join("sub")).unwrap();
    std::fs::write(s.lower(1).join("sub/inner"), "inner").unwrap();
    // Markers that name nothing sensible, or try to reach out.
    for n in [".wh.", ".wh...", ".wh..", ".wh..wh..wh.x", ".wh.sub/../keep"] {
        let _ = std::fs::write(s.lower(0).join(n), "");
    }
    std::fs::write(s.lower(0).join(".wh.x"), "").unwrap();
    let m = s.mount();
    let names = ls(&m.path);
    assert!(names.iter().all(|n| !n.starts_with(".wh.")), "no marker is listed: {names:?}");
    assert!(names.contains(&"keep".to_string()) && names.contains(&"y".to_string()), "{names:?}");
    assert!(!names.contains(&"x".to_string()), "the real whiteout works: {names:?}");
    assert_eq!(read(m.path.join("sub/inner")), "inner");
    assert_eq!(read(m.path.join("keep")), "keep");
    // A marker name cannot be created through the mount either.
    assert_eq!(errno(std::fs::write(m.path.join(".wh.y"), "")), libc::EINVAL);
    assert_eq!(read(m.path.join("y")), "y");
}

#[test]
fn names_with_newlines_and_invalid_utf8_work_everywhere() {
    need_fuse!();
    let s = Stack::empty(1);
    let odd: Vec<&[u8]> =
        vec![b"new\nline", b"\xff\xfe bad utf8", b" leading space", b"tab\there", b"-dash", &[b'z'; 255]];
    for n in &odd {
        std::fs::write(s.lower(0).join(OsStr::from_bytes(n)), n).unwrap();
    }
    let m = s.mount();
    for n in &odd {
        let p = m.path.join(OsStr::from_bytes(n));
        assert_eq!(std::fs::read(&p).unwrap(), *n);
        // Copy-up, rename, xattr, delete, all with the odd name.
        std::fs::OpenOptions::new().append(true).open(&p).unwrap().write_all(b"+").unwrap();
        let mut renamed = n.to_vec();
        renamed.truncate(254);
        renamed.push(b'2');
        let q = m.path.join(OsStr::from_bytes(&renamed));
        std::fs::rename(&p, &q).unwrap();
        setxattr(&q, "user.k", b"v").unwrap();
        assert_eq!(getxattr(&q, "user.k").unwrap(), b"v");
        let mut want = n.to_vec();
        want.push(b'+');
        assert_eq!(std::fs::read(&q).unwrap(), want);
        std::fs::remove_file(&q).unwrap();
        assert!(!p.exists() && !q.exists());
    }
    let too_long = m.path.join(OsStr::from_bytes(&[b'y'; 256]));
    assert_eq!(errno(std::fs::write(too_long, "")), libc::ENAMETOOLONG);
    m.unmount();
    for n in &odd {
        assert_eq!(std::fs::read(s.lower(0).join(OsStr::from_bytes(n))).unwrap(), *n, "the lower layer is untouched");
    }
}

/// Opens a directory chain one component at a time (the full path is longer than PATH_MAX,
/// so no single path-based call can name it).
fn walk_down(root: &Path, comps: &[String]) -> OwnedFd {
    let mut fd = rustix::fs::open(
        root,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        0.into(),
    )
    .unwrap();
    for c in comps {
        fd = rustix::fs::openat(
            &fd,
            c.as_str(),
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            0.into(),
        )
        .unwrap_or_else(|e| panic!("component {c}: {e}"));
    }
    fd
}

#[test]
fn deep_nesting_beyond_path_max() {
    need_fuse!();
    let s = Stack::empty(1);
    // 160 levels of 40-byte names: 6.5 KiB of path.
    let comps: Vec<String> = (0..160).map(|i| format!("{i:03}-{}", "d".repeat(36))).collect();
    {
        let mut fd = rustix::fs::open(
            s.lower(0),
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            0.into(),
        )
        .unwrap();
        for c in &comps {
            rustix::fs::mkdirat(&fd, c.as_str(), 0o755.into()).unwrap();
            fd = rustix::fs::openat(
                &fd,
                c.as_str(),
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
                0.into(),
            )
            .unwrap();
        }
        let f = rustix::fs::openat(
            &fd,
            "leaf",
            rustix::fs::OFlags::CREATE | rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
            0o644.into(),
        )
        .unwrap();
        rustix::io::write(&f, b"deep").unwrap();
    }
    let m = s.mount();
    let dir = walk_down(&m.path, &comps);
    let f = rustix::fs::openat(
        &dir,
        "leaf",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::APPEND | rustix::fs::OFlags::CLOEXEC,
        0.into(),
    )
    .unwrap();
    rustix::io::write(&f, b"+more").unwrap();
    drop(f);
    let new = rustix::fs::openat(
        &dir,
        "new",
        rustix::fs::OFlags::CREATE | rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
        0o644.into(),
    )
    .unwrap();
    rustix::io::write(&new, b"new").unwrap();
    drop(new);
    drop(dir);
    // A fresh mount resolves the deep upper path from the layer root.
    m.unmount();
    let m = s.mount();
    let dir = walk_down(&m.path, &comps);
    let f =
        rustix::fs::openat(&dir, "leaf", rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC, 0.into()).unwrap();
    let mut buf = [0u8; 64];
    let n = rustix::io::read(&f, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"deep+more");
    let up = walk_down(&s.upper, &comps);
    assert!(rustix::fs::statat(&up, "new", rustix::fs::AtFlags::empty()).is_ok(), "the new file is in the upper");
    drop((f, dir, up));
    m.unmount();
}
