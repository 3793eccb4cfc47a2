//! Load: several workers at once on one mount, for a bounded time (`UNIONFS_STRESS_SECS`,
//! default 8 s per test; set it higher for a soak). Every operation either succeeds or fails
//! with the errno the situation calls for; the data read back always matches a model; no
//! request ever answers EIO.

use crate::common::*;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn secs() -> Duration {
    Duration::from_secs(std::env::var("UNIONFS_STRESS_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(8))
}

/// A small deterministic generator (xorshift), one per worker.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// fsx-style: random writes, truncates, reads, mmap writes and reopenings of one file,
/// checked against an in-memory model after every step. The file starts in the lower
/// layer, so the first change copies it up.
fn fsx(path: PathBuf, seed: u64, until: Instant, initial: Vec<u8>) -> u64 {
    let mut rng = Rng(seed);
    let mut model = initial;
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let mut ops = 0;
    while Instant::now() < until {
        ops += 1;
        match rng.below(7) {
            0 | 1 => {
                let off = rng.below(300_000);
                let len = 1 + rng.below(40_000) as usize;
                let byte = (rng.next() & 0xff) as u8;
                let buf = vec![byte; len];
                f.write_all_at(&buf, off).unwrap();
                let end = off as usize + len;
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[off as usize..end].copy_from_slice(&buf);
            }
            2 => {
                let len = rng.below(350_000);
                f.set_len(len).unwrap();
                model.resize(len as usize, 0);
            }
            3 => {
                let off = rng.below(model.len() as u64 + 1);
                let len = rng.below(60_000) as usize;
                let mut buf = vec![0u8; len];
                let n = f.read_at(&mut buf, off).unwrap();
                let want = &model[(off as usize).min(model.len())..(off as usize + len).min(model.len())];
                assert_eq!(&buf[..n], want, "{path:?}: read at {off} after {ops} ops");
            }
            4 if !model.is_empty() => {
                // A shared writable mapping, changed in place and synced.
                let len = model.len();
                // SAFETY: maps `len` bytes of an open file; checked against MAP_FAILED below.
                let map = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        len,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_SHARED,
                        std::os::fd::AsRawFd::as_raw_fd(&f),
                        0,
                    )
                };
                assert_ne!(map, libc::MAP_FAILED, "{path:?}: mmap: {}", std::io::Error::last_os_error());
                let off = rng.below(len as u64) as usize;
                let n = (1 + rng.below(5000) as usize).min(len - off);
                let byte = (rng.next() & 0xff) as u8;
                // SAFETY: `map` covers `len` bytes of the file and `off + n <= len`.
                unsafe {
                    std::ptr::write_bytes((map as *mut u8).add(off), byte, n);
                    assert_eq!(libc::msync(map, len, libc::MS_SYNC), 0);
                    libc::munmap(map, len);
                }
                model[off..off + n].fill(byte);
            }
            5 => {
                // Reopen: a fresh handle must see everything written so far.
                f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
            }
            _ => {
                let mut all = Vec::new();
                f.seek(SeekFrom::Start(0)).unwrap();
                f.read_to_end(&mut all).unwrap();
                assert!(all == model, "{path:?}: whole file differs after {ops} ops");
            }
        }
    }
    let all = std::fs::read(&path).unwrap();
    assert!(all == model, "{path:?}: final content differs");
    ops
}

#[test]
fn fsx_on_several_files_at_once() {
    need_fuse!();
    let s = Stack::empty(1);
    let initial: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for i in 0..4 {
        std::fs::write(s.lower(0).join(format!("f{i}")), &initial).unwrap();
    }
    let m = s.mount();
    let until = Instant::now() + secs();
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let p = m.path.join(format!("f{i}"));
            let init = initial.clone();
            std::thread::spawn(move || fsx(p, 0x9e37_79b9_7f4a_7c15 ^ (i + 1), until, init))
        })
        .collect();
    let ops: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(ops > 100, "only {ops} operations ran");
    eprintln!("fsx: {ops} checked operations on 4 files in {:?}, no corruption", secs());
    assert_eq!(std::fs::read(s.lower(0).join("f0")).unwrap(), initial, "the lower layer is untouched");
}

/// Namespace churn: workers create, rename, link and delete names in the same directories
/// while others list them; every failure must be an errno the race explains.
#[test]
fn namespace_churn_in_shared_directories() {
    need_fuse!();
    let s = Stack::empty(1);
    for d in 0..3 {
        std::fs::create_dir(s.lower(0).join(format!("d{d}"))).unwrap();
        for f in 0..30 {
            std::fs::write(s.lower(0).join(format!("d{d}/l{f}")), format!("{d}/{f}")).unwrap();
        }
    }
    let m = s.mount();
    let until = Instant::now() + secs();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = |r: std::io::Result<()>| match r {
        Ok(()) => {}
        Err(e) => {
            let n = e.raw_os_error().unwrap_or(0);
            // What racing with other workers can explain.
            assert!(
                [libc::ENOENT, libc::EEXIST, libc::ENOTEMPTY, libc::EXDEV].contains(&n),
                "unexpected error: {e} ({n})"
            );
        }
    };
    let root = m.path.clone();
    let mut workers = Vec::new();
    for w in 0..4u64 {
        let root = root.clone();
        workers.push(std::thread::spawn(move || {
            let mut rng = Rng(0x1234_5678 + w);
            let mut n = 0u64;
            while Instant::now() < until {
                n += 1;
                let d = root.join(format!("d{}", rng.below(3)));
                let a = d.join(format!("{}{}", if rng.below(2) == 0 { "l" } else { "n" }, rng.below(30)));
                let b = root.join(format!("d{}", rng.below(3))).join(format!("n{}", rng.below(30)));
                match rng.below(6) {
                    0 => ok(std::fs::write(&b, format!("w{w}-{n}"))),
                    1 => ok(std::fs::rename(&a, &b)),
                    2 => ok(std::fs::remove_file(&a)),
                    3 => ok(std::fs::hard_link(&a, &b)),
                    4 => ok(std::fs::OpenOptions::new().append(true).open(&a).and_then(|mut f| f.write_all(b"+"))),
                    _ => {
                        let t = root.join(format!("d{}", rng.below(3))).join(format!("t{}", rng.below(5)));
                        ok(std::fs::create_dir(&t).and_then(|_| std::fs::remove_dir(&t)))
                    }
                }
            }
            n
        }));
    }
    // Listers: no errors, no duplicate names in one listing.
    for _ in 0..2 {
        let root = root.clone();
        let stop = stop.clone();
        workers.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                for d in 0..3 {
                    let mut names: Vec<_> = std::fs::read_dir(root.join(format!("d{d}")))
                        .unwrap()
                        .map(|e| e.unwrap().file_name())
                        .collect();
                    let total = names.len();
                    names.sort();
                    let all = names.clone();
                    names.dedup();
                    assert_eq!(names.len(), total, "a listing showed a name twice: {all:?}");
                }
                n += 1;
            }
            n
        }));
    }
    let listers = workers.split_off(4);
    let ops: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    stop.store(true, Ordering::Relaxed);
    for l in listers {
        l.join().unwrap();
    }
    eprintln!("namespace churn: {ops} operations by 4 workers while 2 list, in {:?}", secs());
    assert!(ops > 100, "only {ops} operations ran");
    // Whatever happened, the upper is one kernel overlayfs would show the same way.
    let ours = tree(&m.path);
    m.unmount();
    if is_root() {
        let k = s.dir.path().join("k");
        std::fs::create_dir_all(k.join("work")).unwrap();
        std::fs::create_dir_all(k.join("mnt")).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={},upperdir={},workdir={}",
                s.lower_arg(),
                s.upper.display(),
                k.join("work").display()
            ))
            .arg(k.join("mnt"))
            .status()
            .unwrap();
        assert!(st.success());
        let theirs = tree(&k.join("mnt"));
        let _ = std::process::Command::new("umount").arg(k.join("mnt")).status();
        assert_eq!(ours, theirs, "kernel overlayfs reads the upper differently");
    }
}

/// Many threads copy up and write the same lower file at once.
#[test]
fn parallel_copy_ups_of_one_file() {
    need_fuse!();
    let s = Stack::empty(1);
    let data: Vec<u8> = (0..4 << 20).map(|i| (i % 239) as u8).collect();
    let until = Instant::now() + secs() / 2;
    let mut round = 0;
    while Instant::now() < until && round < 20 {
        std::fs::write(s.lower(0).join(format!("shared{round}")), &data).unwrap();
        round += 1;
    }
    let m = s.mount();
    for r in 0..round {
        let p: PathBuf = m.path.join(format!("shared{r}"));
        let writers: Vec<_> = (0..6u64)
            .map(|i| {
                let p = p.clone();
                std::thread::spawn(move || {
                    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
                    f.write_all_at(&[b'A' + i as u8], i * 4096).unwrap();
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let got = std::fs::read(&p).unwrap();
        assert_eq!(got.len(), data.len());
        for i in 0..6usize {
            assert_eq!(got[i * 4096], b'A' + i as u8, "round {r}: writer {i}'s byte");
        }
        assert_eq!(&got[6 * 4096..], &data[6 * 4096..], "round {r}: the rest is the lower data");
    }
    drop(m);
}

/// On `/dev/fuse` (no io_uring): a read stuck on a stopped layer holds up no other request
/// (tests/uring.rs has the same over the rings).
#[test]
fn a_request_stuck_on_slow_io_does_not_hold_up_the_others() {
    need_fuse!();
    need_root!();
    lookups_beside_a_stuck_read("nopassthrough,nouring");
}

/// Context switches of each thread of process `pid`, by thread id.
fn switches(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let n: u64 = status
            .lines()
            .filter(|l| l.contains("voluntary_ctxt_switches"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum();
        out.insert(format!("{} ({})", comm.trim(), t.file_name().to_string_lossy()), n);
    }
    out
}

/// A mount nobody uses wakes none of its threads: nothing in the daemon polls, so a machine
/// with a daemon per container pays nothing for the idle ones. (The worker pool's watchdog
/// used to look every 50 ms for the life of the mount: 20 wake-ups a second.)
#[test]
fn an_idle_mount_wakes_no_thread() {
    need_fuse!();
    let s = Stack::empty(1);
    write(s.lowers[0].join("f"), "x");
    let m = s.mount();
    assert_idle_mount_wakes_no_thread(&s);
    drop(m);
}

/// After some work on `s`'s mount, six seconds with nothing asked of it wake none of its
/// daemon's threads; then it still serves. (Also run over io_uring: `uring::`.)
pub(crate) fn assert_idle_mount_wakes_no_thread(s: &Stack) {
    // Some work first, so every thread has started and served.
    for _ in 0..20 {
        assert_eq!(read(s.mnt.join("f")), "x");
        write(s.mnt.join("g"), "y");
    }
    let pid = daemon_pid(&s.mnt).expect("the daemon");
    // Quiet: two looks 300 ms apart with no thread's count moving between them.
    let mut before = switches(pid);
    wait_for("the daemon to go quiet", || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let now = switches(pid);
        std::mem::replace(&mut before, now) == before
    });
    // Then six seconds of idleness (longer than the period of any timer the daemon had): no
    // thread wakes.
    std::thread::sleep(std::time::Duration::from_secs(6));
    let after = switches(pid);
    let woke: Vec<String> = after
        .iter()
        .filter(|(t, n)| before.get(*t).is_some_and(|b| *n > b))
        .map(|(t, n)| format!("{t}: +{}", n - before[t]))
        .collect();
    assert!(woke.is_empty(), "threads woke while the mount was idle: {woke:?}");
    // And it still serves.
    assert_eq!(read(s.mnt.join("f")), "x");
}

/// The daemon's descriptor table is grown before it serves, so no request waits for the
/// kernel to grow it: in a process with several threads each doubling of the table (past
/// 64, 128, 256, … descriptors) waits for an RCU grace period, 8–15 ms on an idle two-CPU VM,
/// and the first walk of a fresh mount crossed five of them, each inside some `READDIRPLUS`.
#[test]
fn a_walk_never_waits_for_the_daemons_descriptor_table_to_grow() {
    need_fuse!();
    let s = Stack::empty(1);
    for d in 0..400 {
        let dir = s.lowers[0].join(format!("d{d:03}"));
        std::fs::create_dir(&dir).unwrap();
        write(dir.join("f"), "x");
    }
    let m = s.mount();
    let pid = daemon_pid(&s.mnt).expect("the daemon");
    let limit = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let nofile: u64 = limit
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap();
    let table = proc_number(pid, "status", "FDSize");
    assert!(
        table >= nofile.min(unionfs::daemon::FD_TABLE),
        "a table of {table} descriptors when the mount went live (limit {nofile})"
    );
    // A walk that keeps a descriptor per directory it listed (the directory cache).
    for d in 0..400 {
        let dir = s.mnt.join(format!("d{d:03}"));
        assert_eq!(ls(&dir), ["f"]);
        assert_eq!(read(dir.join("f")), "x");
    }
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    assert!(open > 256, "the walk left only {open} descriptors open: it proves nothing");
    assert_eq!(proc_number(pid, "status", "FDSize"), table, "the table grew during the walk");
    drop(m);
}
