//! Full and over-quota uppers: writes fail with ENOSPC/EDQUOT, a copy-up that cannot finish
//! leaves the lower version visible and intact, and the mount works again once space is
//! freed. And fsync means durable: after a simulated power cut of the upper's filesystem,
//! what fsync returned for is there.

use crate::common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

fn ok(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status().is_ok_and(|s| s.success())
}

/// A filesystem at `q` that gives `EDQUOT` past 1 MiB: tmpfs with user quotas (Linux 6.6+,
/// `CONFIG_TMPFS_QUOTA`), else a btrfs subvolume with a qgroup limit (needs btrfs-progs).
/// The returned directory inside it is where upper and work go.
fn quota_fs(q: &Path) -> Option<(FsMount, PathBuf)> {
    std::fs::create_dir_all(q).unwrap();
    let tmpfs = ["-t", "tmpfs", "-o", "size=64m,usrquota,usrquota_block_hardlimit=1m", "tmpfs"];
    if ok(Command::new("mount").args(tmpfs).arg(q)) {
        return Some((FsMount(q.to_path_buf(), None), q.to_path_buf()));
    }
    let img = PathBuf::from(format!("/var/tmp/unionfs-quota-{}.img", std::process::id()));
    let made = std::fs::File::create(&img).and_then(|f| f.set_len(300 << 20)).is_ok()
        && ok(Command::new("mkfs.btrfs").arg("-q").arg(&img));
    if !made || !ok(Command::new("mount").args(["-o", "loop"]).arg(&img).arg(q)) {
        let _ = std::fs::remove_file(&img);
        return None;
    }
    let fs = FsMount(q.to_path_buf(), Some(img));
    let sub = q.join("sub");
    let limited = ok(Command::new("btrfs").args(["quota", "enable"]).arg(q))
        && ok(Command::new("btrfs").args(["subvolume", "create"]).arg(&sub))
        && ok(Command::new("btrfs").args(["qgroup", "limit", "1M"]).arg(&sub));
    limited.then_some((fs, sub))
}

fn union_mount(lower: &Path, upper: &Path, work: &Path, mnt: &Path) -> Mount {
    std::fs::create_dir_all(mnt).unwrap();
    let args: Vec<String> = vec![
        "mount".into(),
        "--lower".into(),
        lower.display().to_string(),
        "--upper".into(),
        upper.display().to_string(),
        "--work".into(),
        work.display().to_string(),
        mnt.display().to_string(),
    ];
    Mount::new(&args, mnt)
}

fn fill(p: &Path) -> i32 {
    let mut f = match std::fs::File::create(p) {
        Ok(f) => f,
        Err(e) => return e.raw_os_error().unwrap_or(0),
    };
    let chunk = vec![7u8; 64 << 10];
    loop {
        if let Err(e) = f.write_all(&chunk).and_then(|_| f.sync_all()) {
            return e.raw_os_error().unwrap_or(0);
        }
    }
}

#[test]
fn a_full_upper_gives_enospc_keeps_the_lower_version_and_recovers() {
    need_fuse!();
    need_root!();
    let d = tempfile::tempdir().unwrap();
    let lower = d.path().join("lower");
    std::fs::create_dir(&lower).unwrap();
    let big: Vec<u8> = (0..8 << 20).map(|i| (i % 253) as u8).collect();
    std::fs::write(lower.join("big"), &big).unwrap();
    std::fs::write(lower.join("small"), "small\n").unwrap();
    let small = d.path().join("small-fs");
    let _fs = mount_tmpfs(&small, "size=4m");
    let (upper, work) = (small.join("upper"), small.join("work"));
    std::fs::create_dir(&upper).unwrap();
    std::fs::create_dir(&work).unwrap();
    let mnt = d.path().join("mnt");
    let m = union_mount(&lower, &upper, &work, &mnt);

    // A copy-up that does not fit: ENOSPC, and the lower version stays, whole.
    let e = std::fs::OpenOptions::new().append(true).open(m.path.join("big")).and_then(|mut f| f.write_all(b"x"));
    assert_eq!(errno(e), libc::ENOSPC);
    assert_eq!(std::fs::read(m.path.join("big")).unwrap(), big);
    assert!(!upper.join("big").exists(), "no partial copy in the upper");
    assert_eq!(std::fs::read_dir(work.join("work")).unwrap().count(), 0, "no temporary left behind");

    // Writing new data until the disk is full: ENOSPC reaches the writer.
    assert_eq!(fill(&m.path.join("filler")), libc::ENOSPC);
    // Small changes fail too while full, with the right errno and no damage.
    let e = std::fs::OpenOptions::new().append(true).open(m.path.join("small")).and_then(|mut f| f.write_all(b"y"));
    let n = errno(e);
    assert!(matches!(n, 0 | libc::ENOSPC), "errno {n}");
    assert!(std::fs::read_to_string(m.path.join("small")).unwrap().starts_with("small\n"));

    // Space freed: the mount works again. FUSE sends a file's release after `close`
    // returns, so the daemon may serve the unlink first; the space comes back when both are
    // served (progress, waited for; never a guess at how long that takes).
    let free = || rustix::fs::statvfs(&small).unwrap().f_bfree;
    let before = free();
    std::fs::remove_file(m.path.join("filler")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while free() <= before {
        assert!(std::time::Instant::now() < deadline, "the removed filler's space never came back");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::fs::write(m.path.join("after"), "after\n").unwrap();
    assert_eq!(read(m.path.join("after")), "after\n");
    std::fs::OpenOptions::new().append(true).open(m.path.join("small")).unwrap().write_all(b"z\n").unwrap();
    assert!(read(m.path.join("small")).ends_with("z\n"));
    m.unmount();
    assert_eq!(std::fs::read(lower.join("big")).unwrap(), big, "the lower layer is untouched");
}

/// 2 MiB: more than the quota allows.
fn big_data() -> Vec<u8> {
    (0..2 << 20).map(|i| (i % 251) as u8).collect()
}

const QUOTA_ENV: &str = "UNIONFS_QUOTA_DIR";

/// The unprivileged half: the daemon runs as the test user, whose quota the upper enforces.
#[test]
#[ignore = "the unprivileged half of an_upper_over_quota_gives_edquot, which runs it as the test user"]
fn over_quota_inner() {
    let dir = std::env::var_os(QUOTA_ENV).map(PathBuf::from).expect("started as the test user by its outer test");
    assert!(!is_root());
    let lower = dir.join("lower");
    let q = std::fs::read_dir(dir.join("q")).unwrap().flatten().map(|e| e.path()).find(|p| p.ends_with("sub"));
    let q = q.unwrap_or_else(|| dir.join("q"));
    let m = union_mount(&lower, &q.join("upper"), &q.join("work"), &dir.join("mnt"));
    // A copy-up past the quota: EDQUOT, the lower version stays whole, nothing left behind.
    let e = std::fs::OpenOptions::new().append(true).open(m.path.join("big")).and_then(|mut f| f.write_all(b"x"));
    assert_eq!(errno(e), libc::EDQUOT);
    assert_eq!(std::fs::read(m.path.join("big")).unwrap(), big_data());
    assert!(!q.join("upper/big").exists(), "no partial copy in the upper");
    assert_eq!(std::fs::read_dir(q.join("work/work")).unwrap().count(), 0, "no temporary left behind");
    assert_eq!(fill(&m.path.join("filler")), libc::EDQUOT);
    assert_eq!(read(m.path.join("small")), "small\n");
    std::fs::remove_file(m.path.join("filler")).unwrap();
    std::fs::write(m.path.join("after"), "after\n").unwrap();
    m.unmount();
}

#[test]
fn an_upper_over_quota_gives_edquot() {
    need_fuse!();
    need_root!();
    let (uid, gid) = ensure_test_user();
    let d = user_tempdir(uid, gid);
    let Some((_fs, q)) = quota_fs(&d.path().join("q")) else {
        skip!("neither tmpfs user quotas nor btrfs qgroups on this machine");
    };
    for sub in ["upper", "work"] {
        std::fs::create_dir(q.join(sub)).unwrap();
        std::os::unix::fs::chown(q.join(sub), Some(uid), Some(gid)).unwrap();
    }
    let lower = d.path().join("lower");
    std::fs::create_dir(&lower).unwrap();
    std::fs::write(lower.join("small"), "small\n").unwrap();
    std::fs::write(lower.join("big"), big_data()).unwrap();
    for f in ["small", "big"] {
        std::os::unix::fs::chown(lower.join(f), Some(uid), Some(gid)).unwrap();
    }
    std::os::unix::fs::chown(&q, Some(uid), Some(gid)).unwrap();
    let out = run_test_as_user(test_name!("over_quota_inner"), uid, gid, &[(QUOTA_ENV, d.path())]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// `EXT4_IOC_SHUTDOWN` with `EXT4_GOING_FLAGS_NOLOGFLUSH`: the filesystem stops as at a power
/// cut: nothing more reaches the disk, and what was not committed is lost.
fn power_cut(fs_root: &Path) {
    const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587d;
    const NOLOGFLUSH: u32 = 2;
    let f = std::fs::File::open(fs_root).unwrap();
    let flags = NOLOGFLUSH;
    // SAFETY: the ioctl reads one u32 from a valid pointer on an open descriptor.
    let r = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), EXT4_IOC_SHUTDOWN, &flags) };
    assert_eq!(r, 0, "shutdown ioctl: {}", std::io::Error::last_os_error());
}

#[test]
fn what_fsync_returned_for_survives_a_power_cut_of_the_upper() {
    need_fuse!();
    need_root!();
    let d = tempfile::tempdir().unwrap();
    let image = Ext4Image::new(d.path(), "disk", 256);
    let disk = image.at.clone();
    let mount_disk = || image.mount("");
    let lower = d.path().join("lower");
    std::fs::create_dir(&lower).unwrap();
    std::fs::write(lower.join("old"), vec![1u8; 1 << 20]).unwrap();
    let fs = mount_disk();
    std::fs::create_dir(disk.join("upper")).unwrap();
    std::fs::create_dir(disk.join("work")).unwrap();
    let mnt = d.path().join("mnt");
    let m = union_mount(&lower, &disk.join("upper"), &disk.join("work"), &mnt);
    // A new file, written and fsynced.
    let mut f = std::fs::File::create(m.path.join("new")).unwrap();
    f.write_all(&vec![2u8; 1 << 20]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    // A copied-up file, appended to and fdatasynced.
    let mut f = std::fs::OpenOptions::new().append(true).open(m.path.join("old")).unwrap();
    f.write_all(b"tail").unwrap();
    f.sync_data().unwrap();
    drop(f);
    power_cut(&disk);
    drop(m);
    let _ = rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::DETACH);
    drop(fs);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let _fs = mount_disk();
    assert_eq!(std::fs::read(disk.join("upper/new")).unwrap(), vec![2u8; 1 << 20], "the fsynced new file");
    let old = std::fs::read(disk.join("upper/old")).unwrap();
    assert_eq!(old.len(), (1 << 20) + 4, "the copied-up, fdatasynced file");
    assert!(old.ends_with(b"tail") && old[..1 << 20].iter().all(|b| *b == 1));
}
