//! `--watch`: changes made directly in a lower or the upper directory while mounted (a file
//! added, removed, modified) show in the mount (waited for with a bound for a hung test;
//! how soon is a measure: `scripts/bench.sh --systems unionfs-watch`'s "watch: lower change
//! shown").

use crate::common::*;

#[test]
fn direct_changes_to_the_layers_show_in_the_mount() {
    need_fuse!();
    let s = Stack::fixture("basic");
    let m = s.mount_with(&["--watch"]);
    let p = m.path.clone();
    // Everything below is cached by the kernel first (listings, entries, attributes, data).
    let before = ls(p.join("tree"));
    assert!(!before.contains(&"added".to_string()));
    assert!(!p.join("tree/added").exists());
    let foo = read(p.join("foo"));
    let _ = ls(&p);

    // A file added to a lower layer.
    std::fs::write(s.lower(2).join("tree/added"), "from the lower\n").unwrap();
    wait_for("lower add (listing)", || ls(p.join("tree")).contains(&"added".to_string()));
    wait_for("lower add (lookup)", || p.join("tree/added").exists());
    assert_eq!(read(p.join("tree/added")), "from the lower\n");

    // Modified in place, with a new size.
    let lower_foo = (0..3).map(|i| s.lower(i).join("foo")).find(|f| f.exists()).unwrap();
    assert_eq!(std::fs::read_to_string(&lower_foo).unwrap(), foo, "foo comes from that lower");
    std::fs::write(&lower_foo, "rewritten directly, longer than before\n").unwrap();
    wait_for("lower modify", || read(p.join("foo")) == "rewritten directly, longer than before\n");

    // Removed from the lower layer.
    std::fs::remove_file(s.lower(2).join("tree/added")).unwrap();
    wait_for("lower remove (lookup)", || !p.join("tree/added").exists());
    wait_for("lower remove (listing)", || !ls(p.join("tree")).contains(&"added".to_string()));

    // A file added to the upper directly, at the root.
    std::fs::write(s.upper.join("direct"), "upper\n").unwrap();
    wait_for("upper add", || ls(&p).contains(&"direct".to_string()) && p.join("direct").exists());
    assert_eq!(read(p.join("direct")), "upper\n");
    std::fs::remove_file(s.upper.join("direct")).unwrap();
    wait_for("upper remove", || !p.join("direct").exists());

    // The mount's own changes still work and are seen once.
    write(p.join("tree/mine"), "mine\n");
    assert_eq!(ls(p.join("tree")).iter().filter(|n| *n == "mine").count(), 1);
    m.unmount();
}
