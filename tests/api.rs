//! The library API for test suites (a throwaway writable view, unmounted on drop) and
//! `unionfs sandbox`.

use crate::common::*;
use std::process::Command;
use unionfs::api::UnionMount;

#[test]
fn throwaway_view_of_a_fixture() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let before: Vec<String> = s.lowers.iter().map(|l| tree(l)).collect();
    let view = UnionMount::builder().lowers(&s.lowers).mount().unwrap();
    let path = view.path().to_path_buf();
    assert_eq!(read(path.join("foo")), "foo from l2\n");
    write(path.join("foo"), "changed");
    write(path.join("added"), "a");
    std::fs::remove_file(path.join("top")).unwrap();
    let changes: Vec<String> =
        view.changes().unwrap().iter().map(|(c, p)| format!("{} {}", c.letter(), p.display())).collect();
    assert_eq!(changes, ["A added", "C foo", "D top"]);
    let upper = view.upper().unwrap().to_path_buf();
    drop(view);
    assert!(!is_mounted(&path), "unmounted on drop");
    assert!(!upper.exists(), "the throwaway upper is deleted");
    let after: Vec<String> = s.lowers.iter().map(|l| tree(l)).collect();
    assert_eq!(before, after, "the fixture never changes");
}

#[test]
fn many_views_at_once() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let lowers = s.lowers.clone();
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let lowers = lowers.clone();
            std::thread::spawn(move || {
                let v = UnionMount::builder().lowers(&lowers).mount().unwrap();
                write(v.path().join("foo"), &format!("view {i}"));
                assert_eq!(read(v.path().join("foo")), format!("view {i}"));
                v.unmount().unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// A process another thread starts holds copies of the descriptors open at its fork until it
/// execs: the unmount waits for such a moment to pass instead of failing with "busy" (a
/// child that holds a file of the mount open for 200 ms stands in for it).
#[test]
fn an_unmount_waits_for_a_file_held_open_for_a_moment() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let v = UnionMount::builder().lowers(&s.lowers).mount().unwrap();
    let path = v.path().to_path_buf();
    // The child marks the moment it lets go before it closes the file.
    let gone = s.dir.path().join("let-go");
    let mut child = std::process::Command::new("sh")
        .args(["-c", "exec 3<\"$1\"; echo held; sleep 0.2; : > \"$2\"; exec 3<&-; sleep 5", "sh"])
        .arg(path.join("foo"))
        .arg(&gone)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line, "held\n");
    let r = v.unmount();
    child.kill().unwrap();
    child.wait().unwrap();
    r.unwrap();
    assert!(gone.exists(), "unmounted while the file was held open");
    assert!(!is_mounted(&path));
}

/// A view another filesystem was mounted over is left mounted, and the other with it: the
/// unmount goes by the view's identity, never by its path (which now leads to the other).
#[test]
fn an_unmount_leaves_a_filesystem_mounted_over_the_view_alone() {
    need_fuse!();
    need_root!();
    let s = Stack::fixture("basic");
    let v = UnionMount::builder().lowers(&s.lowers).mount().unwrap();
    let path = v.path().to_path_buf();
    let scratch = path.parent().unwrap().to_path_buf();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "cover"]).arg(&path).status().unwrap();
    assert!(mounted.success());
    std::fs::write(path.join("mark"), "the other filesystem").unwrap();
    // Bounded: a view unmounted by path took the other filesystem away, then waited for its
    // own session to end, which it never did.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(v.unmount().map_err(|e| e.to_string())));
    let result = rx.recv_timeout(std::time::Duration::from_secs(30));
    let other_left = std::fs::read_to_string(path.join("mark")).ok();
    // Cleaned up before the checks: the other filesystem, then the view beneath it.
    if other_left.is_some() {
        let _ = Command::new("umount").arg(&path).status();
    }
    let view_left = is_mounted(&path);
    let _ = Command::new("umount").arg("-l").arg(&path).status();
    let _ = std::fs::remove_dir_all(&scratch);
    let err = match result {
        Ok(Err(e)) => e,
        other => panic!("the unmount of a covered view: {other:?}"),
    };
    assert!(err.contains("mounted over"), "{err}");
    assert_eq!(other_left.as_deref(), Some("the other filesystem"), "the filesystem over the view was unmounted");
    assert!(view_left, "the view beneath was not left mounted");
}

/// Removing a throwaway (or a container's, or a volume's) directory removes what is in it and
/// never what is mounted inside it: a bind mount of another directory stays whole.
#[test]
fn a_removal_stops_at_a_mount_inside_the_tree() {
    need_root!();
    let d = tempfile::tempdir().unwrap();
    let (tree, other) = (d.path().join("tree"), d.path().join("other"));
    std::fs::create_dir_all(tree.join("a/b/mnt")).unwrap();
    std::fs::write(tree.join("a/file"), "x").unwrap();
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("keep"), "kept").unwrap();
    let bound = Command::new("mount").arg("--bind").arg(&other).arg(tree.join("a/b/mnt")).status().unwrap();
    assert!(bound.success());
    let r = unionfs::union::reap::remove_dir_here(&tree);
    let _ = Command::new("umount").arg(tree.join("a/b/mnt")).status();
    assert_eq!(r, Err(unionfs::error::Errno::EBUSY));
    assert_eq!(read(other.join("keep")), "kept", "the removal went into the bind mount");
    // With nothing mounted inside, the whole tree goes.
    unionfs::union::reap::remove_dir_here(&tree).unwrap();
    assert!(!tree.exists());
}

#[test]
fn read_only_and_kept_uppers() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let v = UnionMount::builder().lowers(&s.lowers).read_only().mount().unwrap();
    assert_eq!(errno(std::fs::write(v.path().join("x"), "x")), libc::EROFS);
    drop(v);
    let keep = s.dir.path().join("kept");
    let v = UnionMount::builder().lowers(&s.lowers).upper(&keep).option("noatime").mount().unwrap();
    write(v.path().join("x"), "kept");
    v.unmount().unwrap();
    assert_eq!(read(keep.join("x")), "kept", "a given upper is kept");
    assert!(UnionMount::builder().mount().is_err(), "no lower layer");
}

#[test]
fn sandbox_runs_a_command_and_reports_changes() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let before: Vec<String> = s.lowers.iter().map(|l| tree(l)).collect();
    let out = Command::new(bin())
        .args([
            "sandbox",
            "--lower",
            &s.lower_arg(),
            "--",
            "sh",
            "-c",
            "echo x >> foo; rm -r tree; mkdir new; pwd > new/where; exit 7",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "the exit code is the command's: {}", String::from_utf8_lossy(&out.stderr));
    let o = String::from_utf8_lossy(&out.stdout);
    for want in ["C /foo", "D /tree", "A /new", "A /new/where"] {
        assert!(o.lines().any(|l| l == want), "{want} in {o}");
    }
    let after: Vec<String> = s.lowers.iter().map(|l| tree(l)).collect();
    assert_eq!(before, after, "the real directories are untouched");
    let keep = s.dir.path().join("keep");
    let out = Command::new(bin())
        .args([
            "sandbox",
            "--lower",
            &s.lower_arg(),
            "--keep",
            keep.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "echo k > kept",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The sandbox's scratch directory is named after its process (other tests mount too).
    let scratch = format!("unionfs-{}-", out.id());
    let out = out.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(read(keep.join("kept")), "k\n");
    let t = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!t.contains(&scratch), "nothing left mounted");
}

#[test]
fn the_example_runs() {
    need_fuse!();
    // `cargo test` builds the examples next to the test binaries (target/PROFILE/examples).
    let exe = std::env::current_exe().unwrap();
    let built = exe.parent().and_then(|d| d.parent()).map(|d| d.join("examples/throwaway_view"));
    let out = match built.filter(|p| p.exists()) {
        Some(p) => Command::new(p).output().unwrap(),
        None => Command::new(env!("CARGO"))
            .args(["run", "--quiet", "--example", "throwaway_view"])
            .current_dir(repo())
            .output()
            .unwrap(),
    };
    let o = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{o}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(o.contains("C /src/main.rs") && o.contains("A /NEW.txt") && o.contains("D /README.md"), "{o}");
    assert!(o.contains("untouched: README.md still exists = true"));
}
