//! The state root and its layout, the lock that serialises manager commands, names and ids.
//!
//! ```text
//! ROOT/lock                          flock: exclusive for changes, shared for reading
//! ROOT/layers/<sha256>/diff/         a read-only layer (union on-disk format)
//! ROOT/layers/<sha256>/meta          its size, origin, creation time
//! ROOT/imagedb/<sha256>/            an image: its config (config.json) and meta
//! ROOT/images/<name:tag>             a tag: the image id it names
//! ROOT/containers/<name>/meta        a container: image, layers, mount point, volumes
//! ROOT/containers/<name>/upper/      its writable layer
//! ROOT/containers/<name>/work/       work dir of its mount
//! ROOT/containers/<name>/merged/     default mount point
//! ROOT/volumes/<name>/_data/         a volume's data; ROOT/volumes/<name>/meta
//! ROOT/tmp/                          imports and commits in progress (emptied when safe)
//! ```

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::error::{Context, Error};

/// The manager's state directory.
#[derive(Debug, Clone)]
pub struct Store {
    /// The state root.
    pub root: PathBuf,
}

/// A held store lock; released on drop.
#[derive(Debug)]
pub struct Lock {
    _fd: OwnedFd,
}

impl Store {
    /// The default state root: `$UNIONFS_ROOT`, else `/var/lib/unionfs` for root, else
    /// `$XDG_DATA_HOME/unionfs` (`~/.local/share/unionfs`).
    pub fn default_root() -> PathBuf {
        if let Some(r) = std::env::var_os("UNIONFS_ROOT").filter(|r| !r.is_empty()) {
            return PathBuf::from(r);
        }
        if crate::sys::proc::euid() == 0 {
            return PathBuf::from("/var/lib/unionfs");
        }
        user_data_dir().join("unionfs")
    }

    /// Opens (creating if needed) the store at `root`, or at the default root. The root is
    /// private (0700, as Docker keeps `/var/lib/docker`): image layers and container mounts
    /// hold set-user-id binaries and device nodes that other local users must not reach
    /// (a root container mount honours them). A root found open to others is closed.
    pub fn open(root: Option<&Path>) -> Result<Store, Error> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        let root = match root {
            Some(r) => r.to_path_buf(),
            None => Self::default_root(),
        };
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).context(|| format!("cannot create '{}'", parent.display()))?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(format!("cannot create '{}'", root.display()), e)),
        }
        let meta = std::fs::metadata(&root).context(|| format!("cannot read '{}'", root.display()))?;
        if !meta.is_dir() {
            return Err(Error::msg(format!("state root '{}' is not a directory", root.display())));
        }
        if meta.uid() == crate::sys::proc::euid() && meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))
                .context(|| format!("cannot make '{}' private", root.display()))?;
        }
        for d in ["layers", "imagedb", "images", "containers", "volumes", "tmp"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).context(|| format!("cannot create '{}'", p.display()))?;
        }
        let root = std::fs::canonicalize(&root).context(|| format!("cannot resolve '{}'", root.display()))?;
        Ok(Store { root })
    }

    fn flock(&self, exclusive: bool) -> Result<Lock, Error> {
        let path = self.root.join("lock");
        let fd = crate::sys::open::open_plain(
            &path,
            crate::sys::open::OFlags::RDWR | crate::sys::open::OFlags::CREATE,
            0o644,
        )
        .context(|| format!("cannot open '{}'", path.display()))?;
        crate::sys::io::lock_wait(&fd, exclusive).context(|| format!("cannot lock '{}'", path.display()))?;
        Ok(Lock { _fd: fd })
    }

    /// Takes the lock for a command that changes state (waits for others); an old store's
    /// image records are rewritten first ([`crate::manager::images::migrate`]).
    pub fn lock(&self) -> Result<Lock, Error> {
        let lock = self.flock(true)?;
        crate::manager::images::migrate(self)?;
        Ok(lock)
    }

    /// Takes the lock for a command that only reads state.
    pub fn lock_shared(&self) -> Result<Lock, Error> {
        self.flock(false)
    }

    /// `layers/<hex>`, for a layer id of 64 lowercase hex digits (with or without
    /// `sha256:`): no other string becomes a path.
    pub fn layer_dir(&self, id: &str) -> Result<PathBuf, Error> {
        let hex = id.strip_prefix("sha256:").unwrap_or(id);
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(Error::msg(format!("invalid layer id '{}' (sha256: and 64 hex digits)", printable(id))));
        }
        Ok(self.root.join("layers").join(hex))
    }

    /// `images/<name:tag>` (a `/` in the name is stored as `%2F`).
    pub fn image_path(&self, r: &ImageRef) -> PathBuf {
        self.root.join("images").join(format!("{}:{}", r.name.replace('%', "%25").replace('/', "%2F"), r.tag))
    }

    /// `containers/<name>`, for a valid container name ([`check_name`]).
    pub fn container_dir(&self, name: &str) -> Result<PathBuf, Error> {
        check_name("container", name)?;
        Ok(self.root.join("containers").join(name))
    }

    /// `volumes/<name>`, for a valid volume name ([`check_name`]).
    pub fn volume_dir(&self, name: &str) -> Result<PathBuf, Error> {
        check_name("volume", name)?;
        Ok(self.root.join("volumes").join(name))
    }

    /// A fresh directory under `tmp/` for work in progress.
    pub fn temp_dir(&self, what: &str) -> Result<PathBuf, Error> {
        let p = self.root.join("tmp").join(format!("{what}-{}-{}", std::process::id(), random_hex(4)));
        std::fs::create_dir(&p).context(|| format!("cannot create '{}'", p.display()))?;
        Ok(p)
    }
}

/// `NAME:TAG`; the tag defaults to `latest`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImageRef {
    /// Repository name.
    pub name: String,
    /// Tag.
    pub tag: String,
}

impl ImageRef {
    /// Parses `name[:tag]`.
    pub fn parse(s: &str) -> Result<ImageRef, Error> {
        let (name, tag) = match s.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, t),
            _ => (s, "latest"),
        };
        let ok_name = !name.is_empty()
            && name.len() <= 255
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/:".contains(&b))
            && !name.starts_with(['.', '-', '/'])
            && !name.split('/').any(|c| c.is_empty() || c == "." || c == "..");
        let ok_tag = !tag.is_empty()
            && tag.len() <= 128
            && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && !tag.starts_with(['.', '-']);
        if !ok_name || !ok_tag {
            return Err(Error::msg(format!(
                "invalid image reference '{}' (NAME:TAG, lowercase name of [a-z0-9._-/], tag of [A-Za-z0-9._-])",
                printable(s)
            )));
        }
        Ok(ImageRef { name: name.into(), tag: tag.into() })
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

/// A normal user's data directory: `$XDG_DATA_HOME`, else `~/.local/share`.
pub fn user_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share")
}

/// Checks a container or volume name: `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 128 bytes. The
/// one grammar every name the manager turns into a path must match: no `/`, no `..`.
pub fn check_name(kind: &str, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::msg(format!("invalid {kind} name '{}' (use [A-Za-z0-9][A-Za-z0-9_.-]*)", printable(name))))
    }
}

/// `s` for a one-line message: control characters and backslashes escaped, at most 200
/// characters.
pub fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(200).flat_map(char::escape_default).collect();
    if s.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// `n` random bytes as hex, from the kernel's generator.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        match crate::sys::io::random(&mut buf[filled..]) {
            Ok(k) => filled += k,
            Err(_) => {
                // No entropy source: fall back to time and pid (ids only need to be unique).
                let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                let seed = t.as_nanos() as u64 ^ u64::from(std::process::id());
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = (seed >> ((i % 8) * 8)) as u8 ^ i as u8;
                }
                break;
            }
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seconds since the epoch, now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_refs() {
        assert_eq!(ImageRef::parse("demo").unwrap().to_string(), "demo:latest");
        assert_eq!(ImageRef::parse("springpetclinic:1.0").unwrap().tag, "1.0");
        assert_eq!(ImageRef::parse("localhost:5000/app").unwrap().to_string(), "localhost:5000/app:latest");
        for bad in ["", "UPPER:1", "a:", "../x:1", "a//b:1", ".hidden:1", "a b:1"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert!(check_name("container", "cont1").is_ok());
        assert!(check_name("container", "a.b-c_d").is_ok());
        for bad in ["", "-x", "a/b", "a b", "..", &"x".repeat(129)] {
            assert!(check_name("container", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn random_ids_differ() {
        assert_ne!(random_hex(16), random_hex(16));
        assert_eq!(random_hex(6).len(), 12);
    }
}
