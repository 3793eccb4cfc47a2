//! [3] A daemon may only ever unmount its own mount. After the union at `D` is unmounted
//! (by `unionfs umount`, `umount`, `umount -f`), `D` shows what was mounted beneath it,
//! and the daemon, on its way out, must leave that alone.

use std::process::Command;

use crate::common::{Stack, bin, daemon_pid, exits_soon, mount_tmpfs};
use crate::{need_fuse, need_root};

#[test]
fn unmounting_the_union_leaves_the_filesystem_beneath_it_mounted() {
    need_fuse!();
    need_root!();
    for how in [&[bin(), "umount"][..], &["umount"][..], &["umount", "-f"][..]] {
        let s = Stack::empty(1);
        let _beneath = mount_tmpfs(&s.mnt, "size=1m");
        std::fs::write(s.mnt.join("keep"), "beneath").unwrap();
        let m = s.mount();
        let pid = daemon_pid(&m.path).expect("daemon");
        assert!(!s.mnt.join("keep").exists(), "the union hides what is beneath");
        let ok = Command::new(how[0]).args(&how[1..]).arg(&s.mnt).status().unwrap();
        assert!(ok.success(), "{how:?}");
        assert!(exits_soon(pid), "the daemon did not exit after {how:?}");
        drop(m);
        assert_eq!(
            std::fs::read_to_string(s.mnt.join("keep")).ok().as_deref(),
            Some("beneath"),
            "after {how:?} the tmpfs beneath the union is gone"
        );
    }
}
