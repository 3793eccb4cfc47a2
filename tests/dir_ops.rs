//! Namespace operations: creation, removal, whiteouts, opaque directories.

use crate::common::*;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

fn is_whiteout(p: &std::path::Path) -> bool {
    std::fs::symlink_metadata(p).map(|m| m.file_type().is_char_device() && m.rdev() == 0).unwrap_or(false)
}

fn opaque(p: &std::path::Path) -> bool {
    getxattr(p, "trusted.overlay.opaque").as_deref() == Some(b"y")
        || getxattr(p, "user.overlay.opaque").as_deref() == Some(b"y")
}

#[test]
fn unlink_of_lower_file_leaves_a_whiteout() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    std::fs::remove_file(s.m("foo")).unwrap();
    assert_eq!(errno(std::fs::metadata(s.m("foo"))), libc::ENOENT);
    assert!(is_whiteout(&s.u("foo")));
    assert_eq!(read(s.lower(1).join("foo")), "foo from l2\n");
}

#[test]
fn unlink_of_upper_only_file_leaves_nothing() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    write(s.m("fresh"), "x");
    std::fs::remove_file(s.m("fresh")).unwrap();
    assert!(
        !s.u("fresh").exists() && std::fs::symlink_metadata(s.u("fresh")).is_err(),
        "no whiteout where no lower has the name"
    );
}

#[test]
fn unlink_of_copied_up_file_replaces_it_with_a_whiteout() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    write(s.m("bar"), "changed");
    std::fs::remove_file(s.m("bar")).unwrap();
    assert!(is_whiteout(&s.u("bar")));
    assert!(!listed(&s.mnt, "bar"));
}

#[test]
fn mkdir_over_whiteout_is_opaque() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    std::fs::remove_dir_all(s.m("tree")).unwrap();
    std::fs::create_dir(s.m("tree")).unwrap();
    assert!(ls(s.m("tree")).is_empty(), "old lower contents stay hidden");
    assert!(opaque(&s.u("tree")));
    write(s.m("tree/n"), "n");
    assert_eq!(ls(s.m("tree")), ["n"]);
}

#[test]
fn rmdir_judges_emptiness_on_the_merged_view() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    assert_eq!(errno(std::fs::remove_dir(s.m("dir/pop"))), libc::ENOTEMPTY);
    std::fs::remove_file(s.m("dir/pop/b")).unwrap();
    // Now only whiteouts are inside: the merged view is empty.
    std::fs::remove_dir(s.m("dir/pop")).unwrap();
    assert!(is_whiteout(&s.u("dir/pop")));
    assert_eq!(errno(std::fs::remove_dir(s.m("foo"))), libc::ENOTDIR);
    assert_eq!(errno(std::fs::remove_file(s.m("dir"))), libc::EISDIR);
    std::fs::remove_dir(s.m("empty")).unwrap();
    assert!(!listed(&s.mnt, "empty"));
}

#[test]
fn rm_rf_of_a_lower_tree() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    std::fs::remove_dir_all(s.m("tree")).unwrap();
    assert!(!listed(&s.mnt, "tree"));
    assert!(is_whiteout(&s.u("tree")));
    assert!(s.lower(2).join("tree/sub/deep/file").exists());
    assert!(work_dir_empties(&s.work), "left in the work dir: {:?}", ls(s.work.join("work")));
}

/// A lower tree `t/d0`..`t/d3` of `files` files each, mounted with a reap thread that waits
/// 300 ms before each tree it removes (the hook in src/union/reap.rs), so what removed
/// directories leave in the work dir is still there when a test unmounts.
fn slow_reaping_mount(files: usize) -> (Stack, Mount) {
    let s = Stack::empty(1);
    for d in 0..4 {
        let dir = s.lower(0).join(format!("t/d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..files {
            std::fs::write(dir.join(format!("f{f}")), "x").unwrap();
        }
    }
    let out = s.mount_command(&[]).env(unionfs::hooks::REAP_DELAY_MS, "300").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m = Mount::adopt(&std::fs::canonicalize(&s.mnt).unwrap());
    (s, m)
}

/// The old upper parts of removed merged directories (full of whiteouts) leave the work dir
/// after the reply; an unmount waits until they are gone.
#[test]
fn removed_directories_leave_the_work_dir_before_the_unmount_returns() {
    need_fuse!();
    need_hooks!();
    let (s, m) = slow_reaping_mount(5);
    std::fs::remove_dir_all(s.m("t")).unwrap();
    assert!(!listed(&s.mnt, "t"));
    assert!(is_whiteout(&s.u("t")));
    assert!(!ls(s.work.join("work")).is_empty(), "the trees wait for the reap thread");
    m.unmount();
    assert!(ls(s.work.join("work")).is_empty(), "left behind: {:?}", ls(s.work.join("work")));
    assert_eq!(ls(s.lower(0).join("t")), ["d0", "d1", "d2", "d3"], "the lower layer is untouched");
    // A fresh mount shows the same: the tree stays removed.
    let _m = s.mount();
    assert!(!listed(&s.mnt, "t"));
}

/// An engine may mount a layer again as soon as its last mount is gone: the new mount waits
/// for the old daemon, still emptying its reap queue, instead of calling the upper taken.
#[test]
fn a_mount_right_after_an_unmount_waits_for_the_old_daemon() {
    need_fuse!();
    need_hooks!();
    let (s, m) = slow_reaping_mount(1);
    let mnt = m.path.clone();
    std::fs::remove_dir_all(mnt.join("t")).unwrap();
    let old = daemon_pid(&mnt).unwrap();
    // Unmounted the way engines do, without waiting for the daemon.
    let st = std::process::Command::new("fusermount3").arg("-u").arg(&mnt).status().unwrap();
    assert!(st.success());
    drop(m);
    assert!(!exits_soon_ms(old, 100), "the old daemon is still emptying its queue");
    let _m = s.mount();
    assert!(!listed(&s.mnt, "t"));
    assert!(ls(s.work.join("work")).is_empty(), "left behind: {:?}", ls(s.work.join("work")));
}

#[test]
fn create_kinds() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    std::os::unix::fs::symlink("target", s.m("ln")).unwrap();
    assert_eq!(std::fs::read_link(s.m("ln")).unwrap().to_str(), Some("target"));
    rustix::fs::mknodat(rustix::fs::CWD, s.m("fifo"), rustix::fs::FileType::Fifo, rustix::fs::Mode::from(0o640), 0)
        .unwrap();
    assert!(std::fs::metadata(s.m("fifo")).unwrap().file_type().is_fifo());
    let sock = std::os::unix::net::UnixListener::bind(s.m("sock")).unwrap();
    assert!(std::fs::metadata(s.m("sock")).unwrap().file_type().is_socket());
    drop(sock);
    std::fs::create_dir(s.m("newdir")).unwrap();
    std::fs::set_permissions(s.m("newdir"), std::fs::Permissions::from_mode(0o711)).unwrap();
    assert_eq!(std::fs::metadata(s.m("newdir")).unwrap().mode() & 0o7777, 0o711);
    // A 0/0 device would read back as a whiteout: refused.
    assert_eq!(
        errno(
            rustix::fs::mknodat(
                rustix::fs::CWD,
                s.m("wh"),
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::from(0o600),
                0
            )
            .map_err(std::io::Error::from)
        ),
        libc::EPERM
    );
    // Names that would be read back as markers are refused.
    assert_eq!(errno(std::fs::write(s.m(".wh.x"), "")), libc::EINVAL);
}

#[test]
fn device_nodes_as_root() {
    need_fuse!();
    need_root!();
    let s = Stack::empty(1);
    let _m = s.mount();
    let dev = rustix::fs::makedev(1, 3);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        s.m("null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from(0o666),
        dev,
    )
    .unwrap();
    let m = std::fs::metadata(s.m("null")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), dev);
    // Root mounts honour device nodes, as kernel overlayfs does.
    std::fs::write(s.m("null"), "discarded").unwrap();
}

#[test]
fn create_exclusive_and_existing() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    assert_eq!(errno(std::fs::OpenOptions::new().write(true).create_new(true).open(s.m("foo"))), libc::EEXIST);
    assert_eq!(errno(std::fs::create_dir(s.m("dir"))), libc::EEXIST);
    std::fs::OpenOptions::new().write(true).create_new(true).open(s.m("brand-new")).unwrap();
    // Over a whiteout: the name is free again.
    std::fs::remove_file(s.m("top")).unwrap();
    std::fs::OpenOptions::new().write(true).create_new(true).open(s.m("top")).unwrap();
    assert_eq!(read(s.m("top")), "");
    assert!(!is_whiteout(&s.u("top")));
}

#[test]
fn hard_links_through_the_mount_share_an_inode() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    std::fs::hard_link(s.m("foo"), s.m("foo2")).unwrap();
    let a = std::fs::metadata(s.m("foo")).unwrap();
    let b = std::fs::metadata(s.m("foo2")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(b.nlink(), 2);
    std::fs::write(s.m("foo2"), "via link").unwrap();
    assert_eq!(read(s.m("foo")), "via link");
    std::fs::remove_file(s.m("foo")).unwrap();
    assert_eq!(read(s.m("foo2")), "via link");
    assert_eq!(std::fs::metadata(s.m("foo2")).unwrap().nlink(), 1);
    assert_eq!(errno(std::fs::hard_link(s.m("dir"), s.m("dirlink"))), libc::EPERM);
}

#[test]
fn setgid_directory_gives_its_group() {
    need_fuse!();
    need_root!();
    let s = Stack::empty(1);
    std::fs::create_dir(s.lower(0).join("shared")).unwrap();
    std::os::unix::fs::chown(s.lower(0).join("shared"), Some(0), Some(777)).unwrap();
    std::fs::set_permissions(s.lower(0).join("shared"), std::fs::Permissions::from_mode(0o2775)).unwrap();
    let _m = s.mount();
    write(s.m("shared/f"), "x");
    std::fs::create_dir(s.m("shared/d")).unwrap();
    assert_eq!(std::fs::metadata(s.m("shared/f")).unwrap().gid(), 777);
    let d = std::fs::metadata(s.m("shared/d")).unwrap();
    assert_eq!(d.gid(), 777);
    assert_eq!(d.mode() & 0o2000, 0o2000, "subdirectories inherit setgid");
}
