//! Layers that misbehave under the mount. [7] A lower file swapped for a FIFO behind the
//! mount must not hang the daemon's thread that opens it. [8] A lower layer that hangs (a
//! FUSE mount whose daemon stopped) may hang the requests that need it, as it would hang the
//! kernel's overlayfs, but never the others: reads of open files and work in upper-only
//! directories go on, and the mount can still be taken down.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use crate::common::{Stack, bin, daemon_pid, exits_soon, stop};

/// How long a request that must not depend on the stuck layer may take before the test
/// calls the mount frozen (a frozen mount never answers; a busy machine answers in far less).
const FROZEN: Duration = Duration::from_secs(20);

/// Runs `f` on a thread; whether it finished within [`FROZEN`].
fn finishes<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(FROZEN).ok()
}

#[test]
fn lower_files_swapped_for_fifos_do_not_hang_the_daemon() {
    need_fuse!();
    let s = Stack::empty(1);
    for i in 0..8 {
        std::fs::write(s.lower(0).join(format!("f{i}")), "data").unwrap();
    }
    std::fs::write(s.lower(0).join("other"), "other").unwrap();
    for opts in [&[][..], &["-o", "nopassthrough"][..]] {
        for i in 0..8 {
            let p = s.lower(0).join(format!("f{i}"));
            let _ = std::fs::remove_file(&p);
            std::fs::write(&p, "data").unwrap();
        }
        let m = s.mount_with(opts);
        let names: Vec<PathBuf> = (0..8).map(|i| m.path.join(format!("f{i}"))).collect();
        // The mount knows them as regular files; then they become FIFOs behind its back.
        for n in &names {
            assert!(std::fs::metadata(n).unwrap().is_file());
        }
        for i in 0..8 {
            let p = s.lower(0).join(format!("f{i}"));
            std::fs::remove_file(&p).unwrap();
            rustix::fs::mknodat(rustix::fs::CWD, &p, rustix::fs::FileType::Fifo, 0o666.into(), 0).unwrap();
        }
        // Opens for reading (copy-up for the odd ones: open for writing).
        let openers: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let n = n.clone();
                std::thread::spawn(move || {
                    let mut o = std::fs::OpenOptions::new();
                    o.read(true).write(i % 2 == 1).custom_flags(libc::O_NONBLOCK);
                    o.open(&n).map(drop)
                })
            })
            .collect();
        // Whatever those opens do, the daemon answers other requests.
        let other = m.path.join("other");
        let got = finishes(move || std::fs::read_to_string(other));
        assert_eq!(got.map(|r| r.unwrap()).as_deref(), Some("other"), "the daemon hangs ({opts:?})");
        let made = m.path.join("new");
        assert!(finishes(move || std::fs::write(made, "x").is_ok()) == Some(true), "the daemon hangs ({opts:?})");
        for o in openers {
            // Non-blocking opens of what is a FIFO now never wait for a writer.
            let _ = o.join().unwrap();
        }
        m.unmount();
        // A file opened for writing was not copied up as a FIFO.
        let up: Vec<_> = std::fs::read_dir(&s.upper).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(up, ["new"], "{opts:?}");
        std::fs::remove_file(s.upper.join("new")).unwrap();
    }
}

use std::os::unix::fs::OpenOptionsExt;

#[test]
fn a_stuck_lower_layer_holds_up_only_the_requests_that_need_it() {
    need_fuse!();
    need_root!();
    // The stuck layer: a unionfs mount whose daemon will be stopped.
    let slow = Stack::empty(1);
    for i in 0..24 {
        std::fs::write(slow.lower(0).join(format!("s{i}")), "slow").unwrap();
    }
    // Served over /dev/fuse: FUSE over io_uring hands a request to a ring slot even while
    // the daemon is stopped, and a request handed over is waited for without end (the
    // waiting thread of the daemon under test could then never exit).
    let slow_mnt = slow.mount_with(&["-o", "nopassthrough,nouring"]);
    let slow_pid = daemon_pid(&slow_mnt.path).expect("the slow layer's daemon");
    // The mount under test: the stuck layer on top of a good one.
    let s = Stack::empty(1);
    std::fs::write(s.lower(0).join("good"), "good").unwrap();
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["mount", "--lower"]).arg(format!("{}:{}", slow_mnt.path.display(), s.lower(0).display()));
    cmd.arg("--upper").arg(&s.upper).arg("--work").arg(&s.work).args(["-o", "nopassthrough"]).arg(&s.mnt);
    assert!(cmd.status().unwrap().success());
    let m = crate::common::Mount::adopt(&std::fs::canonicalize(&s.mnt).unwrap());
    let pid = daemon_pid(&m.path).expect("daemon");
    // Before the layer hangs: an open file, and a directory made here (upper only).
    let mut open = std::fs::File::open(m.path.join("good")).unwrap();
    std::fs::create_dir(m.path.join("mine")).unwrap();
    // Every thread of it stopped before a request comes: what its daemon has taken off
    // `/dev/fuse` is waited for without end, by the kernel as for overlayfs (a thread of the
    // daemon under test waiting on it could not exit, and `umount` would say so).
    let _resume = stop(slow_pid);
    // Many more requests on the stuck layer than the daemon starts threads.
    let stuck: Vec<_> = (0..24)
        .map(|i| {
            let p = m.path.join(format!("s{i}"));
            std::thread::spawn(move || std::fs::read(p).map(drop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    assert!(stuck.iter().all(|t| !t.is_finished()), "the layer was meant to be stuck");
    // The rest of the mount is served.
    let got = finishes(move || {
        let mut v = String::new();
        open.read_to_string(&mut v).map(|_| v)
    });
    assert_eq!(got.map(|r| r.unwrap()).as_deref(), Some("good"), "a read of an open file froze");
    let mine = m.path.join("mine");
    let made = finishes(move || -> std::io::Result<Vec<String>> {
        for i in 0..20 {
            std::fs::File::create(mine.join(format!("n{i}")))?.write_all(b"x")?;
        }
        Ok(std::fs::read_dir(&mine)?.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
    });
    assert_eq!(made.map(|r| r.unwrap().len()), Some(20), "creates in an upper-only directory froze");
    // The mount can be taken down while requests hang in it.
    let out = finishes({
        let p = m.path.clone();
        move || std::process::Command::new(bin()).args(["umount", "--lazy"]).arg(p).output().unwrap()
    })
    .expect("umount froze");
    assert!(out.status.success(), "umount: {}", String::from_utf8_lossy(&out.stderr));
    assert!(exits_soon(pid), "the daemon did not exit");
    std::mem::forget(m);
    // The stuck callers got an answer (the connection ended).
    for t in stuck {
        assert!(t.join().unwrap().is_err());
    }
    drop(_resume);
    slow_mnt.unmount();
}
