//! Crash safety: the daemon dies (abort, no cleanup) at every upper-layer mutation of a
//! workload in turn, or is killed with SIGKILL at random moments under load; after a
//! remount every file is its old complete version or its new complete version, the lower
//! layer is untouched, the work dir is empty, and kernel overlayfs reads the upper the same.

use crate::common::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;

/// The hook in `src/union/layer.rs`.
const FAULT_ENV: &str = unionfs::hooks::FAULT_AFTER;

const BIG: usize = 3 << 20;

fn big_old() -> Vec<u8> {
    (0..BIG).map(|i| (i % 241) as u8).collect()
}

fn big_new() -> Vec<u8> {
    let mut v = big_old();
    v.extend_from_slice(b"appended");
    v
}

/// The lower layer: what the workload changes, and a bystander it must not touch.
fn build_lower(l: &Path) {
    std::fs::write(l.join("a"), "a-old\n").unwrap();
    std::fs::write(l.join("b"), "b-old\n").unwrap();
    std::fs::write(l.join("big"), big_old()).unwrap();
    std::fs::create_dir_all(l.join("d/sub")).unwrap();
    std::fs::write(l.join("d/x"), "x-old\n").unwrap();
    std::fs::write(l.join("d/sub/s"), "s-old\n").unwrap();
    std::fs::create_dir(l.join("gone")).unwrap();
    std::fs::write(l.join("gone/g"), "g-old\n").unwrap();
    std::fs::write(l.join("keep"), "keep\n").unwrap();
}

/// The workload, through the mount; every step may fail once the daemon is gone.
fn workload(m: &Path) {
    let _ = (|| -> std::io::Result<()> {
        std::fs::OpenOptions::new().append(true).open(m.join("a"))?.write_all(b"a-new\n")?;
        let mut n = std::fs::File::create(m.join("n"))?;
        n.write_all(b"n-new\n")?;
        n.sync_all()?;
        drop(n);
        std::fs::rename(m.join("d/x"), m.join("d/y"))?;
        std::fs::remove_file(m.join("b"))?;
        std::fs::remove_file(m.join("gone/g"))?;
        std::fs::remove_dir(m.join("gone"))?;
        std::fs::create_dir(m.join("gone"))?;
        std::fs::write(m.join("gone/h"), "h-new\n")?;
        std::fs::OpenOptions::new().append(true).open(m.join("big"))?.write_all(b"appended")?;
        setxattr(&m.join("d/sub/s"), "user.mark", b"1")?;
        std::fs::write(m.join("d/sub/new"), "new\n")?;
        Ok(())
    })();
}

/// What each path may hold after a crash at any point (None: absent).
fn allowed() -> BTreeMap<&'static str, Vec<Option<Vec<u8>>>> {
    let s = |t: &str| Some(t.as_bytes().to_vec());
    BTreeMap::from([
        ("a", vec![s("a-old\n"), s("a-old\na-new\n")]),
        ("n", vec![None, s(""), s("n-new\n")]),
        ("d/x", vec![s("x-old\n"), None]),
        ("d/y", vec![None, s("x-old\n")]),
        ("b", vec![s("b-old\n"), None]),
        ("gone/g", vec![s("g-old\n"), None]),
        ("gone/h", vec![None, s(""), s("h-new\n")]),
        ("big", vec![Some(big_old()), Some(big_new())]),
        ("d/sub/s", vec![s("s-old\n")]),
        ("d/sub/new", vec![None, s(""), s("new\n")]),
        ("keep", vec![s("keep\n")]),
    ])
}

fn check_consistent(m: &Path, work: &Path, label: &str) {
    for (p, ok) in allowed() {
        let got = std::fs::read(m.join(p)).ok();
        assert!(
            ok.contains(&got),
            "{label}: {p} holds {:?}",
            got.map(|g| String::from_utf8_lossy(&g[..g.len().min(40)]).into_owned())
        );
    }
    // Moved exactly once: never both names, never neither.
    let x = m.join("d/x").exists();
    let y = m.join("d/y").exists();
    assert!(x != y, "{label}: d/x exists {x}, d/y exists {y}");
    // The work dir holds no leftovers once mounted.
    let left: Vec<_> = std::fs::read_dir(work.join("work")).unwrap().collect();
    assert!(left.is_empty(), "{label}: work dir not cleaned: {left:?}");
}

/// Unmounts a mount whose daemon died (the kernel answers ENOTCONN until then).
fn detach(m: &Path) {
    let _ = Command::new(bin()).args(["umount", "--lazy"]).arg(m).output();
    if is_mounted(m) {
        let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
    }
}

/// Kernel overlayfs over the same layers shows the same tree as unionfs.
fn kernel_agrees(s: &Stack, ours: &str, label: &str) {
    if !is_root() {
        return;
    }
    let kmnt = s.dir.path().join("kmnt");
    let kwork = s.dir.path().join("kwork");
    std::fs::create_dir_all(&kmnt).unwrap();
    let _ = std::fs::remove_dir_all(&kwork);
    std::fs::create_dir_all(&kwork).unwrap();
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("lowerdir={},upperdir={},workdir={}", s.lower_arg(), s.upper.display(), kwork.display()))
        .arg(&kmnt)
        .status()
        .unwrap();
    assert!(st.success(), "{label}: kernel overlayfs refused the upper");
    let theirs = tree(&kmnt);
    let _ = Command::new("umount").arg(&kmnt).status();
    assert_eq!(ours, theirs, "{label}: kernel overlayfs shows another tree");
}

#[test]
fn a_crash_at_any_upper_mutation_leaves_a_consistent_upper() {
    need_fuse!();
    need_hooks!();
    if !is_root() {
        crate::common::skip("its comparison with kernel overlayfs needs root (the rest runs)");
    }
    let s = Stack::empty(1);
    build_lower(s.lower(0));
    let lower_before = tree(s.lower(0));
    let mut completed = false;
    let mut n = 1;
    while !completed {
        assert!(n < 200, "the workload never completed");
        std::fs::remove_dir_all(&s.upper).unwrap();
        std::fs::remove_dir_all(&s.work).unwrap();
        std::fs::create_dir(&s.upper).unwrap();
        std::fs::create_dir(&s.work).unwrap();
        let label = format!("fault before mutation {n}");
        // SAFETY of the test: the env var only reaches the daemon the mount command starts.
        let out = s.mount_command(&[]).env(FAULT_ENV, n.to_string()).output().unwrap();
        assert!(out.status.success(), "{label}: {}", String::from_utf8_lossy(&out.stderr));
        let mnt = std::fs::canonicalize(&s.mnt).unwrap();
        let m = Mount::adopt(&mnt);
        workload(&mnt);
        // Did the daemon survive the whole workload?
        completed = std::fs::metadata(mnt.join("d/sub/new")).is_ok();
        if completed {
            m.unmount();
        } else {
            drop(m);
            detach(&mnt);
        }
        // Remount without the fault and check.
        let m = s.mount();
        check_consistent(&m.path, &s.work, &label);
        let ours = tree(&m.path);
        m.unmount();
        assert_eq!(tree(s.lower(0)), lower_before, "{label}: the lower layer changed");
        kernel_agrees(&s, &ours, &label);
        n += 1;
    }
    assert!(n > 20, "the workload should make many upper mutations, made {n}");
    eprintln!("crash harness: {} faults injected (one before each upper mutation), every remount consistent", n - 2);
}

#[test]
fn sigkill_under_load_never_leaves_a_partial_file() {
    need_fuse!();
    let s = Stack::empty(1);
    let contents: Vec<Vec<u8>> = (0..4u8).map(|v| vec![b'a' + v; 256 << 10]).collect();
    for i in 0..16 {
        std::fs::write(s.lower(0).join(format!("f{i}")), &contents[0]).unwrap();
    }
    let lower_before = tree(s.lower(0));
    let mut acknowledged = 0usize;
    for round in 0..8u64 {
        let m = s.mount();
        let pid = daemon_pid(&m.path).unwrap();
        let root = m.path.clone();
        let writer = std::thread::spawn(move || {
            let mut done = 0usize;
            for k in 0..400usize {
                let p = root.join(format!("f{}", k % 16));
                let v = 1 + (k % 3);
                // Whole-file replacement through a temporary and rename, as programs do,
                // and in-place rewrites of lower files (copy-up + write).
                let r = if k % 2 == 0 {
                    let tmp = root.join(format!(".tmp{k}"));
                    std::fs::write(&tmp, vec![b'a' + v as u8; 256 << 10]).and_then(|_| std::fs::rename(&tmp, &p))
                } else {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&p)
                        .and_then(|mut f| f.write_all(&vec![b'a' + v as u8; 256 << 10]))
                };
                if r.is_err() {
                    return done;
                }
                done += 1;
            }
            done
        });
        std::thread::sleep(std::time::Duration::from_millis(40 + (round * 37) % 200));
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        acknowledged += writer.join().unwrap();
        drop(m);
        detach(&s.mnt);
        let m = s.mount();
        for i in 0..16 {
            let got = std::fs::read(m.path.join(format!("f{i}"))).unwrap();
            // Whole-file replacements are atomic; an in-place rewrite of the same length
            // may be cut short, but never leaves anything but old or new bytes, at full length.
            assert_eq!(got.len(), 256 << 10, "round {round}: f{i} has length {}", got.len());
            assert!(got.iter().all(|b| (b'a'..=b'd').contains(b)), "round {round}: f{i} holds foreign bytes");
        }
        let left: Vec<_> = std::fs::read_dir(s.work.join("work")).unwrap().collect();
        assert!(left.is_empty(), "round {round}: work dir not cleaned");
        m.unmount();
        assert_eq!(tree(s.lower(0)), lower_before, "round {round}: the lower layer changed");
    }
    eprintln!("sigkill under load: 8 kills after {acknowledged} acknowledged 256 KiB writes; no partial file");
}

#[test]
fn sigkill_in_the_middle_of_a_big_copy_up() {
    need_fuse!();
    let s = Stack::empty(1);
    let block: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    {
        let mut f = std::fs::File::create(s.lower(0).join("big")).unwrap();
        for _ in 0..256 {
            f.write_all(&block).unwrap();
        }
    }
    let m = s.mount();
    let pid = daemon_pid(&m.path).unwrap();
    let p = m.path.join("big");
    let writer = std::thread::spawn(move || {
        let r = std::fs::OpenOptions::new().append(true).open(p).and_then(|mut f| f.write_all(b"tail"));
        r.is_ok()
    });
    // Kill while the copy is under way (the work dir holds the partial copy).
    let t0 = std::time::Instant::now();
    while std::fs::read_dir(s.work.join("work")).unwrap().next().is_none() && t0.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), rustix::process::Signal::KILL)
        .unwrap();
    let finished = writer.join().unwrap();
    drop(m);
    detach(&s.mnt);
    let m = s.mount();
    let got = std::fs::metadata(m.path.join("big")).unwrap().len();
    // Either the old file, whole, or (had the copy won the race) the new one.
    assert!(got == 256 << 20 || (finished && got == (256 << 20) + 4), "size {got}");
    if got == 256 << 20 {
        assert!(!s.upper.join("big").exists(), "no partial copy is visible");
    }
    assert_eq!(std::fs::read_dir(s.work.join("work")).unwrap().count(), 0, "the partial copy was removed at mount");
    m.unmount();
}
