//! `unionfs check`: finds — and with `--repair` fixes — what a crash or a foreign tool can
//! leave in an upper layer. Reports without changing anything unless asked.
//!
//! | finding | meaning | repair |
//! |---|---|---|
//! | `work-leftover` | a temporary in `WORK/work` (a crash during copy-up or rename) | removed |
//! | `whiteout-in-opaque` | a whiteout inside an opaque directory (hides nothing) | removed |
//! | `whiteout-hides-nothing` | no lower layer has the name (needs `--lower`) | removed |
//! | `foreign-marker` | an OCI/AUFS marker (`.wh.NAME`, `.wh..wh..opq`, `.wh..wh.*`), an xattr whiteout, or a private xattr in the other namespace | rewritten in the upper's dialect |
//! | `broken-origin` | an `overlay.origin` that is not the kernel's file-handle format | removed |
//! | `broken-ownership` | a `containers.override_stat` that does not parse | removed (the real owner and mode show) |
//!
//! Everything is reached through directory descriptors opened without following symlinks;
//! the check takes the same locks as a mount, so it never runs beside one.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::error::{Context, Errno, Error, Res};
use crate::sys::fs::{self as sfs, RenameMode};
use crate::sys::open::{self, OFlags};
use crate::sys::stat::{self, FileKind};
use crate::sys::xattr::{self, SetMode, XTarget};
use crate::sys::{dir as sdir, io as sio};
use crate::union::lookup::{Seen, probe};
use crate::union::whiteout::{self, Dialect, OPAQUE_MARKER, TRUSTED, USER};

/// What to check.
#[derive(Debug)]
pub struct CheckRequest {
    /// The upper layer.
    pub upper: PathBuf,
    /// Its work dir (default: as `unionfs mount` chooses it).
    pub work: PathBuf,
    /// Lower layers, topmost first (to find whiteouts that hide nothing).
    pub lowers: Vec<PathBuf>,
    /// The dialect markers should be in.
    pub dialect: Dialect,
    /// Fix what is found.
    pub repair: bool,
}

/// One problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Short kind (see the module table).
    pub kind: &'static str,
    /// Path inside the upper (or the work dir, for leftovers).
    pub path: String,
    /// What exactly.
    pub detail: String,
    /// Whether `--repair` fixed it.
    pub fixed: bool,
}

/// Runs the check; returns the findings (fixed ones marked).
pub fn check(req: &CheckRequest) -> Result<Vec<Finding>, Error> {
    let upper =
        open::open_dir_path(&req.upper).context(|| format!("cannot open upper dir '{}'", req.upper.display()))?;
    let work_root =
        open::open_dir_path(&req.work).context(|| format!("cannot open work dir '{}'", req.work.display()))?;
    let _locks = [lock(&req.upper, "upper dir")?, lock(&req.work, "work dir")?];
    let lowers = req
        .lowers
        .iter()
        .map(|l| open::open_dir_path(l).context(|| format!("cannot open lower dir '{}'", l.display())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut c = Checker { req, findings: Vec::new(), work: None, lowers };
    // Temporaries a crash left in the work dir.
    if let Ok(work) = open::openat(&work_root, whiteout_work_subdir(), OFlags::PATH | OFlags::DIRECTORY, 0) {
        let rd = open::open_dir_for_read(&work).map_err(|e| Error::io("cannot read the work dir", e))?;
        for e in sdir::read_all(&rd).map_err(|e| Error::io("cannot read the work dir", e))? {
            let name = CString::new(e.name).map_err(|_| Error::msg("bad name in the work dir"))?;
            let fixed = req.repair && remove_tree(work.as_fd(), &name).is_ok();
            c.findings.push(Finding {
                kind: "work-leftover",
                path: format!("work/{}", name.to_string_lossy()),
                detail: "temporary left by an interrupted operation".into(),
                fixed,
            });
        }
        c.work = Some(work);
    }
    let root = open::open_dir_path_at(&upper).map_err(|e| Error::io("cannot open the upper dir", e))?;
    c.check_xattrs(root.as_fd(), c".", &[]).map_err(|e| Error::io("cannot walk the upper dir", e))?;
    c.walk(root.as_fd(), &mut Vec::new(), Some(Vec::new())).map_err(|e| Error::io("cannot walk the upper dir", e))?;
    Ok(c.findings)
}

fn whiteout_work_subdir() -> &'static CStr {
    crate::union::layer::WORK_SUBDIR
}

fn lock(p: &Path, what: &str) -> Result<OwnedFd, Error> {
    let fd = open::open_plain(p, OFlags::RDONLY | OFlags::DIRECTORY, 0)
        .context(|| format!("cannot open {what} '{}'", p.display()))?;
    if !sio::try_lock_exclusive(&fd).context(|| format!("cannot lock {what} '{}'", p.display()))? {
        return Err(Error::msg(format!(
            "{what} '{}' is in use by a live unionfs mount; unmount it first",
            p.display()
        )));
    }
    Ok(fd)
}

struct Checker<'a> {
    req: &'a CheckRequest,
    findings: Vec<Finding>,
    work: Option<OwnedFd>,
    lowers: Vec<OwnedFd>,
}

const OVERRIDE_XATTRS: [&CStr; 2] = [c"user.containers.override_stat", c"security.containers.override_stat"];

impl Checker<'_> {
    fn note(&mut self, kind: &'static str, path: &[CString], detail: String, fixed: bool) {
        let path = path.iter().map(|c| c.to_string_lossy().into_owned()).collect::<Vec<_>>().join("/");
        self.findings.push(Finding { kind, path: if path.is_empty() { ".".into() } else { path }, detail, fixed });
    }

    /// The right and the wrong namespace's names.
    fn names(&self) -> (&'static whiteout::XattrNames, &'static whiteout::XattrNames) {
        match self.req.dialect {
            Dialect::Trusted => (&TRUSTED, &USER),
            Dialect::User => (&USER, &TRUSTED),
        }
    }

    /// Checks the entries of directory `dir` (path `path` in the upper), whose lower parts
    /// are at `lower` in the lower layers (`None`: it has none, being opaque or below an
    /// opaque one, so nothing below it comes from a lower layer). The mount's own rules: an
    /// upper directory's `overlay.redirect` says where its lower parts are.
    fn walk(&mut self, dir: BorrowedFd<'_>, path: &mut Vec<CString>, lower: Option<Vec<CString>>) -> Res<()> {
        let lower =
            if whiteout::dir_marks(dir, c".", Some(dir), whiteout::Dialects::ANY)?.opaque { None } else { lower };
        let rd = open::open_dir_for_read(dir)?;
        let mut entries = sdir::read_all(&rd)?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        for e in entries {
            let name = CString::new(e.name.clone()).map_err(|_| Errno::EINVAL)?;
            let st = match stat::statat(dir, &name) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue,
                Err(err) => return Err(err),
            };
            path.push(name.clone());
            let r = self.entry(dir, &name, st, path, lower.as_deref());
            path.pop();
            r?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        st: stat::Stat,
        path: &mut Vec<CString>,
        lower: Option<&[CString]>,
    ) -> Res<()> {
        let bytes = name.to_bytes();
        // OCI/AUFS markers.
        if name == OPAQUE_MARKER {
            let (right, _) = self.names();
            let fixed = self.req.repair
                && xattr::set(XTarget::At(dir, c"."), right.opaque, b"y", SetMode::Any).is_ok()
                && sfs::unlinkat(dir, name).is_ok();
            self.note("foreign-marker", path, "OCI opaque marker instead of the overlay.opaque xattr".into(), fixed);
            return Ok(());
        }
        if let Some(target) = whiteout::whiteout_target(bytes) {
            let target = CString::new(target).map_err(|_| Errno::EINVAL)?;
            let fixed = self.req.repair && self.oci_to_whiteout(dir, name, &target).is_ok();
            self.note("foreign-marker", path, "OCI whiteout file instead of a 0/0 character device".into(), fixed);
            return Ok(());
        }
        if whiteout::is_marker_name(bytes) {
            let fixed = self.req.repair && remove_tree(dir, name).is_ok();
            self.note("foreign-marker", path, "AUFS metadata entry".into(), fixed);
            return Ok(());
        }
        let kind = st.kind();
        let is_whiteout = kind == Some(FileKind::CharDev) && st.rdev == 0;
        if !is_whiteout
            && kind == Some(FileKind::Regular)
            && st.size == 0
            && whiteout::is_xattr_whiteout(dir, name, whiteout::Dialects::ANY)?
        {
            let fixed = self.req.repair && self.replace_with_whiteout(dir, name).is_ok();
            self.note("foreign-marker", path, "xattr whiteout instead of a 0/0 character device".into(), fixed);
            return Ok(());
        }
        if is_whiteout {
            match lower {
                None => {
                    let fixed = self.req.repair && sfs::unlinkat(dir, name).is_ok();
                    self.note("whiteout-in-opaque", path, "whiteout inside an opaque directory".into(), fixed);
                }
                Some(l) if !self.lowers.is_empty() && !self.lower_has(l, name)? => {
                    let fixed = self.req.repair && sfs::unlinkat(dir, name).is_ok();
                    self.note("whiteout-hides-nothing", path, "no lower layer has this name".into(), fixed);
                }
                Some(_) => {}
            }
            return Ok(());
        }
        self.check_xattrs(dir, name, path)?;
        if kind == Some(FileKind::Directory) {
            // Where this directory's lower parts are: its redirect, else its name below the
            // parent's.
            let (right, _) = self.names();
            let sub_lower = match (lower, whiteout::read_redirect(dir, name, right)) {
                (_, Ok(Some(whiteout::Redirect::Absolute(p)))) if !p.is_empty() => {
                    Some(p.to_bytes().split(|b| *b == b'/').filter_map(|c| CString::new(c).ok()).collect::<Vec<_>>())
                }
                (_, Ok(Some(whiteout::Redirect::Absolute(_)))) => Some(Vec::new()),
                (Some(l), Ok(Some(whiteout::Redirect::Relative(n)))) => Some([l, &[n]].concat()),
                (Some(l), Ok(None)) => Some([l, &[name.to_owned()]].concat()),
                // A broken redirect, or a directory made here: nothing known below it.
                _ => None,
            };
            let sub = open::openat(dir, name, OFlags::PATH | OFlags::DIRECTORY, 0)?;
            self.walk(sub.as_fd(), path, sub_lower)?;
        }
        Ok(())
    }

    /// Private xattrs in the wrong namespace, broken origins, broken override_stat.
    fn check_xattrs(&mut self, dir: BorrowedFd<'_>, name: &CStr, path: &[CString]) -> Res<()> {
        let t = XTarget::At(dir, name);
        let present = match xattr::list(t) {
            Ok(l) => l,
            Err(Errno::EOPNOTSUPP) => return Ok(()),
            Err(e) => return Err(e),
        };
        let (right, wrong) = self.names();
        let pairs = [
            (wrong.opaque, right.opaque),
            (wrong.origin, right.origin),
            (wrong.impure, right.impure),
            (wrong.redirect, right.redirect),
        ];
        for (w, r) in pairs {
            if !present.iter().any(|n| n.as_slice() == w.to_bytes()) {
                continue;
            }
            let value = xattr::get(t, w)?.unwrap_or_default();
            let fixed =
                self.req.repair && xattr::set(t, r, &value, SetMode::Any).is_ok() && xattr::remove(t, w).is_ok();
            self.note(
                "foreign-marker",
                path,
                format!("{} instead of {}", w.to_string_lossy(), r.to_string_lossy()),
                fixed,
            );
        }
        for origin in [TRUSTED.origin, USER.origin] {
            if !present.iter().any(|n| n.as_slice() == origin.to_bytes()) {
                continue;
            }
            // Copied-up directories carry an origin too, as the kernel writes it.
            let v = xattr::get(t, origin)?.unwrap_or_default();
            if !origin_well_formed(&v) {
                let fixed = self.req.repair && xattr::remove(t, origin).is_ok();
                self.note(
                    "broken-origin",
                    path,
                    format!("{}: not a kernel file handle", origin.to_string_lossy()),
                    fixed,
                );
            }
        }
        for o in OVERRIDE_XATTRS {
            if !present.iter().any(|n| n.as_slice() == o.to_bytes()) {
                continue;
            }
            let v = xattr::get(t, o)?.unwrap_or_default();
            if crate::union::idmap::OverrideStat::parse(&v).is_none() {
                let fixed = self.req.repair && xattr::remove(t, o).is_ok();
                self.note(
                    "broken-ownership",
                    path,
                    format!(
                        "{} = {:?} does not parse as UID:GID:MODE",
                        o.to_string_lossy(),
                        String::from_utf8_lossy(&v)
                    ),
                    fixed,
                );
            }
        }
        Ok(())
    }

    /// Whether the lower layers (below the upper) show `name` in their directory `dir`.
    fn lower_has(&self, dir: &[CString], name: &CStr) -> Res<bool> {
        let path: Vec<CString> = dir.iter().cloned().chain(std::iter::once(name.to_owned())).collect();
        let mut dirs: Vec<OwnedFd> = self.lowers.iter().map(open::open_dir_path_at).collect::<Res<_>>()?;
        for (i, c) in path.iter().enumerate() {
            let last = i + 1 == path.len();
            let mut next = Vec::new();
            for d in &dirs {
                let xw = whiteout::dir_marks(d.as_fd(), c".", Some(d.as_fd()), whiteout::Dialects::ANY)?.xwhiteouts;
                match probe(d.as_fd(), c, xw, true, whiteout::Dialects::ANY)? {
                    Seen::Missing => continue,
                    Seen::Whiteout => break,
                    Seen::NonDir(_) => {
                        if last && next.is_empty() {
                            return Ok(true);
                        }
                        break;
                    }
                    Seen::Dir(_, marks) => {
                        if last {
                            return Ok(true);
                        }
                        next.push(open::openat(d, c, OFlags::PATH | OFlags::DIRECTORY, 0)?);
                        if marks.opaque {
                            break;
                        }
                    }
                }
            }
            if next.is_empty() {
                return Ok(false);
            }
            dirs = next;
        }
        Ok(false)
    }

    /// `.wh.NAME` becomes a 0/0 character device `NAME` (unless `NAME` exists: then the
    /// marker only goes).
    fn oci_to_whiteout(&self, dir: BorrowedFd<'_>, marker: &CStr, target: &CStr) -> Res<()> {
        match stat::statat(dir, target) {
            Ok(_) => {}
            Err(Errno::ENOENT) => self.place_whiteout(dir, target, RenameMode::NoReplace)?,
            Err(e) => return Err(e),
        }
        sfs::unlinkat(dir, marker)
    }

    fn replace_with_whiteout(&self, dir: BorrowedFd<'_>, name: &CStr) -> Res<()> {
        self.place_whiteout(dir, name, RenameMode::Replace)
    }

    /// Builds a whiteout in the work dir and renames it to `name` in `dir`.
    fn place_whiteout(&self, dir: BorrowedFd<'_>, name: &CStr, mode: RenameMode) -> Res<()> {
        let work = self.work.as_ref().ok_or(Errno::ENOENT)?;
        let tmp = CString::new(format!("#check-{}", std::process::id())).map_err(|_| Errno::EINVAL)?;
        sfs::mknodat(work, &tmp, FileKind::CharDev, 0, 0)?;
        if let Err(e) = sfs::renameat2(work, &tmp, dir, name, mode) {
            let _ = sfs::unlinkat(work, &tmp);
            return Err(e);
        }
        Ok(())
    }
}

/// The kernel's `struct ovl_fb` header: version 0, magic 0xfb, the total length.
fn origin_well_formed(v: &[u8]) -> bool {
    v.len() >= 21 && v[0] == 0 && v[1] == 0xfb && usize::from(v[2]) == v.len()
}

fn remove_tree(dir: BorrowedFd<'_>, name: &CStr) -> Res<()> {
    let st = stat::statat(dir, name)?;
    if st.is_dir() {
        let sub = open::openat(dir, name, OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
        for e in sdir::read_all(&sub)? {
            let child = CString::new(e.name).map_err(|_| Errno::EINVAL)?;
            remove_tree(sub.as_fd(), &child)?;
        }
        sfs::rmdirat(dir, name)
    } else {
        sfs::unlinkat(dir, name)
    }
}

/// Prints the findings; returns the exit code: 0 nothing (left) to fix, 1 problems remain.
pub fn report(findings: &[Finding], repair: bool) -> u8 {
    for f in findings {
        let state = if f.fixed {
            "fixed"
        } else if repair {
            "NOT FIXED"
        } else {
            "found"
        };
        println!("{:<22} {:<9} {}: {}", f.kind, state, f.path, f.detail);
    }
    let left = findings.iter().filter(|f| !f.fixed).count();
    match (findings.len(), left) {
        (0, _) => println!("clean: nothing to fix"),
        (n, 0) => println!("{n} problem(s) fixed"),
        (n, l) if repair => println!("{n} problem(s), {l} could not be fixed"),
        (n, _) => println!("{n} problem(s) found; run with --repair to fix them"),
    }
    u8::from(left > 0)
}

#[cfg(test)]
mod tests {
    use super::origin_well_formed;

    #[test]
    fn origin_format_is_the_kernels() {
        let good = crate::union::copy_up::encode_origin(1, &[1, 2, 3, 4, 5, 6, 7, 8], &[0; 16]);
        assert!(origin_well_formed(&good));
        assert!(!origin_well_formed(b"garbage"));
        let mut bad = good.clone();
        bad[1] = 0xfa;
        assert!(!origin_well_formed(&bad));
        assert!(!origin_well_formed(&good[..good.len() - 1]));
    }
}
