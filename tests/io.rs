//! File data operations through the mount: read/write, O_APPEND, fsync, fallocate,
//! SEEK_DATA/SEEK_HOLE, shared writable mmap, statfs, ioctl, the read-ahead window.

use crate::common::*;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

#[test]
fn append_mode_appends() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    let mut f = std::fs::OpenOptions::new().append(true).open(s.m("bar")).unwrap();
    f.write_all(b"1").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(b"2").unwrap();
    f.sync_all().unwrap();
    f.sync_data().unwrap();
    drop(f);
    assert_eq!(read(s.m("bar")), "bar from l1\n12");
}

#[test]
fn read_write_at_offsets() {
    need_fuse!();
    let s = Stack::empty(1);
    let _m = s.mount();
    let mut f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(s.m("f")).unwrap();
    let block: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    f.write_all(&block).unwrap();
    f.seek(SeekFrom::Start(1000)).unwrap();
    f.write_all(b"XYZ").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut back = Vec::new();
    f.read_to_end(&mut back).unwrap();
    assert_eq!(back.len(), block.len());
    assert_eq!(&back[1000..1003], b"XYZ");
    assert_eq!(&back[..1000], &block[..1000]);
    assert_eq!(&back[1003..], &block[1003..]);
}

/// Without passthrough a handle open for writing only writes straight through (no page
/// cache of its own): a reader that cached the file sees each write at once, appends land at
/// the end, the upper holds the data before the writer closes, and large writes arrive whole.
#[test]
fn write_only_handles_without_passthrough_stay_coherent_with_cached_readers() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount_with(&["-o", "nopassthrough"]);
    let before = read(s.m("bar"));
    // A reader caches the lower file's pages.
    let reader = std::fs::File::open(s.m("bar")).unwrap();
    let mut buf = vec![0u8; 4 << 20];
    let n = rustix::io::pread(&reader, &mut buf[..], 0).unwrap();
    assert_eq!(&buf[..n], before.as_bytes());
    // Overwrite in place through a write-only handle (copy-up first), then append.
    let mut w = std::fs::OpenOptions::new().write(true).open(s.m("bar")).unwrap();
    w.write_all(b"BAR").unwrap();
    let mut a = std::fs::OpenOptions::new().append(true).open(s.m("bar")).unwrap();
    a.write_all(b"+tail").unwrap();
    let want = format!("BAR{}+tail", &before[3..]);
    let n = rustix::io::pread(&reader, &mut buf[..], 0).unwrap();
    assert_eq!(String::from_utf8_lossy(&buf[..n]), want, "the cached reader sees both writes");
    assert_eq!(read(s.u("bar")), want, "the upper has the data while the writers are open");
    // Large and odd-sized writes arrive whole.
    let odd: Vec<u8> = (0..(3u32 << 20) + 4321).map(|i| (i % 251) as u8).collect();
    let mut f = std::fs::File::create(s.m("odd")).unwrap();
    for chunk in odd.chunks((1 << 20) + 17) {
        f.write_all(chunk).unwrap();
    }
    let n = rustix::io::pread(std::fs::File::open(s.m("odd")).unwrap(), &mut buf[..], 0).unwrap();
    assert_eq!(n, odd.len());
    assert!(buf[..n] == odd[..], "the odd-sized file reads back whole");
    // What a write-only handle wrote (whole pages) is not kept in the mount's page cache:
    // reading it back asks the daemon (through the page cache it would not).
    let mut g = std::fs::File::create(s.m("aligned")).unwrap();
    g.write_all(&odd[..2 << 20]).unwrap();
    let reads = stats_raw(&s.mnt).get("op.read").copied().unwrap_or(0);
    let n = rustix::io::pread(std::fs::File::open(s.m("aligned")).unwrap(), &mut buf[..], 0).unwrap();
    assert!(n == 2 << 20 && buf[..n] == odd[..n]);
    assert!(stats_raw(&s.mnt)["op.read"] > reads, "the write-only handle filled the page cache");
    drop((w, a, f, g));
    assert_eq!(read(s.m("bar")), want);
}

#[test]
fn fallocate_and_seek_data_hole() {
    need_fuse!();
    let s = Stack::empty(1);
    let _m = s.mount();
    let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(s.m("sp")).unwrap();
    rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, 1 << 20).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 1 << 20);
    rustix::fs::fallocate(
        &f,
        rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
        0,
        1 << 20,
    )
    .unwrap();
    rustix::io::pwrite(&f, b"data", 512 << 10).unwrap();
    let data = rustix::fs::seek(&f, rustix::fs::SeekFrom::Data(0)).unwrap();
    assert_eq!(data, 512 << 10, "SEEK_DATA finds the data after the hole");
    let hole = rustix::fs::seek(&f, rustix::fs::SeekFrom::Hole(data)).unwrap();
    assert!(hole > data && hole <= 1 << 20);
}

#[test]
fn shared_writable_mmap() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    let f = std::fs::OpenOptions::new().read(true).write(true).open(s.m("foo")).unwrap();
    let len = 12;
    // SAFETY: test code; the mapping is used only while `f` is open and unmapped after.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        let bytes = std::slice::from_raw_parts_mut(p as *mut u8, len);
        assert_eq!(&bytes[..3], b"foo");
        bytes[..3].copy_from_slice(b"FOO");
        assert_eq!(libc::msync(p, len, libc::MS_SYNC), 0);
        libc::munmap(p, len);
    }
    drop(f);
    assert_eq!(read(s.m("foo")), "FOO from l2\n");
    assert_eq!(read(s.u("foo")), "FOO from l2\n");
}

#[test]
fn statfs_comes_from_the_upper() {
    need_fuse!();
    let s = Stack::empty(1);
    let _m = s.mount();
    let a = rustix::fs::statvfs(&s.mnt).unwrap();
    let b = rustix::fs::statvfs(&s.upper).unwrap();
    assert_eq!(a.f_blocks, b.f_blocks);
    assert_eq!(a.f_namemax, 255);
}

#[test]
fn unknown_ioctl_is_enotty() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    let f = std::fs::File::open(s.m("foo")).unwrap();
    // SAFETY: test code; _IO(0x58, 0x99): no argument, and no filesystem knows it.
    let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), 0x5899u64 as _) };
    assert_eq!(rc, -1);
    assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::ENOTTY));
}

#[test]
fn o_excl_and_o_trunc_and_directories() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    let f = std::fs::OpenOptions::new().write(true).truncate(true).open(s.m("bar")).unwrap();
    drop(f);
    assert_eq!(read(s.m("bar")), "");
    assert_eq!(errno(std::fs::OpenOptions::new().write(true).open(s.m("dir"))), libc::EISDIR);
    assert_eq!(
        errno(std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(s.m("foo"))),
        libc::ENOTDIR
    );
}

#[test]
fn removed_but_open_files_still_work() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    let mut f =
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(s.m("tmp")).unwrap();
    std::fs::remove_file(s.m("tmp")).unwrap();
    let st = f.metadata().unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::nlink(&st), 0);
    f.write_all(b"still here").unwrap();
    let mut buf = [0u8; 10];
    assert_eq!(rustix::io::pread(&f, &mut buf[..], 0).unwrap(), 10);
    assert_eq!(&buf, b"still here");
    assert_eq!(f.metadata().unwrap().len(), 10);
}

#[test]
fn running_out_of_descriptors_does_not_fail_the_containers_opens() {
    need_fuse!();
    let s = Stack::empty(1);
    for i in 0..400 {
        let d = s.lower(0).join(format!("d{i:03}"));
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("f"), format!("{i}\n")).unwrap();
    }
    let m = s.mount();
    // The daemon's descriptor limit drops far below what its directory cache was sized for.
    let pid = daemon_pid(&m.path).expect("daemon process");
    let st = std::process::Command::new("prlimit").arg(format!("--pid={pid}")).arg("--nofile=96:96").status().unwrap();
    assert!(st.success());
    for round in 0..2 {
        for i in 0..400 {
            let p = s.m(&format!("d{i:03}/f"));
            let got = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("round {round}: {p:?}: {e}"));
            assert_eq!(got, format!("{i}\n"));
        }
    }
    // Writes (copy-up through the work dir) keep working too.
    for i in 0..50 {
        write(s.m(&format!("d{i:03}/f")), "changed\n");
    }
    assert_eq!(read(s.u("d000/f")), "changed\n");
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap()
}

#[test]
fn memory_stays_bounded_and_reclaimed_inodes_come_back_the_same() {
    need_fuse!();
    let s = Stack::empty(1);
    for d in 0..100 {
        let dir = s.lower(0).join(format!("d{d:03}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..300 {
            std::fs::write(dir.join(format!("file-with-a-longish-name-{f:03}")), b"x").unwrap();
        }
    }
    let walk = |root: &std::path::Path| -> Vec<(String, u64)> {
        let mut v = Vec::new();
        for d in 0..100 {
            for e in std::fs::read_dir(root.join(format!("d{d:03}"))).unwrap() {
                let e = e.unwrap();
                v.push((e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().ino()));
            }
        }
        v.sort();
        v
    };
    // Growth of the daemon's resident memory over two walks of the tree. `settled` says
    // when it is low enough: the reclaim (and the return of freed memory to the system) runs
    // on its own thread, which a busy machine may run late, so the bound is waited for (up
    // to 30 s) rather than read once right after the walk.
    let growth = |extra: &[&str], settled: &dyn Fn(u64) -> bool| {
        let m = s.mount_with(extra);
        let pid = daemon_pid(&m.path).unwrap();
        let before = rss_kib(pid);
        let first = walk(&m.path);
        // A file kept open and one copied up survive the reclaim of everything around them.
        let mut open = std::fs::File::open(s.m("d000/file-with-a-longish-name-000")).unwrap();
        write(s.m("d001/file-with-a-longish-name-001"), "changed");
        std::thread::sleep(std::time::Duration::from_millis(500));
        let second = walk(&m.path);
        assert_eq!(first, second, "inode numbers are the same after reclaim");
        let mut buf = String::new();
        open.read_to_string(&mut buf).unwrap();
        assert_eq!(buf, "x");
        assert_eq!(read(s.m("d001/file-with-a-longish-name-001")), "changed");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut grown = rss_kib(pid).saturating_sub(before);
        while !settled(grown) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(200));
            grown = rss_kib(pid).saturating_sub(before);
        }
        drop(open);
        drop(m);
        std::fs::remove_dir_all(s.u("d001")).unwrap();
        grown
    };
    let unbounded = growth(&[], &|_| true);
    let bounded = growth(&["-o", "max_nodes=1000"], &|b| b * 2 < unbounded);
    assert!(bounded * 2 < unbounded, "30k files walked: {bounded} KiB with max_nodes=1000, {unbounded} KiB without");
}

/// A program running from the mount: opening it for writing, or with `O_TRUNC` for reading
/// (which the kernel hands to the daemon before it checks), is `ETXTBSY`, and neither
/// truncates the file under the program (it died of SIGBUS when it did) nor copies a lower
/// one up. Once the program is gone, the same open truncates.
#[test]
fn a_running_program_is_text_busy_and_stays_whole() {
    need_fuse!();
    let s = Stack::empty(1);
    let sleep = std::fs::read("/bin/sleep").unwrap();
    std::fs::write(s.lower(0).join("lower-prog"), &sleep).unwrap();
    std::fs::set_permissions(s.lower(0).join("lower-prog"), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    let m = s.mount();
    std::fs::write(m.path.join("upper-prog"), &sleep).unwrap();
    std::fs::set_permissions(m.path.join("upper-prog"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for name in ["upper-prog", "lower-prog"] {
        let p = m.path.join(name);
        let mut child = std::process::Command::new(&p).arg("30").spawn().unwrap();
        for (flags, what) in [
            (libc::O_WRONLY, "O_WRONLY"),
            (libc::O_RDWR, "O_RDWR"),
            (libc::O_RDONLY | libc::O_TRUNC, "O_RDONLY|O_TRUNC"),
            (libc::O_WRONLY | libc::O_TRUNC, "O_WRONLY|O_TRUNC"),
        ] {
            let mode = flags & libc::O_ACCMODE;
            let r = std::fs::OpenOptions::new()
                .read(mode != libc::O_WRONLY)
                .write(mode != libc::O_RDONLY)
                .custom_flags(flags & !libc::O_ACCMODE)
                .open(&p);
            assert_eq!(r.err().and_then(|e| e.raw_os_error()), Some(libc::ETXTBSY), "{name}: {what}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(child.try_wait().unwrap().is_none(), "{name}: the program died");
        assert!(std::fs::read(&p).unwrap() == sleep, "{name}: the program changed under it");
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert!(!s.upper.join("lower-prog").exists(), "a refused open copied the lower program up");
    // Nothing runs now: the truncating open goes through.
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_TRUNC).open(m.path.join("lower-prog")).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 0);
    drop(f);
    m.unmount();
}

/// The mount's backing device's read-ahead window (`/sys/class/bdi/MAJ:MIN/read_ahead_kb`).
fn read_ahead_kb(mnt: &std::path::Path) -> u32 {
    let dev = std::fs::metadata(mnt).unwrap().dev();
    let path = format!("/sys/class/bdi/{}:{}/read_ahead_kb", libc::major(dev), libc::minor(dev));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")).trim().parse().unwrap()
}

/// Without passthrough reads fill the mount's page cache through the daemon, in windows the
/// kernel starts at 128 KiB for a FUSE mount: the daemon (root) widens its own mount's to what
/// one request carries, and leaves a passthrough mount's alone (its reads never reach it).
#[test]
fn a_mount_without_passthrough_reads_ahead_as_far_as_one_request_carries() {
    need_fuse!();
    need_root!();
    let s = Stack::fixture("basic");
    let data: Vec<u8> = (0..(3u32 << 20) + 99).map(|i| (i.wrapping_mul(2654435761) >> 9) as u8).collect();
    std::fs::write(s.lowers[0].join("big"), &data).unwrap();
    {
        let m = s.mount_with(&["-o", "nopassthrough"]);
        assert_eq!(read_ahead_kb(&m.path), 1024, "the window of a mount without passthrough");
        assert!(std::fs::read(m.path.join("big")).unwrap() == data, "data read ahead differs");
    }
    // (The kernel's window for a new FUSE mount: 128 KiB, or less if INIT asked for less.)
    let m = s.mount();
    assert!(read_ahead_kb(&m.path) <= 128, "a passthrough mount's window was changed");
}
