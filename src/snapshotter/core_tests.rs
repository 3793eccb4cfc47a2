//! The snapshotter's rules, call by call, with their error cases (no gRPC, no FUSE).

use super::*;

struct T {
    _dir: tempfile::TempDir,
    root: PathBuf,
    s: Snapshotter,
}

fn new() -> T {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let s = Snapshotter::open(&root, PathBuf::from("/usr/local/bin/unionfs")).unwrap();
    T { _dir: dir, root, s }
}

fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn code<T: std::fmt::Debug>(r: Result<T, SnapError>) -> Code {
    r.unwrap_err().code
}

/// Directory names under `snapshots/`, sorted.
fn dirs(t: &T) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(t.root.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A committed snapshot `name` on `parent` holding file `file`.
fn layer(t: &T, name: &str, parent: &str, file: &str) {
    let m = t.s.prepare(&format!("{name}-extract"), parent, BTreeMap::new()).unwrap();
    let fs = if parent.is_empty() { PathBuf::from(&m[0].source) } else { upper(&m[0]) };
    std::fs::write(fs.join(file), name).unwrap();
    t.s.commit(name, &format!("{name}-extract"), BTreeMap::new()).unwrap();
}

fn upper(m: &Mount) -> PathBuf {
    PathBuf::from(m.options.iter().find_map(|o| o.strip_prefix("upperdir=")).unwrap())
}

#[test]
fn prepare_gives_a_bind_mount_without_parent_and_a_union_with_one() {
    let t = new();
    let m = t.s.prepare("a", "", BTreeMap::new()).unwrap();
    assert_eq!(
        m,
        vec![Mount {
            kind: "bind".into(),
            source: t.root.join("snapshots/1/fs").display().to_string(),
            options: vec!["rw".into(), "rbind".into()]
        }]
    );
    std::fs::write(t.root.join("snapshots/1/fs/f"), "x").unwrap();
    t.s.commit("base", "a", BTreeMap::new()).unwrap();
    layer(&t, "top", "base", "g");
    let m =
        t.s.prepare("c", "top", labels(&[(UID_MAPPING, "0:1000:65536"), (GID_MAPPING, "0:2000:1,1:100000:65535")]))
            .unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].kind, "fuse3./usr/local/bin/unionfs");
    assert_eq!(m[0].source, "unionfs");
    let fs = |id: u32| t.root.join(format!("snapshots/{id}/fs")).display().to_string();
    assert_eq!(
        m[0].options,
        vec![
            format!("workdir={}", t.root.join("snapshots/3/work").display()),
            format!("upperdir={}", fs(3)),
            format!("lowerdir={}:{}", fs(2), fs(1)),
            "uidmapping=0:1000:65536".to_string(),
            "gidmapping=0:2000:1:1:100000:65535".to_string(),
        ],
        "nearest parent first; the mapping labels become the mount's options"
    );
    assert_eq!(t.s.mounts("c").unwrap(), m, "Mounts repeats what Prepare said");
    assert_eq!(code(t.s.prepare("d", "top", labels(&[(UID_MAPPING, "0:1000")]))), Code::InvalidArgument);
}

#[test]
fn prepare_and_view_errors() {
    let t = new();
    layer(&t, "base", "", "f");
    t.s.prepare("a", "base", BTreeMap::new()).unwrap();
    assert_eq!(code(t.s.prepare("a", "base", BTreeMap::new())), Code::AlreadyExists);
    assert_eq!(code(t.s.view("a", "", BTreeMap::new())), Code::AlreadyExists);
    assert_eq!(
        code(t.s.prepare("base", "", BTreeMap::new())),
        Code::AlreadyExists,
        "keys and names share one namespace"
    );
    assert_eq!(code(t.s.prepare("b", "nothing", BTreeMap::new())), Code::NotFound);
    assert_eq!(code(t.s.prepare("b", "a", BTreeMap::new())), Code::InvalidArgument, "an active parent");
    assert_eq!(code(t.s.prepare("", "base", BTreeMap::new())), Code::InvalidArgument);
    let big = "x".repeat(LABEL_MAX);
    assert_eq!(code(t.s.prepare("b", "base", labels(&[("k", &big)]))), Code::InvalidArgument);
    t.s.prepare("b", "base", labels(&[("k", &big[1..])])).unwrap();
    // Nothing a refused call made is left: ids 1 (base), 2 (a), 3 (b).
    assert_eq!(dirs(&t), ["1", "2", "3"]);
}

#[test]
fn views_are_read_only_binds_or_unions_without_upper() {
    let t = new();
    layer(&t, "base", "", "f");
    layer(&t, "top", "base", "g");
    let v = t.s.view("v0", "", BTreeMap::new()).unwrap();
    assert_eq!(v[0].kind, "bind");
    assert_eq!(v[0].options, ["ro", "rbind"]);
    let v = t.s.view("v1", "base", BTreeMap::new()).unwrap();
    assert_eq!(
        (v[0].kind.as_str(), v[0].source.clone()),
        ("bind", t.root.join("snapshots/1/fs").display().to_string())
    );
    assert_eq!(v[0].options, ["ro", "rbind"]);
    let v = t.s.view("v2", "top", BTreeMap::new()).unwrap();
    assert_eq!(
        v[0].options,
        [format!("lowerdir={}:{}", t.root.join("snapshots/2/fs").display(), t.root.join("snapshots/1/fs").display())]
    );
    assert_eq!(code(t.s.commit("x", "v2", BTreeMap::new())), Code::FailedPrecondition, "a view cannot be committed");
    assert_eq!(t.s.stat("v2").unwrap().kind, Kind::View);
}

#[test]
fn mounts_errors() {
    let t = new();
    layer(&t, "base", "", "f");
    assert_eq!(code(t.s.mounts("nothing")), Code::NotFound);
    assert_eq!(code(t.s.mounts("base")), Code::FailedPrecondition);
}

#[test]
fn commit_keeps_the_directory_and_parent_and_takes_the_new_labels() {
    let t = new();
    layer(&t, "base", "", "f");
    let m = t.s.prepare("a", "base", labels(&[("old", "1")])).unwrap();
    std::fs::write(upper(&m[0]).join("new"), vec![7u8; 5000]).unwrap();
    let before = t.s.usage("a").unwrap();
    assert!(before.size >= 5000 && before.inodes == 2, "{before:?}");
    t.s.commit("layer2", "a", labels(&[("new", "2")])).unwrap();
    let i = t.s.stat("layer2").unwrap();
    assert_eq!((i.kind, i.parent.as_str()), (Kind::Committed, "base"));
    assert_eq!(i.labels, labels(&[("new", "2")]));
    assert_eq!(code(t.s.stat("a")), Code::NotFound, "the active key is gone");
    assert_eq!(std::fs::read(t.root.join("snapshots/2/fs/new")).unwrap().len(), 5000, "the upper is the layer");
    assert_eq!(t.s.usage("layer2").unwrap(), before, "usage kept from the commit");
    // Errors.
    assert_eq!(code(t.s.commit("x", "nothing", BTreeMap::new())), Code::NotFound);
    assert_eq!(code(t.s.commit("x", "base", BTreeMap::new())), Code::FailedPrecondition, "already committed");
    t.s.prepare("b", "base", BTreeMap::new()).unwrap();
    assert_eq!(code(t.s.commit("layer2", "b", BTreeMap::new())), Code::AlreadyExists);
    assert_eq!(code(t.s.commit("b", "b", BTreeMap::new())), Code::AlreadyExists);
    assert_eq!(code(t.s.commit("", "b", BTreeMap::new())), Code::InvalidArgument);
    assert_eq!(t.s.stat("b").unwrap().kind, Kind::Active, "a refused commit changes nothing");
}

#[test]
fn remove_refuses_parents_and_takes_the_directory() {
    let t = new();
    layer(&t, "base", "", "f");
    t.s.prepare("a", "base", BTreeMap::new()).unwrap();
    assert_eq!(code(t.s.remove("base")), Code::FailedPrecondition);
    assert_eq!(code(t.s.remove("nothing")), Code::NotFound);
    assert_eq!(dirs(&t), ["1", "2"]);
    t.s.remove("a").unwrap();
    assert_eq!(dirs(&t), ["1"]);
    t.s.remove("base").unwrap();
    assert!(dirs(&t).is_empty());
    assert!(t.s.list(&[]).unwrap().is_empty());
}

#[test]
fn stat_and_update_labels() {
    let t = new();
    t.s.prepare("a", "", labels(&[("x", "1"), ("y", "2")])).unwrap();
    let i = t.s.stat("a").unwrap();
    assert_eq!((i.name.as_str(), i.parent.as_str(), i.kind), ("a", "", Kind::Active));
    assert_eq!(i.created, i.updated);
    assert_eq!(code(t.s.stat("b")), Code::NotFound);
    let mut want = i.clone();
    want.labels = labels(&[("y", "3"), ("z", "4")]);
    // One label by path: y set, x kept, z (not in the path) not added.
    let u = t.s.update(&want.name, &want.labels, &["labels.y".into()]).unwrap();
    assert_eq!(u.labels, labels(&[("x", "1"), ("y", "3")]));
    assert!((u.updated.secs, u.updated.nanos) >= (i.updated.secs, i.updated.nanos));
    // A path whose label the info lacks removes it.
    let u = t.s.update(&want.name, &want.labels, &["labels.x".into()]).unwrap();
    assert_eq!(u.labels, labels(&[("y", "3")]));
    // No paths: all labels replaced.
    let u = t.s.update(&want.name, &want.labels, &[]).unwrap();
    assert_eq!(u.labels, want.labels);
    assert_eq!(t.s.stat("a").unwrap().labels, want.labels);
    // Immutable fields and unknown snapshots.
    assert_eq!(code(t.s.update(&want.name, &want.labels, &["parent".into()])), Code::InvalidArgument);
    assert_eq!(code(t.s.update(&want.name, &want.labels, &["kind".into()])), Code::InvalidArgument);
    want.name = "b".into();
    assert_eq!(code(t.s.update(&want.name, &want.labels, &[])), Code::NotFound);
    assert_eq!(t.s.stat("a").unwrap().kind, Kind::Active, "kind and parent never change");
}

#[test]
fn list_with_filters() {
    let t = new();
    layer(&t, "base", "", "f");
    t.s.prepare("a", "base", labels(&[("containerd.io/gc.root", "1")])).unwrap();
    t.s.view("v", "base", BTreeMap::new()).unwrap();
    let names = |f: &[&str]| {
        let f: Vec<String> = f.iter().map(|s| s.to_string()).collect();
        t.s.list(&f).unwrap().into_iter().map(|i| i.name).collect::<Vec<_>>()
    };
    assert_eq!(names(&[]), ["a", "base", "v"]);
    assert_eq!(names(&["kind==committed"]), ["base"]);
    assert_eq!(names(&["parent==base,kind==view"]), ["v"]);
    assert_eq!(names(&["kind==view", "labels.\"containerd.io/gc.root\""]), ["a", "v"], "filters are alternatives");
    assert_eq!(code(t.s.list(&["kind==".to_string()]).map(|_| ())), Code::InvalidArgument);
}

#[test]
fn usage_of_each_kind() {
    let t = new();
    assert_eq!(code(t.s.usage("a")), Code::NotFound);
    let m = t.s.prepare("a", "", BTreeMap::new()).unwrap();
    let empty = t.s.usage("a").unwrap();
    assert_eq!(empty.inodes, 1);
    std::fs::create_dir(PathBuf::from(&m[0].source).join("d")).unwrap();
    std::fs::write(PathBuf::from(&m[0].source).join("d/f"), vec![0u8; 100_000]).unwrap();
    let u = t.s.usage("a").unwrap();
    assert_eq!(u.inodes, 3);
    assert!(u.size >= empty.size + 100_000, "{u:?}");
    t.s.commit("c", "a", BTreeMap::new()).unwrap();
    std::fs::write(t.root.join("snapshots/1/fs/late"), vec![0u8; 100_000]).unwrap();
    assert_eq!(t.s.usage("c").unwrap(), u, "a committed snapshot's usage is the one measured at commit");
    t.s.view("v", "c", BTreeMap::new()).unwrap();
    assert_eq!(t.s.usage("v").unwrap(), Usage::default());
}

#[test]
fn cleanup_and_reopen_remove_what_no_record_names() {
    let t = new();
    layer(&t, "base", "", "f");
    t.s.prepare("a", "base", BTreeMap::new()).unwrap();
    // What crashes leave: a directory being prepared, one renamed but not recorded, one
    // whose record was removed; a file.
    for d in ["new-0011", "7", "rm-3"] {
        std::fs::create_dir_all(t.root.join("snapshots").join(d).join("fs/sub")).unwrap();
    }
    std::fs::write(t.root.join("snapshots/stray"), "x").unwrap();
    assert_eq!(t.s.cleanup().unwrap(), 4);
    assert_eq!(dirs(&t), ["1", "2"]);
    std::fs::create_dir_all(t.root.join("snapshots/9/fs")).unwrap();
    let T { _dir, root, s } = t;
    assert!(Snapshotter::open(&root, PathBuf::from("/x")).is_err(), "one snapshotter per root");
    drop(s);
    let s = Snapshotter::open(&root, PathBuf::from("/x")).unwrap();
    let t = T { _dir, root, s };
    assert_eq!(dirs(&t), ["1", "2"]);
    assert_eq!(t.s.list(&[]).unwrap().len(), 2);
    // Ids are not reused after a reopen.
    t.s.prepare("b", "", BTreeMap::new()).unwrap();
    assert_eq!(dirs(&t), ["1", "2", "3"]);
}

#[test]
fn concurrent_prepares_commits_and_removes() {
    let t = std::sync::Arc::new(new());
    layer(&t, "base", "", "f");
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let t = t.clone();
            std::thread::spawn(move || {
                for j in 0..10 {
                    let key = format!("k{i}-{j}");
                    t.s.prepare(&key, "base", BTreeMap::new()).unwrap();
                    if j % 2 == 0 {
                        t.s.commit(&format!("c{i}-{j}"), &key, BTreeMap::new()).unwrap();
                    } else {
                        t.s.remove(&key).unwrap();
                    }
                    if j % 3 == 0 {
                        t.s.cleanup().unwrap();
                    }
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    let list = t.s.list(&[]).unwrap();
    assert_eq!(list.len(), 1 + 8 * 5);
    assert_eq!(dirs(&t).len(), list.len(), "one directory per snapshot, none lost to cleanup");
}
