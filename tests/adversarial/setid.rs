//! [1] Local root through set-id files: a write, append or truncation by a user without
//! `CAP_FSETID` must clear set-user-id (and set-group-id on group-executable files) before
//! that user can run the file, through the daemon and through FUSE passthrough alike. The
//! proof is `execve`, which decides from the mode the kernel has cached, not from `stat`.

use std::io::{BufRead, Write};
use std::os::unix::fs::PermissionsExt;

use super::util::{as_user, open_up, spawn_as_user, stdout_ok};
use crate::common::{Stack, ensure_test_user};

/// A program that prints the effective uid (`-u`) or gid (`-g`) it runs with.
const ID: &str = "/usr/bin/id";

/// Lower files: name and mode.
const FILES: &[(&str, u32)] = &[
    ("notrunc", 0o4777),
    ("append", 0o4777),
    ("trunc", 0o4777),
    ("gnotrunc", 0o2777),
    ("gappend", 0o2777),
    ("gtrunc", 0o2777),
];

/// How the user writes her program into file `f`.
fn write_step(f: &str) -> String {
    let how = f.trim_start_matches('g').trim_start_matches('u');
    match how {
        "notrunc" => format!("dd if={ID} of={f} conv=notrunc status=none"),
        "append" => format!("cat {ID} >> {f}"),
        _ => format!("cat {ID} > {f}"),
    }
}

fn writes_by_another_user_clear_set_id_bits(opts: &[&str]) {
    let (uid, gid) = ensure_test_user();
    let s = Stack::empty(1);
    open_up(s.dir.path());
    for (name, mode) in FILES {
        let p = s.lower(0).join(name);
        std::fs::copy(ID, &p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    let m = s.mount_with(opts);
    // The same in the upper layer: files made through the mount, set-id afterwards.
    for (name, mode) in [("unotrunc", 0o6777), ("uappend", 0o4777), ("utrunc", 0o6777)] {
        std::fs::copy(ID, s.m(name)).unwrap();
        std::fs::set_permissions(s.m(name), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let names: Vec<&str> = FILES.iter().map(|f| f.0).chain(["unotrunc", "uappend", "utrunc"]).collect();
    // One step per file: write, then run it at once.
    let script: String =
        names.iter().map(|f| format!("{}; echo {f} $(./{f} -u) $(./{f} -g)\n", write_step(f))).collect();
    let out = stdout_ok(&as_user(&m.path, &script), "the second user's writes");
    for line in out.lines() {
        let v: Vec<&str> = line.split(' ').collect();
        assert_eq!(v.len(), 3, "{line}");
        assert_eq!(v[1], uid.to_string(), "{}: the user's program ran set-user-id root ({opts:?})", v[0]);
        assert_eq!(v[2], gid.to_string(), "{}: the user's program ran set-group-id root ({opts:?})", v[0]);
    }
    assert_eq!(out.lines().count(), names.len(), "{out}");
    drop(m);
}

#[test]
fn writes_by_another_user_clear_set_id_bits_before_she_runs_the_file() {
    need_fuse!();
    need_root!();
    writes_by_another_user_clear_set_id_bits(&[]);
}

#[test]
fn writes_by_another_user_clear_set_id_bits_without_passthrough() {
    need_fuse!();
    need_root!();
    writes_by_another_user_clear_set_id_bits(&["-o", "nopassthrough"]);
}

/// A file the user opened for writing before it became set-user-id (with passthrough, her
/// open file writes straight to the upper file; the kernel asks the daemon to remove
/// privileges first): her next write must clear the bit.
fn a_file_opened_before_chmod(opts: &[&str]) {
    let (uid, _) = ensure_test_user();
    let s = Stack::empty(1);
    open_up(s.dir.path());
    let p = s.lower(0).join("f");
    std::fs::copy(ID, &p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
    let m = s.mount_with(opts);
    let script = format!("exec 3<>f; echo open; read go; cat {ID} >&3; exec 3>&-; ./f -u");
    let mut child = spawn_as_user(&m.path, &script);
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "open");
    std::fs::set_permissions(s.m("f"), std::fs::Permissions::from_mode(0o4777)).unwrap();
    writeln!(child.stdin.as_ref().unwrap(), "go").unwrap();
    let euid = lines.next().expect("the program's output").unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(euid, uid.to_string(), "the program ran set-user-id root ({opts:?})");
    let mode = std::fs::metadata(s.m("f")).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o777, "{mode:o}");
    drop(m);
    assert_eq!(std::fs::metadata(s.u("f")).unwrap().permissions().mode() & 0o7777, 0o777);
}

#[test]
fn a_write_through_a_file_opened_before_it_became_set_id_clears_the_bit() {
    need_fuse!();
    need_root!();
    a_file_opened_before_chmod(&[]);
    a_file_opened_before_chmod(&["-o", "nopassthrough"]);
}

/// File capabilities go with a write too (every filesystem drops `security.capability`);
/// the daemon must not keep answering with the old attribute from its cache.
#[test]
fn a_write_by_another_user_drops_file_capabilities() {
    need_fuse!();
    need_root!();
    if std::process::Command::new("setcap").arg("-h").output().is_err() {
        panic!("setcap is missing (Debian: libcap2-bin)");
    }
    for opts in [&[][..], &["-o", "nopassthrough"][..]] {
        let s = Stack::empty(1);
        open_up(s.dir.path());
        for f in ["f", "g"] {
            std::fs::copy(ID, s.lower(0).join(f)).unwrap();
            std::fs::set_permissions(s.lower(0).join(f), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let m = s.mount_with(opts);
        for f in ["f", "g"] {
            let ok = std::process::Command::new("setcap").arg("cap_setuid+ep").arg(s.m(f)).status().unwrap();
            assert!(ok.success());
            assert!(crate::common::getxattr(&s.m(f), "security.capability").is_some());
        }
        // `g` is open before the write (with passthrough: a backed open file).
        let script = format!("exec 3<>g; cat {ID} >> f; cat {ID} >&3; echo done");
        assert_eq!(stdout_ok(&as_user(&m.path, &script), "writes").trim(), "done");
        for f in ["f", "g"] {
            assert_eq!(crate::common::getxattr(&s.m(f), "security.capability"), None, "{f} {opts:?}");
        }
        drop(m);
    }
}
