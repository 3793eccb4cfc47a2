//! From raw command-line values to a validated [`MountConfig`].
//!
//! Parsing (`L1:L2` lists, `-o` option strings) is pure and unit-tested. Validation looks at
//! the filesystem but changes nothing: every bad input is found before anything is created
//! or mounted, and reported as one line naming the problem.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// Splits a lower-layer list: `:` separates layers, `\:` is a literal colon and `\\` a
/// literal backslash (the kernel's `lowerdir=` syntax). Leftmost is topmost.
pub fn split_lower(s: &str) -> Result<Vec<PathBuf>, Error> {
    if s.is_empty() {
        return Err(Error::msg("the lower layer list is empty"));
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => cur.push(n),
                None => cur.push('\\'),
            },
            ':' => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    if out.iter().any(String::is_empty) {
        return Err(Error::msg(format!("the lower layer list '{s}' has an empty entry")));
    }
    Ok(out.into_iter().map(PathBuf::from).collect())
}

/// Splits a mount option string on commas, keeping commas inside double quotes
/// (`context="a,b"`) and escaped ones (`\,`), and dropping empty fields (`a,,b`).
pub fn split_options(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            '\\' => match chars.next() {
                Some(',') => cur.push(','),
                Some(n) => {
                    cur.push('\\');
                    cur.push(n);
                }
                None => cur.push('\\'),
            },
            ',' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

pub use crate::options::{MAX_PREFETCH_THREADS, MAX_WORKER_THREADS, MountOptions};

/// What the command line asked for, before validation.
#[derive(Clone, Debug, Default)]
pub struct MountRequest {
    /// `--lower` (or `lowerdir=`).
    pub lower: Option<String>,
    /// `--upper`.
    pub upper: Option<PathBuf>,
    /// `--work`.
    pub work: Option<PathBuf>,
    /// The mount point.
    pub mountpoint: PathBuf,
    /// Accumulated `-o` options.
    pub options: MountOptions,
    /// Stay in the foreground.
    pub foreground: bool,
    /// Debug logging.
    pub debug: bool,
    /// Log file for the background daemon.
    pub log: Option<PathBuf>,
    /// `--volume HOSTDIR:/path` values.
    pub volumes: Vec<String>,
}

/// The writable part of a validated mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpperDirs {
    /// Upper directory (absolute).
    pub upper: PathBuf,
    /// Work directory (absolute).
    pub work: PathBuf,
    /// The upper directory must be created (its parent exists).
    pub create_upper: bool,
    /// The work directory must be created.
    pub create_work: bool,
}

/// A mount that passed every check.
#[derive(Clone, Debug)]
pub struct MountConfig {
    /// Lower layers, topmost first, canonical.
    pub lowers: Vec<PathBuf>,
    /// Upper and work, or `None` for a read-only mount.
    pub upper: Option<UpperDirs>,
    /// Mount point, canonical.
    pub mountpoint: PathBuf,
    /// Options.
    pub options: MountOptions,
    /// Stay in the foreground.
    pub foreground: bool,
    /// Debug logging.
    pub debug: bool,
    /// Log file for the background daemon.
    pub log: Option<PathBuf>,
    /// Volumes: host directory (canonical) and mount point in the merged view.
    pub volumes: Vec<(PathBuf, String)>,
}

/// Splits `HOSTDIR:/path` at its last `:` (host paths may contain colons).
pub fn split_volume(v: &str) -> Result<(PathBuf, String), Error> {
    match v.rsplit_once(':') {
        Some((host, at)) if !host.is_empty() && at.starts_with('/') => Ok((PathBuf::from(host), at.to_string())),
        _ => Err(Error::msg(format!("volume '{v}' must be HOSTDIR:/path/in/the/mount"))),
    }
}

fn canonical_dir(p: &Path, what: &str) -> Result<PathBuf, Error> {
    let meta = std::fs::metadata(p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::msg(format!("{what} '{}' does not exist", p.display())),
        _ => Error::io(format!("cannot access {what} '{}'", p.display()), e),
    })?;
    if !meta.is_dir() {
        return Err(Error::msg(format!("{what} '{}' is not a directory", p.display())));
    }
    let canon =
        std::fs::canonicalize(p).map_err(|e| Error::io(format!("cannot resolve {what} '{}'", p.display()), e))?;
    not_pseudo(&canon, what)?;
    Ok(canon)
}

/// Refuses a directory in /proc or /sys: what is there depends on who looks (`/proc/self`
/// is each process itself), so a union there would not be where the command said.
fn not_pseudo(p: &Path, what: &str) -> Result<(), Error> {
    const PROC: i64 = 0x9fa0;
    const SYSFS: i64 = 0x6265_6572;
    let fd = crate::sys::open::open_dir_path(p)
        .map_err(|e| Error::io(format!("cannot open {what} '{}'", p.display()), e))?;
    let magic = crate::sys::stat::fs_magic(&fd).unwrap_or(0);
    if magic == PROC || magic == SYSFS {
        return Err(Error::msg(format!("{what} '{}' is in /proc or /sys, which no union can use", p.display())));
    }
    Ok(())
}

/// An absolute, symlink-free form of a path that may not exist yet (its parent must).
fn canonical_maybe(p: &Path, what: &str) -> Result<(PathBuf, bool), Error> {
    if p.exists() {
        return Ok((canonical_dir(p, what)?, false));
    }
    let name =
        p.file_name().ok_or_else(|| Error::msg(format!("{what} '{}' is not a valid directory name", p.display())))?;
    let parent = match p.parent() {
        Some(x) if !x.as_os_str().is_empty() => x.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let parent = canonical_dir(&parent, &format!("parent of {what}"))?;
    Ok((parent.join(name), true))
}

/// Whether `a` is `b` or lies inside it.
fn within(a: &Path, b: &Path) -> bool {
    a.starts_with(b)
}

/// The device of an existing path, or of its parent for one to be created.
fn dev_of(p: &Path) -> Result<u64, Error> {
    let probe = if p.exists() { p } else { p.parent().unwrap_or(p) };
    std::fs::metadata(probe).map(|m| m.dev()).map_err(|e| Error::io(format!("cannot access '{}'", probe.display()), e))
}

/// The default work dir: `.NAME.work` beside the upper dir `NAME`.
pub fn default_work(upper: &Path) -> PathBuf {
    let name = upper.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "upper".into());
    upper.with_file_name(format!(".{name}.work"))
}

impl MountConfig {
    /// Checks a request against the filesystem without changing anything.
    pub fn validate(req: MountRequest) -> Result<MountConfig, Error> {
        if let Some(bad) = req.options.invalid.first() {
            return Err(Error::msg(format!("invalid mount option '{bad}'")));
        }
        // Two sources for one thing: which one was meant is not ours to guess.
        for (flag, given, option) in [
            ("--lower", req.lower.is_some(), req.options.lowerdir.is_some()),
            ("--upper", req.upper.is_some(), req.options.upperdir.is_some()),
            ("--work", req.work.is_some(), req.options.workdir.is_some()),
        ] {
            if given && option {
                let o = &flag[2..];
                return Err(Error::msg(format!("both {flag} and -o {o}dir= given; use one of them")));
            }
        }
        let lower_s = req
            .lower
            .clone()
            .or_else(|| req.options.lowerdir.clone())
            .ok_or_else(|| Error::msg("no lower layer given (use --lower L1:L2 or -o lowerdir=L1:L2)"))?;
        let lowers =
            split_lower(&lower_s)?.iter().map(|l| canonical_dir(l, "lower layer")).collect::<Result<Vec<_>, _>>()?;
        let mountpoint = mount_point(&req.mountpoint)?;
        let upper_raw = req.upper.clone().or_else(|| req.options.upperdir.clone());
        let work_raw = req.work.clone().or_else(|| req.options.workdir.clone());
        let upper = match upper_raw {
            None if work_raw.is_some() => return Err(Error::msg("a work dir was given without an upper dir")),
            None => None,
            Some(u) => Some(upper_dirs(&u, work_raw.as_deref(), &lowers, &mountpoint)?),
        };
        let mut volumes = Vec::new();
        for v in &req.volumes {
            let (host, at) = split_volume(v)?;
            crate::union::layer::volume_path(&at)?;
            let host = canonical_dir(&host, "volume")?;
            if upper.is_none() {
                return Err(Error::msg("volumes need an upper dir"));
            }
            if within(&host, &mountpoint) {
                return Err(Error::msg(format!("volume '{}' is inside the mount point", host.display())));
            }
            volumes.push((host, at));
        }
        Ok(MountConfig {
            lowers,
            upper,
            mountpoint,
            options: req.options,
            foreground: req.foreground,
            debug: req.debug,
            log: req.log,
            volumes,
        })
    }
}

/// The mount point: an existing directory, canonical, not a union mount already.
fn mount_point(p: &Path) -> Result<PathBuf, Error> {
    let mountpoint = canonical_dir(p, "mount point")?;
    if crate::mounts::is_union(&mountpoint) {
        return Err(Error::msg(format!("mount point '{}' is already a union mount", mountpoint.display())));
    }
    Ok(mountpoint)
}

/// The upper and work directories (`work`: the default beside the upper if not given),
/// canonical, each apart from every lower layer and from each other, outside the mount
/// point, on one filesystem.
fn upper_dirs(upper: &Path, work: Option<&Path>, lowers: &[PathBuf], mountpoint: &Path) -> Result<UpperDirs, Error> {
    let (upper, create_upper) = canonical_maybe(upper, "upper dir")?;
    let (work, create_work) = match work {
        Some(w) => canonical_maybe(w, "work dir")?,
        None => canonical_maybe(&default_work(&upper), "work dir")?,
    };
    for l in lowers {
        not_inside(&upper, "upper dir", l, "lower layer")?;
        not_inside(l, "lower layer", &upper, "upper dir")?;
        not_inside(&work, "work dir", l, "lower layer")?;
        not_inside(l, "lower layer", &work, "work dir")?;
    }
    if within(&work, &upper) || within(&upper, &work) {
        return Err(Error::msg(format!(
            "upper dir '{}' and work dir '{}' must not be inside one another",
            upper.display(),
            work.display()
        )));
    }
    not_inside(&upper, "upper dir", mountpoint, "the mount point")?;
    not_inside(&work, "work dir", mountpoint, "the mount point")?;
    if dev_of(&upper)? != dev_of(&work)? {
        return Err(Error::msg(format!(
            "upper dir '{}' and work dir '{}' are on different filesystems",
            upper.display(),
            work.display()
        )));
    }
    Ok(UpperDirs { upper, work, create_upper, create_work })
}

/// Refuses `a` (a `what_a`) inside `b` (a `what_b`), naming both.
fn not_inside(a: &Path, what_a: &str, b: &Path, what_b: &str) -> Result<(), Error> {
    match within(a, b) {
        true => Err(Error::msg(format!("{what_a} '{}' is inside {what_b} '{}'", a.display(), b.display()))),
        false => Ok(()),
    }
}

/// A size: bytes, or with a suffix `k`, `M`, `G`, `T` (powers of 1024; `KiB`, `MB` and
/// the like accepted). `None` for anything else.
pub fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let digits = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(digits);
    let n: u64 = n.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Vec<PathBuf> {
        v.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn lower_list_order_and_escapes() {
        assert_eq!(split_lower("a:b:c").unwrap(), p(&["a", "b", "c"]));
        assert_eq!(split_lower(r"a\:1:b").unwrap(), p(&["a:1", "b"]));
        assert_eq!(split_lower(r"a\\:b").unwrap(), p(&[r"a\", "b"]));
        assert_eq!(split_lower("/only").unwrap(), p(&["/only"]));
    }

    #[test]
    fn lower_list_rejects_empty() {
        assert!(split_lower("").is_err());
        assert!(split_lower("a::b").is_err());
        assert!(split_lower("a:").is_err());
        assert!(split_lower(":a").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("10M"), Some(10 << 20));
        assert_eq!(parse_size("2g"), Some(2 << 30));
        assert_eq!(parse_size("4KiB"), Some(4096));
        assert_eq!(parse_size("1MB"), Some(1 << 20));
        for bad in ["", "M", "10X", "-1", "1.5G", "99999999999T"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        let mut o = MountOptions::default();
        o.apply("size_limit=1G,inode_limit=100,redirect_dir=off,watch");
        assert_eq!(
            (o.size_limit, o.inode_limit, o.redirect_dir, o.watch),
            (Some(1 << 30), Some(100), Some(false), true)
        );
        o.apply("size_limit=lots,inode_limit=0,redirect_dir=maybe");
        assert_eq!(o.invalid.len(), 3);
    }

    #[test]
    fn option_splitting() {
        assert_eq!(split_options("a,b,,c"), ["a", "b", "c"]);
        assert_eq!(split_options(r#"context="x:y:s0:c1,c2",ro"#), [r#"context="x:y:s0:c1,c2""#, "ro"]);
        assert_eq!(split_options(r"lowerdir=/a\,b:/c,rw"), ["lowerdir=/a,b:/c", "rw"]);
        assert!(split_options("").is_empty());
    }

    #[test]
    fn options_apply() {
        let mut o = MountOptions::default();
        o.apply("ro,nosuid,fsync=0,noatime");
        o.apply("frobnicate,lowerdir=/a:/b,upperdir=/u,workdir=/w");
        assert!(o.ro && o.volatile && o.noatime);
        assert_eq!(o.nosuid, Some(true));
        assert_eq!(o.unknown, ["frobnicate"]);
        assert_eq!(o.lowerdir.as_deref(), Some("/a:/b"));
        assert_eq!(o.upperdir, Some(PathBuf::from("/u")));
        o.apply("rw,suid");
        assert!(!o.ro);
        assert_eq!(o.nosuid, Some(false));
        assert_eq!(o.prefetch, None);
        o.apply("prefetch=2");
        assert_eq!(o.prefetch, Some(2));
        o.apply("noprefetch");
        assert_eq!(o.prefetch, Some(0));
        assert_eq!(o.threads, None);
        o.apply("threads=3");
        assert_eq!(o.threads, Some(3));
        o.invalid.clear();
        o.unknown.clear();
        o.apply("index=on");
        o.apply("index=off");
        assert!(!o.index && o.unknown.is_empty() && o.invalid.is_empty(), "index=off is an option: {o:?}");
        o.apply("index=maybe,threads=0,threads=65");
        assert_eq!(o.invalid, ["index=maybe", "threads=0", "threads=65"]);
        assert_eq!(o.threads, Some(3));
        assert!(o.wants_uring(true) && !o.wants_uring(false), "by default where replies may yield");
        o.apply("nouring");
        assert!(!o.wants_uring(true));
        o.apply("uring");
        assert!(o.wants_uring(false));
        o.apply("prefetch=65,prefetch=,prefetch=a");
        assert_eq!(o.invalid.len(), 6, "{:?}", o.invalid);
        assert_eq!(o.prefetch, Some(0));
    }

    #[test]
    fn engine_option_strings() {
        // As podman 4.3 passes them (with an empty field and a stray leading colon).
        let mut o = MountOptions::default();
        o.apply("lowerdir=/s/overlay/l/ABC:/s/overlay/l/DEF,upperdir=/s/overlay/ID/diff,workdir=/s/overlay/ID/work,,volatile");
        o.apply(r#"context="system_u:object_r:container_file_t:s0:c1,c2",uidmapping=:0:1000:1:1:100000:65536,gidmapping=:0:1000:1:1:100000:65536"#);
        o.apply("xattr_permissions=2,nodev,nosuid,metacopy=on,userxattr");
        assert!(o.invalid.is_empty(), "{:?}", o.invalid);
        assert_eq!(o.lowerdir.as_deref(), Some("/s/overlay/l/ABC:/s/overlay/l/DEF"));
        assert!(o.volatile);
        assert_eq!(o.uidmap.len(), 2);
        assert_eq!(o.uid_map().show(1), 100000, "the container's 1 is the host's 100000");
        assert_eq!(o.override_xattr(), Some(c"user.containers.override_stat"));
        assert!(o.unknown.is_empty(), "{:?}", o.unknown);
        assert!(o.userxattr);
        assert!(o.metacopy);
        let mut s = MountOptions::default();
        s.apply("squash_to_root,squash_to_uid=7,fsync=0,noxattrs=1");
        assert_eq!(s.uid_map().show(1), 7, "squash_to_uid wins over squash_to_root");
        assert_eq!(s.gid_map().show(1), 0);
        assert!(s.volatile && s.noxattrs);
        let mut b = MountOptions::default();
        b.apply("uidmapping=1:2,squash_to_uid=x,xattr_permissions=9");
        assert_eq!(b.invalid.len(), 3);
    }

    #[test]
    fn volume_specs() {
        assert_eq!(split_volume("/data:/var/lib/x").unwrap(), (PathBuf::from("/data"), "/var/lib/x".to_string()));
        assert_eq!(split_volume("/a:b:/x").unwrap(), (PathBuf::from("/a:b"), "/x".to_string()));
        assert!(split_volume("/data").is_err());
        assert!(split_volume("/data:rel").is_err());
        assert!(crate::union::layer::volume_path("/").is_err());
        assert!(crate::union::layer::volume_path("/a/../b").is_err());
        assert_eq!(crate::union::layer::volume_path("//a/./b/").unwrap().len(), 2);
    }

    #[test]
    fn default_work_is_beside_upper() {
        assert_eq!(default_work(Path::new("/x/cont1")), PathBuf::from("/x/.cont1.work"));
    }

    #[test]
    fn within_is_component_wise() {
        assert!(within(Path::new("/a/b"), Path::new("/a")));
        assert!(within(Path::new("/a"), Path::new("/a")));
        assert!(!within(Path::new("/ab"), Path::new("/a")));
    }
}
