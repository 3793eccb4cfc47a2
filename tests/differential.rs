//! Kernel overlayfs is the oracle: the same scripted scenario runs on a kernel overlay mount
//! and on a unionfs mount over the same lower layers, and after every step the errno and the
//! whole merged tree (names, types, modes, owners, sizes, contents, link targets, user
//! xattrs) must be the same. Then kernel overlayfs mounts unionfs's upper and must show the
//! same tree, with no stray marker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use rustix::fs::{CWD, RenameFlags};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One step of a scenario, on paths relative to the mount root.
#[derive(Debug, Clone)]
enum Op {
    Write(&'static str, &'static str),
    Append(&'static str, &'static str),
    CreateExcl(&'static str),
    Trunc(&'static str),
    Truncate(&'static str, u64),
    Mkdir(&'static str),
    Rmdir(&'static str),
    Unlink(&'static str),
    RmRf(&'static str),
    Rename(&'static str, &'static str),
    Rename2(&'static str, &'static str, RenameFlags),
    Symlink(&'static str, &'static str),
    Link(&'static str, &'static str),
    Chmod(&'static str, u32),
    Chown(&'static str, u32, u32),
    Mkfifo(&'static str),
    SetXattr(&'static str, &'static str, &'static str),
    RemoveXattr(&'static str, &'static str),
    GetXattr(&'static str, &'static str),
    Stat(&'static str),
    LongName,
}

fn io<T>(r: rustix::io::Result<T>) -> i32 {
    errno(r.map_err(std::io::Error::from))
}

fn apply(root: &Path, op: &Op) -> i32 {
    let p = |x: &str| root.join(x);
    match op {
        Op::Write(f, d) => errno(std::fs::write(p(f), d)),
        Op::Append(f, d) => {
            errno(std::fs::OpenOptions::new().append(true).open(p(f)).and_then(|mut h| h.write_all(d.as_bytes())))
        }
        Op::CreateExcl(f) => errno(std::fs::OpenOptions::new().write(true).create_new(true).open(p(f))),
        Op::Trunc(f) => errno(std::fs::OpenOptions::new().write(true).truncate(true).open(p(f))),
        Op::Truncate(f, n) => errno(std::fs::OpenOptions::new().write(true).open(p(f)).and_then(|h| h.set_len(*n))),
        Op::Mkdir(d) => errno(std::fs::create_dir(p(d))),
        Op::Rmdir(d) => errno(std::fs::remove_dir(p(d))),
        Op::Unlink(f) => errno(std::fs::remove_file(p(f))),
        Op::RmRf(d) => errno(std::fs::remove_dir_all(p(d))),
        Op::Rename(a, b) => errno(std::fs::rename(p(a), p(b))),
        Op::Rename2(a, b, f) => io(rustix::fs::renameat_with(CWD, p(a), CWD, p(b), *f)),
        Op::Symlink(t, l) => errno(std::os::unix::fs::symlink(t, p(l))),
        Op::Link(a, b) => errno(std::fs::hard_link(p(a), p(b))),
        Op::Chmod(f, m) => io(rustix::fs::chmod(p(f), rustix::fs::Mode::from_raw_mode(*m))),
        Op::Chown(f, u, g) => errno(std::os::unix::fs::lchown(p(f), Some(*u), Some(*g))),
        Op::Mkfifo(f) => {
            io(rustix::fs::mknodat(CWD, p(f), rustix::fs::FileType::Fifo, rustix::fs::Mode::from(0o644), 0))
        }
        Op::SetXattr(f, n, v) => io(rustix::fs::lsetxattr(p(f), *n, v.as_bytes(), rustix::fs::XattrFlags::empty())),
        Op::RemoveXattr(f, n) => io(rustix::fs::lremovexattr(p(f), *n)),
        Op::GetXattr(f, n) => {
            let mut b = [0u8; 256];
            io(rustix::fs::lgetxattr(p(f), *n, &mut b[..]))
        }
        Op::Stat(f) => errno(std::fs::symlink_metadata(p(f))),
        Op::LongName => errno(std::fs::write(root.join("n".repeat(256)), "x")),
    }
}

fn scenario() -> Vec<Op> {
    use Op::*;
    vec![
        Write("new1", "new file\n"),
        Append("foo", "appended\n"),
        Trunc("bar"),
        Chmod("tree/t1", 0o600),
        Chown("tree/sub/s", 1000, 1000),
        Truncate("dir/a", 3),
        Truncate("top", 100),
        SetXattr("top", "user.x", "1"),
        RemoveXattr("usr/bin/tool", "user.note"),
        RemoveXattr("foo", "user.missing"),
        GetXattr("var/cache", "trusted.overlay.opaque"),
        SetXattr("top", "trusted.overlay.opaque", "y"),
        Mkdir("nd"),
        Mkdir("nd"),
        Rmdir("dir"),
        Unlink("dir/pop/b"),
        Rmdir("dir/pop"),
        Stat("dir/pop"),
        Mkdir("dir/pop"),
        Write("dir/pop/n", "n\n"),
        Rename("foo", "dir/foo2"),
        Rename("tree", "tree2"),
        Rename2("bar", "top", RenameFlags::NOREPLACE),
        Rename2("bar", "top", RenameFlags::EXCHANGE),
        Rename2("bar", "nothing", RenameFlags::EXCHANGE),
        Symlink("foo", "ln"),
        Link("top", "top2"),
        Link("hard/a", "hard/c"),
        Append("hard/b", "more\n"),
        Link("dir", "dirlink"),
        Mkfifo("fifo"),
        Unlink("etc/keep"),
        CreateExcl("etc/keep"),
        CreateExcl("etc/keep"),
        Stat("etc/gone"),
        Stat("etc/xgone"),
        Write("etc/gone", "back\n"),
        RmRf("tree"),
        Stat("tree/t1"),
        Mkdir("tree"),
        Rename("nd", "tree/nd"),
        Mkdir("nd2"),
        Rename("nd2", "empty"),
        Mkdir("nd3"),
        Rename("nd3", "dir/nd3"),
        Unlink("nothing"),
        Rmdir("top2"),
        Unlink("dir"),
        Rename("top2", "dir"),
        Rename("var", "new1"),
        Mkdir("nd4"),
        Mkdir("nd4/sub"),
        Rename("nd4", "nd4/sub/x"),
        Truncate("var", 0),
        Mkdir("etc/gone/x"),
        Chmod("missing", 0o644),
        LongName,
        Rename("sym", "sym2"),
        Write("var/cache/new", "changed\n"),
        RmRf("var"),
    ]
}

struct KernelMount(PathBuf);
impl Drop for KernelMount {
    fn drop(&mut self) {
        let _ignored = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

fn kernel_mount(lowers: &str, upper: &Path, work: &Path, mnt: &Path) -> KernelMount {
    std::fs::create_dir_all(upper).unwrap();
    std::fs::create_dir_all(work).unwrap();
    std::fs::create_dir_all(mnt).unwrap();
    let opts = format!("lowerdir={lowers},upperdir={},workdir={}", upper.display(), work.display());
    let st = Command::new("mount").args(["-t", "overlay", "overlay", "-o", &opts]).arg(mnt).status().unwrap();
    assert!(st.success(), "kernel overlay mount failed");
    KernelMount(mnt.to_path_buf())
}

#[test]
fn unionfs_matches_kernel_overlayfs_step_by_step() {
    need_fuse!();
    need_root!();
    let s = Stack::fixture("oracle");
    let d = s.dir.path();
    let k = kernel_mount(&s.lower_arg(), &d.join("k-upper"), &d.join("k-work"), &d.join("k-mnt"));
    let u = s.mount();
    assert_eq!(tree(&k.0), tree(&u.path), "initial merged trees differ");
    for (i, op) in scenario().iter().enumerate() {
        let ke = apply(&k.0, op);
        let ue = apply(&u.path, op);
        assert_eq!(ue, ke, "step {i} {op:?}: unionfs errno {ue}, kernel errno {ke}");
        let (kt, ut) = (tree(&k.0), tree(&u.path));
        if kt != ut {
            let diff: Vec<String> = kt
                .lines()
                .filter(|l| !ut.lines().any(|x| x == *l))
                .map(|l| format!("- {l}"))
                .chain(ut.lines().filter(|l| !kt.lines().any(|x| x == *l)).map(|l| format!("+ {l}")))
                .collect();
            panic!("step {i} {op:?}: merged trees differ (- kernel, + unionfs):\n{}", diff.join("\n"));
        }
    }
    let final_tree = tree(&u.path);
    drop(k);
    u.unmount();

    // Kernel overlayfs over unionfs's upper shows the same tree.
    let k2 = kernel_mount(&s.lower_arg(), &s.upper, &s.work, &d.join("k2-mnt"));
    let kt = tree(&k2.0);
    assert!(!kt.contains(".wh.") && !kt.contains(" c "), "no marker shows:\n{kt}");
    assert_eq!(kt, final_tree, "kernel overlayfs reads unionfs's upper differently");
}

#[test]
fn kernel_upper_is_read_the_same_by_unionfs() {
    need_fuse!();
    need_root!();
    // The other direction: changes made by kernel overlayfs, read back by unionfs.
    let s = Stack::fixture("oracle");
    let d = s.dir.path();
    let k = kernel_mount(&s.lower_arg(), &s.upper, &s.work, &d.join("k-mnt"));
    for op in scenario() {
        apply(&k.0, &op);
    }
    let kt = tree(&k.0);
    drop(k);
    let _u = s.mount();
    assert_eq!(tree(&s.mnt), kt);
}
