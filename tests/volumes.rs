//! Volumes: a host directory shown at a path of the mount as a plain directory (writes go
//! straight to it, no copy-up, no whiteouts), as container engines bind-mount volumes, but
//! without needing the privilege to mount.

use crate::common::*;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

#[test]
fn volume_is_a_plain_directory_inside_the_mount() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let vol = s.dir.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    write(vol.join("kept"), "from the host");
    let spec = format!("{}:/srv/data", vol.display());
    let _m = s.mount_with(&["--volume", &spec]);
    assert!(listed(&s.m("srv"), "data"), "the mount point is listed");
    assert_eq!(read(s.m("srv/data/kept")), "from the host");
    write(s.m("srv/data/new"), "written in the container");
    std::fs::create_dir(s.m("srv/data/d")).unwrap();
    std::fs::rename(s.m("srv/data/new"), s.m("srv/data/d/new")).unwrap();
    std::fs::remove_file(s.m("srv/data/kept")).unwrap();
    assert_eq!(read(vol.join("d/new")), "written in the container");
    assert!(!vol.join("kept").exists(), "a delete in a volume is a plain delete");
    assert!(
        std::fs::read_dir(&vol).unwrap().all(|e| !e.unwrap().file_type().unwrap().is_char_device()),
        "no whiteouts"
    );
    assert!(!s.u("srv/data").exists(), "nothing of the volume lands in the upper");
    // Moving between the union and a volume is a cross-device move.
    assert_eq!(errno(std::fs::rename(s.m("foo"), s.m("srv/data/foo"))), libc::EXDEV);
    assert_eq!(errno(std::fs::rename(s.m("srv/data/d"), s.m("d"))), libc::EXDEV);
    assert_eq!(errno(std::fs::hard_link(s.m("foo"), s.m("srv/data/foo"))), libc::EXDEV);
    // statfs in the volume is the volume's filesystem.
    let a = rustix::fs::statvfs(s.m("srv/data")).unwrap();
    let b = rustix::fs::statvfs(&vol).unwrap();
    assert_eq!((a.f_blocks, a.f_files), (b.f_blocks, b.f_files));
}

#[test]
fn volume_shadows_an_image_directory() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let vol = s.dir.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    let spec = format!("{}:/tree", vol.display());
    let _m = s.mount_with(&["-v", &spec]);
    assert!(ls(s.m("tree")).is_empty(), "the volume replaces the image's tree/");
    assert_eq!(ls(&s.mnt).iter().filter(|n| *n == "tree").count(), 1);
    let t = std::fs::metadata(s.m("tree")).unwrap();
    assert_eq!(t.ino(), std::fs::metadata(&vol).unwrap().ino());
}

#[test]
fn bad_volumes_are_refused() {
    let s = Stack::empty(1);
    let out = std::process::Command::new(bin())
        .args(["mount", "--lower", &s.lower_arg(), "--upper", s.upper.to_str().unwrap(), "-v", "/nonexistent:/x"])
        .arg(&s.mnt)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    let out = std::process::Command::new(bin())
        .args(["mount", "--lower", &s.lower_arg(), "-v", "/tmp:/x"])
        .arg(&s.mnt)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("need an upper"));
}
