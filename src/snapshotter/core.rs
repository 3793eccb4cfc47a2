//! The snapshotter's semantics, as containerd defines them, over [`Meta`] and [`Dirs`]:
//! every call returns values or a [`SnapError`]; no gRPC here, so the rules are testable on
//! their own.
//!
//! Crash safety: a snapshot's directory is made under a `new-*` name, renamed to its id
//! inside the transaction that records it, and the transaction commits last; a removal
//! commits the record's deletion first and removes the directory after. A crash at any
//! point leaves at most a directory no record names, which [`Snapshotter::open`] and
//! [`Snapshotter::cleanup`] remove.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use parking_lot::RwLock;

use super::dirs::Dirs;
use super::error::{Code, SnapError};
use super::filter::{self, Filter};
use super::meta::{Kind, Meta, Record, Time, Usage};

/// containerd's limit on one label: key and value together.
const LABEL_MAX: usize = 4096;

/// Labels that carry id mappings for user-namespaced containers (`container:host:size`).
const UID_MAPPING: &str = "containerd.io/snapshot/uidmapping";
const GID_MAPPING: &str = "containerd.io/snapshot/gidmapping";

/// One mount, as containerd's `Mount` message carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// `bind`, or `fuse3.<absolute path of unionfs>`.
    pub kind: String,
    /// The source.
    pub source: String,
    /// fstab-style options.
    pub options: Vec<String>,
}

/// What `Stat`, `Update` and `List` report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// The key.
    pub name: String,
    /// The parent's key, empty for none.
    pub parent: String,
    /// The kind.
    pub kind: Kind,
    /// When it was made.
    pub created: Time,
    /// When it last changed.
    pub updated: Time,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

impl Info {
    fn of(name: &str, r: &Record) -> Info {
        Info {
            name: name.to_string(),
            parent: r.parent.clone(),
            kind: r.kind,
            created: r.created,
            updated: r.updated,
            labels: r.labels.clone(),
        }
    }
}

/// A snapshotter over one root directory.
#[derive(Debug)]
pub struct Snapshotter {
    meta: Meta,
    dirs: Dirs,
    /// The program FUSE mounts run (this binary, by absolute path).
    program: PathBuf,
    /// Calls that make or remove directories hold it shared; `cleanup` exclusively, so it
    /// never takes a directory being made for an orphan.
    dir_ops: RwLock<()>,
    /// Holds the root's lock: one snapshotter per root.
    _lock: std::fs::File,
}

fn check_key(what: &str, key: &str) -> Result<(), SnapError> {
    if key.is_empty() {
        return Err(SnapError::invalid(format!("a snapshot {what} must not be empty")));
    }
    Ok(())
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), SnapError> {
    for (k, v) in labels {
        if k.len() + v.len() > LABEL_MAX {
            return Err(SnapError::invalid(format!(
                "label '{}' is {} bytes with its value; at most {LABEL_MAX} are allowed",
                k.chars().take(64).collect::<String>(),
                k.len() + v.len()
            )));
        }
    }
    Ok(())
}

/// A mapping label's value (`c:h:s`, several joined by `,` or `:`) as `uidmapping=` takes it.
fn mapping(value: &str) -> Result<String, SnapError> {
    let nums: Vec<&str> = value.split([',', ':']).filter(|s| !s.is_empty()).collect();
    if nums.is_empty() || !nums.len().is_multiple_of(3) || nums.iter().any(|n| n.parse::<u32>().is_err()) {
        return Err(SnapError::invalid(format!("id mapping '{value}' is not container:host:size triples of numbers")));
    }
    Ok(nums.join(":"))
}

impl Snapshotter {
    /// Opens the snapshotter at `root` (created if missing), whose FUSE mounts run
    /// `program`, and removes what no record names (a crash mid-call leaves such).
    pub fn open(root: &Path, program: PathBuf) -> Result<Snapshotter, crate::error::Error> {
        use crate::error::Context;
        std::fs::create_dir_all(root).context(|| format!("cannot create '{}'", root.display()))?;
        let lock_path = root.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .context(|| format!("cannot open '{}'", lock_path.display()))?;
        if !crate::sys::io::try_lock_exclusive(&lock).map_err(|e| crate::error::Error::io("cannot lock the root", e))? {
            return Err(crate::error::Error::msg(format!(
                "another snapshotter is using '{}'; stop it first",
                root.display()
            )));
        }
        let meta = Meta::open(&root.join("metadata.redb")).map_err(|e| crate::error::Error::msg(e.message))?;
        let dirs_path = root.join("snapshots");
        let dirs = Dirs::open(&dirs_path).context(|| format!("cannot open '{}'", dirs_path.display()))?;
        let s = Snapshotter { meta, dirs, program, dir_ops: RwLock::new(()), _lock: lock };
        let removed = s.cleanup().map_err(|e| crate::error::Error::msg(e.message))?;
        if removed > 0 {
            tracing::info!("removed {removed} snapshot directories no record names (left by a crash)");
        }
        Ok(s)
    }

    /// `Prepare`: an active snapshot `key` on committed `parent` (or on nothing).
    pub fn prepare(&self, key: &str, parent: &str, labels: BTreeMap<String, String>) -> Result<Vec<Mount>, SnapError> {
        self.create(Kind::Active, key, parent, labels)
    }

    /// `View`: a read-only snapshot `key` of committed `parent` (or of nothing).
    pub fn view(&self, key: &str, parent: &str, labels: BTreeMap<String, String>) -> Result<Vec<Mount>, SnapError> {
        self.create(Kind::View, key, parent, labels)
    }

    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapError> {
        check_key("key", key)?;
        check_labels(&labels)?;
        let _ops = self.dir_ops.read();
        // The new tree's root takes the parent's owner (user-namespaced layers).
        let owner = match self.meta.get(parent)? {
            Some(p) if !parent.is_empty() => self.dirs.owner(p.id).ok(),
            _ => None,
        };
        let tmp = self
            .dirs
            .make_new(owner)
            .map_err(|e| SnapError::internal(format!("cannot make a snapshot directory: {e}")))?;
        let renamed = std::cell::Cell::new(None);
        let made = self.meta.write(|t| {
            if t.get(key)?.is_some() {
                return Err(SnapError::new(Code::AlreadyExists, format!("snapshot '{key}' already exists")));
            }
            if !parent.is_empty() {
                match t.get(parent)? {
                    None => {
                        return Err(SnapError::new(
                            Code::NotFound,
                            format!("parent snapshot '{parent}' does not exist"),
                        ));
                    }
                    Some(p) if p.kind != Kind::Committed => {
                        return Err(SnapError::invalid(format!("parent snapshot '{parent}' is not committed")));
                    }
                    Some(_) => {}
                }
            }
            let id = t.next_id()?;
            let now = Time::now();
            let rec = Record {
                id,
                kind,
                parent: parent.to_string(),
                labels,
                created: now,
                updated: now,
                usage: Usage::default(),
            };
            t.put(key, &rec)?;
            self.dirs
                .rename(&tmp, &id.to_string())
                .map_err(|e| SnapError::internal(format!("cannot name snapshot directory {id}: {e}")))?;
            renamed.set(Some(id));
            crate::hooks::snapshotter_kill_point("prepare");
            Ok(rec)
        });
        match made {
            Ok(rec) => self.mounts_of(key, &rec),
            Err(e) => {
                let name = renamed.get().map_or(tmp, |id| id.to_string());
                if let Err(re) = self.dirs.remove(&name) {
                    tracing::warn!("cannot remove snapshot directory '{name}' after a failed call: {re}");
                }
                Err(e)
            }
        }
    }

    /// `Mounts`: how to mount active or view snapshot `key`.
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapError> {
        let rec = self.meta.get(key)?.ok_or_else(|| SnapError::not_found(key))?;
        if rec.kind == Kind::Committed {
            return Err(SnapError::precondition(format!(
                "snapshot '{key}' is committed; only active snapshots and views are mounted"
            )));
        }
        self.mounts_of(key, &rec)
    }

    fn mounts_of(&self, key: &str, rec: &Record) -> Result<Vec<Mount>, SnapError> {
        let parents = self.meta.ancestors(&rec.parent)?;
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        let bind = |source: PathBuf, ro: bool| Mount {
            kind: "bind".into(),
            source: path(source),
            options: vec![if ro { "ro" } else { "rw" }.into(), "rbind".into()],
        };
        match (rec.kind, parents.as_slice()) {
            (Kind::Active, []) => return Ok(vec![bind(self.dirs.fs(rec.id), false)]),
            (Kind::View, []) => return Ok(vec![bind(self.dirs.fs(rec.id), true)]),
            (Kind::View, [one]) => return Ok(vec![bind(self.dirs.fs(*one), true)]),
            (Kind::Committed, _) => return Err(SnapError::precondition(format!("snapshot '{key}' is committed"))),
            _ => {}
        }
        let mut options = Vec::new();
        if rec.kind == Kind::Active {
            options.push(format!("workdir={}", path(self.dirs.work(rec.id))));
            options.push(format!("upperdir={}", path(self.dirs.fs(rec.id))));
        }
        // ':' separates layers; our own paths never hold one.
        let lowers: Vec<String> = parents.iter().map(|id| path(self.dirs.fs(*id))).collect();
        options.push(format!("lowerdir={}", lowers.join(":")));
        if let Some(v) = rec.labels.get(UID_MAPPING) {
            options.push(format!("uidmapping={}", mapping(v)?));
        }
        if let Some(v) = rec.labels.get(GID_MAPPING) {
            options.push(format!("gidmapping={}", mapping(v)?));
        }
        Ok(vec![Mount { kind: format!("fuse3.{}", self.program.display()), source: "unionfs".into(), options }])
    }

    /// `Commit`: active snapshot `key` becomes committed snapshot `name`, keeping its
    /// directory (its upper becomes the layer) and its parent; its labels are `labels`.
    pub fn commit(&self, name: &str, key: &str, labels: BTreeMap<String, String>) -> Result<(), SnapError> {
        check_key("name", name)?;
        check_key("key", key)?;
        check_labels(&labels)?;
        let rec = self.meta.get(key)?.ok_or_else(|| SnapError::not_found(key))?;
        if rec.kind != Kind::Active {
            return Err(SnapError::precondition(format!(
                "snapshot '{key}' is not active; only active snapshots are committed"
            )));
        }
        // Measured outside the transaction (it walks the tree); containerd commits a
        // snapshot once nothing writes to it.
        let usage = self
            .dirs
            .usage(rec.id)
            .map_err(|e| SnapError::internal(format!("cannot measure snapshot '{key}': {e}")))?;
        self.meta.write(|t| {
            let cur = t.get(key)?.ok_or_else(|| SnapError::not_found(key))?;
            if cur.kind != Kind::Active || cur.id != rec.id {
                return Err(SnapError::precondition(format!("snapshot '{key}' changed during the commit")));
            }
            if t.get(name)?.is_some() {
                return Err(SnapError::new(Code::AlreadyExists, format!("snapshot '{name}' already exists")));
            }
            let now = Time::now();
            let done = Record { kind: Kind::Committed, labels, created: now, updated: now, usage, ..cur };
            t.delete(key)?;
            t.put(name, &done)
        })
    }

    /// `Remove`: snapshot `key` and its directory; refused while it has children.
    pub fn remove(&self, key: &str) -> Result<(), SnapError> {
        check_key("key", key)?;
        let _ops = self.dir_ops.read();
        // The mount table is read before the transaction, not under the write lock every
        // other call waits on; the transaction uses the answer if the record is the same.
        let mounted_inside = |id: u64| {
            let dir = self.dirs.path(&id.to_string());
            crate::mounts::read().into_iter().find(|m| m.mount_point.starts_with(&dir)).map(|m| m.mount_point)
        };
        let seen = self.meta.get(key)?.map(|r| (r.id, mounted_inside(r.id)));
        let rec = self.meta.write(|t| {
            let rec = t.get(key)?.ok_or_else(|| SnapError::not_found(key))?;
            let children = t.children(key)?;
            if !children.is_empty() {
                return Err(SnapError::precondition(format!(
                    "snapshot '{key}' has {} child snapshot(s) ('{}'); remove them first",
                    children.len(),
                    children[0]
                )));
            }
            let mounted = match &seen {
                Some((id, m)) if *id == rec.id => m.clone(),
                _ => mounted_inside(rec.id),
            };
            if let Some(m) = mounted {
                return Err(SnapError::precondition(format!(
                    "snapshot '{key}' is in use: '{}' is mounted inside it",
                    m.display()
                )));
            }
            t.delete(key)?;
            Ok(rec)
        })?;
        crate::hooks::snapshotter_kill_point("remove");
        // The record is gone; a directory that cannot be removed now is an orphan that
        // cleanup removes later.
        if let Err(e) = self.dirs.remove(&rec.id.to_string()) {
            tracing::warn!("cannot remove the directory of snapshot '{key}' (id {}): {e}", rec.id);
        }
        Ok(())
    }

    /// `Stat`.
    pub fn stat(&self, key: &str) -> Result<Info, SnapError> {
        let rec = self.meta.get(key)?.ok_or_else(|| SnapError::not_found(key))?;
        Ok(Info::of(key, &rec))
    }

    /// `Update`: sets the labels of snapshot `name` (the only mutable field) from `labels`:
    /// all of them when `paths` is empty or holds `labels`, one per `labels.KEY` path
    /// (removed when `labels` has no such key).
    pub fn update(&self, name: &str, labels: &BTreeMap<String, String>, paths: &[String]) -> Result<Info, SnapError> {
        check_key("name", name)?;
        check_labels(labels)?;
        for p in paths {
            if p != "labels" && !p.starts_with("labels.") {
                return Err(SnapError::invalid(format!(
                    "field '{p}' of snapshot '{name}' cannot be updated; only labels can"
                )));
            }
        }
        self.meta.write(|t| {
            let mut rec = t.get(name)?.ok_or_else(|| SnapError::not_found(name))?;
            if paths.is_empty() {
                rec.labels = labels.clone();
            }
            for p in paths {
                match p.strip_prefix("labels.") {
                    None => rec.labels = labels.clone(),
                    Some(k) => match labels.get(k) {
                        Some(v) => {
                            rec.labels.insert(k.to_string(), v.clone());
                        }
                        None => {
                            rec.labels.remove(k);
                        }
                    },
                }
            }
            rec.updated = Time::now();
            t.put(name, &rec)?;
            Ok(Info::of(name, &rec))
        })
    }

    /// `List`: every snapshot matching any of `filters` (all with none), by key.
    pub fn list(&self, filters: &[String]) -> Result<Vec<Info>, SnapError> {
        let filters = filters.iter().map(|f| Filter::parse(f)).collect::<Result<Vec<_>, _>>()?;
        Ok(self.meta.all()?.iter().filter(|(k, r)| filter::any(&filters, k, r)).map(|(k, r)| Info::of(k, r)).collect())
    }

    /// `Usage`: an active snapshot's tree measured now; a committed one's as committed; a
    /// view's is nothing of its own.
    pub fn usage(&self, key: &str) -> Result<Usage, SnapError> {
        let rec = self.meta.get(key)?.ok_or_else(|| SnapError::not_found(key))?;
        match rec.kind {
            Kind::Active => self
                .dirs
                .usage(rec.id)
                .map_err(|e| SnapError::internal(format!("cannot measure snapshot '{key}': {e}"))),
            Kind::Committed => Ok(rec.usage),
            Kind::View => Ok(Usage::default()),
        }
    }

    /// `Cleanup`: removes every directory no record names; how many.
    pub fn cleanup(&self) -> Result<usize, SnapError> {
        let _ops = self.dir_ops.write();
        let live: std::collections::HashSet<String> = self.meta.all()?.values().map(|r| r.id.to_string()).collect();
        let mut removed = 0;
        for name in
            self.dirs.names().map_err(|e| SnapError::internal(format!("cannot list the snapshot directories: {e}")))?
        {
            if live.contains(&name) {
                continue;
            }
            match self.dirs.remove(&name) {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!("cannot remove orphan snapshot directory '{name}': {e}"),
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
