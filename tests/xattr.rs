//! Extended attributes: the union's private ones are invisible and untouchable; others work
//! as on a plain filesystem and survive copy-up.

use crate::common::*;

/// The namespace of the mount's own markers: `trusted.overlay.` as root, `user.overlay.`
/// otherwise (as kernel overlayfs, and its `userxattr`).
fn ours() -> &'static str {
    if is_root() { "trusted.overlay." } else { "user.overlay." }
}

#[test]
fn private_xattrs_are_hidden() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    for p in ["var/cache", "etc", "."] {
        let names = listxattr(&s.m(p));
        assert!(names.iter().all(|n| !n.contains("overlay")), "{p}: {names:?}");
        assert_eq!(getxattr(&s.m(p), &format!("{}opaque", ours())), None);
    }
    // The other namespace's `overlay.*` names are a user's attributes, as in kernel overlayfs
    // (`var/lib` carries `user.overlay.opaque`, a marker only to rootless mounts).
    match is_root() {
        true => assert_eq!(getxattr(&s.m("var/lib"), "user.overlay.opaque").as_deref(), Some(&b"y"[..])),
        false => assert_eq!(getxattr(&s.m("var/lib"), "user.overlay.opaque"), None),
    }
    // Copied-up files carry an origin in the upper, invisible in the mount.
    write(s.m("tree/t1"), "x");
    assert!(listxattr(&s.m("tree/t1")).iter().all(|n| !n.contains("overlay")));
    // The real origin marker cannot be touched through the mount (only escaped names can).
    assert_eq!(
        errno(rustix::fs::lremovexattr(s.m("tree/t1"), "trusted.overlay.origin").map_err(std::io::Error::from)),
        libc::ENODATA
    );
    assert_eq!(
        errno(rustix::fs::lremovexattr(s.m("tree/t1"), "user.overlay.origin").map_err(std::io::Error::from)),
        libc::ENODATA
    );
}

#[test]
fn set_get_list_remove() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    assert_eq!(getxattr(&s.m("usr/bin/tool"), "user.note").as_deref(), Some(&b"hi"[..]));
    setxattr(&s.m("usr/bin/tool"), "user.second", b"2").unwrap();
    assert_eq!(listxattr(&s.m("usr/bin/tool")), ["user.note", "user.second"]);
    assert!(s.u("usr/bin/tool").exists(), "setxattr copies up");
    rustix::fs::lremovexattr(s.m("usr/bin/tool"), "user.note").unwrap();
    assert_eq!(listxattr(&s.m("usr/bin/tool")), ["user.second"]);
    assert_eq!(errno(rustix::fs::lremovexattr(s.m("foo"), "user.none").map_err(std::io::Error::from)), libc::ENODATA);
    assert!(!s.u("foo").exists(), "removing a missing xattr copies nothing up");
    assert_eq!(rustix::fs::lgetxattr_query(s.m("usr/bin/tool"), "user.second").ok(), Some(1), "size query");
    setxattr(&s.m("usr/bin/tool"), "user.big", b"0123456789").unwrap();
    let mut tiny = [0u8; 1];
    assert_eq!(
        rustix::fs::lgetxattr(s.m("usr/bin/tool"), "user.big", &mut tiny[..]).err(),
        Some(rustix::io::Errno::RANGE)
    );
    assert_eq!(
        errno(
            rustix::fs::lsetxattr(s.m("top"), "user.k", b"v", rustix::fs::XattrFlags::REPLACE)
                .map_err(std::io::Error::from)
        ),
        libc::ENODATA
    );
    setxattr(&s.m("empty"), "user.dir", b"d").unwrap();
    assert_eq!(getxattr(&s.m("empty"), "user.dir").as_deref(), Some(&b"d"[..]));
}

#[test]
fn overlay_named_xattrs_are_escaped_like_the_kernel() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let _m = s.mount();
    // A user's own attribute in the mount's namespace (nested overlays use these) is stored
    // escaped, so it never acts as a marker of this union.
    let opaque = format!("{}opaque", ours());
    std::fs::create_dir(s.m("nested")).unwrap();
    write(s.m("nested/f"), "f");
    setxattr(&s.m("nested"), &opaque, b"y").unwrap();
    assert_eq!(getxattr(&s.m("nested"), &opaque).as_deref(), Some(&b"y"[..]));
    assert!(listxattr(&s.m("nested")).contains(&opaque));
    assert_eq!(getxattr(&s.u("nested"), &format!("{}overlay.opaque", ours())).as_deref(), Some(&b"y"[..]));
    assert_eq!(getxattr(&s.u("nested"), &opaque), None);
    assert_eq!(ls(s.m("nested")), ["f"], "not treated as opaque");
    rustix::fs::lremovexattr(s.m("nested"), &opaque).unwrap();
    assert_eq!(getxattr(&s.m("nested"), &opaque), None);
    if is_root() {
        // The other namespace is stored as it is, and is no marker either (kernel overlayfs
        // as root escapes only `trusted.overlay.*`).
        setxattr(&s.m("nested"), "user.overlay.opaque", b"y").unwrap();
        assert_eq!(getxattr(&s.u("nested"), "user.overlay.opaque").as_deref(), Some(&b"y"[..]));
        assert_eq!(ls(s.m("nested")), ["f"], "not treated as opaque");
    }
    // Real markers stay invisible and cannot be removed through the mount.
    assert_eq!(errno(rustix::fs::lremovexattr(s.m("var/cache"), &opaque).map_err(std::io::Error::from)), libc::ENODATA);
}

/// ACL entry tags (`acl_tag_t`).
const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;

/// A POSIX ACL in its xattr form (version 2, then tag, perm, id entries) giving the owner,
/// user `uid`, the group, the mask and others these permissions.
fn acl_with_user(owner: u16, uid: u32, user: u16, group: u16, mask: u16, other: u16) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    let any = u32::MAX;
    for (tag, perm, id) in [
        (ACL_USER_OBJ, owner, any),
        (ACL_USER, user, uid),
        (ACL_GROUP_OBJ, group, any),
        (ACL_MASK, mask, any),
        (ACL_OTHER, other, any),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

#[test]
fn new_files_keep_inherited_acls_and_answer_capability_queries_from_memory() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let m = s.mount();
    let stats = |k: &str| stats_raw(&m.path)[k];
    // A directory whose default ACL gives user 1234 rwx: files made in it inherit an access
    // ACL from the upper filesystem, which the mount must show.
    std::fs::create_dir(m.path.join("shared")).unwrap();
    let default = acl_with_user(7, 1234, 7, 5, 7, 5);
    if setxattr(&m.path.join("shared"), "system.posix_acl_default", &default).is_err() {
        skip!("the upper filesystem has no POSIX ACLs");
    }
    write(m.path.join("shared/inherits"), "x");
    let got = getxattr(&m.path.join("shared/inherits"), "system.posix_acl_access").expect("inherited ACL shown");
    assert!(got.windows(8).any(|w| w[..2] == [2, 0] && w[4..8] == 1234u32.to_le_bytes()), "{got:?}");
    assert!(listxattr(&m.path.join("shared/inherits")).contains(&"system.posix_acl_access".to_string()));

    // A plain new file: the kernel's security.capability query before its first write is
    // answered without reading the upper again.
    let misses = stats("xattr_cache_misses");
    for i in 0..20 {
        write(m.path.join(format!("plain{i}")), "data");
    }
    assert_eq!(stats("xattr_cache_misses"), misses, "new files' xattrs were read from the upper");
    assert_eq!(getxattr(&m.path.join("plain0"), "security.capability"), None);
    setxattr(&m.path.join("plain0"), "user.later", b"1").unwrap();
    assert_eq!(getxattr(&m.path.join("plain0"), "user.later").as_deref(), Some(&b"1"[..]));
    m.unmount();
}

#[test]
fn attribute_changes_leave_no_stale_xattr_answers() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let m = s.mount();
    // An access ACL with a named user: chmod rewrites its mask entry in the upper file, and
    // the kernel asks again (it drops its cached ACL on chmod).
    let f = m.path.join("with_acl");
    write(&f, "x");
    let access = acl_with_user(6, 1234, 6, 4, 6, 4);
    if setxattr(&f, "system.posix_acl_access", &access).is_err() {
        skip!("the upper filesystem has no POSIX ACLs");
    }
    let mask_of = |v: &[u8]| v[4..].chunks(8).find(|e| e[..2] == ACL_MASK.to_le_bytes()).map(|e| e[2]);
    assert_eq!(mask_of(&getxattr(&f, "system.posix_acl_access").unwrap()), Some(6));
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    assert_eq!(mask_of(&getxattr(&f, "system.posix_acl_access").unwrap()), Some(0), "the mask follows chmod g=");
    // A file known to have no attributes keeps that answer through owner and mode changes.
    let plain = m.path.join("plain");
    write(&plain, "x");
    std::fs::set_permissions(&plain, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    assert!(listxattr(&plain).is_empty());
    if is_root() {
        // security.capability v2 (cap_net_raw permitted), as setcap writes it: the kernel drops
        // file capabilities on a change of owner, and the mount must say so.
        let mut cap = 0x0200_0001u32.to_le_bytes().to_vec();
        cap.extend_from_slice(&(1u32 << 13).to_le_bytes());
        cap.extend_from_slice(&[0; 12]);
        let with = m.path.join("with_cap");
        write(&with, "x");
        setxattr(&with, "security.capability", &cap).unwrap();
        assert_eq!(getxattr(&with, "security.capability").as_deref(), Some(&cap[..]));
        std::os::unix::fs::chown(&with, Some(1234), Some(1234)).unwrap();
        assert_eq!(getxattr(&with, "security.capability"), None, "capability survived chown");
        assert_eq!(getxattr(&s.u("with_cap"), "security.capability"), None);
        std::os::unix::fs::chown(&plain, Some(1234), Some(1234)).unwrap();
        assert!(listxattr(&plain).is_empty());
    }
    m.unmount();
}
