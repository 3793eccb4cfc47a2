//! Builds layer directories from a fixture: plain trees that git can store, plus a
//! `specials` manifest for what it cannot (whiteouts, opaque markers, xattrs, modes, owners,
//! hard links, empty directories, devices). Tests, the demo and the benchmark all build
//! fixtures with this one builder.
//!
//! # Fixture layout
//! `FIXTURE/<layer>/...` for each layer (sorted by name; `l1` before `l2`), and an optional
//! `FIXTURE/specials`, one instruction per line, `#` for comments:
//!
//! | line | effect |
//! |---|---|
//! | `L mkdir PATH [MODE]` | empty directory |
//! | `L file PATH TEXT...` | regular file with TEXT and a newline |
//! | `L symlink PATH TARGET` | symlink |
//! | `L link EXISTING NEW` | hard link |
//! | `L whiteout PATH` | kernel whiteout (0/0 char device) |
//! | `L whiteout-oci PATH` | OCI whiteout (`.wh.NAME` beside it) |
//! | `L whiteout-xattr PATH` | xattr whiteout (empty file with `overlay.whiteout`, parent `overlay.opaque=x`) |
//! | `L opaque PATH` | opaque dir, `trusted.overlay.opaque=y` (as root) or `user.overlay.opaque=y` |
//! | `L opaque-user PATH` | opaque dir, `user.overlay.opaque=y` |
//! | `L opaque-oci PATH` | opaque dir, `.wh..wh..opq` inside |
//! | `L xattr PATH NAME=VALUE` | extended attribute |
//! | `L mode PATH OCTAL` | permission bits (setuid etc. included) |
//! | `L owner PATH UID:GID` | ownership (needs root) |
//! | `L fifo PATH` | named pipe |
//! | `L mtime PATH SECONDS` | modification (and access) time |
//!
//! `L` is a layer directory name; paths are relative to it.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Context, Error};
use crate::sys::stat::FileKind;
use crate::sys::xattr::{SetMode, XTarget};

/// Builds every layer of `fixture` under `dest` and returns the layer directories, topmost
/// first.
pub fn build(fixture: &Path, dest: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut layers: Vec<String> = std::fs::read_dir(fixture)
        .context(|| format!("cannot read fixture '{}'", fixture.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let specials = fixture.join("specials");
    let text = match specials.exists() {
        true => Some(std::fs::read_to_string(&specials).context(|| format!("cannot read '{}'", specials.display()))?),
        false => None,
    };
    // A layer that starts empty has no directory in git (which keeps no empty directories):
    // the layers the specials name exist too.
    for line in text.iter().flat_map(|t| t.lines()) {
        let line = line.trim();
        if let Some(l) = line.split_whitespace().next()
            && !line.starts_with('#')
            && !l.contains('/')
            && !layers.iter().any(|x| x == l)
        {
            layers.push(l.to_string());
        }
    }
    layers.sort();
    std::fs::create_dir_all(dest).context(|| format!("cannot create '{}'", dest.display()))?;
    let mut out = Vec::new();
    for l in &layers {
        let to = dest.join(l);
        if to.exists() {
            return Err(Error::msg(format!("'{}' already exists", to.display())));
        }
        match fixture.join(l).is_dir() {
            true => copy_tree(&fixture.join(l), &to)?,
            false => std::fs::create_dir(&to).context(|| format!("cannot create '{}'", to.display()))?,
        }
        out.push(to);
    }
    if let Some(text) = text {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            apply(dest, line).map_err(|e| Error::msg(format!("{}:{}: {e}", specials.display(), n + 1)))?;
        }
    }
    Ok(out)
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), Error> {
    let meta = std::fs::symlink_metadata(from).context(|| format!("cannot read '{}'", from.display()))?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(from).context(|| format!("cannot read link '{}'", from.display()))?;
        std::os::unix::fs::symlink(&target, to).context(|| format!("cannot create '{}'", to.display()))?;
    } else if ft.is_dir() {
        std::fs::create_dir(to).context(|| format!("cannot create '{}'", to.display()))?;
        let mut names: Vec<_> = std::fs::read_dir(from)
            .context(|| format!("cannot read '{}'", from.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for n in names {
            copy_tree(&from.join(&n), &to.join(&n))?;
        }
        std::fs::set_permissions(to, meta.permissions()).context(|| format!("cannot chmod '{}'", to.display()))?;
    } else {
        std::fs::copy(from, to).context(|| format!("cannot copy '{}'", from.display()))?;
    }
    Ok(())
}

fn cstr(p: &Path) -> Result<CString, Error> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::msg(format!("bad path '{}'", p.display())))
}

fn opaque_name() -> &'static std::ffi::CStr {
    if crate::sys::proc::privileged() { c"trusted.overlay.opaque" } else { c"user.overlay.opaque" }
}

fn whiteout_xattr_name() -> &'static std::ffi::CStr {
    if crate::sys::proc::privileged() { c"trusted.overlay.whiteout" } else { c"user.overlay.whiteout" }
}

fn set_xattr(path: &Path, name: &std::ffi::CStr, value: &[u8]) -> Result<(), Error> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let dir = crate::sys::open::open_dir_path(parent).context(|| format!("cannot open '{}'", parent.display()))?;
    let leaf = cstr(Path::new(path.file_name().unwrap_or_default()))?;
    crate::sys::xattr::set(XTarget::At(std::os::fd::AsFd::as_fd(&dir), &leaf), name, value, SetMode::Any)
        .context(|| format!("cannot set xattr '{}' on '{}'", name.to_string_lossy(), path.display()))
}

fn mknod(path: &Path, kind: FileKind, perm: u32, rdev: u64) -> Result<(), crate::error::Errno> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let dir = crate::sys::open::open_dir_path(parent)?;
    let leaf =
        CString::new(path.file_name().unwrap_or_default().as_bytes()).map_err(|_| crate::error::Errno::EINVAL)?;
    crate::sys::fs::mknodat(&dir, &leaf, kind, perm, rdev)
}

/// One instruction of a fixture file: `LAYER OP PATH [ARGS…]`.
struct Inst<'a> {
    dest: &'a Path,
    layer: &'a str,
    op: &'a str,
    /// `PATH` in `LAYER` under `dest`.
    path: PathBuf,
    rest: Vec<&'a str>,
}

impl Inst<'_> {
    /// Argument `n` after `PATH`.
    fn arg(&self, n: usize) -> Result<&str, Error> {
        self.rest.get(n).copied().ok_or_else(|| Error::msg(format!("'{}' needs more arguments", self.op)))
    }
}

fn apply(dest: &Path, line: &str) -> Result<(), Error> {
    let mut f = line.split_whitespace();
    let (Some(layer), Some(op), Some(rel)) = (f.next(), f.next(), f.next()) else {
        return Err(Error::msg(format!("expected 'LAYER OP PATH ...', got '{line}'")));
    };
    let i = Inst { dest, layer, op, path: dest.join(layer).join(rel), rest: f.collect() };
    match op {
        "mkdir" | "file" | "symlink" | "link" | "fifo" => make_entry(&i),
        "whiteout" | "whiteout-oci" | "whiteout-xattr" | "opaque" | "opaque-user" | "opaque-oci" => make_marker(&i),
        "xattr" | "mode" | "owner" | "mtime" => set_attribute(&i),
        _ => Err(Error::msg(format!("unknown instruction '{op}'"))),
    }
}

/// A directory, file, symlink, hard link or FIFO.
fn make_entry(i: &Inst<'_>) -> Result<(), Error> {
    let (dest, path) = (i.dest, i.path.as_path());
    match i.op {
        "mkdir" => {
            std::fs::create_dir_all(path).context(|| format!("cannot create '{}'", path.display()))?;
            if let Some(m) = i.rest.first() {
                let mode = u32::from_str_radix(m, 8).map_err(|_| Error::msg(format!("bad mode '{m}'")))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).context(|| "chmod".into())?;
            }
        }
        "file" => {
            ensure_parent(path)?;
            std::fs::write(path, format!("{}\n", i.rest.join(" ")))
                .context(|| format!("cannot write '{}'", path.display()))?;
        }
        "symlink" => {
            ensure_parent(path)?;
            std::os::unix::fs::symlink(i.arg(0)?, path).context(|| format!("cannot create '{}'", path.display()))?;
        }
        "link" => {
            let new = dest.join(i.layer).join(i.arg(0)?);
            ensure_parent(&new)?;
            std::fs::hard_link(path, &new).context(|| format!("cannot link '{}'", new.display()))?;
        }
        "fifo" => {
            ensure_parent(path)?;
            mknod(path, FileKind::Fifo, 0o644, 0)
                .map_err(|e| Error::io(format!("cannot create '{}'", path.display()), e))?;
        }
        _ => return Err(Error::msg(format!("unknown instruction '{}'", i.op))),
    }
    Ok(())
}

/// A whiteout or an opaque directory, in the form asked for.
fn make_marker(i: &Inst<'_>) -> Result<(), Error> {
    let (dest, path) = (i.dest, i.path.as_path());
    match i.op {
        "whiteout" => {
            ensure_parent(path)?;
            if mknod(path, FileKind::CharDev, 0, 0).is_err() {
                // Unprivileged without whiteout support: the OCI form means the same.
                oci_whiteout(path)?;
            }
        }
        "whiteout-oci" => oci_whiteout(path)?,
        "whiteout-xattr" => {
            ensure_parent(path)?;
            std::fs::write(path, b"").context(|| format!("cannot create '{}'", path.display()))?;
            set_xattr(path, whiteout_xattr_name(), b"y")?;
            set_xattr(path.parent().unwrap_or(dest), opaque_name(), b"x")?;
        }
        "opaque" => {
            std::fs::create_dir_all(path).context(|| format!("cannot create '{}'", path.display()))?;
            set_xattr(path, opaque_name(), b"y")?;
        }
        "opaque-user" => {
            std::fs::create_dir_all(path).context(|| format!("cannot create '{}'", path.display()))?;
            set_xattr(path, c"user.overlay.opaque", b"y")?;
        }
        "opaque-oci" => {
            std::fs::create_dir_all(path).context(|| format!("cannot create '{}'", path.display()))?;
            std::fs::write(path.join(".wh..wh..opq"), b"").context(|| "cannot create the opaque marker".into())?;
        }
        _ => return Err(Error::msg(format!("unknown instruction '{}'", i.op))),
    }
    Ok(())
}

/// An xattr, mode, owner or modification time.
fn set_attribute(i: &Inst<'_>) -> Result<(), Error> {
    let (dest, path) = (i.dest, i.path.as_path());
    match i.op {
        "xattr" => {
            let kv = i.arg(0)?;
            let (k, v) = kv.split_once('=').ok_or_else(|| Error::msg(format!("expected NAME=VALUE, got '{kv}'")))?;
            let k = CString::new(k).map_err(|_| Error::msg("bad xattr name"))?;
            set_xattr(path, &k, v.as_bytes())?;
        }
        "mode" => {
            let m = i.arg(0)?;
            let mode = u32::from_str_radix(m, 8).map_err(|_| Error::msg(format!("bad mode '{m}'")))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .context(|| format!("cannot chmod '{}'", path.display()))?;
        }
        "owner" => {
            let o = i.arg(0)?;
            let (u, g) = o.split_once(':').ok_or_else(|| Error::msg(format!("expected UID:GID, got '{o}'")))?;
            let (u, g) = (u.parse().map_err(|_| Error::msg("bad uid"))?, g.parse().map_err(|_| Error::msg("bad gid"))?);
            std::os::unix::fs::lchown(path, Some(u), Some(g))
                .context(|| format!("cannot chown '{}'", path.display()))?;
        }
        "mtime" => {
            let s: i64 = i.arg(0)?.parse().map_err(|_| Error::msg("bad seconds"))?;
            let parent = path.parent().unwrap_or(dest);
            let dir = crate::sys::open::open_dir_path(parent).context(|| "open".into())?;
            let leaf = cstr(Path::new(path.file_name().unwrap_or_default()))?;
            let t = crate::sys::fs::SetTime::At(crate::sys::stat::Timespec { sec: s, nsec: 0 });
            crate::sys::fs::utimensat(&dir, &leaf, t, t)
                .context(|| format!("cannot set times of '{}'", path.display()))?;
        }
        _ => return Err(Error::msg(format!("unknown instruction '{}'", i.op))),
    }
    Ok(())
}

fn ensure_parent(path: &Path) -> Result<(), Error> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).context(|| format!("cannot create '{}'", p.display()))?;
    }
    Ok(())
}

fn oci_whiteout(path: &Path) -> Result<(), Error> {
    let name = path.file_name().ok_or_else(|| Error::msg("whiteout of nothing"))?;
    let mut wh = std::ffi::OsString::from(".wh.");
    wh.push(name);
    let p = path.with_file_name(wh);
    ensure_parent(&p)?;
    std::fs::write(&p, b"").context(|| format!("cannot create '{}'", p.display()))
}
