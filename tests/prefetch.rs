//! Reading ahead of tree walks (`src/union/prefetch.rs`): a walk of a layered tree is served
//! from listings built ahead, and shows exactly what it shows without them (and what kernel
//! overlayfs shows); changes made meanwhile are never hidden by a listing built before them;
//! reading ahead never follows a symlink out of a layer; `-o noprefetch` turns it off.

use crate::common::*;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Waits for counter `name` to reach `at_least`.
fn wait_counter(mnt: &Path, name: &str, at_least: u64) {
    wait_for(&format!("{name} reaching {at_least}"), || stats_raw(mnt)[name] >= at_least);
}

/// Three lowers: `l3` a tree 3 levels deep, `l2` overriding some of its files with new
/// contents and sizes, `l1` whiting out some and making one directory opaque.
fn layered_tree() -> Stack {
    let s = Stack::empty(3);
    for a in 0..4 {
        for b in 0..4 {
            for c in 0..3 {
                let d = s.lower(2).join(format!("a{a}/b{b}/c{c}"));
                std::fs::create_dir_all(&d).unwrap();
                for f in 0..5 {
                    std::fs::write(d.join(format!("f{f}")), format!("l3 {a}{b}{c}{f}\n")).unwrap();
                }
            }
            let over = s.lower(1).join(format!("a{a}/b{b}/c0"));
            std::fs::create_dir_all(&over).unwrap();
            std::fs::write(over.join("f1"), format!("l2 override of {a}{b}, longer than the original\n")).unwrap();
            std::fs::write(over.join("new"), "only in l2\n").unwrap();
            let wh = s.lower(0).join(format!("a{a}/b{b}/c1"));
            std::fs::create_dir_all(&wh).unwrap();
            std::fs::write(wh.join("own"), "l1\n").unwrap();
            // A whiteout (the kernel's 0/0 character device; needs root, else the OCI form)
            // hides l3's f2.
            let dev = rustix::fs::mknodat(
                rustix::fs::CWD,
                wh.join("f2"),
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            );
            if dev.is_err() {
                std::fs::write(wh.join(".wh.f2"), "").unwrap();
            }
        }
    }
    // An opaque directory in l1 hides everything below it in l2 and l3 (the kernel's
    // marker as root, the OCI one otherwise).
    let opq = s.lower(0).join("a3/b3/c2");
    std::fs::create_dir_all(&opq).unwrap();
    if setxattr(&opq, "trusted.overlay.opaque", b"y").is_err() {
        std::fs::write(opq.join(".wh..wh..opq"), "").unwrap();
    }
    std::fs::write(opq.join("alone"), "opaque\n").unwrap();
    s
}

/// Waits until no read-ahead job of the mount at `mnt` is queued or running.
fn settle(mnt: &Path) {
    wait_for("the read-ahead queue to empty", || stats_raw(mnt)["prefetch_pending"] == 0);
}

/// Every object under `root` with the attributes a walk gets (from `READDIRPLUS`), plus
/// contents: `(path, "kind mode size nlink ino mtime #contents")`.
fn walk(root: &Path) -> BTreeMap<String, String> {
    walk_with(root, |_| {})
}

/// [`walk`], calling `listed` with each directory once it has been listed.
fn walk_with(root: &Path, listed: impl Fn(&Path)) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        let entries: Vec<_> = std::fs::read_dir(&d).unwrap().collect();
        listed(&d);
        for e in entries {
            let e = e.unwrap();
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let body = if m.is_file() { std::fs::read_to_string(&p).unwrap() } else { String::new() };
            if m.is_dir() {
                todo.push(p.clone());
            }
            let attrs = format!("{:o} {} {} {} {} {body:?}", m.mode(), m.len(), m.nlink(), m.ino(), m.mtime());
            out.insert(p.strip_prefix(root).unwrap().display().to_string(), attrs);
        }
    }
    out
}

fn diff(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: {:?} vs {:?}", a.get(k), b.get(k)))
        .collect()
}

#[test]
fn a_walk_served_from_listings_built_ahead_shows_the_same_tree() {
    need_fuse!();
    let s = layered_tree();
    let m = s.mount();
    // The walk waits for the reading ahead each listing starts, so that every listing but
    // the root's was built ahead (a walk that does not wait may overtake it: it is
    // correct either way, and shown so below).
    let seen = walk_with(&m.path, |_| settle(&m.path));
    let c = stats_raw(&m.path);
    m.unmount();
    let dirs = 1 + 4 + 4 * 4 + 4 * 4 * 3;
    assert_eq!(c["prefetch_hits"], dirs - 1, "listings built ahead and used: {c:?}");
    assert!(c["prefetch_warmed"] > 0, "the walk warmed nothing below: {c:?}");
    assert_eq!(c["prefetch_late"], 0, "{c:?}");
    let m = s.mount();
    let hasty = walk(&m.path);
    m.unmount();
    let d = diff(&seen, &hasty);
    assert!(d.is_empty(), "waiting for the reading ahead and not:\n{}", d.join("\n"));
    assert!(seen.contains_key("a0/b0/c0/new") && !seen.contains_key("a0/b0/c1/f2"), "{seen:?}");
    assert!(seen["a0/b0/c0/f1"].contains("override"), "{}", seen["a0/b0/c0/f1"]);
    assert!(!seen.contains_key("a3/b3/c2/f0") && seen.contains_key("a3/b3/c2/alone"));

    let m = s.mount_with(&["-o", "noprefetch"]);
    let plain = walk(&m.path);
    let c = stats_raw(&m.path);
    m.unmount();
    assert_eq!(c["prefetch_listings"] + c["prefetch_warmed"], 0, "noprefetch read ahead: {c:?}");
    let d = diff(&seen, &plain);
    assert!(d.is_empty(), "with and without prefetching:\n{}", d.join("\n"));

    if is_root() {
        let k = s.dir.path().join("k");
        for sub in ["upper", "work", "mnt"] {
            std::fs::create_dir_all(k.join(sub)).unwrap();
        }
        let km = oracle::kernel_mount(&s.lower_arg(), &k.join("upper"), &k.join("work"), &k.join("mnt"), "");
        let kernel = walk(&km.0);
        drop(km);
        let d = diff(&seen, &kernel);
        assert!(d.is_empty(), "unionfs (prefetching) versus kernel overlayfs:\n{}", d.join("\n"));
    }
}

#[test]
fn changes_made_after_a_listing_was_built_ahead_are_listed() {
    need_fuse!();
    let s = layered_tree();
    let m = s.mount();
    let _ = ls(&m.path);
    let _ = ls(m.path.join("a0"));
    // Listing a0 (a walk step) builds a0/b* ahead; wait for b1's.
    wait_counter(&m.path, "prefetch_listings", 4);
    std::fs::write(m.path.join("a0/b1/made"), "through the mount\n").unwrap();
    std::fs::remove_dir_all(m.path.join("a0/b2/c0")).unwrap();
    let b1 = ls(m.path.join("a0/b1"));
    assert!(b1.contains(&"made".to_string()), "{b1:?}");
    let b2 = ls(m.path.join("a0/b2"));
    assert!(!b2.contains(&"c0".to_string()), "{b2:?}");
    assert_eq!(read(m.path.join("a0/b1/made")), "through the mount\n");
    m.unmount();
}

#[test]
fn live_layers_changed_after_a_listing_was_built_ahead_are_listed() {
    need_fuse!();
    let s = layered_tree();
    let m = s.mount_with(&["--watch"]);
    let _ = ls(&m.path);
    let _ = ls(m.path.join("a1"));
    wait_counter(&m.path, "prefetch_listings", 4);
    std::fs::write(s.lower(2).join("a1/b3/direct"), "behind the mount's back\n").unwrap();
    wait_for("a file added to a lower", || ls(m.path.join("a1/b3")).contains(&"direct".to_string()));
    m.unmount();
}

#[test]
fn reading_ahead_never_follows_a_symlink_out_of_a_layer() {
    need_fuse!();
    let s = layered_tree();
    let outside = s.dir.path().join("outside");
    std::fs::create_dir_all(outside.join("secret/deeper")).unwrap();
    std::fs::write(outside.join("secret/file"), "not in any layer\n").unwrap();
    // Symlinks to a directory outside the layers, at every depth a walk reads ahead (the
    // layers change under the mounts here: what they show is not the point, what the daemon
    // opens is).
    for link in ["a0/escape", "a0/b0/escape", "a0/b0/c0/escape", "a1/b1/c1/escape"] {
        std::os::unix::fs::symlink(&outside, s.lower(2).join(link)).unwrap();
    }
    // Directories that a racing thread keeps turning into such symlinks and back.
    let swapped: Vec<_> =
        (0..4).flat_map(|a| (0..4).map(move |b| format!("a{a}/b{b}/swap"))).map(|p| s.lower(2).join(p)).collect();
    for d in &swapped {
        std::fs::create_dir_all(d).unwrap();
    }
    let ino = inotify_on(&outside, &outside.join("secret"));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (stop, swapped, outside) = (stop.clone(), swapped.clone(), outside.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for d in &swapped {
                    let tmp = d.with_file_name("swap.tmp");
                    let _ = std::fs::remove_dir(d);
                    let _ = std::os::unix::fs::symlink(&outside, &tmp);
                    let _ = std::fs::rename(&tmp, d);
                }
                std::thread::sleep(Duration::from_micros(300));
                for d in &swapped {
                    let _ = std::fs::remove_file(d);
                    let _ = std::fs::create_dir(d);
                }
                std::thread::sleep(Duration::from_micros(300));
            }
        })
    };
    // Fresh mounts, each walked once: every walk reads the swapped directories ahead. The
    // root's subdirectories are read ahead before the walk starts (so each mount reads ahead
    // at least those, however busy the machine), the levels below while it goes.
    let mut read_ahead = Vec::new();
    for _ in 0..8 {
        let m = s.mount();
        std::fs::read_dir(&m.path).unwrap().for_each(drop);
        settle(&m.path);
        let _ = walk_quietly(&m.path);
        settle(&m.path);
        let c = stats_raw(&m.path);
        read_ahead.push(c["prefetch_listings"] + c["prefetch_warmed"]);
        m.unmount();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapper.join().unwrap();
    assert!(read_ahead.iter().all(|&n| n >= 4), "directories read ahead by each mount: {read_ahead:?}");
    let events = read_events(ino);
    assert!(events.is_empty(), "the outside directory was opened or read {} times", events.len());
}

/// A walk that tolerates names vanishing under it.
fn walk_quietly(root: &Path) -> usize {
    let mut n = 0;
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            n += 1;
            if let Ok(m) = std::fs::symlink_metadata(e.path())
                && m.is_dir()
            {
                todo.push(e.path());
            }
        }
    }
    n
}

/// An inotify instance watching two directories for opens and reads.
fn inotify_on(a: &Path, b: &Path) -> std::os::fd::OwnedFd {
    use rustix::fs::inotify;
    let fd = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC).unwrap();
    for d in [a, b] {
        inotify::add_watch(&fd, d, inotify::WatchFlags::OPEN | inotify::WatchFlags::ACCESS).unwrap();
    }
    fd
}

/// The events queued on an inotify instance (their masks).
fn read_events(fd: std::os::fd::OwnedFd) -> Vec<u32> {
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
    let mut r = rustix::fs::inotify::Reader::new(&fd, &mut buf);
    let mut out = Vec::new();
    while let Ok(e) = r.next() {
        out.push(e.events().bits());
    }
    out
}

#[test]
fn unmount_ends_a_daemon_that_is_reading_ahead() {
    need_fuse!();
    let s = layered_tree();
    let m = s.mount_with(&["-o", "prefetch=8"]);
    let pid = daemon_pid(&m.path).expect("daemon pid");
    let _ = ls(&m.path);
    for a in 0..4 {
        let _ = ls(m.path.join(format!("a{a}")));
    }
    m.unmount();
    assert!(exits_soon(pid), "the daemon outlived its unmount");
}

/// Names only, as `find` walks: every directory listed, nothing stat'ed.
fn walk_names(root: &Path) -> usize {
    let mut n = 0;
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            n += 1;
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            }
        }
    }
    n
}

/// Lists the root, then each top directory in turn, each once the reading ahead the last
/// listing started is done; returns how many directories each top directory's listing
/// warmed (a walk's step: the levels below its subdirectories).
fn warm_rounds(mnt: &Path, tops: usize) -> Vec<u64> {
    std::fs::read_dir(mnt).unwrap().for_each(drop);
    settle(mnt);
    let mut warmed = Vec::new();
    for i in 0..tops {
        let before = stats_raw(mnt)["prefetch_warmed"];
        std::fs::read_dir(mnt.join(format!("a{i}"))).unwrap().for_each(drop);
        settle(mnt);
        warmed.push(stats_raw(mnt)["prefetch_warmed"] - before);
    }
    warmed
}

/// Reads every directory below `root` and stats every entry (caches them all).
fn stat_tree(root: &Path) {
    for e in std::fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        if std::fs::symlink_metadata(e.path()).unwrap().is_dir() {
            stat_tree(&e.path());
        }
    }
}

/// A layer on its own ext4 image of `a × b × c` directories of 32 files each, unmounted
/// and mounted again (nothing of it cached); the image is unmounted on drop.
fn cold_layer(d: &Path, (a, b, c): (usize, usize, usize)) -> (PathBuf, FsMount) {
    let image = Ext4Image::new(d, "disk", 64);
    // Without inode table read-ahead, stat'ing files reads their inodes then.
    const OPTS: &str = "inode_readahead_blks=0";
    let fs = image.mount(OPTS);
    for i in 0..a {
        for j in 0..b {
            for k in 0..c {
                let dir = image.at.join(format!("lower/a{i}/b{j}/c{k}"));
                std::fs::create_dir_all(&dir).unwrap();
                for f in 0..32 {
                    write(dir.join(format!("f{f}")), "x");
                }
            }
        }
    }
    (image.at.join("lower"), image.remount_cold(fs, OPTS))
}

/// The layer `cold_layer` remounts is cold even when something held its loop device open
/// as it was unmounted (as on the CI machine once: the warming test found it cached).
/// `mount -o loop` would take that device again, with every block it had cached.
#[test]
fn a_layer_remounted_cold_is_read_from_storage_though_its_old_loop_device_was_held_open() {
    need_root!();
    let d = tempfile::tempdir().unwrap();
    let image = Ext4Image::new(d.path(), "disk", 64);
    const OPTS: &str = "inode_readahead_blks=0";
    let fs = image.mount(OPTS);
    let files = 200;
    let dir = image.at.join("files");
    std::fs::create_dir(&dir).unwrap();
    for f in 0..files {
        write(dir.join(format!("f{f}")), "x");
    }
    let out = Command::new("findmnt").args(["-n", "-o", "SOURCE"]).arg(&image.at).output().unwrap();
    let dev = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let held = std::fs::File::open(&dev).unwrap();
    let fs = image.remount_cold(fs, OPTS);
    drop(held);
    let before = unionfs::sys::proc::thread_read_bytes().unwrap();
    for f in 0..files {
        std::fs::symlink_metadata(dir.join(format!("f{f}"))).unwrap();
    }
    let read = unionfs::sys::proc::thread_read_bytes().unwrap() - before;
    drop(fs);
    // Every file's inode (256 bytes) comes from storage.
    assert!(read >= files * 256, "stat'ing {files} files read {read} bytes from storage");
}

/// `unionfs mount` of `lower` with a fresh upper and work dir named after `name` in `scratch`.
fn mount_args(lower: &Path, scratch: &Path, name: &str, mnt: &Path) -> Vec<String> {
    let (up, wk) = (scratch.join(format!("{name}-up")), scratch.join(format!("{name}-wk")));
    ["mount", "--lower", lower.to_str().unwrap(), "--upper", up.to_str().unwrap(), "--work", wk.to_str().unwrap()]
        .into_iter()
        .chain([mnt.to_str().unwrap()])
        .map(String::from)
        .collect()
}

/// Warming reads the levels below a walk before it gets there, so that their disk reads are
/// done when it does; on layers whose directories and inodes are cached it has nothing to
/// do and only takes CPU time from the walk. So it goes on while it reads from storage and,
/// after a few warm jobs in a row that read nothing, only one job in `SAMPLE_EVERY` runs. Shown on a
/// layer on its own ext4 image: mounted afresh (nothing of it cached), then, all of it
/// cached, through a fresh union mount. Each step of the walk waits for the reading ahead
/// of the one before, so what the counts show does not depend on how busy the machine is.
#[test]
fn warming_runs_while_it_reads_from_storage_and_stops_when_the_layers_are_cached() {
    need_fuse!();
    need_root!();
    let d = tempfile::tempdir().unwrap();
    let (a, b, c) = (4, 8, 8);
    let (lower, _fs) = cold_layer(d.path(), (a, b, c));
    let mnt = d.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let m = Mount::new(&mount_args(&lower, d.path(), "cold", &mnt), &mnt);
    let cold = warm_rounds(&mnt, a);
    m.unmount();
    stat_tree(&lower);
    let m = Mount::new(&mount_args(&lower, d.path(), "warm", &mnt), &mnt);
    let warm = warm_rounds(&mnt, a);
    m.unmount();
    // Each listing of a top directory warms the 8 × 8 directories two levels below it.
    let below = (b * c) as u64;
    assert_eq!(cold, vec![below; a], "directories warmed, listing after listing, on a cold layer");
    // After a few warm jobs in a row that read nothing, one listing's warming in 16 runs;
    // 8 listings (of `b*`) per step: at most one warms.
    assert!(warm[1..].iter().all(|&n| n <= c as u64), "directories warmed on a cached layer: {warm:?}");
}

/// A warm job for a directory the walk has listed by then (it overtook the low-priority
/// read-ahead threads, as on a busy machine) is skipped: that the directory is cached says
/// nothing about the layers, and warming stays on for the next step of the walk.
#[test]
fn warm_jobs_the_walk_overtook_are_skipped_and_leave_warming_on() {
    need_fuse!();
    need_root!();
    need_hooks!();
    let d = tempfile::tempdir().unwrap();
    let (a, b, c) = (2, 8, 8);
    let (lower, _fs) = cold_layer(d.path(), (a, b, c));
    let mnt = d.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let hold = d.path().join("hold");
    write(&hold, "");
    let out = Command::new(bin())
        .args(mount_args(&lower, d.path(), "union", &mnt))
        .env(unionfs::hooks::PREFETCH_HOLD, &hold)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m = Mount::adopt(&std::fs::canonicalize(&mnt).unwrap());
    // With the read-ahead threads held, the walk lists the root, a0 and everything below a0.
    std::fs::read_dir(&m.path).unwrap().for_each(drop);
    assert_eq!(walk_names(&m.path.join("a0")), b * c * 33 + b);
    std::fs::remove_file(&hold).unwrap();
    settle(&m.path);
    let first = stats_raw(&m.path);
    std::fs::read_dir(m.path.join("a1")).unwrap().for_each(drop);
    settle(&m.path);
    let next = stats_raw(&m.path);
    m.unmount();
    let below = (b * c) as u64;
    assert_eq!((first["prefetch_late"], first["prefetch_warmed"]), (below, 0), "{first:?}");
    assert_eq!(next["prefetch_warmed"], below, "the next step warmed: {next:?}");
}
