//! Readers that spin (`-o spin=MICROS`, leader/followers in vendor/fuser/src/leader.rs): the
//! union behaves as with sleeping readers (the differential scenario against kernel
//! overlayfs), a request stuck on slow I/O does not hold up the others (another worker is
//! called in), parallel callers are all served, an idle daemon burns no CPU, and the daemon
//! ends with the mount.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::oracle::compare_observed;
use common::scenario::scenario;
use common::*;
use rustix::process::{Pid, Signal};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

const SPIN: &[&str] = &["-o", "spin=50"];

#[test]
fn the_scenario_matches_kernel_overlayfs_with_spinning_readers() {
    need_fuse!();
    need_root!();
    let mut pid = None;
    let r = compare_observed(
        &scenario(),
        "redirect_dir=on",
        SPIN,
        true,
        |_, _, _| false,
        |mnt| {
            pid = daemon_pid(mnt);
        },
    );
    if let Err(e) = r {
        panic!("{e}");
    }
    let pid = pid.expect("the daemon's pid");
    assert!(exits_soon(pid), "the daemon {pid} still runs 5 s after the unmount: {:?}", threads(pid));
}

/// The names of the threads of process `pid` (empty once it is gone or a zombie).
fn threads(pid: u32) -> Vec<String> {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return Vec::new() };
    if stat.contains(") Z ") {
        return Vec::new();
    }
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    dir.flatten().filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok()).map(|c| c.trim().into()).collect()
}

/// CPU time (user + system) of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // Fields 14 and 15 of stat(5), counted after the command name (field 3 is f[0]).
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Sends `sig` to `pid`.
fn signal(pid: u32, sig: Signal) -> std::io::Result<()> {
    let pid = Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(pid, sig).map_err(std::io::Error::from)
}

/// Lets a stopped daemon go on, even when the test fails (else its mount could not be
/// unmounted and the reader thread would never return).
struct Continue(u32);

impl Drop for Continue {
    fn drop(&mut self) {
        let _ = signal(self.0, Signal::CONT);
    }
}

#[test]
fn a_request_stuck_on_slow_io_does_not_hold_up_the_others() {
    need_fuse!();
    need_root!();
    // The slow layer: a file served by another unionfs mount whose daemon is stopped, so
    // reading it through the mount under test blocks that mount's worker.
    let slow = Stack::empty(1);
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    std::fs::write(slow.lower(0).join("slow"), &data).unwrap();
    let slow_mnt = slow.mount_with(&["-o", "nopassthrough"]);
    let slow_pid = daemon_pid(&slow_mnt.path).expect("the slow layer's daemon");

    let mut s = Stack::empty(1);
    s.lowers.push(slow_mnt.path.clone());
    for i in 0..200 {
        std::fs::write(s.lower(0).join(format!("n{i}")), b"x").unwrap();
    }
    // Without passthrough the mount's daemon reads the slow layer itself.
    let m = s.mount_with(&["-o", "nopassthrough,spin=50"]);
    let f = std::fs::File::open(m.path.join("slow")).unwrap();
    // One page per read: no readahead requests to occupy more workers.
    rustix::fs::fadvise(f.as_fd(), 0, None, rustix::fs::Advice::Random).unwrap();

    signal(slow_pid, Signal::STOP).unwrap();
    let cont = Continue(slow_pid);
    let reader = std::thread::spawn(move || {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; 4096];
        let n = f.read_at(&mut buf, 1 << 20).unwrap();
        buf.truncate(n);
        buf
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(!reader.is_finished(), "the read did not wait for the stopped layer");
    // Every name is new to the kernel: 200 lookups while the read is stuck in a worker (in a
    // thread, so that a failure is a timeout here, not a test that hangs).
    let (tx, rx) = std::sync::mpsc::channel();
    let root = m.path.clone();
    let lookups = std::thread::spawn(move || {
        let t = Instant::now();
        for i in 0..200 {
            assert_eq!(std::fs::metadata(root.join(format!("n{i}"))).unwrap().len(), 1);
        }
        tx.send(t.elapsed()).unwrap();
    });
    let took = rx.recv_timeout(Duration::from_secs(5));
    let stuck_meanwhile = !reader.is_finished();
    drop(cont);
    let got = reader.join().unwrap();
    lookups.join().unwrap();
    let took = took.expect("200 lookups beside a stuck read did not finish in 5 s");
    assert!(stuck_meanwhile, "the read returned while its layer was stopped");
    assert_eq!(got, data[1 << 20..(1 << 20) + 4096], "data read after the layer went on");
    assert!(took < Duration::from_secs(3), "200 lookups beside a stuck read took {took:?}");
    m.unmount();
    slow_mnt.unmount();
}

#[test]
fn parallel_callers_are_all_served() {
    need_fuse!();
    need_root!();
    let s = Stack::fixture("basic");
    let m = s.mount_with(SPIN);
    let root = m.path.clone();
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let root = root.clone();
            std::thread::spawn(move || {
                let d = root.join(format!("w{w}"));
                std::fs::create_dir(&d).unwrap();
                for i in 0..300 {
                    let p = d.join(format!("f{i}"));
                    std::fs::write(&p, format!("{w}-{i}")).unwrap();
                    assert_eq!(std::fs::read_to_string(&p).unwrap(), format!("{w}-{i}"));
                    assert!(getxattr(&p, "user.none").is_none());
                }
                std::fs::read_dir(&d).unwrap().count()
            })
        })
        .collect();
    for w in workers {
        assert_eq!(w.join().unwrap(), 300);
    }
    for w in 0..6 {
        assert_eq!(read(s.upper.join(format!("w{w}/f299"))), format!("{w}-299"));
    }
}

#[test]
fn an_idle_daemon_burns_no_cpu() {
    need_fuse!();
    need_root!();
    let s = Stack::fixture("basic");
    // A long spin, so a reader that never stopped spinning would show.
    let m = s.mount_with(&["-o", "spin=5000"]);
    let pid = daemon_pid(&m.path).expect("the daemon's pid");
    for i in 0..2000 {
        let _ = std::fs::metadata(m.path.join(format!("absent{i}")));
    }
    std::thread::sleep(Duration::from_millis(100));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - before;
    // 100 ticks a second would be a reader spinning all the time.
    assert!(used <= 3, "the idle daemon used {used} ticks of CPU in 1 s");
    assert!(threads(pid).iter().any(|t| t == "fuser-watch"), "no watch thread: {:?}", threads(pid));
}

#[test]
fn without_spinning_there_is_no_watch_thread() {
    need_fuse!();
    need_root!();
    let s = Stack::fixture("basic");
    for opts in [&[][..], &["-o", "nospin"][..], &["-o", "spin=0"][..], &["-o", "spin=50,uring"][..]] {
        let m = s.mount_with(opts);
        let _ = read(m.path.join("foo"));
        let pid = daemon_pid(&m.path).expect("the daemon's pid");
        assert!(!threads(pid).iter().any(|t| t == "fuser-watch"), "{opts:?}: {:?}", threads(pid));
        m.unmount();
    }
    assert!(Path::new(&s.upper).exists());
}
