//! The container manager: Docker's layer model on top of `unionfs mount`.
//!
//! Images are ordered lists of shared, read-only, content-addressed layers; each container
//! gets its own writable layer and its own `unionfs mount` daemon (so one crashing daemon
//! touches no other container); volumes hold data that outlives containers. State lives in
//! a directory a person can read (see [`store`]); every change takes the store lock and
//! writes metadata atomically.
//!
//! | module | what it owns |
//! |---|---|
//! | [`store`] | the state root, its layout and lock, names and ids |
//! | [`meta`] | the small line-based metadata files, written atomically |
//! | [`layers`] | the content-addressed layer store; a view of an image's layers |
//! | [`streams`] | compression, digests, read errors in words |
//! | [`tarball`] | OCI layer tarballs in (safe extraction) and out (deterministic) |
//! | [`tarsplit`] | a layer's tarball written back byte for byte |
//! | [`inspect`] | containers, images and volumes as JSON |
//! | [`imagecmd`] | the image commands: images, rmi, tag, load, save, prune |
//! | [`mod@images`] | images: import, list, remove, layer garbage collection |
//! | [`containers`] | containers: create, start, stop, remove, state |
//! | [`archive`] | whole images in and out: load and save (docker-archive, OCI) |
//! | [`oci`] | OCI and Docker image JSON |
//! | [`changes`] | diff, commit, export-layer, from the writable layer alone |
//! | [`volumes`] | volumes |
//! | [`report`] | info and df |
//! | [`listing`] | lists as tables, ids, JSON or templates |
//! | [`walk`] | descriptor-based tree walks that never follow symlinks |
//! | [`zstd`] | zstd streams: every frame, checksums verified |
//! | [`units`] | sizes and durations printed like docker, progress bars |

pub mod archive;
pub mod changes;
pub mod containers;
pub mod imagecmd;
pub mod images;
pub mod inspect;
pub mod layers;
pub mod listing;
pub mod meta;
pub mod oci;
pub mod report;
pub mod store;
pub mod streams;
pub mod tarball;
pub mod tarsplit;
pub mod units;
pub mod volumes;
pub mod walk;
pub mod zstd;

use std::path::Path;

use crate::error::Error;
use containers::State;
use store::{ImageRef, Store};
use units::{ago, human_duration, human_size};

/// Seconds since the epoch as a time.
pub(crate) fn when(secs: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)
}

/// `unionfs run` / `unionfs create`: makes a container (and starts it for `run`); returns
/// what to print.
pub fn create(
    root: Option<&Path>,
    name: Option<&str>,
    image: &str,
    mountpoint: Option<&Path>,
    volumes: &[String],
    limits: containers::Limits,
    start: bool,
) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock()?;
    let mut c = containers::create(&store, name, image, mountpoint, volumes, limits)?;
    if start {
        if let Err(e) = containers::start(&store, &mut c) {
            // Leave no container behind that the user did not get.
            let _undo = containers::remove(&store, &c.name, true);
            return Err(e);
        }
        return Ok(format!("{}\n", c.mountpoint.display()));
    }
    Ok(format!("{}\n", c.name))
}

/// `unionfs start NAME...`: a running container is left as it is. Every name is tried;
/// one that fails is reported and the command exits non-zero.
pub fn start(root: Option<&Path>, names: &[String]) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock()?;
    each(names, |n| {
        let mut c = containers::get(&store, n)?;
        if containers::state(&c) != State::Running {
            containers::start(&store, &mut c)?;
        }
        Ok(format!("{}\n", c.mountpoint.display()))
    })
}

/// `unionfs stop NAME...`: records the time, for `ps -a`.
pub fn stop(root: Option<&Path>, names: &[String], force: bool) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock()?;
    each(names, |n| {
        let mut c = containers::get(&store, n)?;
        if containers::state(&c) != State::Running && containers::state(&c) != State::Dead {
            return Ok(format!("{}\n", c.name));
        }
        containers::stop(&c, force)?;
        c.stopped = Some(store::now_secs());
        containers::put(&store, &c)?;
        Ok(format!("{}\n", c.name))
    })
}

/// `unionfs rm NAME...`: prints each name removed; one that cannot be removed (unknown,
/// running without -f) is reported, the others are still removed, and the exit is non-zero.
pub fn rm(root: Option<&Path>, names: &[String], force: bool) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock()?;
    each(names, |n| containers::remove(&store, n, force).map(|()| format!("{n}\n")))
}

/// Runs `f` on every name: the lines of those that worked, and the errors of the others
/// ([`partial`]).
pub(crate) fn each(names: &[String], mut f: impl FnMut(&str) -> Result<String, Error>) -> Result<String, Error> {
    let mut out = String::new();
    let mut failed = Vec::new();
    for n in names {
        match f(n) {
            Ok(line) => out.push_str(&line),
            Err(e) => failed.push(e.to_string()),
        }
    }
    partial(out, failed)
}

/// What `ps` says of a container's state: `Up 5 minutes`, `Exited (0) 2 hours ago`, `Dead`,
/// `Created`.
fn status_of(c: &containers::Container, st: State) -> String {
    let since = |t: u64| std::time::SystemTime::now().duration_since(when(t)).unwrap_or_default();
    match st {
        State::Running => format!("Up {}", human_duration(since(c.started.unwrap_or(c.created)))),
        State::Stopped => match c.stopped.filter(|s| *s >= c.started.unwrap_or(0)) {
            Some(t) => format!("Exited (0) {} ago", human_duration(since(t))),
            None => "Exited (0)".into(),
        },
        State::Dead => "Dead".into(),
        State::Created => "Created".into(),
    }
}

/// `unionfs ps [-a] [-s] [-q] [--format F]`.
pub fn ps(root: Option<&Path>, all: bool, size: bool, style: &listing::Style) -> Result<String, Error> {
    use listing::Column;
    let store = Store::open(root)?;
    let _lock = store.lock_shared()?;
    let col = Column::new;
    let columns = vec![
        col("ID", "CONTAINER ID", true),
        col("Image", "IMAGE", true),
        col("RunningFor", "CREATED", true),
        col("Status", "STATUS", true),
        col("MountPoint", "MOUNTPOINT", true),
        col("Names", "NAMES", true),
        col("Size", "SIZE", size),
        col("State", "STATE", false),
        col("CreatedAt", "CREATED AT", false),
        col("ImageID", "IMAGE ID", false),
        col("UpperDir", "UPPER DIR", false),
    ];
    let sizes = size || style.format.as_deref().is_some_and(|f| f.contains("Size") || f.trim() == "json");
    let mut rows = Vec::new();
    for c in containers::list(&store)? {
        let st = containers::state(&c);
        if !all && !matches!(st, State::Running | State::Dead) {
            continue;
        }
        let size_cell = if sizes { size_cell(&store, &c)? } else { String::new() };
        rows.push(vec![
            c.id[..12].to_string(),
            c.image.clone(),
            ago(when(c.created)),
            status_of(&c, st),
            c.mountpoint.display().to_string(),
            c.name.clone(),
            size_cell,
            st.name().to_string(),
            oci::rfc3339(c.created),
            c.image_id.clone().unwrap_or_default(),
            c.upper(&store).display().to_string(),
        ]);
    }
    listing::Listing { columns, rows, id_field: "ID" }.render(style)
}

/// `ps -s`'s SIZE: the writable layer, virtual with the image, and the limits.
fn size_cell(store: &Store, c: &containers::Container) -> Result<String, Error> {
    let rw = walk::tree_size(&c.upper(store))?;
    let image = layers::total_size(store, &c.layers);
    let mut cell = format!("{} (virtual {})", human_size(rw), human_size(rw + image));
    if let Some(l) = c.limits.size {
        cell.push_str(&format!(" (limit {})", human_size(l)));
    }
    if let Some(n) = c.limits.inodes {
        cell.push_str(&format!(" (limit {n} inodes)"));
    }
    Ok(cell)
}

/// `unionfs mount-path NAME`.
pub fn mount_path(root: Option<&Path>, name: &str) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock_shared()?;
    Ok(format!("{}\n", containers::get(&store, name)?.mountpoint.display()))
}

/// `unionfs diff NAME`.
pub fn diff(root: Option<&Path>, name: &str, nul: bool) -> Result<Vec<u8>, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock_shared()?;
    let c = containers::get(&store, name)?;
    let mut out = Vec::new();
    for (ch, p) in changes::diff(&store, &c)? {
        out.extend_from_slice(format!("{} ", ch.letter()).as_bytes());
        if nul {
            out.push(b'/');
            out.extend_from_slice(&p);
            out.push(0);
        } else {
            let mut full = vec![b'/'];
            full.extend_from_slice(&p);
            out.extend_from_slice(quote_path(&full).as_bytes());
            out.push(b'\n');
        }
    }
    Ok(out)
}

/// A path for one line of output: as it is, or, if it holds a control character, a
/// backslash, a double quote or bytes that are not UTF-8, in double quotes with C escapes
/// (git's quoting), so that no name can forge another line.
pub fn quote_path(p: &[u8]) -> String {
    let plain = std::str::from_utf8(p).ok().filter(|s| !s.chars().any(|c| c.is_control() || c == '\\' || c == '"'));
    if let Some(s) = plain {
        return s.to_string();
    }
    let mut out = String::from("\"");
    for chunk in p.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                c if c.is_control() => {
                    let mut b = [0u8; 4];
                    for byte in c.encode_utf8(&mut b).bytes() {
                        out.push_str(&format!("\\{byte:03o}"));
                    }
                }
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\{byte:03o}"));
        }
    }
    out.push('"');
    out
}

/// `unionfs commit NAME NEW:TAG`.
pub fn commit(root: Option<&Path>, name: &str, new: &str) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock()?;
    let c = containers::get(&store, name)?;
    let r = ImageRef::parse(new)?;
    let img = changes::commit(&store, &c, &r)?;
    Ok(format!("{}\n", img.id))
}

/// `unionfs export-layer NAME [-o FILE]`.
pub fn export_layer(root: Option<&Path>, name: &str, output: Option<&Path>) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock_shared()?;
    let c = containers::get(&store, name)?;
    match output {
        Some(p) => {
            let mut f = std::io::BufWriter::new(crate::outfile::OutFile::create(p)?);
            changes::export_layer(&store, &c, &mut f)?;
            f.into_inner().map_err(|e| Error::io("cannot write the tarball", e.into_error()))?.commit()?;
        }
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                return Err(Error::msg("refusing to write a tarball to a terminal; use -o FILE or a pipe"));
            }
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            changes::export_layer(&store, &c, &mut out)?;
            std::io::Write::flush(&mut out).map_err(|e| Error::io("cannot write the tarball", e))?;
        }
    }
    Ok(String::new())
}

/// What a command that acts on several objects prints: the lines of those it did, then
/// (on stderr) one line for each it could not, and an error if there was one.
pub fn partial(out: String, failed: Vec<String>) -> Result<String, Error> {
    if failed.is_empty() {
        return Ok(out);
    }
    print!("{out}");
    let last = failed.len() - 1;
    for f in &failed[..last] {
        eprintln!("unionfs: {f}");
    }
    Err(Error::msg(failed[last].clone()))
}

/// `unionfs info`.
pub fn info(root: Option<&Path>) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock_shared()?;
    report::info(&store)
}

/// `unionfs df [-v]`.
pub fn df(root: Option<&Path>, verbose: bool) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock_shared()?;
    report::df(&store, verbose)
}

/// `unionfs volume create NAME`.
pub fn volume_create(root: Option<&Path>, name: &str) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock()?;
    volumes::create(&store, name)?;
    Ok(format!("{name}\n"))
}

/// `unionfs volume ls [-q] [--format F]`.
pub fn volume_ls(root: Option<&Path>, style: &listing::Style) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock_shared()?;
    let col = listing::Column::new;
    let columns = vec![
        col("Name", "VOLUME NAME", true),
        col("CreatedSince", "CREATED", true),
        col("Mountpoint", "MOUNTPOINT", true),
        col("Driver", "DRIVER", false),
        col("CreatedAt", "CREATED AT", false),
    ];
    let mut rows = Vec::new();
    for v in volumes::list(&store)? {
        rows.push(vec![
            v.name.clone(),
            ago(when(v.created)),
            volumes::data_dir(&store, &v.name)?.display().to_string(),
            "local".into(),
            oci::rfc3339(v.created),
        ]);
    }
    listing::Listing { columns, rows, id_field: "Name" }.render(style)
}

/// `unionfs volume rm NAME...`: as `rm`, every name is tried.
pub fn volume_rm(root: Option<&Path>, names: &[String]) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock()?;
    each(names, |n| volumes::remove(&store, n).map(|()| format!("{n}\n")))
}

/// `unionfs volume prune`: removes the volumes no container uses.
pub fn volume_prune(root: Option<&Path>) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock()?;
    let mut out = String::new();
    let mut freed = 0;
    for v in volumes::list(&store)? {
        if !volumes::users(&store, &v.name)?.is_empty() {
            continue;
        }
        freed += volumes::data_dir(&store, &v.name).and_then(|d| walk::tree_size(&d)).unwrap_or(0);
        volumes::remove(&store, &v.name)?;
        out.push_str(&format!("{}\n", v.name));
    }
    let head = if out.is_empty() { String::new() } else { format!("Deleted Volumes:\n{out}\n") };
    Ok(format!("{head}Total reclaimed space: {}\n", human_size(freed)))
}

/// `unionfs container prune`: removes every container that is not running (a dead one's
/// stale mount is cleaned first).
pub fn container_prune(root: Option<&Path>) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock()?;
    let mut out = String::new();
    let mut freed = 0;
    for c in containers::list(&store)? {
        if containers::state(&c) == State::Running {
            continue;
        }
        freed += walk::tree_size(&c.upper(&store)).unwrap_or(0);
        containers::remove(&store, &c.name, true)?;
        out.push_str(&format!("{}\n", c.id));
    }
    let head = if out.is_empty() { String::new() } else { format!("Deleted Containers:\n{out}\n") };
    Ok(format!("{head}Total reclaimed space: {}\n", human_size(freed)))
}
