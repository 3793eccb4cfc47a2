//! The kernel's mount table (`/proc/self/mountinfo`): finding union mounts and their FUSE
//! connection numbers.

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
    fn skips_garbage() {
        assert!(parse("nonsense line\n\n1 2 3").is_empty());
    }
}
