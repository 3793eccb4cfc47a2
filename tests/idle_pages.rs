//! A closed lower file's pages leave the mount's own page cache after `page_cache_idle`
//! (`src/union/idle.rs`): read again within it (or with 0) they are still there (no `READ`);
//! after it the data comes back through the daemon and is the same; an open or mapped file keeps its
//! pages until it is closed and unmapped, and files a passthrough mount hands to the kernel
//! are not counted at all.

use crate::common::*;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// `READ` requests the mount has served.
fn reads(mnt: &Path) -> u64 {
    stats_raw(mnt).get("op.read").copied().unwrap_or(0)
}

/// Reads `name` in the mount whole, checks it holds `data`, and says whether that sent `READ`s
/// (the mount's page cache did not have it all).
fn read_sent_reads(mnt: &Path, name: &str, data: &[u8]) -> bool {
    let before = reads(mnt);
    assert_eq!(std::fs::read(mnt.join(name)).unwrap(), data, "{name}");
    reads(mnt) > before
}

fn dropped(mnt: &Path) -> u64 {
    stats_raw(mnt)["idle_pages_dropped"]
}

/// Lower files `a`, `b` and `c` of 256 KiB each, of different bytes.
fn stack() -> (Stack, Vec<u8>) {
    let s = Stack::empty(1);
    let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    for n in ["a", "b", "c"] {
        std::fs::write(s.lower(0).join(n), &data).unwrap();
    }
    (s, data)
}

#[test]
fn a_closed_lower_file_loses_its_pages_after_the_interval_and_reads_the_same() {
    need_fuse!();
    let (s, data) = stack();
    let m = s.mount_with(&["-o", "nopassthrough,page_cache_idle=1"]);
    assert!(read_sent_reads(&m.path, "a", &data), "the first read goes to the daemon");
    wait_for("a's pages dropped", || dropped(&m.path) >= 1);
    assert!(read_sent_reads(&m.path, "a", &data), "after the interval the data came from the page cache still");
    m.unmount();
}

#[test]
fn open_and_mapped_files_keep_their_pages_until_closed_and_unmapped() {
    need_fuse!();
    let (s, data) = stack();
    let m = s.mount_with(&["-o", "nopassthrough,page_cache_idle=1"]);
    // `a`: read, and held open by a second descriptor.
    let held = std::fs::File::open(m.path.join("a")).unwrap();
    assert_eq!(std::fs::read(m.path.join("a")).unwrap(), data);
    // `c`: mapped, its descriptor closed (as the loader does with a shared library): the
    // mapping holds the file open.
    let c = std::fs::File::open(m.path.join("c")).unwrap();
    let len = data.len();
    // SAFETY: a fresh read-only private mapping of `len` bytes of an open file, unmapped below.
    let map = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, c.as_raw_fd(), 0) };
    assert_ne!(map, libc::MAP_FAILED);
    drop(c);
    {
        // SAFETY: the mapping is `len` readable bytes and lives until the munmap below.
        let mapped = unsafe { std::slice::from_raw_parts(map as *const u8, len) };
        assert_eq!(mapped, &data[..]);
    }
    // `b`: read and closed after the others: had they been taken for closed, they would
    // have been due before it.
    assert_eq!(std::fs::read(m.path.join("b")).unwrap(), data);
    wait_for("b's pages dropped", || dropped(&m.path) >= 1);
    assert_eq!(dropped(&m.path), 1, "only b: a is open, c mapped");
    let before = reads(&m.path);
    let mut again = Vec::new();
    (&held).read_to_end(&mut again).unwrap();
    {
        // SAFETY: as above; still mapped.
        let mapped = unsafe { std::slice::from_raw_parts(map as *const u8, len) };
        assert_eq!(mapped, &data[..]);
    }
    assert_eq!(again, data);
    assert_eq!(reads(&m.path), before, "the open or the mapped file lost its pages");
    // Unmapped and closed: both go, and read back the same through the daemon.
    // SAFETY: unmaps the mapping made above; no slice of it is alive.
    assert_eq!(unsafe { libc::munmap(map, len) }, 0);
    drop(held);
    wait_for("a's and c's pages dropped", || dropped(&m.path) >= 3);
    for n in ["a", "c"] {
        assert!(read_sent_reads(&m.path, n, &data), "{n} was read from pages that should have gone");
    }
    m.unmount();
}

#[test]
fn files_handed_to_the_kernel_by_passthrough_are_not_counted() {
    need_fuse!();
    need_root!();
    let (s, data) = stack();
    // Set-user-id files are served through the daemon even with passthrough (a write by
    // another user must clear the bit): their pages are the mount's own.
    for n in ["b", "c"] {
        std::fs::set_permissions(s.lower(0).join(n), std::fs::Permissions::from_mode(0o4755)).unwrap();
    }
    let m = s.mount_with(&["-o", "page_cache_idle=1"]);
    // b, then a (passthrough: no READ), then c: due in that order.
    let pt = passthrough_available();
    assert_eq!(std::fs::read(m.path.join("b")).unwrap(), data);
    assert_eq!(read_sent_reads(&m.path, "a", &data), !pt, "a read through passthrough sends no READ");
    assert_eq!(std::fs::read(m.path.join("c")).unwrap(), data);
    // With passthrough two dropped, b and c: had a counted, the two would be b and a, and c
    // still cached. (Without it, a too.)
    let n = if pt { 2 } else { 3 };
    wait_for("the files' pages dropped", || dropped(&m.path) >= n);
    assert_eq!(dropped(&m.path), n);
    assert!(read_sent_reads(&m.path, "c", &data), "c kept its pages: a passthrough file was counted");
    m.unmount();
}

#[test]
fn within_the_interval_or_with_zero_pages_stay_and_a_bad_value_is_refused() {
    need_fuse!();
    let (s, data) = stack();
    let out = s.mount_command(&["-o", "nopassthrough,page_cache_idle=soon"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("page_cache_idle") && err.trim().lines().count() == 1, "{err}");
    assert!(!is_mounted(&s.mnt), "a refused option left a mount");
    for idle in ["3600", "0"] {
        let m = s.mount_with(&["-o", &format!("nopassthrough,page_cache_idle={idle}")]);
        assert_eq!(std::fs::read(m.path.join("a")).unwrap(), data);
        assert!(!read_sent_reads(&m.path, "a", &data), "page_cache_idle={idle}: the second read sent READs");
        assert_eq!(dropped(&m.path), 0, "page_cache_idle={idle}");
        m.unmount();
    }
}

fn reopens(mnt: &Path) -> u64 {
    stats_raw(mnt)["reopens_cached"]
}

fn prefilled(mnt: &Path) -> u64 {
    stats_raw(mnt)["pages_prefilled"]
}

#[test]
fn a_small_lower_file_opened_again_soon_is_served_from_the_page_cache() {
    need_fuse!();
    need_root!();
    let (s, data) = stack();
    let big: Vec<u8> = data.iter().cycle().take(1024 * 1024).copied().collect();
    std::fs::write(s.lower(0).join("big"), &big).unwrap();
    let pt = passthrough_available();
    let m = s.mount_with(&["-o", "page_cache_idle=3600"]);
    // With passthrough: the first read is the kernel's; the second, opened soon after, is
    // served from the mount's page cache, which the daemon fills at the open; the third finds
    // it there. Without: the first fills the page cache with READs, the rest find it there.
    let sent: Vec<bool> = (0..3).map(|_| read_sent_reads(&m.path, "a", &data)).collect();
    assert_eq!(sent, [!pt, false, false], "READs sent by three reads of a small file");
    assert_eq!((reopens(&m.path), prefilled(&m.path)), if pt { (2, 1) } else { (0, 0) }, "(reopens, prefilled)");
    // And no GETATTR either now: a READ (or a passthrough read) marks the access time stale,
    // and `std::fs::read`'s `statx` would ask for it again.
    let getattrs = stats_raw(&m.path).get("op.getattr").copied().unwrap_or(0);
    assert!(!read_sent_reads(&m.path, "a", &data));
    assert_eq!(stats_raw(&m.path).get("op.getattr").copied().unwrap_or(0), getattrs, "a fourth read sent a GETATTR");
    // A larger file stays with passthrough however often it is read.
    let sent: Vec<bool> = (0..3).map(|_| read_sent_reads(&m.path, "big", &big)).collect();
    assert_eq!(sent, [!pt, false, false], "READs sent by three reads of a 1 MiB file");
    assert_eq!(reopens(&m.path), if pt { 3 } else { 0 }, "a 1 MiB file was served from the page cache");
    m.unmount();
    // With page_cache_idle=0 (pages kept until reclaimed) opens choose as before.
    let m = s.mount_with(&["-o", "page_cache_idle=0"]);
    let sent: Vec<bool> = (0..3).map(|_| read_sent_reads(&m.path, "b", &data)).collect();
    assert_eq!(sent, [!pt, false, false], "page_cache_idle=0: READs sent by three reads");
    assert_eq!(reopens(&m.path), 0);
    m.unmount();
}

#[test]
fn a_file_read_from_the_page_cache_then_written_through_passthrough_reads_back_the_write() {
    need_fuse!();
    need_root!();
    let (s, data) = stack();
    let m = s.mount_with(&["-o", "page_cache_idle=3600"]);
    let f = m.path.join("a");
    for _ in 0..3 {
        assert_eq!(std::fs::read(&f).unwrap(), data);
    }
    // Written in place (the size stays): copied up, and with passthrough written by the kernel
    // beside the mount's cached pages of the lower data.
    let w = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&w, b"NEW", 0).unwrap();
    drop(w);
    let mut want = data.clone();
    want[..3].copy_from_slice(b"NEW");
    assert!(std::fs::read(&f).unwrap() == want, "the write was not read back");
    // Set-user-id: now served through the daemon and the page cache, which must not hold the
    // lower data any more.
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4755)).unwrap();
    assert!(std::fs::read(&f).unwrap() == want, "set-user-id: the old data was read back");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(std::fs::read(&f).unwrap() == want, "the old data was read back");
    m.unmount();
}
