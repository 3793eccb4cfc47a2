//! [2] A new file must never get another file's identity. On ext4 a removed file's inode
//! number goes to the next file made, at once: a node matched by that number alone hands
//! the new file the old one's node (its name, its data). Sixteen threads create, write,
//! rename over, read back, list and remove files in four directories of an ext4 upper;
//! every file must read back what its creator wrote and be what it made.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::util::mount_ext4;
use crate::common::Mount;

/// Iterations per thread: enough to catch the race within seconds on two cores.
const ROUNDS: usize = 1500;
const THREADS: usize = 16;

fn churn(root: &Path, t: usize, failures: &AtomicUsize, log: &parking_lot::Mutex<Vec<String>>) {
    let sub = root.join(format!("sub{}", t % 4));
    let _ = std::fs::create_dir(&sub);
    let fail = |what: String| {
        failures.fetch_add(1, Ordering::Relaxed);
        let mut l = log.lock();
        if l.len() < 20 {
            l.push(what);
        }
    };
    for n in 0..ROUNDS {
        let a = sub.join(format!("a{t}-{n}"));
        let data = format!("{t}:{n}:").repeat(1 + (n * 7 + t) % 150);
        let mut cur = a.clone();
        let r = (|| -> std::io::Result<()> {
            std::fs::write(&a, &data)?;
            if n % 2 == 0 {
                // Over a name this thread used before: the replaced file is freed.
                let b = sub.join(format!("b{t}-{}", n % 7));
                std::fs::rename(&a, &b)?;
                cur = b;
            }
            let got = std::fs::read(&cur)?;
            if got != data.as_bytes() {
                fail(format!("{}: read {:?}…, wrote {:?}…", cur.display(), &got[..got.len().min(12)], &data[..12]));
            }
            if !std::fs::metadata(&cur)?.is_file() {
                fail(format!("{}: not a regular file", cur.display()));
            }
            if n % 3 == 0 {
                std::fs::read_dir(&sub)?.for_each(drop);
            }
            if n % 5 == 0 {
                let d = sub.join(format!("d{t}-{n}"));
                std::fs::create_dir(&d)?;
                std::fs::write(d.join("x"), "x")?;
                std::fs::remove_file(d.join("x"))?;
                std::fs::remove_dir(&d)?;
            }
            if n % 2 == 1 {
                std::fs::remove_file(&cur)?;
            }
            Ok(())
        })();
        if let Err(e) = r {
            fail(format!("{}: {e}", cur.display()));
        }
    }
}

#[test]
fn files_made_and_removed_concurrently_keep_their_own_identity() {
    need_fuse!();
    need_root!();
    let dir = tempfile::Builder::new().prefix("unionfs-adv-").tempdir().unwrap();
    let fs = mount_ext4(&dir.path().join("ext4"), 512);
    let (lower, mnt) = (dir.path().join("lower"), dir.path().join("mnt"));
    std::fs::create_dir(&lower).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let args: Vec<String> = ["mount", "--lower", lower.to_str().unwrap(), "--upper"]
        .iter()
        .map(|s| s.to_string())
        .chain([fs.0.join("upper").display().to_string(), "--work".into(), fs.0.join("work").display().to_string()])
        .chain([mnt.display().to_string()])
        .collect();
    let m = Mount::new(&args, &mnt);
    let failures = Arc::new(AtomicUsize::new(0));
    let log = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (root, failures, log) = (m.path.clone(), failures.clone(), log.clone());
            std::thread::spawn(move || churn(&root, t, &failures, &log))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let n = failures.load(Ordering::Relaxed);
    assert_eq!(n, 0, "{n} of {} operations went wrong, first ones:\n{}", THREADS * ROUNDS, log.lock().join("\n"));
    // What is left is exactly what the threads left: their `b` files, nothing else.
    std::fs::remove_dir_all(m.path.join("sub0")).unwrap();
    m.unmount();
    drop(fs);
}
