//! Volumes: data that outlives containers. A volume is a directory in the store; a
//! container shows it at a path of its mount (`run -v VOL:/path`), with writes going
//! straight to it (no copy-up, no whiteouts), and removing the container leaves it.

use std::path::PathBuf;

use crate::error::{Context, Error};
use crate::manager::meta::{self, Record};
use crate::manager::store::{Store, now_secs};

/// A stored volume.
#[derive(Clone, Debug)]
pub struct Volume {
    /// Name.
    pub name: String,
    /// Creation time.
    pub created: u64,
}

/// The directory holding a volume's data.
pub fn data_dir(store: &Store, name: &str) -> Result<PathBuf, Error> {
    Ok(store.volume_dir(name)?.join("_data"))
}

/// Parses `SOURCE:/path`: SOURCE is a volume name, or an absolute host directory (which
/// must exist). Returns the host directory and the path in the container.
pub fn parse_spec(store: &Store, spec: &str) -> Result<(PathBuf, String), Error> {
    let (src, at) = spec
        .rsplit_once(':')
        .filter(|(s, a)| !s.is_empty() && a.starts_with('/'))
        .ok_or_else(|| Error::msg(format!("volume '{spec}' must be VOLUME:/path or /host/dir:/path")))?;
    crate::union::layer::volume_path(at)?;
    if src.starts_with('/') {
        let p = PathBuf::from(src);
        if !p.is_dir() {
            return Err(Error::msg(format!("volume directory '{src}' does not exist")));
        }
        return Ok((p, at.to_string()));
    }
    Ok((data_dir(store, src)?, at.to_string()))
}

/// Creates the named volume a spec refers to, if it does not exist.
pub fn ensure(store: &Store, spec: &str) -> Result<(), Error> {
    let Some((src, _)) = spec.rsplit_once(':') else { return Ok(()) };
    if !src.starts_with('/') && !store.volume_dir(src)?.join("meta").exists() {
        create(store, src)?;
    }
    Ok(())
}

/// `unionfs volume create`.
pub fn create(store: &Store, name: &str) -> Result<Volume, Error> {
    let dir = store.volume_dir(name)?;
    if dir.join("meta").exists() {
        return Err(Error::msg(format!("volume '{name}' already exists")));
    }
    std::fs::create_dir_all(dir.join("_data")).context(|| format!("cannot create '{}'", dir.display()))?;
    let mut r = Record::new("volume");
    r.set("name", name);
    r.set("created", now_secs().to_string());
    meta::write(&dir.join("meta"), &r)?;
    Ok(Volume { name: name.into(), created: now_secs() })
}

/// Every volume, by name.
pub fn list(store: &Store) -> Result<Vec<Volume>, Error> {
    let mut v: Vec<Volume> = meta::read_dir(&store.root.join("volumes"), "volume")?
        .iter()
        .map(|r| Volume {
            name: r.get("name").unwrap_or_default().to_string(),
            created: r.get("created").and_then(|c| c.parse().ok()).unwrap_or(0),
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(v)
}

/// The containers whose specs name volume `name`.
pub fn users(store: &Store, name: &str) -> Result<Vec<String>, Error> {
    Ok(crate::manager::containers::list(store)?
        .into_iter()
        .filter(|c| c.volumes.iter().any(|v| v.rsplit_once(':').is_some_and(|(s, _)| s == name)))
        .map(|c| c.name)
        .collect())
}

/// `unionfs volume rm`: refused while a container uses it.
pub fn remove(store: &Store, name: &str) -> Result<(), Error> {
    let dir = store.volume_dir(name)?;
    if !dir.join("meta").exists() {
        return Err(Error::msg(format!("no such volume '{name}'")));
    }
    let u = users(store, name)?;
    if !u.is_empty() {
        return Err(Error::msg(format!("volume '{name}' is used by container(s) {}", u.join(", "))));
    }
    crate::api::remove_here(&dir)
}
