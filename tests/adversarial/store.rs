//! The container manager's store as another local user sees it. [5] Image layers and root
//! container mounts hold set-user-id binaries and device nodes (a root container mount
//! honours both, as containers need): no other user may reach them.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::util::{Mgr, as_user};
use crate::{need_fuse, need_root};

#[test]
fn other_users_cannot_reach_set_id_binaries_or_devices_of_the_store() {
    need_fuse!();
    need_root!();
    let mgr = Mgr::new();
    let img = mgr.dir.path().join("img");
    std::fs::create_dir(&img).unwrap();
    std::fs::copy("/usr/bin/id", img.join("id")).unwrap();
    std::fs::set_permissions(img.join("id"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    let null = std::ffi::CString::new(img.join("null").into_os_string().into_encoded_bytes()).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        null.as_c_str(),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    mgr.ok(&["image", "import", "suid:1", img.to_str().unwrap()]);
    let merged = mgr.ok(&["run", "--name", "c1", "suid:1"]).trim().to_string();
    // As root, the container works: set-id bits and the device are there.
    assert_eq!(std::fs::metadata(format!("{merged}/id")).unwrap().mode() & 0o7777, 0o4755);
    assert_eq!(std::fs::metadata(&mgr.root).unwrap().mode() & 0o777, 0o700, "the state root must be private");
    let layer = std::fs::read_dir(mgr.root.join("layers")).unwrap().next().unwrap().unwrap().path();
    let script = format!(
        "for p in {layer}/diff/id {merged}/id; do $p -u 2>/dev/null || echo denied; done; \
         for d in {layer}/diff/null {merged}/null; do (echo x > $d) 2>/dev/null && echo wrote || echo denied; done",
        layer = layer.display()
    );
    let out = as_user(mgr.dir.path(), &script);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().collect::<Vec<_>>(), ["denied"; 4], "another user reached the store: {text}");
    // A store made open by an older version is closed when next used.
    std::fs::set_permissions(&mgr.root, std::fs::Permissions::from_mode(0o755)).unwrap();
    mgr.ok(&["ps", "-a"]);
    assert_eq!(std::fs::metadata(&mgr.root).unwrap().mode() & 0o777, 0o700);
    mgr.ok(&["rm", "-f", "c1"]);
}
