//! User and group id mapping between what the layers store and what the mount shows
//! (fuse-overlayfs's `uidmapping=`/`gidmapping=` and `squash_to_*` options), and the
//! `override_stat` xattr that stores owner and mode where the daemon cannot chown.
//!
//! A mapping `stored:shown:len` — containers/storage's `container-id:host-id:size`, as
//! fuse-overlayfs reads it — shows an id `S` the layers store in `[stored, stored+len)` as
//! `shown + (S - stored)`, and stores a shown id `H` in `[shown, shown+len)` as
//! `stored + (H - shown)`: the layers keep the container's ids, the mount shows the host's,
//! and the container's user namespace maps those back. Stored ids outside every range show
//! as the overflow id 65534, and shown ids outside every range cannot be stored (`EINVAL`,
//! as in a user namespace) — except as the owner of a new object, which is then stored as
//! the overflow id, as fuse-overlayfs stores it (see `UnionFs::new_owner`).

use crate::error::{Errno, Res};

/// The id shown for a stored id no mapping covers.
pub const OVERFLOW_ID: u32 = 65534;

/// One `stored:shown:len` range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First id as the layers store it (the container's).
    pub stored: u32,
    /// First id as the mount shows it (the host's).
    pub shown: u32,
    /// How many ids.
    pub len: u32,
}

/// Parses `stored:shown:len[:stored:shown:len...]`, tolerating the stray leading `:` engines pass
/// and `,` between triples.
pub fn parse_ranges(s: &str) -> Result<Vec<Range>, String> {
    let nums: Vec<&str> = s.split([':', ',']).filter(|x| !x.is_empty()).collect();
    if nums.is_empty() || !nums.len().is_multiple_of(3) {
        return Err(format!("id mapping '{s}' must be CONTAINER:HOST:LEN triples"));
    }
    let mut out = Vec::new();
    for t in nums.chunks(3) {
        let n = |x: &str| x.parse::<u32>().map_err(|_| format!("id mapping '{s}': '{x}' is not a number"));
        let r = Range { stored: n(t[0])?, shown: n(t[1])?, len: n(t[2])? };
        if r.len == 0 || r.stored.checked_add(r.len).is_none() || r.shown.checked_add(r.len).is_none() {
            return Err(format!("id mapping '{s}': bad range {}:{}:{}", r.stored, r.shown, r.len));
        }
        out.push(r);
    }
    Ok(out)
}

/// How the ids of one kind (users or groups) are translated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdMap {
    /// Ranges; empty means ids pass through unchanged.
    pub ranges: Vec<Range>,
    /// Show every object as owned by this id (stored ids still change with chown).
    pub squash: Option<u32>,
}

impl IdMap {
    /// The id to show for a stored id.
    pub fn show(&self, stored: u32) -> u32 {
        if let Some(s) = self.squash {
            return s;
        }
        if self.ranges.is_empty() {
            return stored;
        }
        self.ranges
            .iter()
            .find(|r| stored >= r.stored && stored - r.stored < r.len)
            .map_or(OVERFLOW_ID, |r| r.shown + (stored - r.stored))
    }

    /// The id to store for a shown id.
    pub fn store(&self, shown: u32) -> Res<u32> {
        if self.ranges.is_empty() {
            return Ok(shown);
        }
        self.ranges
            .iter()
            .find(|r| shown >= r.shown && shown - r.shown < r.len)
            .map(|r| r.stored + (shown - r.shown))
            .ok_or(Errno::EINVAL)
    }

    /// Whether ids are changed at all.
    pub fn is_identity(&self) -> bool {
        self.ranges.is_empty() && self.squash.is_none()
    }
}

/// Owner and permission bits kept in an `override_stat` xattr: `uid:gid:mode[:type]`, mode
/// in octal (the format of containers/storage).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverrideStat {
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
}

impl OverrideStat {
    /// Parses the xattr value.
    pub fn parse(v: &[u8]) -> Option<OverrideStat> {
        let s = std::str::from_utf8(v).ok()?;
        let mut f = s.trim_end_matches('\0').split(':');
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        let mode = u32::from_str_radix(f.next()?, 8).ok()? & 0o7777;
        Some(OverrideStat { uid, gid, mode })
    }

    /// The override stored in attribute `name` of `target`, if any (a symlink has none: its
    /// owner and mode are its own).
    pub fn read(
        target: crate::sys::xattr::XTarget<'_>,
        name: &std::ffi::CStr,
        kind: crate::sys::stat::FileKind,
    ) -> Option<OverrideStat> {
        if kind == crate::sys::stat::FileKind::Symlink {
            return None;
        }
        OverrideStat::parse(&crate::sys::xattr::get(target, name).ok()??)
    }

    /// The xattr value (without a type: it never changes).
    pub fn render(&self) -> String {
        format!("{}:{}:{:04o}", self.uid, self.gid, self.mode & 0o7777)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_mapping_strings_parse() {
        let r = parse_ranges(":0:1000:1:1:100000:65536").unwrap();
        assert_eq!(r, vec![Range { stored: 0, shown: 1000, len: 1 }, Range { stored: 1, shown: 100000, len: 65536 }]);
        assert_eq!(parse_ranges("0:10:100,100:10000:2000").unwrap().len(), 2);
        assert!(parse_ranges("0:1").is_err());
        assert!(parse_ranges("a:b:c").is_err());
        assert!(parse_ranges("0:0:0").is_err());
        assert!(parse_ranges("4294967295:0:2").is_err());
    }

    #[test]
    fn both_directions() {
        // As rootless podman passes it: the container's 0 is the user's 1000, the
        // container's 1.. are the subordinate ids 100000...
        let m = IdMap { ranges: parse_ranges("0:1000:1:1:100000:65536").unwrap(), squash: None };
        assert_eq!(m.show(0), 1000, "a file the layers store as the container's root");
        assert_eq!(m.show(1), 100000);
        assert_eq!(m.show(10), 100009);
        assert_eq!(m.show(70000), OVERFLOW_ID, "unmapped stored ids overflow");
        assert_eq!(m.store(1000), Ok(0));
        assert_eq!(m.store(100009), Ok(10));
        assert_eq!(m.store(0), Err(Errno::EINVAL));
        for shown in [1000u32, 100000, 100500, 165535] {
            assert_eq!(m.show(m.store(shown).unwrap()), shown);
        }
        // fuse-overlayfs's tests/readonly.sh: `uidmapping=0:1000:1` shows a 0-owned file as 1000.
        let m = IdMap { ranges: parse_ranges("0:1000:1").unwrap(), squash: None };
        assert_eq!(m.show(0), 1000);
    }

    #[test]
    fn squash_and_identity() {
        let m = IdMap { ranges: vec![], squash: Some(0) };
        assert_eq!(m.show(1234), 0);
        assert_eq!(m.store(55), Ok(55));
        assert!(IdMap::default().is_identity());
        assert_eq!(IdMap::default().show(42), 42);
    }

    #[test]
    fn override_stat_format() {
        let o = OverrideStat::parse(b"0:0:0755").unwrap();
        assert_eq!(o, OverrideStat { uid: 0, gid: 0, mode: 0o755 });
        assert_eq!(OverrideStat::parse(b"1000:1000:4755:file").unwrap().mode, 0o4755);
        assert_eq!(o.render(), "0:0:0755");
        assert!(OverrideStat::parse(b"garbage").is_none());
    }
}
