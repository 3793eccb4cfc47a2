//! Mount options (`-o`): one table, [`OPTIONS`], gives each option its names, its value, its
//! default and its help, and says how it sets and shows [`MountOptions`]. Parsing
//! ([`MountOptions::apply`]), `unionfs mount --help` ([`help`]), the README's option list
//! ([`markdown`], checked by a test) and the printed form of a mount's options
//! ([`MountOptions::shown`], the daemon's "mounted" line) all come from it, as kernel
//! overlayfs's `ovl_parameter_spec` and `ovl_show_options` do.

use std::path::PathBuf;

use crate::config::{parse_size, split_options};
use crate::union::idmap::{IdMap, Range, parse_ranges};

/// The most `-o prefetch=` accepts (threads).
pub const MAX_PREFETCH_THREADS: usize = 64;
/// The most `-o threads=` accepts (the pool still grows past it while every worker is stuck
/// on a layer).
pub const MAX_WORKER_THREADS: usize = 64;
/// The fewest `-o max_nodes=` accepts.
const MIN_NODES: usize = 1000;

/// Mount flags and behaviour chosen with `-o`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountOptions {
    /// Read-only mount.
    pub ro: bool,
    /// `nosuid` / `suid` (None: the default for who mounts).
    pub nosuid: Option<bool>,
    /// `nodev` / `dev`.
    pub nodev: Option<bool>,
    /// `noexec`.
    pub noexec: bool,
    /// `noatime`.
    pub noatime: bool,
    /// Skip fsync (`volatile`, `fsync=0`).
    pub volatile: bool,
    /// `allow_other` asked explicitly.
    pub allow_other: bool,
    /// Options the union does not know (warned about, then ignored).
    pub unknown: Vec<String>,
    /// `lowerdir=` given in the options.
    pub lowerdir: Option<String>,
    /// `upperdir=`.
    pub upperdir: Option<PathBuf>,
    /// `workdir=`.
    pub workdir: Option<PathBuf>,
    /// `uidmapping=` ranges.
    pub uidmap: Vec<Range>,
    /// `gidmapping=` ranges.
    pub gidmap: Vec<Range>,
    /// `squash_to_uid=` (or 0 from `squash_to_root`).
    pub squash_uid: Option<u32>,
    /// `squash_to_gid=` (or 0 from `squash_to_root`).
    pub squash_gid: Option<u32>,
    /// `squash_to_root` given.
    pub squash_root: bool,
    /// `xattr_permissions=`: 0 off, 1 `security.containers.override_stat`, 2
    /// `user.containers.override_stat`.
    pub xattr_permissions: u8,
    /// `noxattrs=1`: no extended attributes.
    pub noxattrs: bool,
    /// `static_nlink`: directories report one link.
    pub static_nlink: bool,
    /// `userxattr`: the layers' markers are `user.overlay.*` even for root (kernel
    /// overlayfs's option: how root reads an upper a rootless mount wrote).
    pub userxattr: bool,
    /// `nopassthrough`: never hand files to the kernel (exact overlayfs semantics for files
    /// opened before a copy-up, at the cost of speed).
    pub nopassthrough: bool,
    /// `uring` / `nouring`: whether to use FUSE over io_uring where the kernel offers it
    /// (`None`: the default, see [`MountOptions::wants_uring`]).
    pub uring: Option<bool>,
    /// `prefetch=N`: threads reading directories ahead of tree walks (`Some(0)`: none;
    /// `None`: the default, [`crate::union::prefetch::DEFAULT_THREADS`]).
    pub prefetch: Option<usize>,
    /// `page_cache_idle=SECONDS`: how long a closed lower file's pages stay in the mount's
    /// own page cache, and within how long a small lower file opened again is served from it
    /// with passthrough (`Some(0)`: pages until the kernel reclaims them, reopens as any open;
    /// `None`: the default, [`crate::union::DEFAULT_PAGE_CACHE_IDLE`]).
    pub page_cache_idle: Option<u64>,
    /// `readdirplus=full`: every entry of a listing goes with its attributes (the default,
    /// `auto`, leaves them out while walks do not use them).
    pub full_listings: bool,
    /// `threads=N`: workers reading requests from `/dev/fuse` (`None`: the default, twice
    /// the CPUs, 4 to 16).
    pub threads: Option<usize>,
    /// `max_nodes=N`: how many inodes the daemon remembers before asking the kernel to
    /// forget the least recently used (memory bound; `None`: the default).
    pub max_nodes: Option<usize>,
    /// `redirect_dir=on|off|follow|nofollow`: whether renaming a directory that has lower
    /// parts records a redirect (`Some(true)`, the default) or fails with `EXDEV`.
    pub redirect_dir: Option<bool>,
    /// `size_limit=SIZE`: most bytes the upper may allocate (`EDQUOT` past it).
    pub size_limit: Option<u64>,
    /// `inode_limit=N`: most objects the upper may hold.
    pub inode_limit: Option<u64>,
    /// `metacopy=on|off`: metadata-only copy-up.
    pub metacopy: bool,
    /// `index=on`: lower hard links stay one inode after copy-up.
    pub index: bool,
    /// `watch`: follow changes made directly in the layers (see `--watch`).
    pub watch: bool,
    /// `debug` given in the options.
    pub debug: bool,
    /// Options given with bad values (reported as errors at validation).
    pub invalid: Vec<String>,
}

/// What follows an option's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    /// Nothing: a flag.
    None,
    /// `=VALUE`, named by its placeholder (`N`, `on|off`).
    Required(&'static str),
    /// Nothing, or `=VALUE`.
    Optional(&'static str),
}

/// How an option given was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Set {
    /// Applied.
    Done,
    /// A value it does not take: reported as an error.
    Bad,
    /// Not this option after all (a flag given a value, say): warned about, ignored.
    Unknown,
}

/// One mount option.
pub struct Spec {
    /// Its spellings; the first is the one shown.
    pub names: &'static [&'static str],
    /// What follows the name.
    pub value: Value,
    /// The default, as the user would write it (empty: nothing to say).
    pub default: &'static str,
    /// What it does, in a sentence or two.
    pub help: &'static str,
    /// Applies `name[=value]` (`name` is one of `names`).
    set: fn(&mut MountOptions, &str, Option<&str>) -> Set,
    /// The option as a mount with these options shows it, if it differs from the default.
    show: fn(&MountOptions) -> Option<String>,
}

/// A flag: `name` with no value, else not this option.
fn flag(v: Option<&str>, then: impl FnOnce()) -> Set {
    match v {
        None => {
            then();
            Set::Done
        }
        Some(_) => Set::Unknown,
    }
}

/// A required value parsed by `parse` (`None`: bad); no value is not this option.
fn valued<T>(v: Option<&str>, parse: impl FnOnce(&str) -> Option<T>, then: impl FnOnce(T)) -> Set {
    match v.map(parse) {
        Some(Some(x)) => {
            then(x);
            Set::Done
        }
        Some(None) => Set::Bad,
        None => Set::Unknown,
    }
}

/// `on`/`off` (and `1`/`0`).
fn on_off(v: &str) -> Option<bool> {
    match v {
        "on" | "1" => Some(true),
        "off" | "0" => Some(false),
        _ => None,
    }
}

/// `N` within `range`.
fn number<T: std::str::FromStr + PartialOrd>(range: std::ops::RangeInclusive<T>) -> impl Fn(&str) -> Option<T> {
    move |v| v.parse::<T>().ok().filter(|n| range.contains(n))
}

/// Id mapping ranges as `uidmapping=` takes them.
fn show_ranges(name: &str, r: &[Range]) -> Option<String> {
    let triples: Vec<String> = r.iter().map(|r| format!("{}:{}:{}", r.stored, r.shown, r.len)).collect();
    (!r.is_empty()).then(|| format!("{name}={}", triples.join(":")))
}

/// Flags the union accepts and ignores: mount flags it has nothing to do for, and FUSE
/// library options (fstab and `mount.fuse3` pass them).
const IGNORED_FLAGS: &[&str] = &[
    "atime",
    "relatime",
    "strictatime",
    "nodiratime",
    "diratime",
    "lazytime",
    "async",
    "sync",
    "dirsync",
    "auto",
    "noauto",
    "defaults",
    "user",
    "nouser",
    "users",
    "_netdev",
    "nofail",
    "default_permissions",
    "auto_unmount",
    "kernel_cache",
    "auto_cache",
    "big_writes",
];

/// Valued options the union accepts and ignores (FUSE library and SELinux options, fstab's).
const IGNORED_VALUED: &[&str] = &[
    "fsname",
    "subtype",
    "max_read",
    "max_write",
    "blksize",
    "context",
    "fscontext",
    "defcontext",
    "rootcontext",
    "x-systemd.automount",
    "comment",
];

/// Every mount option.
pub static OPTIONS: &[Spec] = &[
    Spec {
        names: &["ro", "rw"],
        value: Value::None,
        default: "rw",
        help: "Read-only or read-write (a mount without --upper is read-only).",
        set: |o, n, v| flag(v, || o.ro = n == "ro"),
        show: |o| o.ro.then(|| "ro".into()),
    },
    Spec {
        names: &["nosuid", "suid"],
        value: Value::None,
        default: "suid as root, nosuid otherwise",
        help: "Whether set-user-id and set-group-id bits take effect on exec.",
        set: |o, n, v| flag(v, || o.nosuid = Some(n == "nosuid")),
        show: |o| o.nosuid.map(|b| if b { "nosuid" } else { "suid" }.into()),
    },
    Spec {
        names: &["nodev", "dev"],
        value: Value::None,
        default: "dev as root, nodev otherwise",
        help: "Whether device nodes can be opened.",
        set: |o, n, v| flag(v, || o.nodev = Some(n == "nodev")),
        show: |o| o.nodev.map(|b| if b { "nodev" } else { "dev" }.into()),
    },
    Spec {
        names: &["noexec", "exec"],
        value: Value::None,
        default: "exec",
        help: "Whether files can be executed.",
        set: |o, n, v| flag(v, || o.noexec = n == "noexec"),
        show: |o| o.noexec.then(|| "noexec".into()),
    },
    Spec {
        names: &["noatime"],
        value: Value::None,
        default: "",
        help: "Do not update access times.",
        set: |o, _, v| flag(v, || o.noatime = true),
        show: |o| o.noatime.then(|| "noatime".into()),
    },
    Spec {
        names: &["volatile"],
        value: Value::None,
        default: "",
        help: "Skip fsync, including the one that makes copied-up data durable (faster; a crash \
               can lose what was written).",
        set: |o, _, v| flag(v, || o.volatile = true),
        show: |o| o.volatile.then(|| "volatile".into()),
    },
    Spec {
        names: &["fsync"],
        value: Value::Required("0|1"),
        default: "1",
        help: "fsync=0 is volatile.",
        set: |o, _, v| valued(v, on_off, |b| o.volatile = !b),
        show: |_| None,
    },
    Spec {
        names: &["allow_other", "allow_root"],
        value: Value::None,
        default: "on as root",
        help: "Let other users use the mount (a normal user needs user_allow_other in /etc/fuse.conf).",
        set: |o, _, v| flag(v, || o.allow_other = true),
        show: |o| o.allow_other.then(|| "allow_other".into()),
    },
    Spec {
        names: &["lowerdir"],
        value: Value::Required("DIR:DIR…"),
        default: "",
        help: "The lower layers, topmost first (instead of --lower).",
        set: |o, _, v| valued(v, |x| Some(x.to_string()), |x| o.lowerdir = Some(x)),
        show: |o| o.lowerdir.as_ref().map(|l| format!("lowerdir={l}")),
    },
    Spec {
        names: &["upperdir"],
        value: Value::Required("DIR"),
        default: "",
        help: "The upper layer (instead of --upper).",
        set: |o, _, v| valued(v, |x| Some(PathBuf::from(x)), |x| o.upperdir = Some(x)),
        show: |o| o.upperdir.as_ref().map(|p| format!("upperdir={}", p.display())),
    },
    Spec {
        names: &["workdir"],
        value: Value::Required("DIR"),
        default: "",
        help: "The work directory (instead of --work).",
        set: |o, _, v| valued(v, |x| Some(PathBuf::from(x)), |x| o.workdir = Some(x)),
        show: |o| o.workdir.as_ref().map(|p| format!("workdir={}", p.display())),
    },
    Spec {
        names: &["redirect_dir"],
        value: Value::Required("on|off|follow|nofollow"),
        default: "on",
        help: "off, follow or nofollow: renaming a directory with lower parts fails with EXDEV \
               instead of recording a redirect.",
        set: |o, _, v| {
            let parse = |x: &str| match x {
                "on" => Some(true),
                "off" | "follow" | "nofollow" => Some(false),
                _ => None,
            };
            valued(v, parse, |b| o.redirect_dir = Some(b))
        },
        show: |o| o.redirect_dir.map(|b| format!("redirect_dir={}", if b { "on" } else { "off" })),
    },
    Spec {
        names: &["metacopy"],
        value: Value::Required("on|off"),
        default: "off",
        help: "on: chmod, chown, utimes and xattr changes of a lower file copy no data until a write.",
        set: |o, _, v| valued(v, |x| on_off(x).filter(|_| x != "1" && x != "0"), |b| o.metacopy = b),
        show: |o| o.metacopy.then(|| "metacopy=on".into()),
    },
    Spec {
        names: &["index"],
        value: Value::Required("on|off"),
        default: "off",
        help: "on: lower hard links stay one inode after a copy-up.",
        set: |o, _, v| valued(v, |x| on_off(x).filter(|_| x != "1" && x != "0"), |b| o.index = b),
        show: |o| o.index.then(|| "index=on".into()),
    },
    Spec {
        names: &["userxattr"],
        value: Value::None,
        default: "only without root",
        help: "The layers' markers are user.overlay.* even for root (how root reads an upper a \
               rootless mount wrote).",
        set: |o, _, v| flag(v, || o.userxattr = true),
        show: |o| o.userxattr.then(|| "userxattr".into()),
    },
    Spec {
        names: &["uidmapping", "gidmapping"],
        value: Value::Required("STORED:SHOWN:LEN…"),
        default: "",
        help: "Owners as the layers store them and as the mount shows them (fuse-overlayfs's form, \
               for user-namespaced containers).",
        set: |o, n, v| {
            let set = |r: Vec<Range>| if n == "uidmapping" { o.uidmap.extend(r) } else { o.gidmap.extend(r) };
            valued(v, |x| parse_ranges(x).ok(), set)
        },
        show: |o| {
            let u = show_ranges("uidmapping", &o.uidmap);
            let g = show_ranges("gidmapping", &o.gidmap);
            let both: Vec<String> = u.into_iter().chain(g).collect();
            (!both.is_empty()).then(|| both.join(","))
        },
    },
    Spec {
        names: &["squash_to_root"],
        value: Value::None,
        default: "",
        help: "Show every owner and group as 0.",
        set: |o, _, v| flag(v, || o.squash_root = true),
        show: |o| o.squash_root.then(|| "squash_to_root".into()),
    },
    Spec {
        names: &["squash_to_uid", "squash_to_gid"],
        value: Value::Required("ID"),
        default: "",
        help: "Show every owner (or every group) as this id.",
        set: |o, n, v| match n {
            "squash_to_uid" => valued(v, |x| x.parse().ok(), |x| o.squash_uid = Some(x)),
            _ => valued(v, |x| x.parse().ok(), |x| o.squash_gid = Some(x)),
        },
        show: |o| {
            let v: Vec<String> = (o.squash_uid.map(|u| format!("squash_to_uid={u}")).into_iter())
                .chain(o.squash_gid.map(|g| format!("squash_to_gid={g}")))
                .collect();
            (!v.is_empty()).then(|| v.join(","))
        },
    },
    Spec {
        names: &["xattr_permissions"],
        value: Value::Required("0|1|2"),
        default: "0",
        help: "1 or 2: owners and modes a rootless mount cannot set are kept in \
               security.containers.override_stat (1) or user.containers.override_stat (2).",
        set: |o, _, v| valued(v, |x| number(0..=2u8)(x), |n| o.xattr_permissions = n),
        show: |o| (o.xattr_permissions != 0).then(|| format!("xattr_permissions={}", o.xattr_permissions)),
    },
    Spec {
        names: &["noxattrs"],
        value: Value::Optional("0|1"),
        default: "0",
        help: "No extended attributes (every xattr call answers ENOTSUP).",
        set: |o, _, v| match v {
            None => flag(v, || o.noxattrs = true),
            Some(x) => valued(Some(x), |x| on_off(x).filter(|_| x == "1" || x == "0"), |b| o.noxattrs = b),
        },
        show: |o| o.noxattrs.then(|| "noxattrs=1".into()),
    },
    Spec {
        names: &["static_nlink"],
        value: Value::None,
        default: "",
        help: "Directories report one link, as some filesystems do.",
        set: |o, _, v| flag(v, || o.static_nlink = true),
        show: |o| o.static_nlink.then(|| "static_nlink".into()),
    },
    Spec {
        names: &["nopassthrough"],
        value: Value::None,
        default: "",
        help: "Serve reads and writes from the daemon even as root (exact overlayfs semantics for \
               files opened before a copy-up, at the cost of speed).",
        set: |o, _, v| flag(v, || o.nopassthrough = true),
        show: |o| o.nopassthrough.then(|| "nopassthrough".into()),
    },
    Spec {
        names: &["passthrough"],
        value: Value::Optional("on|off"),
        default: "on as root",
        help: "FUSE passthrough: the kernel reads and writes upper and lower files itself (off is \
               nopassthrough).",
        set: |o, _, v| match v {
            None => flag(v, || o.nopassthrough = false),
            Some(x) => valued(Some(x), on_off, |b| o.nopassthrough = !b),
        },
        show: |_| None,
    },
    Spec {
        names: &["uring"],
        value: Value::Optional("on|off"),
        default: "on as root where the kernel offers it",
        help: "FUSE over io_uring (Linux 6.14+ with fuse.enable_uring=Y), asked for in any case.",
        set: |o, _, v| match v {
            None => flag(v, || o.uring = Some(true)),
            Some(x) => valued(Some(x), on_off, |b| o.uring = Some(b)),
        },
        show: |o| o.uring.map(|b| if b { "uring" } else { "nouring" }.into()),
    },
    Spec {
        names: &["nouring"],
        value: Value::None,
        default: "",
        help: "Keep /dev/fuse.",
        set: |o, _, v| flag(v, || o.uring = Some(false)),
        show: |_| None,
    },
    Spec {
        names: &["prefetch"],
        value: Value::Required("N"),
        default: "4",
        help: "Threads that read directories ahead of a tree walk (0: none).",
        set: |o, _, v| valued(v, number(0..=MAX_PREFETCH_THREADS), |n| o.prefetch = Some(n)),
        show: |o| o.prefetch.map(|n| format!("prefetch={n}")),
    },
    Spec {
        names: &["page_cache_idle"],
        value: Value::Required("SECONDS"),
        default: "30",
        help: "How long after its last close a lower file's pages stay in the mount's own page cache, besides \
               the layer's (0: until the kernel reclaims them). With passthrough, a lower file of up to 256 KiB \
               opened again within it is served from that cache (0: never).",
        set: |o, _, v| valued(v, number(0..=u64::from(u32::MAX)), |n| o.page_cache_idle = Some(n)),
        show: |o| o.page_cache_idle.map(|n| format!("page_cache_idle={n}")),
    },
    Spec {
        names: &["readdirplus"],
        value: Value::Required("auto|full"),
        default: "auto",
        help: "auto: listings leave out the attributes of files while walks do not use them (find); full: always send them.",
        set: |o, _, v| {
            valued(
                v,
                |x| match x {
                    "auto" => Some(false),
                    "full" => Some(true),
                    _ => None,
                },
                |full| o.full_listings = full,
            )
        },
        show: |o| o.full_listings.then(|| "readdirplus=full".into()),
    },
    Spec {
        names: &["noprefetch"],
        value: Value::None,
        default: "",
        help: "prefetch=0.",
        set: |o, _, v| flag(v, || o.prefetch = Some(0)),
        show: |_| None,
    },
    Spec {
        names: &["threads"],
        value: Value::Required("N"),
        default: "twice the CPUs, 4 to 16",
        help: "Workers reading /dev/fuse (more start while every one is stuck on a slow layer).",
        set: |o, _, v| valued(v, number(1..=MAX_WORKER_THREADS), |n| o.threads = Some(n)),
        show: |o| o.threads.map(|n| format!("threads={n}")),
    },
    Spec {
        names: &["max_nodes"],
        value: Value::Required("N"),
        default: "100000",
        help: "Inodes the daemon remembers before it asks the kernel to forget the least recently \
               used (at least 1000).",
        set: |o, _, v| valued(v, number(MIN_NODES..=usize::MAX), |n| o.max_nodes = Some(n)),
        show: |o| o.max_nodes.map(|n| format!("max_nodes={n}")),
    },
    Spec {
        names: &["size_limit"],
        value: Value::Required("SIZE"),
        default: "",
        help: "Most bytes the upper may allocate, like 10M or 2G (EDQUOT past it; turns passthrough off).",
        set: |o, _, v| valued(v, |x| parse_size(x).filter(|n| *n > 0), |n| o.size_limit = Some(n)),
        show: |o| o.size_limit.map(|n| format!("size_limit={n}")),
    },
    Spec {
        names: &["inode_limit"],
        value: Value::Required("N"),
        default: "",
        help: "Most objects the upper may hold, whiteouts included.",
        set: |o, _, v| valued(v, number(1..=u64::MAX), |n| o.inode_limit = Some(n)),
        show: |o| o.inode_limit.map(|n| format!("inode_limit={n}")),
    },
    Spec {
        names: &["watch"],
        value: Value::None,
        default: "",
        help: "Changes made directly in the layers while mounted show in the mount at once.",
        set: |o, _, v| flag(v, || o.watch = true),
        show: |o| o.watch.then(|| "watch".into()),
    },
    Spec {
        names: &["debug"],
        value: Value::None,
        default: "",
        help: "Log every request (as --debug).",
        set: |o, _, v| flag(v, || o.debug = true),
        show: |o| o.debug.then(|| "debug".into()),
    },
    Spec {
        names: IGNORED_FLAGS,
        value: Value::None,
        default: "",
        help: "Accepted and ignored (mount flags with nothing to do here, FUSE library options).",
        set: |_, _, v| flag(v, || {}),
        show: |_| None,
    },
    Spec {
        names: IGNORED_VALUED,
        value: Value::Required("…"),
        default: "",
        help: "Accepted and ignored (FUSE library, SELinux and fstab options).",
        set: |_, _, v| valued(v, |_| Some(()), |()| {}),
        show: |_| None,
    },
];

impl MountOptions {
    /// Applies one option string (several `-o` values accumulate): known options set their
    /// fields, bad values are kept in `invalid` (an error at validation), options the table
    /// does not have in `unknown` (a warning).
    pub fn apply(&mut self, s: &str) {
        for opt in split_options(s) {
            let (key, val) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt.as_str(), None),
            };
            let spec = OPTIONS.iter().find(|o| o.names.contains(&key));
            match spec.map_or(Set::Unknown, |spec| (spec.set)(self, key, val)) {
                Set::Done => {}
                Set::Bad => self.invalid.push(opt.clone()),
                Set::Unknown => self.unknown.push(opt.clone()),
            }
        }
    }

    /// These options as `-o` would give them, each option that differs from its default
    /// once, in the table's order (the kernel's `ovl_show_options`).
    pub fn shown(&self) -> String {
        OPTIONS.iter().filter_map(|o| (o.show)(self)).collect::<Vec<_>>().join(",")
    }

    /// Whether the mount asks the kernel for FUSE over io_uring (used where the kernel
    /// offers it: Linux 6.14+ with `fuse.enable_uring=Y`): when `uring` is given; by
    /// default when the daemon may send replies at `SCHED_IDLE` (`may_yield`: root), without
    /// which the transport is slower than `/dev/fuse` for a lone caller's chain of requests
    /// (the woken caller moves to another CPU at every reply).
    pub fn wants_uring(&self, may_yield: bool) -> bool {
        self.uring.unwrap_or(may_yield)
    }

    /// The user id map these options describe.
    pub fn uid_map(&self) -> IdMap {
        let squash = self.squash_uid.or(if self.squash_root { Some(0) } else { None });
        IdMap { ranges: self.uidmap.clone(), squash }
    }

    /// The group id map these options describe.
    pub fn gid_map(&self) -> IdMap {
        let squash = self.squash_gid.or(if self.squash_root { Some(0) } else { None });
        IdMap { ranges: self.gidmap.clone(), squash }
    }

    /// The xattr owner and mode are kept in, for `xattr_permissions=1|2`.
    pub fn override_xattr(&self) -> Option<&'static std::ffi::CStr> {
        match self.xattr_permissions {
            1 => Some(c"security.containers.override_stat"),
            2 => Some(c"user.containers.override_stat"),
            _ => None,
        }
    }
}

/// How an option is written: `name`, `name=VALUE` or `name[=VALUE]`, each spelling.
fn usage(o: &Spec) -> String {
    let one = |n: &str| match o.value {
        Value::None => n.to_string(),
        Value::Required(v) => format!("{n}={v}"),
        Value::Optional(v) => format!("{n}[={v}]"),
    };
    if o.names.len() > 4 {
        return match o.value {
            Value::None => o.names.join(", "),
            _ => format!("{}=…", o.names.join("=…, ")),
        };
    }
    o.names.iter().map(|n| one(n)).collect::<Vec<_>>().join(", ")
}

/// The option list of `unionfs mount --help`.
pub fn help() -> String {
    let mut s =
        String::from("Mount options, comma-separated; -o may repeat. Unknown ones are warned about and ignored.\n");
    for o in OPTIONS {
        let mut text = o.help.split_whitespace().collect::<Vec<_>>().join(" ");
        if !o.default.is_empty() {
            text.push_str(&format!(" Default: {}.", o.default));
        }
        s.push_str(&format!("\n  {}\n", wrap(&usage(o), 84, "").trim_end().replace('\n', "\n  ")));
        s.push_str(&wrap(&text, 84, "      "));
    }
    s
}

/// `text` in lines of at most `width` characters after `indent`.
fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for w in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + w.chars().count() > width {
            out.push_str(&format!("{indent}{line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(w);
    }
    if !line.is_empty() {
        out.push_str(&format!("{indent}{line}\n"));
    }
    out
}

/// The option list as the README has it (a Markdown list).
pub fn markdown() -> String {
    let mut s = String::new();
    for o in OPTIONS {
        let names = usage(o).split(", ").map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
        s.push_str(&format!("* {names} — {}", o.help.split_whitespace().collect::<Vec<_>>().join(" ")));
        if !o.default.is_empty() {
            s.push_str(&format!(" Default: {}.", o.default));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_is_in_one_entry_only() {
        let mut seen = std::collections::HashSet::new();
        for o in OPTIONS {
            for n in o.names {
                assert!(seen.insert(*n), "{n} is in two entries");
            }
        }
    }

    #[test]
    fn shown_options_read_back_the_same() {
        let given = "ro,nosuid,dev,noexec,noatime,fsync=0,allow_other,lowerdir=/a:/b,upperdir=/u,workdir=/w,\
                     redirect_dir=off,metacopy=on,index=on,userxattr,uidmapping=0:1000:10,gidmapping=0:2000:5,\
                     squash_to_root,squash_to_uid=7,xattr_permissions=2,noxattrs,static_nlink,nopassthrough,nouring,\
                     prefetch=2,readdirplus=full,threads=3,max_nodes=5000,size_limit=1M,inode_limit=9,watch,debug";
        let mut a = MountOptions::default();
        a.apply(given);
        assert!(a.unknown.is_empty() && a.invalid.is_empty(), "{a:?}");
        let mut b = MountOptions::default();
        b.apply(&a.shown());
        assert_eq!(a, b, "{}", a.shown());
        assert_eq!(MountOptions::default().shown(), "");
    }

    #[test]
    fn flags_given_values_are_unknown_and_bad_values_invalid() {
        let mut o = MountOptions::default();
        o.apply("ro=1,watch=yes,threads,index=maybe,threads=0,threads=65,prefetch=65,readdirplus=some,max_nodes=999,frobnicate");
        assert_eq!(o.unknown, ["ro=1", "watch=yes", "threads", "frobnicate"]);
        assert_eq!(
            o.invalid,
            ["index=maybe", "threads=0", "threads=65", "prefetch=65", "readdirplus=some", "max_nodes=999"]
        );
        assert_eq!(o, MountOptions { unknown: o.unknown.clone(), invalid: o.invalid.clone(), ..Default::default() });
    }

    /// The README's option list is [`markdown`]'s, between its two markers. To update it:
    /// `UNIONFS_BLESS=1 cargo test --lib readme_lists`.
    #[test]
    fn readme_lists_the_options_of_the_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).unwrap_or_default();
        let (begin, end) = ("<!-- options: generated from src/options.rs, do not edit -->\n", "<!-- options: end -->");
        let (Some(a), Some(b)) = (readme.find(begin), readme.find(end)) else {
            panic!("README.md has no option list markers");
        };
        let want = format!("\n{}\n", markdown());
        let have = &readme[a + begin.len()..b];
        if have != want && std::env::var_os("UNIONFS_BLESS").is_some() {
            let fixed = format!("{}{want}{}", &readme[..a + begin.len()], &readme[b..]);
            std::fs::write(path, fixed).unwrap_or_else(|e| panic!("cannot write README.md: {e}"));
            return;
        }
        assert_eq!(have, want, "README.md's option list is not the table's (UNIONFS_BLESS=1 rewrites it)");
    }

    #[test]
    fn help_and_markdown_name_every_spelling() {
        let (h, m) = (help(), markdown());
        for n in OPTIONS.iter().flat_map(|o| o.names) {
            assert!(h.contains(n) && m.contains(&format!("`{n}")), "{n}");
        }
    }
}
