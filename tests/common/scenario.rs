//! The scripted scenario shared by the differential tests: every operation a POSIX program
//! uses, including failing ones, on paths relative to a mount root.

use super::errno;
use rustix::fs::{CWD, RenameFlags};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// One step of a scenario, on paths relative to the mount root.
#[derive(Debug, Clone)]
pub enum Op {
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

pub fn apply(root: &Path, op: &Op) -> i32 {
    let p = |x: &str| root.join(x);
    // Non-blocking, so that opening a FIFO for writing fails (ENXIO) instead of waiting for a
    // reader forever; regular files ignore the flag.
    let w = || {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).custom_flags(libc::O_NONBLOCK);
        o
    };
    match op {
        Op::Write(f, d) => {
            errno(w().create(true).truncate(true).open(p(f)).and_then(|mut h| h.write_all(d.as_bytes())))
        }
        Op::Append(f, d) => errno(w().append(true).open(p(f)).and_then(|mut h| h.write_all(d.as_bytes()))),
        Op::CreateExcl(f) => errno(w().create_new(true).open(p(f))),
        Op::Trunc(f) => errno(w().truncate(true).open(p(f))),
        Op::Truncate(f, n) => errno(w().open(p(f)).and_then(|h| h.set_len(*n))),
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

pub fn scenario() -> Vec<Op> {
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
