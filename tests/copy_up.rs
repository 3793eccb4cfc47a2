//! Copy-up: the first change to a lower object copies it (data, xattrs, owner, mode, times)
//! into the upper, atomically; the lower layer never changes.

use crate::common::*;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

fn lower_snapshot(s: &Stack) -> Vec<String> {
    s.lowers.iter().map(|l| tree(l)).collect()
}

#[test]
fn append_copies_up_full_content() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let before = lower_snapshot(&s);
    let _m = s.mount();
    let mut f = std::fs::OpenOptions::new().append(true).open(s.m("foo")).unwrap();
    f.write_all(b"more\n").unwrap();
    drop(f);
    assert_eq!(read(s.m("foo")), "foo from l2\nmore\n");
    assert_eq!(read(s.u("foo")), "foo from l2\nmore\n");
    assert_eq!(lower_snapshot(&s), before, "lower layers are never written");
}

#[test]
fn open_trunc_copies_no_data() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    std::fs::write(s.m("dir/pop/b"), "new").unwrap();
    assert_eq!(read(s.m("dir/pop/b")), "new");
    assert_eq!(read(s.u("dir/pop/b")), "new");
    assert_eq!(read(s.lower(2).join("dir/pop/b")), "b\n");
}

#[test]
fn parents_are_copied_up_with_their_metadata() {
    need_fuse!();
    let s = Stack::fixture("basic");
    std::fs::set_permissions(s.lower(2).join("tree/sub"), std::fs::Permissions::from_mode(0o750)).unwrap();
    let _m = s.mount();
    write(s.m("tree/sub/deep/file"), "changed");
    assert!(s.u("tree/sub/deep").is_dir());
    assert_eq!(std::fs::metadata(s.u("tree/sub")).unwrap().mode() & 0o7777, 0o750);
    assert!(!s.u("tree/t1").exists(), "siblings stay below");
}

#[test]
fn chmod_keeps_data_and_times() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let lower = std::fs::metadata(s.lower(2).join("tree/t1")).unwrap();
    let _m = s.mount();
    std::fs::set_permissions(s.m("tree/t1"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let m = std::fs::metadata(s.m("tree/t1")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o600);
    assert_eq!(read(s.m("tree/t1")), "t1\n");
    let up = std::fs::metadata(s.u("tree/t1")).unwrap();
    assert_eq!((up.mtime(), up.mtime_nsec()), (lower.mtime(), lower.mtime_nsec()), "mtime kept to the nanosecond");
}

#[test]
fn setuid_and_owner_survive_copy_up() {
    need_fuse!();
    need_root!();
    let s = Stack::fixture("basic");
    std::os::unix::fs::chown(s.lower(2).join("bin/run"), Some(1234), Some(4321)).unwrap();
    std::fs::set_permissions(s.lower(2).join("bin/run"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    let _m = s.mount();
    let mut f = std::fs::OpenOptions::new().append(true).open(s.m("bin/run")).unwrap();
    f.write_all(b"echo hi\n").unwrap();
    drop(f);
    let up = std::fs::metadata(s.u("bin/run")).unwrap();
    assert_eq!((up.uid(), up.gid()), (1234, 4321));
    assert_eq!(up.mode() & 0o7777, 0o4755, "root's write keeps setuid; copy-up keeps it too");
}

#[test]
fn chown_and_utimens_copy_up() {
    need_fuse!();
    need_root!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    std::os::unix::fs::lchown(s.m("tree/t1"), Some(42), Some(43)).unwrap();
    let m = std::fs::metadata(s.u("tree/t1")).unwrap();
    assert_eq!((m.uid(), m.gid()), (42, 43));
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_000_000_000, 123_456_789);
    let f = std::fs::File::options().write(true).open(s.m("tree/sub/s")).unwrap();
    f.set_modified(t).unwrap();
    drop(f);
    let m = std::fs::metadata(s.m("tree/sub/s")).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_000_000_000, 123_456_789));
    assert!(s.u("tree/sub/s").exists());
}

#[test]
fn truncate_copies_a_prefix() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    let f = std::fs::File::options().write(true).open(s.m("foo")).unwrap();
    f.set_len(3).unwrap();
    drop(f);
    assert_eq!(read(s.m("foo")), "foo");
    // Truncate by path, growing.
    let p = cpath(&s.m("bar"));
    // SAFETY: test code; a valid C path.
    assert_eq!(unsafe { libc::truncate(p.as_ptr(), 20) }, 0);
    let d = std::fs::read(s.m("bar")).unwrap();
    assert_eq!(d.len(), 20);
    assert_eq!(&d[..12], b"bar from l1\n");
    assert!(d[12..].iter().all(|&b| b == 0));
}

#[test]
fn xattrs_survive_copy_up() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    write(s.m("usr/bin/tool"), "rewritten");
    assert_eq!(getxattr(&s.m("usr/bin/tool"), "user.note").as_deref(), Some(&b"hi"[..]));
    assert_eq!(getxattr(&s.u("usr/bin/tool"), "user.note").as_deref(), Some(&b"hi"[..]));
}

#[test]
fn holes_stay_holes() {
    need_fuse!();
    let s = Stack::empty(1);
    let sparse = s.lower(0).join("sparse");
    let mut f = std::fs::File::create(&sparse).unwrap();
    f.seek(SeekFrom::Start(256 << 20)).unwrap();
    f.write_all(b"end").unwrap();
    drop(f);
    let _m = s.mount();
    let mut f = std::fs::OpenOptions::new().append(true).open(s.m("sparse")).unwrap();
    f.write_all(b"!").unwrap();
    drop(f);
    let up = std::fs::metadata(s.u("sparse")).unwrap();
    assert_eq!(up.len(), (256 << 20) + 4);
    assert!(up.blocks() * 512 < 1 << 20, "copy-up kept the hole ({} blocks)", up.blocks());
}

#[test]
fn a_copy_up_across_filesystems_is_whole_and_keeps_holes() {
    need_fuse!();
    need_root!();
    // The upper on a tmpfs, the lower on the test directory's filesystem: copy_file_range
    // refuses (EXDEV) and the data goes by sendfile, extent by extent.
    let mut s = Stack::empty(1);
    let fs = mount_tmpfs(&s.dir.path().join("upper-fs"), "size=64m");
    s.upper = fs.0.join("upper");
    s.work = fs.0.join("work");
    std::fs::create_dir(&s.upper).unwrap();
    std::fs::create_dir(&s.work).unwrap();
    let head: Vec<u8> = (0..(5u32 << 20) + 123).map(|i| (i.wrapping_mul(2654435761) >> 7) as u8).collect();
    let tail_at = 96u64 << 20;
    let mut f = std::fs::File::create(s.lower(0).join("sparse")).unwrap();
    f.write_all(&head).unwrap();
    f.seek(SeekFrom::Start(tail_at)).unwrap();
    f.write_all(b"end").unwrap();
    drop(f);
    let lower_before = std::fs::read(s.lower(0).join("sparse")).unwrap();
    let m = s.mount();
    let mut f = std::fs::OpenOptions::new().append(true).open(m.path.join("sparse")).unwrap();
    f.write_all(b"!").unwrap();
    drop(f);
    let mut want = lower_before.clone();
    want.push(b'!');
    assert!(std::fs::read(m.path.join("sparse")).unwrap() == want, "merged file differs");
    assert!(std::fs::read(s.upper.join("sparse")).unwrap() == want, "upper file differs");
    let up = std::fs::metadata(s.upper.join("sparse")).unwrap();
    assert_eq!(up.len(), tail_at + 4);
    assert!(up.blocks() * 512 < 8 << 20, "the hole was filled ({} blocks)", up.blocks());
    assert!(std::fs::read(s.lower(0).join("sparse")).unwrap() == lower_before, "the lower changed");
    m.unmount();
}

#[test]
fn st_ino_is_stable_across_copy_up() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let m = s.mount();
    let before = std::fs::metadata(s.m("tree/t1")).unwrap().ino();
    write(s.m("tree/t1"), "changed");
    let after = std::fs::metadata(s.m("tree/t1")).unwrap().ino();
    assert_eq!(before, after);
    // Renamed, and after a remount: the number comes back from the recorded origin.
    std::fs::rename(s.m("tree/t1"), s.m("dir/t1-moved")).unwrap();
    assert_eq!(std::fs::metadata(s.m("dir/t1-moved")).unwrap().ino(), before);
    m.unmount();
    let _m = s.mount();
    assert_eq!(std::fs::metadata(s.m("dir/t1-moved")).unwrap().ino(), before);
    // Directories keep the number of their topmost lower directory when copied up.
    let d = std::fs::metadata(s.m("tree/sub")).unwrap().ino();
    write(s.m("tree/sub/new"), "n");
    assert!(s.u("tree/sub").is_dir());
    assert_eq!(std::fs::metadata(s.m("tree/sub")).unwrap().ino(), d);
}

#[test]
fn open_before_copy_up_sees_what_the_merged_view_holds() {
    need_fuse!();
    let s = Stack::fixture("basic");
    // Without passthrough the union serves every read, so it can follow the copy-up.
    let _m = s.mount_with(&["-o", "nopassthrough"]);
    let reader = std::fs::File::open(s.m("tree/t1")).unwrap();
    std::fs::write(s.m("tree/t1"), "after copy-up").unwrap();
    let mut buf = [0u8; 64];
    let n = rustix::io::pread(&reader, &mut buf[..], 0).unwrap();
    // Kernel overlayfs (since 4.19) switches such a file to the upper copy too.
    assert_eq!(&buf[..n], b"after copy-up");
}

#[test]
fn with_passthrough_a_reader_opened_before_copy_up_keeps_the_lower_data() {
    need_fuse!();
    need_root!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    // The reader's file was handed to the kernel (passthrough): it reads the lower file
    // directly and cannot be switched (the documented difference from kernel overlayfs).
    let reader = std::fs::File::open(s.m("tree/t1")).unwrap();
    let mut w = std::fs::OpenOptions::new().write(true).truncate(true).open(s.m("tree/t1")).unwrap();
    std::io::Write::write_all(&mut w, b"after copy-up").unwrap();
    drop(w);
    let mut buf = [0u8; 64];
    let n = rustix::io::pread(&reader, &mut buf[..], 0).unwrap();
    let want: &[u8] = if passthrough_available() { b"t1\n" } else { b"after copy-up" };
    assert_eq!(String::from_utf8_lossy(&buf[..n]), String::from_utf8_lossy(want));
    // The writer's name now leads to a fresh inode for the upper file; `st_ino` stays the
    // object's number once the reader is gone and the kernel forgot the old inode.
    let st = std::fs::metadata(s.m("tree/t1")).unwrap();
    assert_eq!(st.len(), 13);
    // Everything opened after the copy-up sees it, whatever the reader does.
    assert_eq!(read(s.m("tree/t1")), "after copy-up");
    drop(reader);
    assert_eq!(read(s.m("tree/t1")), "after copy-up");
    assert_eq!(read(s.lower(2).join("tree/t1")), "t1\n", "the lower file is untouched");
}

#[test]
fn concurrent_copy_up_of_one_file() {
    need_fuse!();
    let s = Stack::empty(1);
    let big: Vec<u8> = (0..8 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(s.lower(0).join("big"), &big).unwrap();
    let _m = s.mount();
    let path = s.m("big");
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let p = path.clone();
            std::thread::spawn(move || {
                let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
                rustix::io::pwrite(&f, &[b'A' + i as u8], i * 4096).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let now = std::fs::read(&path).unwrap();
    assert_eq!(now.len(), big.len());
    for i in 0..8u64 {
        assert_eq!(now[(i * 4096) as usize], b'A' + i as u8, "write {i} kept");
    }
    assert_eq!(&now[8 * 4096..], &big[8 * 4096..], "the rest is the lower data");
    assert!(ls(s.work.join("work")).is_empty(), "no temporaries left in the work dir");
}

#[test]
fn big_copy_ups_do_not_stall_requests_for_other_files() {
    need_fuse!();
    // More concurrent copy-ups than the daemon has request threads.
    let _ = copy_ups_beside_reads(6, 64, "");
}

/// Copy-ups and `fsync`s run on a pool of threads apart from the request threads. Copy-ups
/// stuck on a stopped lower layer, more of them than that pool has threads to start with
/// (two per CPU, up to 8), must not keep an `fsync` of another file waiting behind them.
#[test]
fn an_fsync_beside_more_stuck_copy_ups_than_slow_threads_is_answered() {
    need_fuse!();
    let _ = copy_ups_beside_reads(20, 1, "");
}
