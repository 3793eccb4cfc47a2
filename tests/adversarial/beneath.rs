//! [3] A daemon may only ever unmount its own mount. After the union at `D` is unmounted
//! (by `unionfs umount`, `umount`, `umount -f`), `D` shows what was mounted beneath it,
//! and the daemon, on its way out, must leave that alone.

use std::process::Command;

use crate::common::{Stack, bin, daemon_pid, exits_soon, mount_tmpfs};

#[test]
fn unmounting_the_union_leaves_the_filesystem_beneath_it_mounted() {
    need_fuse!();
    need_root!();
    for how in [&[bin(), "umount"][..], &["umount"][..], &["umount", "-f"][..]] {
        let s = Stack::empty(1);
        let _beneath = mount_tmpfs(&s.mnt, "size=1m");
        std::fs::write(s.mnt.join("keep"), "beneath").unwrap();
        let m = s.mount();
        let pid = daemon_pid(&m.path).expect("daemon");
        assert!(!s.mnt.join("keep").exists(), "the union hides what is beneath");
        let ok = Command::new(how[0]).args(&how[1..]).arg(&s.mnt).status().unwrap();
        assert!(ok.success(), "{how:?}");
        assert!(exits_soon(pid), "the daemon did not exit after {how:?}");
        drop(m);
        assert_eq!(
            std::fs::read_to_string(s.mnt.join("keep")).ok().as_deref(),
            Some("beneath"),
            "after {how:?} the tmpfs beneath the union is gone"
        );
    }
}

/// [17] A copy of the mount in another mount namespace (any `unshare -m` started while it
/// was mounted) must not keep a stopped mount alive: `unionfs umount` ends it there too
/// (`ENOTCONN`), the daemon exits, the upper and work dirs are free again, and only then
/// does the command report success.
#[test]
fn umount_ends_copies_in_other_mount_namespaces_and_frees_the_upper() {
    use std::io::{BufRead, Write};
    need_fuse!();
    need_root!();
    let s = Stack::empty(1);
    std::fs::write(s.lower(0).join("f"), "hello").unwrap();
    let m = s.mount();
    let pid = daemon_pid(&m.path).expect("daemon");
    let script = format!("echo ready; read go; cat {}/f; echo; echo rc=$?", m.path.display());
    let mut copy = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(copy.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let out = Command::new(bin()).arg("umount").arg(&m.path).output().unwrap();
    assert!(out.status.success(), "umount: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "umount printed: {}", String::from_utf8_lossy(&out.stderr));
    // Reported done: the daemon is gone already, not 10 s later.
    assert!(crate::common::exits_soon_ms(pid, 200), "umount returned while the daemon still runs");
    writeln!(copy.stdin.as_ref().unwrap(), "go").unwrap();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let mut err = String::new();
    std::io::Read::read_to_string(copy.stderr.as_mut().unwrap(), &mut err).unwrap();
    copy.wait().unwrap();
    assert!(!rest.iter().any(|l| l.contains("hello")), "the copy in the other namespace still served: {rest:?}");
    assert!(err.contains("not connected"), "the copy should answer ENOTCONN: {err}");
    // The upper and work dirs are free: the same layers mount again at once.
    let again = s.mount();
    assert_eq!(std::fs::read_to_string(s.m("f")).unwrap(), "hello");
    again.unmount();
    drop(m);
}

/// [16] A mount point is resolved once, by the command: `/proc/self/...` would name the
/// background daemon's own /proc entries there. Directories in /proc or /sys are refused
/// with one line, and nothing is mounted anywhere.
#[test]
fn a_mount_point_in_proc_is_refused_and_nothing_is_mounted() {
    need_fuse!();
    let s = Stack::empty(1);
    for mp in ["/proc/self/fdinfo", "/proc/self", "/sys/kernel"] {
        let out = Command::new(bin()).args(["mount", "--lower", s.lower(0).to_str().unwrap(), mp]).output().unwrap();
        assert!(!out.status.success(), "mounting on {mp} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("/proc or /sys"), "{err}");
        let table = unionfs::mounts::read();
        let stray = table.iter().find(|m| {
            m.fstype == unionfs::mounts::FSTYPE
                && (m.mount_point.starts_with("/proc") || m.mount_point.starts_with("/sys"))
        });
        assert!(stray.is_none(), "a union was mounted in /proc or /sys: {stray:?}");
    }
}
