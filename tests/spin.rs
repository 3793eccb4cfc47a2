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
use std::path::Path;
use std::time::Duration;

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

#[test]
fn a_request_stuck_on_slow_io_does_not_hold_up_the_others() {
    need_fuse!();
    need_root!();
    lookups_beside_a_stuck_read("nopassthrough,spin=50");
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
