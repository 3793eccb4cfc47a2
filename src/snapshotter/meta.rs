//! The snapshotter's metadata: every snapshot's record (id, kind, parent, labels, times,
//! usage) in one redb file. Each change is one transaction, committed durably before the
//! call that made it answers, so a crash leaves the state before or after a call, never half.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::error::SnapError;

/// Snapshot key → its record (JSON).
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
/// `next_id` → the id the next snapshot gets (ids are never reused).
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

/// What a snapshot is, as containerd names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A read-only view of a committed snapshot.
    View,
    /// A writable snapshot, which can be committed.
    Active,
    /// An immutable snapshot, a parent for others.
    Committed,
}

impl Kind {
    /// The name containerd's filters use.
    pub fn name(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

/// A point in time: seconds and nanoseconds since the epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Time {
    /// Whole seconds.
    pub secs: i64,
    /// Nanoseconds within the second.
    pub nanos: i32,
}

impl Time {
    /// The present.
    pub fn now() -> Time {
        let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Time {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        }
    }
}

/// Disk use of a snapshot's own directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Bytes allocated (512-byte blocks × 512), each inode once.
    pub size: i64,
    /// Inodes, the directory itself included.
    pub inodes: i64,
}

/// One snapshot's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Its directory: `snapshots/<id>`.
    pub id: u64,
    /// Its kind.
    pub kind: Kind,
    /// Its parent's key (a committed snapshot), empty for none.
    pub parent: String,
    /// containerd's labels.
    pub labels: BTreeMap<String, String>,
    /// When it was made.
    pub created: Time,
    /// When its record last changed.
    pub updated: Time,
    /// For a committed snapshot, its usage when it was committed.
    #[serde(default)]
    pub usage: Usage,
}

/// The metadata file.
#[derive(Debug)]
pub struct Meta {
    db: Database,
}

/// The tables of one write transaction.
pub struct Txn<'t> {
    snapshots: redb::Table<'t, &'static str, &'static [u8]>,
    counters: redb::Table<'t, &'static str, u64>,
}

fn decode(key: &str, bytes: &[u8]) -> Result<Record, SnapError> {
    serde_json::from_slice(bytes)
        .map_err(|e| SnapError::internal(format!("the record of snapshot '{key}' is damaged: {e}")))
}

fn encode(rec: &Record) -> Result<Vec<u8>, SnapError> {
    serde_json::to_vec(rec).map_err(|e| SnapError::internal(format!("cannot encode a record: {e}")))
}

impl Meta {
    /// Opens (or creates) the metadata file at `path`.
    pub fn open(path: &Path) -> Result<Meta, SnapError> {
        let db = Database::create(path)
            .map_err(|e| SnapError::internal(format!("cannot open the metadata file '{}': {e}", path.display())))?;
        let meta = Meta { db };
        // Both tables exist from the start, so readers never meet a missing table.
        meta.write(|_| Ok(()))?;
        Ok(meta)
    }

    /// The record of `key`.
    pub fn get(&self, key: &str) -> Result<Option<Record>, SnapError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SNAPSHOTS)?;
        let got = table.get(key)?;
        got.map(|v| decode(key, v.value())).transpose()
    }

    /// The ids of the ancestors of a snapshot whose parent is `parent`, nearest first, from
    /// one consistent state (reads one record per ancestor).
    pub fn ancestors(&self, parent: &str) -> Result<Vec<u64>, SnapError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SNAPSHOTS)?;
        let mut out = Vec::new();
        let mut at = parent.to_string();
        while !at.is_empty() {
            let rec = match table.get(at.as_str())? {
                Some(v) => decode(&at, v.value())?,
                None => return Err(SnapError::internal(format!("parent snapshot '{at}' has no record"))),
            };
            out.push(rec.id);
            // Parents are committed before their children exist, so a chain cannot loop;
            // a damaged file could, and this bounds it.
            if out.len() > 1 << 16 {
                return Err(SnapError::internal("the snapshots' parents form a loop"));
            }
            at = rec.parent;
        }
        Ok(out)
    }

    /// Every record, by key, from one consistent state.
    pub fn all(&self) -> Result<BTreeMap<String, Record>, SnapError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SNAPSHOTS)?;
        let mut out = BTreeMap::new();
        for item in table.iter()? {
            let (k, v) = item?;
            out.insert(k.value().to_string(), decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Runs `f` in a write transaction and commits what it did if it returns `Ok`; on an
    /// error nothing it did is kept. Write transactions run one at a time.
    pub fn write<T>(&self, f: impl FnOnce(&mut Txn<'_>) -> Result<T, SnapError>) -> Result<T, SnapError> {
        let txn = self.db.begin_write()?;
        let out = {
            let mut t = Txn { snapshots: txn.open_table(SNAPSHOTS)?, counters: txn.open_table(COUNTERS)? };
            f(&mut t)?
        };
        txn.commit()?;
        Ok(out)
    }
}

impl Txn<'_> {
    /// The record of `key`.
    pub fn get(&self, key: &str) -> Result<Option<Record>, SnapError> {
        let got = self.snapshots.get(key)?;
        got.map(|v| decode(key, v.value())).transpose()
    }

    /// Sets the record of `key`.
    pub fn put(&mut self, key: &str, rec: &Record) -> Result<(), SnapError> {
        self.snapshots.insert(key, encode(rec)?.as_slice())?;
        Ok(())
    }

    /// Removes the record of `key`.
    pub fn delete(&mut self, key: &str) -> Result<(), SnapError> {
        self.snapshots.remove(key)?;
        Ok(())
    }

    /// The keys of the snapshots whose parent is `key`.
    pub fn children(&self, key: &str) -> Result<Vec<String>, SnapError> {
        let mut out = Vec::new();
        for item in self.snapshots.iter()? {
            let (k, v) = item?;
            if decode(k.value(), v.value())?.parent == key {
                out.push(k.value().to_string());
            }
        }
        Ok(out)
    }

    /// A new snapshot id.
    pub fn next_id(&mut self) -> Result<u64, SnapError> {
        let id = self.counters.get("next_id")?.map(|v| v.value()).unwrap_or(1);
        self.counters.insert("next_id", id + 1)?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64, parent: &str) -> Record {
        Record {
            id,
            kind: Kind::Committed,
            parent: parent.into(),
            labels: BTreeMap::new(),
            created: Time::now(),
            updated: Time::now(),
            usage: Usage::default(),
        }
    }

    #[test]
    fn a_failed_transaction_keeps_nothing_and_ids_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("m.redb")).unwrap();
        let id = meta.write(|t| t.next_id()).unwrap();
        let r: Result<(), SnapError> = meta.write(|t| {
            let id = t.next_id()?;
            t.put("a", &rec(id, ""))?;
            Err(SnapError::internal("no"))
        });
        assert!(r.is_err());
        assert_eq!(meta.get("a").unwrap(), None);
        meta.write(|t| {
            let id = t.next_id()?;
            t.put("a", &rec(id, ""))?;
            let b = t.next_id()?;
            t.put("b", &rec(b, "a"))
        })
        .unwrap();
        drop(meta);
        let meta = Meta::open(&dir.path().join("m.redb")).unwrap();
        let all = meta.all().unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(all["a"].id, id + 1, "the aborted transaction's id is handed out again, no committed one is");
        assert_eq!(meta.write(|t| t.children("a")).unwrap(), ["b"]);
    }
}
