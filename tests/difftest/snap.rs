//! What a mount shows, as lines to compare between sides: every object's type, mode,
//! owner, size and data, link target, link count, times the kernel keeps (explicit ones in
//! the past; "now" otherwise), user and `trusted.t` xattrs, which names share an inode,
//! whether readdir's `d_ino` is the `st_ino`, and whether a name's inode number changed
//! since the last look.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// One look at a mount.
pub struct Snapshot {
    pub lines: BTreeMap<String, String>,
    /// Each name's `st_ino`.
    pub inos: HashMap<String, u64>,
    /// Which object each name is: its `st_ino`, or (see [`take_by_upper`]) its upper
    /// inode's number.
    pub objects: HashMap<String, (bool, u64)>,
}

pub fn take(root: &Path, before: Option<&Snapshot>) -> Snapshot {
    take_by_upper(root, before, None)
}

/// [`take`], where the names present in `upper` are told apart by their upper inode rather
/// than by `st_ino`. For kernel overlayfs in a user namespace (`userxattr`), which cannot
/// decode the origin it records: a copied-up file keeps its lower file's `st_ino` only while
/// its dentry stays cached, and a name looked up afresh (a new hard link, which the kernel
/// drops to look up again) shows the upper's, so two names of one file can show two numbers
/// (README, semantics; unionfs gives them one, which the comparison still checks).
pub fn take_by_upper(root: &Path, before: Option<&Snapshot>, upper: Option<&Path>) -> Snapshot {
    let mut s = Snapshot { lines: BTreeMap::new(), inos: HashMap::new(), objects: HashMap::new() };
    let mut dinos: HashMap<String, u64> = HashMap::new();
    walk(root, root, &mut s, &mut dinos);
    for (n, ino) in &s.inos {
        let in_upper = upper.and_then(|u| std::fs::symlink_metadata(u.join(n)).ok());
        s.objects.insert(n.clone(), in_upper.map_or((false, *ino), |m| (true, m.ino())));
    }
    // Names sharing an inode are named after the first of them.
    let mut first: HashMap<(bool, u64), String> = HashMap::new();
    let names: Vec<String> = s.lines.keys().cloned().collect();
    for n in &names {
        let Some(&ino) = s.inos.get(n) else { continue };
        let object = s.objects[n];
        let class = first.entry(object).or_insert_with(|| n.clone()).clone();
        let line = s.lines.get_mut(n).unwrap();
        if class != *n {
            line.push_str(&format!(" same-inode-as={class}"));
        }
        if let Some(d) = dinos.get(n)
            && *d != ino
        {
            line.push_str(" d_ino!=st_ino");
        }
        if let Some(b) = before
            && let Some(old) = b.inos.get(n)
            && *old != ino
        {
            line.push_str(" ino-changed");
        }
    }
    s
}

/// Whether two names of one object (by [`Snapshot::objects`]) show different `st_ino`:
/// kernel overlayfs in a user namespace after a hard link to a copied-up lower file (see
/// [`take_by_upper`]).
pub fn split(s: &Snapshot) -> bool {
    let mut seen: HashMap<(bool, u64), u64> = HashMap::new();
    s.objects.iter().any(|(n, object)| *seen.entry(*object).or_insert(s.inos[n]) != s.inos[n])
}

fn xattrs(p: &Path) -> String {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    let Ok(n) = rustix::fs::llistxattr(p, &mut buf[..]) else { return String::new() };
    let mut names: Vec<&[u8]> = buf[..n].split(|b| *b == 0).filter(|s| !s.is_empty()).collect();
    names.sort();
    for name in names {
        if !(name.starts_with(b"user.") || name == b"trusted.t") {
            continue;
        }
        let mut v = [0u8; 256];
        let name = String::from_utf8_lossy(name).into_owned();
        let val =
            rustix::fs::lgetxattr(p, name.as_str(), &mut v[..]).map(|n| String::from_utf8_lossy(&v[..n]).into_owned());
        out.push(format!("{name}={}", val.unwrap_or_else(|e| format!("errno {}", e.raw_os_error()))));
    }
    if out.is_empty() { String::new() } else { format!(" [{}]", out.join(",")) }
}

fn walk(root: &Path, p: &Path, s: &mut Snapshot, dinos: &mut HashMap<String, u64>) {
    let meta = match std::fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) => {
            s.lines.insert(rel(root, p), format!("{} lstat failed: {e}", rel(root, p)));
            return;
        }
    };
    let name = rel(root, p);
    let ft = meta.file_type();
    let t = |x: i64| if x < 1_000_000_000 { x.to_string() } else { "now".into() };
    let mut line = format!("{name} {:o} {}:{} nlink={}", meta.mode(), meta.uid(), meta.gid(), meta.nlink());
    if ft.is_file() {
        let data = std::fs::read(p).unwrap_or_default();
        let h = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3));
        line.push_str(&format!(" size={} #{h:x}", data.len()));
    } else if ft.is_symlink() {
        line.push_str(&format!(" -> {}", std::fs::read_link(p).map(|t| t.display().to_string()).unwrap_or_default()));
    } else if ft.is_char_device() || ft.is_block_device() {
        line.push_str(&format!(" rdev={}", meta.rdev()));
    }
    if !ft.is_symlink() {
        line.push_str(&format!(" mtime={}", t(meta.mtime())));
        line.push_str(&xattrs(p));
    }
    s.inos.insert(name.clone(), meta.ino());
    s.lines.insert(name, line);
    if ft.is_dir() {
        let Ok(rd) = std::fs::read_dir(p) else { return };
        let mut entries: Vec<_> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let child = p.join(e.file_name());
            dinos.insert(rel(root, &child), std::os::unix::fs::DirEntryExt::ino(&e));
            walk(root, &child, s, dinos);
        }
    }
}

fn rel(root: &Path, p: &Path) -> String {
    let r = p.strip_prefix(root).unwrap();
    if r.as_os_str().is_empty() { ".".into() } else { String::from_utf8_lossy(r.as_os_str().as_bytes()).into_owned() }
}

/// What kernel overlayfs shows, less what it gets wrong by POSIX and unionfs does not copy
/// (both listed in the README's semantics section):
/// * a directory entry's `d_ino` that is not the object's `st_ino` (kernel overlayfs leaves
///   some directories a hard link is made in unmarked, then reads their entries' real
///   numbers); unionfs's must always agree, which the comparison still checks;
/// * with `metacopy`, `mtime` set to now when a file's data is brought up on an open for
///   writing that writes nothing (`mtime_quirk`): the one-way difference "now" against an
///   earlier time of unionfs is let through.
///
/// After the uppers were swapped (`both_ways`), the kernel's on-disk "now" may show on
/// either side.
#[derive(Clone, Copy)]
pub struct Quirks {
    pub mtime_quirk: bool,
    pub both_ways: bool,
}

fn now_for_then(now: &str, then: &str) -> bool {
    if !(now.split(' ').nth(1).is_some_and(|m| m.starts_with("10")) && now.contains(" mtime=now")) {
        return false;
    }
    match then.split(' ').find(|w| w.starts_with("mtime=") && *w != "mtime=now") {
        Some(t) => now.replace("mtime=now", t) == then,
        None => false,
    }
}

/// [`Quirks::mtime_quirk`] for an `fstat` answer ([`crate::difftest::ops::stat_line`]).
pub fn now_for_then_stat(k: &str, u: &str) -> bool {
    if !(k.starts_with("mode=10") && k.contains(" mtime=now")) {
        return false;
    }
    match u.split(' ').find(|w| w.starts_with("mtime=") && *w != "mtime=now") {
        Some(t) => k.replace("mtime=now", t) == u,
        None => false,
    }
}

fn same_line(k: &str, u: &str, q: &Quirks) -> bool {
    let k = k.replace(" d_ino!=st_ino", "");
    if k == u {
        return true;
    }
    q.mtime_quirk && (now_for_then(&k, u) || (q.both_ways && now_for_then(u, &k)))
}

/// The lines that differ: `-` kernel, `+` unionfs (see [`Quirks`]).
pub fn diff(k: &Snapshot, u: &Snapshot, q: &Quirks) -> Option<String> {
    let mut out = Vec::new();
    for (n, l) in &k.lines {
        if !u.lines.get(n).is_some_and(|x| same_line(l, x, q)) {
            out.push(format!("- {l}"));
        }
    }
    for (n, l) in &u.lines {
        if !k.lines.get(n).is_some_and(|x| same_line(x, l, q)) {
            out.push(format!("+ {l}"));
        }
    }
    if out.is_empty() { None } else { Some(out.join("\n")) }
}

/// [`diff`] of two unionfs views (or of kernel overlayfs over unionfs's upper against
/// unionfs): no quirk let through.
pub fn diff_exact(a: &Snapshot, b: &Snapshot) -> Option<String> {
    let mut out = Vec::new();
    for (n, l) in &a.lines {
        if b.lines.get(n) != Some(l) {
            out.push(format!("- {l}"));
        }
    }
    for (n, l) in &b.lines {
        if a.lines.get(n) != Some(l) {
            out.push(format!("+ {l}"));
        }
    }
    if out.is_empty() { None } else { Some(out.join("\n")) }
}
