//! The kernel's mount table (`/proc/self/mountinfo`): finding union mounts and their FUSE
//! connection numbers; unmounting, and a daemon's own mount known by identity.

use std::path::{Path, PathBuf};

/// The filesystem type union mounts show in the mount table.
pub const FSTYPE: &str = "fuse.unionfs";

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// Mount id.
    pub id: u32,
    /// Device major number.
    pub major: u32,
    /// Device minor number (for FUSE: the connection number under `/sys/fs/fuse/connections`).
    pub minor: u32,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Filesystem type, e.g. `fuse.unionfs`.
    pub fstype: String,
    /// Mount source.
    pub source: String,
    /// Per-mount options (`rw,nosuid,...`).
    pub options: String,
}

/// Undoes the octal escapes (`\040` for a space) of mountinfo fields.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let f: Vec<&str> = line.split(' ').collect();
    let sep = f.iter().position(|x| *x == "-")?;
    if sep < 6 || f.len() < sep + 3 {
        return None;
    }
    let (maj, min) = f[2].split_once(':')?;
    Some(MountEntry {
        id: f[0].parse().ok()?,
        major: maj.parse().ok()?,
        minor: min.parse().ok()?,
        mount_point: PathBuf::from(unescape(f[4])),
        options: f[5].to_string(),
        fstype: f[sep + 1].to_string(),
        source: unescape(f[sep + 2]),
    })
}

/// The mount table of this process.
pub fn read() -> Vec<MountEntry> {
    std::fs::read_to_string("/proc/self/mountinfo").map(|t| parse(&t)).unwrap_or_default()
}

/// The topmost mount at `path` (which must be canonical), if any.
pub fn at(path: &Path) -> Option<MountEntry> {
    read().into_iter().rev().find(|m| m.mount_point == path)
}

/// A mount this process made, by identity: its mount id and FUSE connection, read from the
/// mount table right after mounting. Paths are only where to look: what sits at one may
/// change (unmounted behind the daemon's back, another filesystem mounted over it or found
/// beneath it), and a daemon must never unmount anything but its own mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnMount {
    /// Where it was mounted (canonical).
    pub path: PathBuf,
    /// Mount id.
    pub id: u32,
    /// Device major number.
    pub major: u32,
    /// Device minor number (the FUSE connection).
    pub minor: u32,
}

/// What [`OwnMount::check`] found at the mount's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// The mount is the topmost at its path: unmounting the path unmounts it.
    Top,
    /// The mount is no longer in this namespace's table.
    Gone,
    /// The mount is there, but something else is mounted over it.
    Covered,
}

impl OwnMount {
    /// The union mount now at `path` (canonical), taken as this process's own (right after
    /// mounting it).
    pub fn at(path: &Path) -> Option<OwnMount> {
        at(path).filter(|m| m.fstype == FSTYPE).map(|m| OwnMount {
            path: path.to_path_buf(),
            id: m.id,
            major: m.major,
            minor: m.minor,
        })
    }

    /// Where the mount stands in `table`.
    pub fn check(&self, table: &[MountEntry]) -> Presence {
        if !table.iter().any(|e| e.id == self.id && (e.major, e.minor) == (self.major, self.minor)) {
            return Presence::Gone;
        }
        match table.iter().rev().find(|e| e.mount_point == self.path) {
            Some(e) if e.id == self.id => Presence::Top,
            _ => Presence::Covered,
        }
    }
}

impl OwnMount {
    /// Unmounts this mount if it is the topmost at its path in this namespace; returns
    /// whether it unmounted anything. Never touches what is mounted over it or beneath it.
    pub fn unmount(&self, lazy: bool) -> Result<bool, UnmountError> {
        match self.check(&read()) {
            Presence::Gone => Ok(false),
            Presence::Covered => Err(UnmountError::Other(format!(
                "another filesystem is mounted over '{}'; leaving both mounted",
                self.path.display()
            ))),
            Presence::Top => unmount_path(&self.path, lazy).map(|()| true),
        }
    }
}

/// Why an unmount failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnmountError {
    /// Files are open or a process has its working directory there.
    Busy,
    /// Anything else, described.
    Other(String),
}

impl std::fmt::Display for UnmountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnmountError::Busy => f.write_str("it is busy (files open, or a working directory there)"),
            UnmountError::Other(why) => f.write_str(why),
        }
    }
}

/// Unmounts the topmost mount at `path` (lazily: detached now, gone once unused): with
/// `umount2` as root, else through the setuid `fusermount3 -u`, which unmounts only a FUSE
/// mount of the caller's.
pub fn unmount_path(path: &Path, lazy: bool) -> Result<(), UnmountError> {
    if crate::sys::proc::euid() == 0 {
        return match crate::sys::proc::unmount(path, lazy) {
            Ok(()) => Ok(()),
            Err(crate::error::Errno::EBUSY) => Err(UnmountError::Busy),
            Err(e) => Err(UnmountError::Other(e.to_string())),
        };
    }
    let mut cmd = std::process::Command::new("fusermount3");
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    let out =
        cmd.arg("--").arg(path).output().map_err(|e| UnmountError::Other(format!("cannot run fusermount3: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("busy") {
        return Err(UnmountError::Busy);
    }
    let err = err.trim();
    Err(UnmountError::Other(err.strip_prefix("fusermount3: ").unwrap_or(err).to_string()))
}

/// Whether `path` is a union mount.
pub fn is_union(path: &Path) -> bool {
    at(path).is_some_and(|m| m.fstype == FSTYPE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
120 22 0:55 / /tmp/with\\040space rw,nosuid,nodev,relatime shared:60 - fuse.unionfs unionfs rw,user_id=0,group_id=0,default_permissions,allow_other
121 22 0:56 / /mnt/x rw,relatime - overlay overlay rw,lowerdir=/a,upperdir=/b,workdir=/c
";

    #[test]
    fn parses_fields_and_escapes() {
        let m = parse(SAMPLE);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].mount_point, PathBuf::from("/tmp/with space"));
        assert_eq!(m[1].fstype, FSTYPE);
        assert_eq!((m[1].major, m[1].minor), (0, 55));
        assert_eq!(m[1].source, "unionfs");
        assert_eq!(m[2].fstype, "overlay");
    }

    #[test]
    fn an_own_mount_is_known_by_its_id_not_its_path() {
        let t = parse(SAMPLE);
        let own = OwnMount { path: "/tmp/with space".into(), id: 120, major: 0, minor: 55 };
        assert_eq!(own.check(&t), Presence::Top);
        // Unmounted behind the daemon's back: a tmpfs that was beneath shows at the path.
        let gone =
            parse("22 1 254:0 / / rw - ext4 /dev/vda rw\n119 22 0:40 / /tmp/with\\040space rw - tmpfs tmpfs rw\n");
        assert_eq!(own.check(&gone), Presence::Gone);
        // Another union mount at the path (another connection, or another id) is not ours.
        let other = parse("120 22 0:56 / /tmp/with\\040space rw - fuse.unionfs unionfs rw\n");
        assert_eq!(own.check(&other), Presence::Gone);
        // Something mounted over ours.
        let over = format!("{SAMPLE}130 120 0:41 / /tmp/with\\040space rw - tmpfs tmpfs rw\n");
        assert_eq!(own.check(&parse(&over)), Presence::Covered);
    }

    #[test]
    fn skips_garbage() {
        assert!(parse("nonsense line\n\n1 2 3").is_empty());
    }
}
