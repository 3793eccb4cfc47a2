//! Containers: a writable layer over an image's layers, mounted by its own `unionfs mount`
//! daemon. A crash of one daemon touches no other container: `ps` shows it dead, and `start`
//! cleans the stale mount point and mounts again over the same writable layer.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Context, Error};
use crate::manager::images;
use crate::manager::meta::{self, Record};
use crate::manager::store::{ImageRef, Store, check_name, now_secs, random_hex};
use crate::manager::volumes;

/// A container's record.
#[derive(Clone, Debug)]
pub struct Container {
    /// Name.
    pub name: String,
    /// 64 hex digits.
    pub id: String,
    /// The image it was made from, as named then (`name:tag`, or a short id).
    pub image: String,
    /// That image's id (absent in records of old versions).
    pub image_id: Option<String>,
    /// The image's layer ids, bottom first (kept, so the image may be retagged).
    pub layers: Vec<String>,
    /// Creation time.
    pub created: u64,
    /// Last start time, if ever started.
    pub started: Option<u64>,
    /// Last time `unionfs stop` stopped it.
    pub stopped: Option<u64>,
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// Volumes: `SOURCE:/path` (SOURCE a volume name or an absolute host directory).
    pub volumes: Vec<String>,
    /// Limits of the writable layer.
    pub limits: Limits,
}

/// Size and inode limits of a container's writable layer (`--size-limit`, `--inode-limit`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes.
    pub size: Option<u64>,
    /// Objects.
    pub inodes: Option<u64>,
}

/// A container's state, read from the mount table and its daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Never started.
    Created,
    /// Mounted and served.
    Running,
    /// Not mounted.
    Stopped,
    /// Still in the mount table, but its daemon is gone (killed, crashed).
    Dead,
}

impl State {
    /// For `--format '{{.State}}'` and `inspect`, as docker says it.
    pub fn name(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Stopped => "exited",
            State::Dead => "dead",
        }
    }

    /// For `ps`.
    pub fn word(self) -> &'static str {
        match self {
            State::Created => "Created",
            State::Running => "Up",
            State::Stopped => "Exited",
            State::Dead => "Dead",
        }
    }
}

impl Container {
    /// The container's directory.
    pub fn dir(&self, store: &Store) -> PathBuf {
        // The name was checked when the record was read (`from_record`).
        store.root.join("containers").join(&self.name)
    }
    /// Its writable layer.
    pub fn upper(&self, store: &Store) -> PathBuf {
        self.dir(store).join("upper")
    }
    /// The work directory of its mount.
    pub fn work(&self, store: &Store) -> PathBuf {
        self.dir(store).join("work")
    }
    /// The image layer directories, topmost first.
    pub fn lower_dirs(&self, store: &Store) -> Result<Vec<PathBuf>, Error> {
        self.layers.iter().rev().map(|l| crate::manager::layers::diff_dir(store, l)).collect()
    }
}

fn record(c: &Container) -> Record {
    let mut r = Record::new("container");
    r.set("name", c.name.clone());
    r.set("id", c.id.clone());
    r.set("image", c.image.clone());
    if let Some(id) = &c.image_id {
        r.set("image_id", id.clone());
    }
    r.set("created", c.created.to_string());
    if let Some(s) = c.started {
        r.set("started", s.to_string());
    }
    if let Some(s) = c.stopped {
        r.set("stopped", s.to_string());
    }
    r.set("mountpoint", c.mountpoint.display().to_string());
    for l in &c.layers {
        r.push("layer", l.clone());
    }
    for v in &c.volumes {
        r.push("volume", v.clone());
    }
    if let Some(s) = c.limits.size {
        r.set("size_limit", s.to_string());
    }
    if let Some(n) = c.limits.inodes {
        r.set("inode_limit", n.to_string());
    }
    r
}

fn from_record(r: &Record) -> Result<Container, Error> {
    let get = |k: &str| r.get(k).map(String::from).ok_or_else(|| Error::msg(format!("container record without '{k}'")));
    let name = get("name")?;
    // Names become paths: a record edited by hand must not point outside the store.
    check_name("container", &name)?;
    Ok(Container {
        name,
        id: get("id")?,
        image: get("image")?,
        image_id: r.get("image_id").map(String::from),
        layers: r.all("layer").into_iter().map(String::from).collect(),
        created: r.get("created").and_then(|c| c.parse().ok()).unwrap_or(0),
        started: r.get("started").and_then(|c| c.parse().ok()),
        stopped: r.get("stopped").and_then(|c| c.parse().ok()),
        mountpoint: PathBuf::from(get("mountpoint")?),
        volumes: r.all("volume").into_iter().map(String::from).collect(),
        limits: Limits {
            size: r.get("size_limit").and_then(|v| v.parse().ok()),
            inodes: r.get("inode_limit").and_then(|v| v.parse().ok()),
        },
    })
}

/// Stores a container record.
pub fn put(store: &Store, c: &Container) -> Result<(), Error> {
    meta::write(&c.dir(store).join("meta"), &record(c))
}

/// A container by name (or by a prefix of its id).
pub fn get(store: &Store, name: &str) -> Result<Container, Error> {
    let p = store.container_dir(name)?.join("meta");
    if p.exists() {
        return from_record(&meta::read(&p)?);
    }
    let by_id: Vec<Container> =
        list(store)?.into_iter().filter(|c| name.len() >= 4 && c.id.starts_with(name)).collect();
    match by_id.len() {
        1 => Ok(by_id.into_iter().next().ok_or_else(|| Error::msg("no container"))?),
        0 => Err(Error::msg(format!("no such container '{name}'"))),
        _ => Err(Error::msg(format!("'{name}' matches several containers"))),
    }
}

/// Every container, oldest first.
pub fn list(store: &Store) -> Result<Vec<Container>, Error> {
    let records = meta::read_dir(&store.root.join("containers"), "container")?;
    let mut v = records.iter().map(from_record).collect::<Result<Vec<_>, _>>()?;
    v.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
    Ok(v)
}

/// `unionfs create`: a container with an empty writable layer, not mounted yet.
pub fn create(
    store: &Store,
    name: Option<&str>,
    image: &str,
    mountpoint: Option<&Path>,
    vols: &[String],
    limits: Limits,
) -> Result<Container, Error> {
    let img = images::resolve(store, image)?;
    let id = random_hex(32);
    let name = match name {
        Some(n) => n.to_string(),
        None => format!("cont-{}", &id[..8]),
    };
    let dir = store.container_dir(&name)?;
    if dir.exists() {
        return Err(Error::msg(format!("the container name '{name}' is already in use")));
    }
    let view = crate::manager::layers::ImageView::open(&img.lower_dirs(store)?)?;
    for v in vols {
        let (_, at) = volumes::parse_spec(store, v)?;
        // The path and every directory above it must be a directory in the image, or absent.
        let rel = at.trim_start_matches('/');
        for i in rel.match_indices('/').map(|(i, _)| i).chain([rel.len()]) {
            let prefix = &rel[..i];
            if let Some((kind, _)) = view.lookup(prefix.as_bytes())?
                && kind != crate::sys::stat::FileKind::Directory
            {
                return Err(Error::msg(format!(
                    "cannot put volume '{v}' at {at}: the image has a file at /{prefix}, and a volume goes on a directory"
                )));
            }
        }
    }
    let mountpoint = match mountpoint {
        Some(m) => {
            std::fs::create_dir_all(m).context(|| format!("cannot create mount point '{}'", m.display()))?;
            std::fs::canonicalize(m).context(|| format!("cannot resolve '{}'", m.display()))?
        }
        None => dir.join("merged"),
    };
    if list(store)?.iter().any(|c| c.mountpoint == mountpoint) {
        return Err(Error::msg(format!("mount point '{}' is used by another container", mountpoint.display())));
    }
    // Build the directory aside, then rename it into place: a crash leaves no half container.
    let staging = store.temp_dir("create")?;
    for d in ["upper", "work", "merged"] {
        std::fs::create_dir(staging.join(d)).context(|| format!("cannot create '{}'", staging.join(d).display()))?;
    }
    let c = Container {
        name: name.clone(),
        id,
        image: match ImageRef::parse(image) {
            Ok(r) if img.tags.contains(&r) => r.to_string(),
            _ => img.shown(),
        },
        image_id: Some(img.id.clone()),
        layers: img.layers.clone(),
        created: now_secs(),
        started: None,
        stopped: None,
        mountpoint,
        volumes: vols.to_vec(),
        limits,
    };
    meta::write(&staging.join("meta"), &record(&c))?;
    std::fs::rename(&staging, &dir).context(|| format!("cannot create '{}'", dir.display()))?;
    for v in vols {
        volumes::ensure(store, v)?;
    }
    Ok(c)
}

/// The state of a container.
pub fn state(c: &Container) -> State {
    let Some(m) = crate::mounts::at(&c.mountpoint).filter(|m| m.fstype == crate::mounts::FSTYPE) else {
        return if c.started.is_some() { State::Stopped } else { State::Created };
    };
    if let Some(pid) = crate::daemon::daemon_pid(m.major, m.minor) {
        return if crate::sys::proc::process_alive(pid) { State::Running } else { State::Dead };
    }
    match std::fs::metadata(&c.mountpoint) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED)) => State::Dead,
        _ => State::Running,
    }
}

/// Detaches a mount whose daemon is gone ("Transport endpoint is not connected").
fn clean_stale(mountpoint: &Path) -> Result<(), Error> {
    crate::mounts::unmount_path(mountpoint, true)
        .map_err(|e| Error::msg(format!("cannot clean stale mount '{}': {e}", mountpoint.display())))
}

/// `unionfs start`: mounts the container (one daemon for it) and records the start.
pub fn start(store: &Store, c: &mut Container) -> Result<(), Error> {
    match state(c) {
        State::Running => return Err(Error::msg(format!("container '{}' is already running", c.name))),
        State::Dead => clean_stale(&c.mountpoint)?,
        State::Created | State::Stopped => {}
    }
    std::fs::create_dir_all(&c.mountpoint).context(|| format!("cannot create '{}'", c.mountpoint.display()))?;
    let lowers: Vec<String> =
        c.lower_dirs(store)?.iter().map(|p| p.display().to_string().replace(':', "\\:")).collect();
    let exe = std::env::current_exe().context(|| "cannot find the unionfs executable".into())?;
    let mut cmd = Command::new(exe);
    cmd.arg("mount")
        .arg("--lower")
        .arg(lowers.join(":"))
        .arg("--upper")
        .arg(c.upper(store))
        .arg("--work")
        .arg(c.work(store))
        .arg("--log")
        .arg(c.dir(store).join("daemon.log"));
    for v in &c.volumes {
        let (host, at) = volumes::parse_spec(store, v)?;
        cmd.arg("--volume").arg(format!("{}:{at}", host.display()));
    }
    // diff, commit and export-layer read the writable layer directly, as Docker's overlay2
    // does, where a redirected directory would lose its lower contents: like Docker, rename
    // of lower directories falls back to copying (EXDEV).
    cmd.arg("-o").arg("redirect_dir=off");
    if let Some(s) = c.limits.size {
        cmd.arg("--size-limit").arg(s.to_string());
    }
    if let Some(n) = c.limits.inodes {
        cmd.arg("--inode-limit").arg(n.to_string());
    }
    cmd.arg(&c.mountpoint);
    let out = cmd.output().context(|| "cannot run unionfs mount".into())?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Error::msg(format!(
            "cannot start container '{}': {}",
            c.name,
            err.trim().trim_start_matches("unionfs: ")
        )));
    }
    c.started = Some(now_secs());
    put(store, c)
}

/// `unionfs stop`: unmounts (and waits for the daemon). A busy mount is an error unless
/// `force`, which detaches it.
pub fn stop(c: &Container, force: bool) -> Result<(), Error> {
    match state(c) {
        State::Running => crate::daemon::umount(&c.mountpoint, force),
        State::Dead => clean_stale(&c.mountpoint),
        State::Created | State::Stopped => Ok(()),
    }
}

/// `unionfs rm`: deletes the container and its writable layer; a running container only
/// with `force` (it is stopped first). Volumes stay.
pub fn remove(store: &Store, name: &str, force: bool) -> Result<(), Error> {
    let c = get(store, name)?;
    let st = state(&c);
    if matches!(st, State::Running | State::Dead) {
        if !force {
            return Err(Error::msg(format!("container '{}' is running; stop it first or use rm -f", c.name)));
        }
        stop(&c, true)?;
    }
    let dir = c.dir(store);
    let gone = store.root.join("tmp").join(format!("rm-{}", c.id));
    std::fs::rename(&dir, &gone).context(|| format!("cannot remove '{}'", dir.display()))?;
    crate::api::remove_here(&gone)
}
