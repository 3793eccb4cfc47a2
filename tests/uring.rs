//! FUSE over io_uring: where the kernel offers it (`fuse.enable_uring=Y`, which these tests
//! switch on for their own mounts and restore afterwards), requests travel through the rings
//! (by default as root; `-o nouring` keeps `/dev/fuse`), the union behaves exactly as on
//! `/dev/fuse` (the differential scenario against kernel overlayfs), data survives the payload
//! buffers (reads filled in place, large ones beside the reader), slow requests and a request
//! stuck on slow I/O do not hold up the others (also requests the kernel queued while a
//! preempted ring thread had no free slot), ring threads wait at `SCHED_IDLE` but serve long
//! requests at normal priority and a busy CPU starves no caller, a failed ring set-up falls
//! back to `/dev/fuse`, an idle mount wakes no ring thread, and the daemon ends with the
//! mount.

use crate::common::oracle::compare_observed;
use crate::common::scenario::scenario;
use crate::common::*;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

const PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

/// Tests here share the kernel's module parameter: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Turns `fuse.enable_uring` on for the life of the guard, then back to what it was.
struct UringOn {
    before: String,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl UringOn {
    /// `None` (test skipped) where this kernel has no FUSE over io_uring or we are not root.
    fn new() -> Option<UringOn> {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(before) = std::fs::read_to_string(PARAM) else {
            crate::common::skip(&format!("this kernel has no FUSE over io_uring ({PARAM})"));
            return None;
        };
        if std::fs::write(PARAM, "Y").is_err() {
            crate::common::skip(&format!("cannot switch {PARAM} on (needs root)"));
            return None;
        }
        Some(UringOn { before: before.trim().to_string(), _serial: serial })
    }
}

impl Drop for UringOn {
    fn drop(&mut self) {
        let _ = std::fs::write(PARAM, &self.before);
    }
}

/// The daemon's `uring_requests` counter.
fn ring_requests(mnt: &Path) -> u64 {
    stats_raw(mnt)["uring_requests"]
}

#[test]
fn the_scenario_matches_kernel_overlayfs_over_io_uring() {
    need_fuse!();
    need_root!();
    let Some(_on) = UringOn::new() else { return };
    let steps = scenario();
    let mut carried = 0;
    let r = compare_observed(
        &steps,
        "redirect_dir=on",
        &["-o", "uring"],
        true,
        |_, _, _| false,
        |mnt| {
            carried = ring_requests(mnt);
        },
    );
    if let Err(e) = r {
        panic!("{e}");
    }
    assert!(carried as usize > steps.len(), "only {carried} requests came through the rings");
}

#[test]
fn data_written_and_read_through_the_rings_is_intact() {
    need_fuse!();
    need_root!();
    let Some(_on) = UringOn::new() else { return };
    let s = Stack::fixture("basic");
    // Without passthrough every read and write carries its data through the ring's payload
    // buffer: large ones (1 MiB, the most the kernel sends at once) and odd-sized ones.
    let m = s.mount_with(&["-o", "nopassthrough,uring"]);
    let before = ring_requests(&m.path);
    let data: Vec<u8> = (0..(3 << 20) + 12345).map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(m.path.join("big"), &data).unwrap();
    let f = std::fs::File::open(m.path.join("big")).unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert!(std::fs::read(m.path.join("big")).unwrap() == data, "data read back differs");
    assert!(std::fs::read(s.upper.join("big")).unwrap() == data, "data in the upper differs");
    // A copy-up of a lower file, appended to.
    let foo = std::fs::read(m.path.join("foo")).unwrap();
    std::fs::OpenOptions::new().append(true).open(m.path.join("foo")).unwrap().write_all(b"tail").unwrap();
    assert_eq!(std::fs::read(m.path.join("foo")).unwrap(), [foo.as_slice(), b"tail"].concat());
    // Long names and listings come back whole.
    let long = "n".repeat(255);
    std::fs::write(m.path.join(&long), b"x").unwrap();
    assert!(std::fs::read_dir(&m.path).unwrap().any(|e| e.unwrap().file_name().to_str() == Some(long.as_str())));
    assert!(ring_requests(&m.path) > before + 10);
}

/// Reads without passthrough go straight into the ring's reply buffer, the kernel's large
/// read-ahead ones on a thread beside the reader: every size, offset and end of file comes
/// back intact, a handle opened before a copy-up reads the copy afterwards, and large reads
/// went beside the reader.
#[test]
fn reads_through_the_rings_are_intact_and_large_ones_run_beside_the_reader() {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    need_fuse!();
    need_root!();
    let Some(_on) = UringOn::new() else { return };
    let s = Stack::fixture("basic");
    let data: Vec<u8> = (0..(5u32 << 20) + 4321).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    std::fs::write(s.lowers[0].join("big"), &data).unwrap();
    let m = s.mount_with(&["-o", "nopassthrough,uring"]);
    let aside = |m: &Path| stats_raw(m)["uring_reads_aside"];
    let before = aside(&m.path);
    // Sequential: the kernel reads ahead in large requests.
    assert!(std::fs::read(m.path.join("big")).unwrap() == data, "data read back differs");
    assert!(aside(&m.path) > before, "no read ran beside the reader");
    // O_DIRECT: requests of exactly the size and offset asked for, small (answered on the
    // ring thread) and large (beside it), across and past the end of the file.
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(m.path.join("big")).unwrap();
    let len = data.len() as u64;
    for (offset, size) in
        [(0, 1), (7, 4096), (12345, 100_000), (len - 1000, 1 << 20), (len - 1, 2), (len, 10), (len + 5, 10)]
    {
        let mut buf = vec![0u8; size];
        let n = f.read_at(&mut buf, offset).unwrap();
        let from = (offset as usize).min(data.len());
        let want = &data[from..(from + size).min(data.len())];
        assert_eq!(n, want.len(), "read of {size} at {offset}");
        assert!(&buf[..n] == want, "data of the read of {size} at {offset} differs");
    }
    // A handle opened on the lower file reads the upper copy once another handle wrote it.
    std::fs::OpenOptions::new().write(true).open(m.path.join("big")).unwrap().write_all_at(b"NEW", 200_000).unwrap();
    let mut buf = vec![0u8; 200_000];
    assert_eq!(f.read_at(&mut buf, 100_000).unwrap(), buf.len());
    assert_eq!(&buf[100_000..100_003], b"NEW");
    assert!(buf[..100_000] == data[100_000..200_000]);
}

#[test]
fn rings_serve_by_default_as_root_and_nouring_keeps_dev_fuse() {
    need_fuse!();
    need_root!();
    let Some(_on) = UringOn::new() else { return };
    let s = Stack::fixture("basic");
    for (opts, rings) in [
        (&[][..], true),
        (&["-o", "nouring"][..], false),
        (&["-o", "uring,nouring"][..], false),
        (&["-o", "nouring,uring"][..], true),
    ] {
        let m = s.mount_with(opts);
        let _ = read(m.path.join("foo"));
        std::fs::write(m.path.join("new"), b"x").unwrap();
        std::fs::remove_file(m.path.join("new")).unwrap();
        assert_eq!(ring_requests(&m.path) > 0, rings, "{opts:?}");
        m.unmount();
    }
}

#[test]
fn slow_copy_ups_do_not_hold_up_other_requests() {
    need_fuse!();
    need_root!();
    let Some(_on) = UringOn::new() else { return };
    // More concurrent copy-ups than the mount has ring threads, in one burst, held at a
    // gate: every other request is answered while they wait. (How long replies wait beside
    // copy-ups is a measure, not this test's: scripts/bench.sh's "200 lookups beside a 1G
    // copy-up".)
    let g = copy_ups_beside_reads(12, 64, "uring");
    assert!(ring_requests(&g.m.path) > 0);
}

/// Pins the calling thread, and every thread it starts from now on, to CPU 0 (so that their
/// FUSE requests all go to one ring queue); gives the thread its old CPUs back when dropped.
struct OnCpuZero(rustix::thread::CpuSet);

impl OnCpuZero {
    fn new() -> OnCpuZero {
        let before = rustix::thread::sched_getaffinity(None).unwrap();
        let mut zero = rustix::thread::CpuSet::new();
        zero.set(0);
        rustix::thread::sched_setaffinity(None, &zero).unwrap();
        OnCpuZero(before)
    }
}

impl Drop for OnCpuZero {
    fn drop(&mut self) {
        let _ = rustix::thread::sched_setaffinity(None, &self.0);
    }
}

/// The kernel puts a request that finds every slot of its CPU's queue taken on a list, and
/// gives it a slot only when one of that queue's slots commits a reply: a slot registered
/// afterwards does not take it. A ring thread that hands a request to another thread (a
/// copy-up) keeps that slot taken and registers a new one; on a busy machine it may be
/// preempted in between, and a request queued then waited until some copy-up finished — with
/// a stuck lower layer, for good (the first busy run of the test command failed this way).
/// Here every request goes to one CPU's queue and each hand-off waits 300 ms before its new
/// slot, so copy-up opens and reads queue up behind slots that copy-ups hold.
#[test]
fn requests_queued_while_copy_ups_took_every_slot_of_a_cpu_are_served() {
    need_fuse!();
    need_root!();
    need_hooks!();
    let Some(_on) = UringOn::new() else { return };
    let _cpu = OnCpuZero::new();
    let g = copy_ups_beside_reads_with_env(12, 8, "uring", &[(unionfs::hooks::RING_HANDOFF_DELAY_MS, "300")]);
    assert!(stats_raw(&g.m.path)["uring_nudges"] > 0, "no ring thread asked the kernel for a request");
}

/// The same wait where reads stuck on a stopped layer hold every ring thread of a CPU: the
/// thread started then registers its first slot after requests queued (here 300 ms after),
/// and must get them all the same.
#[test]
fn requests_queued_while_stuck_reads_held_every_ring_thread_of_a_cpu_are_served() {
    need_fuse!();
    need_root!();
    need_hooks!();
    let Some(_on) = UringOn::new() else { return };
    let _cpu = OnCpuZero::new();
    // More stuck reads than a CPU has ring threads to start with (threads_per_cpu).
    let readers = 12;
    lookups_beside_stuck_reads(readers, "nopassthrough,uring", &[(unionfs::hooks::RING_HANDOFF_DELAY_MS, "300")]);
}

#[test]
fn the_daemon_ends_with_the_mount() {
    need_fuse!();
    need_root!();
    let Some(_on) = UringOn::new() else { return };
    let s = Stack::fixture("basic");
    let m = s.mount_with(&["-o", "uring"]);
    let _ = read(m.path.join("foo"));
    assert!(ring_requests(&m.path) > 0);
    let pid = daemon_pid(&m.path).expect("the daemon's pid");
    m.unmount();
    assert!(exits_soon(pid), "the daemon {pid} still runs 5 s after the unmount");
}

/// Ring threads sleep without a timer while the mount is idle (each of them woke once a
/// second before), and still end with the mount: one of them polls the device for its end.
#[test]
fn an_idle_mount_wakes_no_ring_thread_and_its_daemon_ends_with_it() {
    need_fuse!();
    need_root!();
    let Some(_on) = UringOn::new() else { return };
    let s = Stack::empty(1);
    write(s.lowers[0].join("f"), "x");
    let m = s.mount_with(&["-o", "uring"]);
    crate::stress::assert_idle_mount_wakes_no_thread(&s);
    assert!(ring_requests(&m.path) > 0, "the requests did not travel through the rings");
    let pid = daemon_pid(&m.path).expect("the daemon's pid");
    m.unmount();
    assert!(exits_soon(pid), "the daemon {pid} still runs 5 s after the unmount");
}

#[test]
fn a_failed_ring_set_up_falls_back_to_dev_fuse() {
    need_fuse!();
    need_root!();
    need_hooks!();
    let Some(_on) = UringOn::new() else { return };
    let s = Stack::fixture("basic");
    let out = s.mount_command(&["-o", "uring"]).env(unionfs::hooks::FAULT_URING, "1").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m = Mount::adopt(&std::fs::canonicalize(&s.mnt).unwrap());
    // INIT accepted io_uring, the rings never came: requests must still be served.
    let (tx, rx) = std::sync::mpsc::channel();
    let p = m.path.join("foo");
    std::thread::spawn(move || tx.send(std::fs::read(p).map(|v| v.len())).unwrap());
    let got = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("a read waited 10 s");
    assert!(got.unwrap() > 0);
    std::fs::write(m.path.join("new"), b"x").unwrap();
    assert_eq!(ring_requests(&m.path), 0);
}

/// Each of the daemon's `uring-*` threads: its scheduling policy (`/proc/PID/task/*/stat`
/// field 41: 0 `SCHED_OTHER`, 5 `SCHED_IDLE`) and the system call it is in (the first field
/// of `/proc/PID/task/*/syscall`: 426 `io_uring_enter`, where it waits for requests).
fn ring_threads(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("uring-") {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap();
        // Fields after the parenthesised name, which may hold spaces.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let policy = rest.split(' ').nth(38).unwrap().parse().unwrap();
        let syscall = std::fs::read_to_string(t.path().join("syscall")).unwrap_or_default();
        out.push((policy, syscall.split(' ').next().unwrap_or("").trim().to_string()));
    }
    out
}

#[test]
fn ring_threads_wait_at_idle_priority_within_chains_serve_long_requests_at_normal_and_starve_no_one() {
    need_fuse!();
    need_root!();
    let Some(_on) = UringOn::new() else { return };
    // The slow layer: a file served by another mount whose daemon gets stopped, so that a
    // read of it (without passthrough the daemon reads it itself) stays in a ring thread.
    let slow = Stack::empty(1);
    std::fs::write(slow.lower(0).join("slow"), vec![7u8; 1 << 20]).unwrap();
    let slow_mnt = slow.mount_with(&["-o", "nopassthrough,nouring"]);
    let slow_pid = daemon_pid(&slow_mnt.path).expect("the slow layer's daemon");
    let mut s = Stack::fixture("basic");
    s.lowers.push(slow_mnt.path.clone());
    let m = s.mount_with(&["-o", "uring,nopassthrough"]);
    let pid = daemon_pid(&m.path).expect("daemon pid");

    // During a chain of short requests, they are served, and the next one awaited, at
    // SCHED_IDLE (so the woken caller keeps its CPU and no policy switch is paid per
    // request); a little after the chain, every ring thread is back at normal priority.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let chain = {
        let (stop, foo) = (stop.clone(), m.path.join("foo"));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = getxattr(&foo, "user.none");
                n += 1;
            }
            n
        })
    };
    let mut seen_idle = false;
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(5));
        let threads = ring_threads(pid);
        assert!(threads.iter().all(|t| t.0 == 0 || t.0 == 5), "ring thread policies: {threads:?}");
        seen_idle |= threads.iter().any(|t| t.0 == 5);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(chain.join().unwrap() >= 2000);
    assert!(seen_idle, "no ring thread was seen at SCHED_IDLE during a chain of requests");
    assert!(ring_requests(&m.path) >= 2000);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let threads = ring_threads(pid);
    assert!(threads.iter().all(|t| t.0 == 0), "ring threads left at SCHED_IDLE after the chain: {threads:?}");

    // A thread stuck in a request is at normal priority, not at SCHED_IDLE behind whatever
    // else runs on its CPU: a long request (data read through the daemon) is served there
    // (and one that came in a chain of short ones is brought back by the watcher).
    let f = std::fs::File::open(m.path.join("slow")).unwrap();
    let cont = crate::common::stop(slow_pid);
    let reader = std::thread::spawn(move || {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; 4096];
        f.read_at(&mut buf, 4096).unwrap()
    });
    let mut serving = Vec::new();
    wait_for("a ring thread serving the read", || {
        serving = ring_threads(pid).into_iter().filter(|t| t.1 != "426").collect();
        !serving.is_empty()
    });
    let stuck = !reader.is_finished();
    drop(cont);
    assert_eq!(reader.join().unwrap(), 4096);
    assert!(stuck, "the read did not wait for the stopped layer");
    assert!(!serving.is_empty(), "no ring thread was seen serving the read");
    assert!(serving.iter().all(|t| t.0 == 0), "a read was served at SCHED_IDLE: {serving:?}");

    // A CPU-bound process beside a caller on one CPU: the ring thread that serves it must
    // still get the CPU for each request.
    let hog = Command::new("taskset").args(["-c", "0", "sh", "-c", "while :; do :; done"]).spawn().unwrap();
    let t0 = std::time::Instant::now();
    let caller = Command::new("taskset")
        .args(["-c", "0", "sh", "-c"])
        .arg(format!(
            "for i in $(seq 300); do getfattr -n user.none {} 2>/dev/null; done; exit 0",
            m.path.join("foo").display()
        ))
        .status();
    let took = t0.elapsed();
    let mut hog = hog;
    let _ = hog.kill();
    let _ = hog.wait();
    assert!(caller.unwrap().success());
    assert!(took < std::time::Duration::from_secs(20), "300 requests beside a busy CPU took {took:?}");
    m.unmount();
    slow_mnt.unmount();
}

#[test]
fn a_request_stuck_on_slow_io_does_not_hold_up_the_others() {
    need_fuse!();
    need_root!();
    let Some(_on) = UringOn::new() else { return };
    lookups_beside_a_stuck_read("nopassthrough,uring");
}

/// Directories made and removed in a row, as test suites make their scratch directories:
/// the upper's filesystem hands the same real inode numbers out again, while the kernel
/// forgets the removed directories only a little later (over the rings, often after the
/// next directory exists). Each new directory must be itself, never a removed one's node
/// (that answered ENOENT to the chmod right after the mkdir).
#[test]
fn directories_made_where_removed_ones_numbers_come_back_are_themselves() {
    need_fuse!();
    need_root!();
    let Some(_on) = UringOn::new() else { return };
    let s = Stack::empty(1);
    let m = s.mount_with(&["-o", "uring"]);
    let base = m.path.join("scratch");
    std::fs::create_dir(&base).unwrap();
    let mut prev: Option<std::path::PathBuf> = None;
    let mut failures = Vec::new();
    for i in 0..5000 {
        let d = base.join(format!("t{i}"));
        let r = std::fs::create_dir(&d)
            .and_then(|()| std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o755)))
            .and_then(|()| std::fs::write(d.join("f"), b"x"))
            .and_then(|()| std::fs::create_dir(d.join("sub")));
        if let Err(e) = r {
            failures.push(format!("{}: {e}", d.display()));
        }
        if let Some(p) = prev.take() {
            std::fs::remove_dir_all(&p).unwrap();
        }
        prev = Some(d);
    }
    assert!(
        failures.is_empty(),
        "{} of 5000 new directories failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ring_requests(&m.path) > 5000);
}
