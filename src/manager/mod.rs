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
//! | [`tarball`] | OCI layer tarballs in (safe extraction) and out (deterministic) |
//! | [`mod@images`] | images: import, list, remove, layer garbage collection |
//! | [`containers`] | containers: create, start, stop, remove, state |
//! | [`changes`] | diff, commit, export-layer, from the writable layer alone |
//! | [`volumes`] | volumes |
//! | [`report`] | info and df |
//! | [`walk`] | descriptor-based tree walks that never follow symlinks |
//! | [`zstd`] | zstd streams: every frame, checksums verified |
//! | [`units`] | sizes and durations printed like docker, progress bars |

pub mod changes;
pub mod containers;
pub mod images;
pub mod layers;
pub mod meta;
pub mod report;
pub mod store;
pub mod tarball;
pub mod units;
pub mod volumes;
pub mod walk;
pub mod zstd;

use std::path::{Path, PathBuf};

use crate::error::Error;
use containers::State;
use report::{short, table};
use store::{ImageRef, Store};
use units::{ago, human_duration, human_size};

fn when(secs: u64) -> std::time::SystemTime {
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

/// `unionfs start NAME...`.
pub fn start(root: Option<&Path>, names: &[String]) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock()?;
    let mut out = String::new();
    for n in names {
        let mut c = containers::get(&store, n)?;
        containers::start(&store, &mut c)?;
        out.push_str(&format!("{}\n", c.mountpoint.display()));
    }
    Ok(out)
}

/// `unionfs stop NAME...`.
pub fn stop(root: Option<&Path>, names: &[String], force: bool) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock()?;
    let mut out = String::new();
    for n in names {
        let c = containers::get(&store, n)?;
        containers::stop(&c, force)?;
        out.push_str(&format!("{}\n", c.name));
    }
    Ok(out)
}

/// `unionfs rm NAME...`.
pub fn rm(root: Option<&Path>, names: &[String], force: bool) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock()?;
    let mut out = String::new();
    for n in names {
        containers::remove(&store, n, force)?;
        out.push_str(&format!("{n}\n"));
    }
    Ok(out)
}

/// `unionfs ps [-a] [-s]`.
pub fn ps(root: Option<&Path>, all: bool, size: bool) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock_shared()?;
    let mut head: Vec<String> =
        ["CONTAINER ID", "IMAGE", "CREATED", "STATUS", "MOUNTPOINT", "NAMES"].iter().map(|s| s.to_string()).collect();
    if size {
        head.push("SIZE".into());
    }
    let mut rows = vec![head];
    for c in containers::list(&store)? {
        let st = containers::state(&c);
        if !all && !matches!(st, State::Running | State::Dead) {
            continue;
        }
        let status = match (st, c.started) {
            (State::Running, Some(s)) => format!(
                "Up {}",
                human_duration(std::time::SystemTime::now().duration_since(when(s)).unwrap_or_default())
            ),
            (s, _) => s.word().to_string(),
        };
        let mut row = vec![
            c.id[..12].to_string(),
            c.image.clone(),
            ago(when(c.created)),
            status,
            c.mountpoint.display().to_string(),
            c.name.clone(),
        ];
        if size {
            let rw = walk::tree_size(&c.upper(&store))?;
            let image: u64 = c.layers.iter().map(|l| layers::info(&store, l).map(|i| i.size).unwrap_or(0)).sum();
            let mut cell = format!("{} (virtual {})", human_size(rw), human_size(rw + image));
            if let Some(l) = c.limits.size {
                cell.push_str(&format!(" (limit {})", human_size(l)));
            }
            if let Some(n) = c.limits.inodes {
                cell.push_str(&format!(" (limit {n} inodes)"));
            }
            row.push(cell);
        }
        rows.push(row);
    }
    Ok(table(&rows))
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

/// `unionfs images`.
pub fn images(root: Option<&Path>) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock_shared()?;
    let mut rows = vec![
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "LAYERS", "SIZE"]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    ];
    for i in images::list(&store)? {
        let size: u64 = i.layers.iter().map(|l| layers::info(&store, l).map(|x| x.size).unwrap_or(0)).sum();
        rows.push(vec![
            i.r.name.clone(),
            i.r.tag.clone(),
            short(&i.id),
            ago(when(i.created)),
            i.layers.len().to_string(),
            human_size(size),
        ]);
    }
    Ok(table(&rows))
}

/// `unionfs image import NAME:TAG SOURCE...`.
pub fn image_import(root: Option<&Path>, name: &str, sources: &[PathBuf]) -> Result<String, Error> {
    let r = ImageRef::parse(name)?;
    let store = Store::open(root)?;
    let _lock = store.lock()?;
    let img = images::import(&store, &r, sources)?;
    Ok(format!("{}\n", img.id))
}

/// `unionfs image rm NAME:TAG...`.
pub fn image_rm(root: Option<&Path>, names: &[String]) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock()?;
    let mut out = String::new();
    for n in names {
        let r = ImageRef::parse(n)?;
        let gone = images::remove(&store, &r)?;
        out.push_str(&format!("Untagged: {r}\n"));
        for l in gone {
            out.push_str(&format!("Deleted: {l}\n"));
        }
    }
    Ok(out)
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

/// `unionfs volume ls`.
pub fn volume_ls(root: Option<&Path>) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock_shared()?;
    let mut rows = vec![vec!["VOLUME NAME".to_string(), "CREATED".into(), "MOUNTPOINT".into()]];
    for v in volumes::list(&store)? {
        rows.push(vec![
            v.name.clone(),
            ago(when(v.created)),
            volumes::data_dir(&store, &v.name)?.display().to_string(),
        ]);
    }
    Ok(table(&rows))
}

/// `unionfs volume rm NAME...`.
pub fn volume_rm(root: Option<&Path>, names: &[String]) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock()?;
    let mut out = String::new();
    for n in names {
        volumes::remove(&store, n)?;
        out.push_str(&format!("{n}\n"));
    }
    Ok(out)
}
