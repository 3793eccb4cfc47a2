//! Kernel-equal, case by case: each test is a minimal reproduction of a divergence from
//! kernel overlayfs that an independent differential run found (issue 18). The same shell
//! commands run in a kernel overlay mount and in a unionfs mount over copies of the same
//! lower layers, and print the same thing; where the case is about the on-disk format, the
//! other side then mounts the upper and must read it the same way.

use crate::common::sides::Sides;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A kernel overlay mount and a unionfs mount over two copies of one lower tree.
struct Both(Sides);

/// Runs `script` with `sh -c` in `dir`; its output (stdout, then stderr), with `dir` written
/// as `.`.
fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(script).current_dir(dir).output().unwrap();
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        s.push_str(&format!("[exit {}]", out.status.code().unwrap_or(-1)));
    }
    s.replace(&dir.display().to_string(), ".")
}

impl Both {
    /// Lowers built by `setup` (shell, run in each lower: one string per layer, topmost
    /// first), kernel overlayfs with `kopts`, unionfs with `uargs`.
    fn new(setup: &[&str], kopts: &str, uargs: &[&str]) -> Both {
        let mut s = Sides::new("unionfs-test-", setup.len());
        for side in ["k", "u"] {
            for (i, script) in setup.iter().enumerate() {
                let l = s.p(&format!("{side}-l{i}"));
                std::fs::create_dir_all(&l).unwrap();
                let out = sh(&l, script);
                assert!(!out.contains("[exit"), "setup failed: {out}");
            }
        }
        s.mount(kopts, uargs);
        Both(s)
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.0.p(rel)
    }

    /// Runs `script` in both mounts; (kernel, unionfs) outputs.
    fn run(&self, script: &str) -> (String, String) {
        let (k, u) = self.0.roots();
        (sh(&k, script), sh(&u, script))
    }

    /// Runs `script` in both and expects the same output; returns it.
    fn same(&self, script: &str) -> String {
        let (k, u) = self.run(script);
        assert_eq!(u, k, "`{script}`: unionfs (left) differs from kernel overlayfs (right)");
        k
    }

    /// See [`Sides::cross`].
    fn cross(&mut self, kopts: &str, uargs: &[&str]) {
        self.0.cross(kopts, uargs);
    }

    /// See [`Sides::rotate`].
    fn rotate(&mut self, kopts: &str, uargs: &[&str]) {
        self.0.rotate(kopts, uargs);
    }
}

/// Kernel overlayfs's `metacopy=on` (which needs `redirect_dir=on`), with unionfs's.
const METACOPY: (&str, &[&str]) = ("redirect_dir=on,metacopy=on", &["-o", "metacopy=on"]);

/// Kernel overlayfs's `index=on`, with unionfs's `-o index=on`.
const INDEX: (&str, &[&str]) = ("index=on,redirect_dir=on", &["-o", "index=on"]);

/// Item 1: `metacopy=on`: `O_TRUNC` after a metadata-only copy-up truncates.
#[test]
fn o_trunc_after_a_metadata_only_copy_up_truncates() {
    need_fuse!();
    need_root!();
    let b = Both::new(&["echo extra > f"], METACOPY.0, METACOPY.1);
    let out = b.same("chmod 600 f; : > f; stat -c %s f; od -c f");
    assert!(out.starts_with("0\n"), "{out}");
}

/// Item 4: `open(O_TRUNC)` of a lower file marks its times for update.
#[test]
fn o_trunc_of_a_lower_file_updates_its_times() {
    need_fuse!();
    need_root!();
    for (k, u) in [("", &[][..]), METACOPY] {
        let b = Both::new(&["echo data > f; touch -d 2001-01-01 f"], k, u);
        let out = b.same(": > f; stat -c '%s %y' f | cut -c1-6");
        assert!(out.starts_with("0 ") && !out.contains("2001"), "{out}");
    }
}

/// Item 2: `metacopy=on`: a metadata-only copy the kernel renamed (an `overlay.redirect` on the
/// file, relative within a directory, absolute across) reads the lower data through
/// unionfs.
#[test]
fn a_metadata_only_copy_renamed_by_the_kernel_keeps_its_data() {
    need_fuse!();
    need_root!();
    let (k, u) = METACOPY;
    let mut b = Both::new(&["echo lowerdata > f; mkdir d; echo deep > d/h"], k, u);
    b.same("mv f g; mkdir e; mv d/h e/h2; cat g e/h2");
    b.cross(k, u);
    let out = b.same("cat g e/h2; ls d; test -e f || echo no-f");
    assert_eq!(out, "lowerdata\ndeep\nno-f\n");
    // And after unionfs changes them (their data comes up from where the redirect points).
    b.same("echo more >> g; chmod 600 e/h2; echo x >> e/h2; cat g e/h2");
}

/// `metacopy=on`: unionfs renames a regular file as kernel overlayfs does: a metadata-only
/// copy with an `overlay.redirect` to its data (relative within a directory, absolute
/// across; a second move keeps the first redirect), no data copied; kernel overlayfs reads
/// that upper the same, and a later write brings the data from where the redirect points.
#[test]
fn a_renamed_file_stays_a_metadata_only_copy_with_a_redirect() {
    need_fuse!();
    need_root!();
    let (k, u) = METACOPY;
    let mut b = Both::new(&["echo lowerdata > f; echo two > f2; echo three > f3; mkdir d; echo deep > d/h"], k, u);
    b.same("mv f g; mkdir n; mv f2 n/; mv d/h n/h2; chmod 600 f3; mv f3 f4; mv f4 n/f5; cat g n/f2 n/h2 n/f5");
    let marks = |upper: &str| {
        let script = "for f in g n/f2 n/h2 n/f5; do echo \"$f $(stat -c %b $f) \
                      $(getfattr --absolute-names --only-values -n trusted.overlay.redirect $f) \
                      $(getfattr --absolute-names -n trusted.overlay.metacopy $f 2>/dev/null | grep -c metacopy)\"; done";
        sh(&b.p(upper), script)
    };
    assert_eq!(marks("u-upper"), marks("k-upper"));
    assert!(marks("u-upper").contains(" /f3 1\n"), "{}", marks("u-upper"));
    b.cross(k, u);
    b.same("cat g n/f2 n/h2 n/f5; ls; ls d");
    b.same("echo more >> n/f5; echo x >> g; cat g n/f5");
}

/// Item 3: Redirects in lower layers are followed, relative and absolute, as in the upper.
#[test]
fn redirects_in_lower_layers_are_followed() {
    need_fuse!();
    need_root!();
    let hi = "mkdir moved rel; echo m1 > moved/m1; \
              setfattr -n trusted.overlay.redirect -v /orig moved; \
              setfattr -n trusted.overlay.redirect -v old rel";
    let lo = "mkdir orig old; echo o1 > orig/o1; echo r1 > old/r1";
    let b = Both::new(&[hi, lo], "", &[]);
    let out = b.same("ls moved rel; cat moved/o1 rel/r1; touch moved/new rel/o2; rm moved/m1 rel/r1; ls moved rel");
    assert!(out.starts_with("moved:\nm1\no1\n"), "{out}");
}

/// Item 3: The same through a mount's own renames: a renamed directory's upper becomes a lower
/// layer (unionmount-testsuite `--ov=2`), and its contents are still there.
#[test]
fn renamed_directories_keep_their_contents_when_the_upper_becomes_a_lower() {
    need_fuse!();
    need_root!();
    let mut b =
        Both::new(&["mkdir -p a/deep b; echo x > a/f; echo y > a/deep/g; echo z > b/h"], "redirect_dir=on", &[]);
    b.same("mv a a2; mkdir n; mv b n/b2; touch a2/new; ls -R a2 n");
    b.rotate("redirect_dir=on", &[]);
    let out = b.same("ls -R a2 n; cat a2/f a2/deep/g n/b2/h; mv a2 a3; mv n/b2 b3; ls -R a3 b3");
    assert!(out.contains("x\ny\nz\n"), "{out}");
    b.rotate("redirect_dir=on", &[]);
    b.same("ls -R; cat a3/f a3/deep/g b3/h");
}

/// Item 8: `chown(f, -1, -1)` clears set-user-id (and set-group-id of a group-executable file),
/// as every chown does; a set-group-id file that is not group-executable keeps it.
#[test]
fn chown_keeping_both_ids_clears_set_id_bits() {
    need_fuse!();
    need_root!();
    for u in [&[][..], &["-o", "nopassthrough"][..]] {
        let setup = "echo x > s; chmod 4755 s; echo y > t; chmod 2775 t; echo z > n; chmod 2745 n; \
                     mkdir d; chmod 2755 d";
        let b = Both::new(&[setup], "", u);
        let out = b.same("python3 -c 'import os\nfor f in \"stnd\": os.chown(f, -1, -1)'; stat -c %A s t n d");
        assert_eq!(out, "-rwxr-xr-x\n-rwxrwxr-x\n-rwxr-Sr-x\ndrwxr-sr-x\n");
    }
}

/// Item 9: A directory made again over a whiteout in a setgid directory is setgid too.
#[test]
fn a_directory_made_over_a_whiteout_in_a_setgid_directory_is_setgid() {
    need_fuse!();
    need_root!();
    let b = Both::new(&["mkdir -p p/c; chmod 2755 p; chgrp 1001 p"], "", &[]);
    let out = b.same("rm -r p/c; mkdir p/c; stat -c '%A %g' p/c; mkdir p/new; stat -c '%A %g' p/new");
    assert_eq!(out, "drwxr-sr-x 1001\ndrwxr-sr-x 1001\n");
}

/// Whether each entry's `d_ino` (from readdir) is its `st_ino`, for every directory under
/// the current one, sorted.
const D_INO: &str = "python3 -c '
import os
out = []
for root, dirs, files in os.walk(\".\"):
    for e in os.scandir(root):
        out.append((e.path, e.inode() == os.stat(e.path, follow_symlinks=False).st_ino))
print(sorted(out))'";

/// Item 10: A directory that becomes merged as a side effect (an ancestor copied up for a child)
/// shows one link at once.
#[test]
fn a_directory_merged_by_a_copy_up_below_shows_one_link_at_once() {
    need_fuse!();
    need_root!();
    let b = Both::new(&["mkdir -p d/a/s d/b e/x"], "redirect_dir=on", &[]);
    b.same("stat -c %h d d/a e; touch d/a/new; stat -c %h d d/a; mv e e2; stat -c %h e2");
}

/// What an upper and its work dir's index hold, for comparing the on-disk result of both
/// sides: the upper's names and types (with link counts of regular files), and the link
/// counts of the index's entries (named by file handles, which differ between the sides;
/// the kernel's shared whiteout is its own affair).
fn upper_and_index(b: &Both, side: &str) -> String {
    let upper = r"find . -mindepth 1 \( -type f -printf '%P %y %n\n' -o -printf '%P %y\n' \) | sort";
    let index = r"find . -type f -printf '%y %n\n' | sort";
    let (u, i) = (b.p(&format!("{side}-upper")), b.p(&format!("{side}-work/index")));
    format!("upper:\n{}index:\n{}", sh(&u, upper), sh(&i, index))
}

/// Item 11: `index=on`: removing one name of a lower hard link drops the count the others
/// show (the kernel indexes the file first), also through a descriptor; removing the last
/// name leaves an open descriptor with no link and takes the index entry away.
#[test]
fn index_removing_a_lower_hard_links_name_drops_the_count() {
    need_fuse!();
    need_root!();
    let (k, u) = INDEX;
    let mut b = Both::new(&["echo d > f; ln f g; ln f h; echo e > x; ln x y"], k, u);
    b.same("rm g; stat -c '%n %h' f h");
    b.same("exec 3<y; rm y; stat -c '%n %h' x; stat -L -c 'fd %h' /proc/self/fd/3; rm x; stat -L -c 'fd %h' /proc/self/fd/3; cat <&3");
    assert_eq!(upper_and_index(&b, "u"), upper_and_index(&b, "k"));
    b.cross(k, u);
    b.same("stat -c '%n %h' f h; ls");
}

/// Item 12: `index=on`: a lookup of another name of a copied-up hard link uses the index
/// entry and links nothing; a change through a name links that name up (its directory is
/// copied up, and shows one link as merged directories do) and leaves the directory's times
/// alone; remounted, and with the upper as a lower, the same tree.
#[test]
fn index_names_are_linked_up_when_a_change_goes_through_them() {
    need_fuse!();
    need_root!();
    let (k, u) = INDEX;
    let setup = "mkdir d e f; echo x > d/a; ln d/a e/b; ln d/a f/c; touch -d 2001-01-01 d/a d e f";
    let mut b = Both::new(&[setup], k, u);
    let look = "stat -c '%n %h %a %y' d e f; stat -c '%n %h %a' d/a e/b f/c";
    b.same(&format!("chmod 600 e/b; {look}; cat d/a f/c"));
    assert_eq!(upper_and_index(&b, "u"), upper_and_index(&b, "k"));
    b.same(&format!("echo more >> f/c; {look}"));
    assert_eq!(upper_and_index(&b, "u"), upper_and_index(&b, "k"));
    // `ftruncate` goes through its descriptor's name (linked when opened for writing), not
    // through the name looked up last.
    b.same(&format!("exec 3>>e/b; stat d/a >/dev/null; python3 -c 'import os; os.ftruncate(3, 2)'; {look}"));
    assert_eq!(upper_and_index(&b, "u"), upper_and_index(&b, "k"));
    b.cross(k, u);
    b.same(&format!("{look}; cat d/a"));
    b.rotate(k, u);
    b.same(&format!("{look}; cat d/a e/b f/c"));
}

/// Item 13: Every directory a copy-up or a move puts an object with a lower origin in is marked
/// `impure`, so that kernel overlayfs reading this upper gives the same `d_ino` as
/// `st_ino`, as over its own upper.
#[test]
fn kernel_overlayfs_over_our_upper_numbers_directory_entries_right() {
    need_fuse!();
    need_root!();
    let setup = "mkdir -p d/sub e; echo 1 > d/f; echo 2 > d/g; echo 3 > top; echo 4 > e/h";
    let mut b = Both::new(&[setup], "redirect_dir=on", &[]);
    b.same("chmod 600 d/f; mkdir n; mv d/g n/; mv top n/; mv e n/; touch d/sub/new");
    let before = b.same(D_INO);
    assert!(!before.contains("False"), "{before}");
    b.cross("redirect_dir=on", &[]);
    let after = b.same(D_INO);
    assert!(!after.contains("False"), "{after}");
    // The upper's own directories are marked as the kernel marks its own.
    let marks = |upper: &str| {
        sh(&b.p(upper), "getfattr -R -n trusted.overlay.impure --absolute-names . 2>/dev/null | grep '^# file' | sort")
    };
    assert_eq!(marks("u-upper"), marks("k-upper"));
}

/// Item 5: calls through descriptors of removed objects act on them, as on any filesystem:
/// `f*` calls on an unlinked file (created here, or copied up), `fstat` and `readdir` of a
/// removed directory, `fstat` of an unlinked FIFO; a lower file opened read-only and
/// removed, or replaced by a rename, refuses changes as the kernel does (and the file that
/// replaced it is not changed instead).
#[test]
fn descriptors_of_removed_objects_keep_working() {
    need_fuse!();
    need_root!();
    let pairs = [("", &[][..]), ("", &["-o", "nopassthrough"][..]), METACOPY];
    for (k, u) in pairs {
        let b = Both::new(
            &[
                "echo lowerdata > lower; echo lowerdata > lo; echo x > other; echo r > rep; echo n > newer; echo m > meta",
            ],
            k,
            u,
        );
        let script = b.p("removed.py");
        std::fs::write(&script, REMOVED_PY).unwrap();
        let out = b.same(&format!("python3 {}", script.display()));
        assert!(!out.contains("errno 2"), "{out}");
    }
}

const REMOVED_PY: &str = r#"import os
def tryit(name, f):
    try:
        r = f(); print(name, "ok", r if r is not None else "")
    except OSError as e:
        print(name, "errno", e.errno)
fd = os.open("t", os.O_CREAT | os.O_RDWR, 0o644)
os.write(fd, b"hello")
os.unlink("t")
tryit("fchmod", lambda: os.fchmod(fd, 0o600))
tryit("fchown", lambda: os.fchown(fd, 1, 1))
tryit("futimens", lambda: os.utime(fd, (1, 1)))
tryit("fsetxattr", lambda: os.setxattr(fd, "user.a", b"1"))
tryit("fgetxattr", lambda: os.getxattr(fd, "user.a"))
tryit("flistxattr", lambda: sorted(os.listxattr(fd)))
tryit("ftruncate", lambda: os.ftruncate(fd, 2))
st = os.fstat(fd); print("fstat", oct(st.st_mode), st.st_uid, st.st_nlink, st.st_size, st.st_mtime > 100)
os.mkdir("dd")
d = os.open("dd", os.O_RDONLY | os.O_DIRECTORY)
os.rmdir("dd")
tryit("fstat-dir", lambda: (oct(os.fstat(d).st_mode), os.fstat(d).st_nlink))
tryit("readdir", lambda: os.listdir(d))
os.mkfifo("ff")
p = os.open("ff", os.O_RDONLY | os.O_NONBLOCK)
os.unlink("ff")
tryit("fstat-fifo", lambda: (oct(os.fstat(p).st_mode), os.fstat(p).st_nlink))
l = os.open("lower", os.O_RDWR)
os.unlink("lower")
tryit("fchmod-lower", lambda: os.fchmod(l, 0o600))
st = os.fstat(l); print("fstat-lower", oct(st.st_mode), st.st_nlink, st.st_size)
fd = os.open("lo", os.O_RDONLY)
os.unlink("lo")
tryit("fchmod-ro-lower", lambda: os.fchmod(fd, 0o600))
tryit("fsetxattr-ro-lower", lambda: os.setxattr(fd, "user.b", b"2"))
st = os.fstat(fd); print("fstat", oct(st.st_mode), st.st_nlink, st.st_size)
r = os.open("rep", os.O_RDONLY)
os.rename("newer", "rep")
tryit("fchmod-replaced-lower", lambda: os.fchmod(r, 0o600))
print("replacement", oct(os.stat("rep").st_mode), "replaced", oct(os.fstat(r).st_mode))
m = os.open("meta", os.O_RDONLY)
os.chmod("meta", 0o640)
os.unlink("meta")
st = os.fstat(m); print("fstat-copied-up-and-removed", oct(st.st_mode), st.st_nlink)
print("listing", sorted(os.listdir(".")))
print("read", os.pread(fd, 20, 0))"#;

/// Item 17: `O_TMPFILE` opens an unnamed file (in the upper directory, the parent copied up
/// first) that can be written, changed through its descriptor and linked by `AT_EMPTY_PATH`
/// unless opened `O_EXCL`; the kernel answers `EXDEV` to a link through `/proc/self/fd`.
/// The uppers each side wrote then read the same on the other.
#[test]
fn o_tmpfile_makes_an_unnamed_file_that_can_be_linked() {
    need_fuse!();
    need_root!();
    for u in [&[][..], &["-o", "nopassthrough"][..]] {
        let mut b = Both::new(&["mkdir -p d/e s; chmod 2775 s; chgrp 1001 s; echo x > d/x"], "", u);
        let script = b.p("tmpfile.py");
        std::fs::write(&script, TMPFILE_PY).unwrap();
        let out = b.same(&format!("python3 {}; ls -la --time-style=+ d s | grep -v ' \\.\\.$'", script.display()));
        for want in ["fstat 0o100640 5 0", "linkat 0", "linked 0o100600 5 1 hello", "excl -1 2", "group 1001"] {
            assert!(out.contains(want), "no `{want}` in {out}");
        }
        b.cross("", u);
        b.same("cat d/linked s/t; stat -c '%n %h %s %a %g' d/linked s/t; ls -a d");
    }
}

const TMPFILE_PY: &str = r#"import os, ctypes
libc = ctypes.CDLL(None, use_errno=True)
def link(fd, name):
    r = libc.linkat(fd, b"", -100, name.encode(), 0x1000)
    return r, ctypes.get_errno() if r else 0
def tryit(name, f):
    try:
        r = f(); print(name, "ok", r if r is not None else "")
    except OSError as e:
        print(name, "errno", e.errno)
fd = os.open("d", os.O_TMPFILE | os.O_RDWR, 0o640)
print("write", os.write(fd, b"hello"))
st = os.fstat(fd); print("fstat", oct(st.st_mode), st.st_size, st.st_nlink)
tryit("fchmod", lambda: os.fchmod(fd, 0o600))
tryit("fsetxattr", lambda: os.setxattr(fd, "user.t", b"1"))
tryit("proc-link", lambda: os.link("/proc/self/fd/%d" % fd, "d/viaproc"))
print("listing-before", sorted(os.listdir("d")))
print("linkat", *link(fd, "d/linked"))
st = os.stat("d/linked"); print("linked", oct(st.st_mode), st.st_size, st.st_nlink, open("d/linked").read())
print("same", os.fstat(fd).st_ino == st.st_ino, os.fstat(fd).st_nlink, os.getxattr("d/linked", "user.t"))
os.write(fd, b" more"); print("after-write", open("d/linked").read())
print("relink", *link(fd, "d/e/second")); print("nlink", os.stat("d/linked").st_nlink)
x = os.open("d/e", os.O_TMPFILE | os.O_WRONLY | os.O_EXCL, 0o600)
print("excl", *link(x, "d/e/excl"))
tryit("on-a-file", lambda: os.open("d/x", os.O_TMPFILE | os.O_RDWR, 0o600))
tryit("read-only", lambda: os.open("d", os.O_TMPFILE | os.O_RDONLY, 0o600))
g = os.open("s", os.O_TMPFILE | os.O_RDWR, 0o644)
os.write(g, b"in setgid\n")
print("group", os.fstat(g).st_gid, *link(g, "s/t"))
for i in range(20):
    os.close(os.open(".", os.O_TMPFILE | os.O_RDWR, 0o600))
print("listing", sorted(os.listdir(".")), sorted(os.listdir("d")), sorted(os.listdir("d/e")))
"#;

/// Item 18: file attribute flags (`lsattr`/`chattr`): read from the real object, set on the
/// upper copy with immutable and append-only kept in `overlay.protattr`, and enforced: an
/// immutable file cannot be written, removed, renamed, chmodded, touched, linked or given an
/// xattr; an append-only one takes only appends; nothing enters an immutable directory or
/// leaves an append-only one; a lower file that is immutable itself is too, until
/// `chattr -i`. Each side then reads the other's upper the same way.
#[test]
fn file_attribute_flags_are_kept_and_enforced_as_by_kernel_overlayfs() {
    need_fuse!();
    need_root!();
    let setup = "mkdir d e; echo x > d/x; echo f > f; echo g > g; echo h > h; ln -s f l; \
                 echo li > li; chattr +i li";
    let mut b = Both::new(&[setup], "", &[]);
    let script = b.p("attr.sh");
    std::fs::write(&script, ATTR_SH).unwrap();
    let out = b.same(&format!("sh {} 2>&1", script.display()));
    for want in
        ["[1] chattr-i-rm", "[0] chattr-i-cat", "[0] chattr+a-append", "[2] chattr+a-write", "[2] lower-i-append"]
    {
        assert!(out.contains(want), "no `{want}` in\n{out}");
    }
    let prot = |upper: &str| sh(&b.p(upper), "getfattr -R -d -m protattr --absolute-names . 2>&1 | sort");
    assert_eq!(prot("u-upper"), prot("k-upper"));
    assert!(prot("u-upper").contains("protattr=\"a\""), "{}", prot("u-upper"));
    b.cross("", &[]);
    b.same("lsattr -d g d f li 2>&1; rm g 2>&1; echo more >> g; cat g; touch d/in; rm d/x 2>&1; ls d");
}

/// The steps of `file_attribute_flags_are_kept_and_enforced_as_by_kernel_overlayfs`: each
/// prints `[status] label`.
const ATTR_SH: &str = r#"t() { label=$1; shift; "$@" >/dev/null 2>&1; echo "[$?] $label"; }
lsattr -d d f g li
t chattr+i chattr +i f
t chattr-i-append sh -c 'echo x >> f'
t chattr-i-rm rm f
t chattr-i-mv mv f f2
t chattr-i-chmod chmod 600 f
t chattr-i-touch touch f
t chattr-i-ln ln f fl
t chattr-i-setfattr setfattr -n user.x -v 1 f
t chattr-i-truncate truncate -s 0 f
t chattr-i-cat cat f
t chattr-i chattr -i f
t chattr-i-gone sh -c 'echo y >> f'
t chattr+a chattr +a g
t chattr+a-write sh -c 'echo x > g'
t chattr+a-append sh -c 'echo x >> g'
t chattr+a-truncate truncate -s 0 g
t chattr+a-rm rm g
t chattr+a-touch-now touch g
t chattr+a-touch-date touch -d 2001-01-01 g
t chattr+a-chmod chmod 600 g
cat g
t dir+i chattr +i d
t dir+i-create touch d/new
t dir+i-rm rm d/x
t dir+i-mkdir mkdir d/m
t dir+i-mv mv d/x d/y
t dir+i-mv-in mv h d/h
t dir-i chattr -i d
t dir+a chattr +a d
t dir+a-create touch d/new2
t dir+a-rm rm d/x
t dir+a-mv mv d/x e
ls d
t noatime chattr +A h
lsattr h
t symlink chattr +i l
t lower-i-append sh -c 'echo x >> li'
t lower-i-rm rm li
t lower-i-chattr chattr -i li
t lower-i-gone sh -c 'echo y >> li'
cat li
lsattr -d d f g h li
"#;

/// Where kernel overlayfs is wrong by POSIX and unionfs is not (README, semantics): with
/// `metacopy=on` an open for writing that writes nothing leaves the mtime alone; a whiteout
/// in a lower directory that is not merged is no name of the directory; a rename between
/// two names of one file does nothing.
#[test]
fn where_kernel_overlayfs_breaks_posix_unionfs_does_not() {
    need_fuse!();
    need_root!();
    let b = Both::new(&["echo data > f; touch -d 2001-01-01 f"], METACOPY.0, METACOPY.1);
    let open = "python3 -c 'import os; os.close(os.open(\"f\", os.O_WRONLY | os.O_APPEND))'";
    let (k, u) = b.run(&format!("chmod 600 f; {open}; stat -c %y f | cut -c1-4; cat f"));
    assert_eq!(u, "2001\ndata\n", "kernel overlayfs: {k}");
    let b = Both::new(&["mkdir d; mknod d/w c 0 0; touch d/x", "mkdir e"], "", &[]);
    let (k, u) = b.run("ls d; stat d/w >/dev/null 2>&1 || echo no-w");
    assert_eq!(u, "x\nno-w\n", "kernel overlayfs: {k}");
    // Two names of one lower file are one file (one inode number): renaming one over the
    // other does nothing. Kernel overlayfs (without `index=on`) moves the name.
    let b = Both::new(&["echo x > a; ln a b"], "", &[]);
    let (k, u) = b.run("python3 -c 'import os; os.rename(\"b\", \"a\")'; ls; stat -c %h a");
    assert_eq!(u, "a\nb\n2\n", "kernel overlayfs: {k}");
}

/// Item 14: as root the markers are `trusted.overlay.*` only: a user's `user.overlay.*`
/// attributes are stored as they are and mean nothing, on either side's upper; and
/// `-o userxattr` reads `user.overlay.*` markers (and only those) as kernel overlayfs's
/// `userxattr` does: how root reads an upper a rootless mount wrote.
#[test]
fn as_root_user_overlay_attributes_are_a_users_own() {
    need_fuse!();
    need_root!();
    let mut b = Both::new(&["mkdir d; echo l > d/low"], "", &[]);
    let show = "ls d; getfattr -d -m '^user' --absolute-names d f 2>&1 | sort";
    b.same(&format!(
        "setfattr -n user.overlay.j -v 1 d; setfattr -n user.overlay.opaque -v y d; touch d/new f; \
                     setfattr -n user.overlay.whiteout -v y f; {show}"
    ));
    let stored = |u: &str| sh(&b.p(u), "getfattr -R -d -m - --absolute-names . 2>/dev/null | grep '^user' | sort");
    assert_eq!(stored("u-upper"), stored("k-upper"));
    b.cross("", &[]);
    let out = b.same(show);
    assert!(out.starts_with("low\nnew\n"), "{out}");
    // userxattr: the middle layer's markers are user.overlay.*; trusted.overlay.* are not.
    let top = "mkdir u t; setfattr -n user.overlay.opaque -v y u; setfattr -n trusted.overlay.opaque -v y t; \
               mknod gone c 0 0";
    let low = "mkdir u t; touch u/old t/old gone";
    let b = Both::new(&[top, low], "userxattr", &["-o", "userxattr"]);
    let out = b.same("ls u t; ls gone 2>&1 | sed 's/.*: //'");
    assert!(out.starts_with("t:\nold\n\nu:\n") && out.contains("No such file"), "{out}");
}

/// Set in the inner run of [`rootless_hard_links_to_a_copied_up_file_stay_one_file`].
const IN_USERNS: &str = "UNIONFS_KERNEL_EQUAL_IN_USERNS";

/// Rootless (a user namespace, `userxattr`), where kernel overlayfs breaks POSIX and unionfs
/// does not (README, semantics): kernel overlayfs there cannot decode the origin it records,
/// so a hard link made to a copied-up lower file is looked up as a second inode of that
/// file: the two names show two inode numbers, each keeps its own cached attributes (a
/// truncate through the name that has not seen a `chmod u+s` keeps the set-user-id bit,
/// which any filesystem in a user namespace clears), and an exchange of the two names
/// answers `ESTALE`. unionfs keeps one inode.
#[test]
fn rootless_hard_links_to_a_copied_up_file_stay_one_file() {
    need_fuse!();
    need_root!();
    if !crate::common::in_userns(test_name!("rootless_hard_links_to_a_copied_up_file_stay_one_file"), IN_USERNS, "") {
        return;
    }
    let b = Both::new(&["echo xx > b; chmod 600 b; mkdir a"], "userxattr", &["-o", "redirect_dir=nofollow"]);
    let exchange = "python3 -c 'import ctypes, os; c = ctypes.CDLL(None, use_errno=True); \
                    r = c.renameat2(-100, b\"b\", -100, b\"a/a\", 2); print(r, os.strerror(ctypes.get_errno()) if r else \"\")'";
    let script = format!(
        "ln b a/a; chmod 4755 a/a; truncate -s 10 b; stat -c %a b a/a; \
         [ $(stat -c %i b) = $(stat -c %i a/a) ] && echo one-inode; {exchange}; ls . a; stat -c %s b a/a"
    );
    let (k, u) = b.run(&script);
    assert_eq!(u, "755\n755\none-inode\n0 \n.:\na\nb\n\na:\na\n10\n10\n", "kernel overlayfs: {k}");
}

/// Rootless: whether a truncate or write clears set-id bits is the kernel's word
/// (`FUSE_OPEN_KILL_SUIDGID`, `FATTR_KILL_SUIDGID`, `FUSE_WRITE_KILL_SUIDGID`: the caller lacks
/// `CAP_FSETID`), not the caller's uid. Root of a user namespace lacks it, so its truncates and
/// writes clear set-id bits there, on any filesystem and on kernel overlayfs; unionfs took uid
/// 0 for the capability (an `O_TRUNC` open kept set-user-id), and where the upper filesystem
/// cleared the bits itself (the daemon lacks the capability too), the kernel went on showing
/// the old mode.
#[test]
fn rootless_truncates_and_writes_clear_set_id_bits() {
    need_fuse!();
    need_root!();
    if !crate::common::in_userns(test_name!("rootless_truncates_and_writes_clear_set_id_bits"), IN_USERNS, "") {
        return;
    }
    let setup = "for f in trunc otrunc append; do echo x > $f; chmod 4755 $f; done; \
                 echo y > gx; chmod 2775 gx; echo z > g; chmod 2744 g; echo w > both; chmod 6755 both";
    let b = Both::new(&[setup], "userxattr", &["-o", "redirect_dir=nofollow"]);
    let script = "truncate -s 10 trunc; : > otrunc; echo a >> append; truncate -s 1 gx; : > g; \
                  echo b >> both; touch new; chmod 4755 new; : > new; \
                  stat -c '%n %a' trunc otrunc append gx g both new";
    let out = b.same(script);
    assert_eq!(out, "trunc 755\notrunc 755\nappend 755\ngx 775\ng 2744\nboth 755\nnew 755\n");
}
