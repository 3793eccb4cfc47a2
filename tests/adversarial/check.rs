//! [9] `unionfs check` must understand everything the daemon writes: redirects (whiteouts
//! inside a renamed lower directory hide its lower entries), origins on copied-up
//! directories, impure and nlink markers, the index, metacopy. On uppers the daemon wrote it
//! finds nothing, and `--repair` changes nothing the mount shows.

use std::path::Path;
use std::process::Command;

use crate::common::{Stack, bin, tree};

/// Runs `unionfs check` on the stack's upper; returns its exit code and output.
pub fn check(s: &Stack, repair: bool) -> (i32, String) {
    let mut c = Command::new(bin());
    c.arg("check").arg(&s.upper).arg("--work").arg(&s.work).arg("--lower").arg(s.lower_arg());
    if repair {
        c.arg("--repair");
    }
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
    )
}

fn files(d: &Path, names: &[&str]) {
    std::fs::create_dir_all(d).unwrap();
    for n in names {
        std::fs::write(d.join(n), n).unwrap();
    }
}

#[test]
fn check_finds_nothing_wrong_in_uppers_the_daemon_wrote() {
    need_fuse!();
    need_root!();
    for opts in [&[][..], &["-o", "index=on"][..], &["-o", "metacopy=on"][..]] {
        let s = Stack::empty(2);
        files(&s.lower(1).join("dir/sub"), &["a", "b", "c"]);
        files(&s.lower(1).join("dir"), &["x", "y"]);
        files(&s.lower(0).join("other"), &["p", "q"]);
        files(s.lower(0), &["f", "g"]);
        std::fs::hard_link(s.lower(0).join("f"), s.lower(0).join("f2")).unwrap();
        let m = s.mount_with(opts);
        let p = |r: &str| m.path.join(r);
        // A lower directory renamed (redirect), then entries deleted inside it.
        std::fs::rename(p("dir"), p("moved")).unwrap();
        std::fs::remove_file(p("moved/x")).unwrap();
        std::fs::remove_file(p("moved/sub/a")).unwrap();
        std::fs::rename(p("moved/sub"), p("other/sub2")).unwrap();
        std::fs::remove_file(p("other/sub2/b")).unwrap();
        // Copied-up directories (origins), a copied-up file moved into an upper directory
        // (impure), hard links, metadata-only changes.
        std::fs::write(p("other/new"), "n").unwrap();
        std::fs::create_dir(p("made")).unwrap();
        std::fs::rename(p("g"), p("made/g")).unwrap();
        std::fs::set_permissions(p("f"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        std::fs::write(p("f2"), "changed").unwrap();
        std::fs::remove_file(p("other/p")).unwrap();
        // A lower directory deleted and made again (opaque).
        std::fs::remove_dir_all(p("other/sub2")).unwrap();
        std::fs::create_dir(p("other/sub2")).unwrap();
        let before = tree(&m.path);
        m.unmount();
        let (code, out) = check(&s, false);
        assert_eq!(code, 0, "{opts:?}: check reports problems in an upper the daemon wrote:\n{out}");
        let (code, out) = check(&s, true);
        assert_eq!(code, 0, "{opts:?}: {out}");
        let m = s.mount_with(opts);
        assert_eq!(tree(&m.path), before, "{opts:?}: --repair changed what the mount shows");
        m.unmount();
    }
}
