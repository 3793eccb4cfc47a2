//! `unionfs inspect`: a container, image or volume as JSON (an array, as docker prints it).

use std::path::Path;

use serde_json::{Value, json};

use crate::error::Error;
use crate::manager::containers::{self, Container, State};
use crate::manager::images::{self, Image};
use crate::manager::store::{Store, printable};
use crate::manager::{layers, oci, volumes, walk};

/// What `--type` restricts a name to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// A container.
    Container,
    /// An image.
    Image,
    /// A volume.
    Volume,
}

fn container_json(store: &Store, c: &Container) -> Result<Value, Error> {
    let st = containers::state(c);
    let rw = walk::tree_size(&c.upper(store)).unwrap_or(0);
    let image_size = layers::total_size(store, &c.layers);
    let lowers: Vec<String> = c.lower_dirs(store)?.iter().map(|p| p.display().to_string()).collect();
    Ok(json!({
        "Id": c.id,
        "Name": c.name,
        "Created": oci::rfc3339(c.created),
        "State": {
            "Status": st.name(),
            "Running": st == State::Running,
            "Dead": st == State::Dead,
            "StartedAt": c.started.map(oci::rfc3339),
            "FinishedAt": c.stopped.map(oci::rfc3339),
        },
        "Image": c.image_id,
        "ImageName": c.image,
        "Layers": c.layers,
        "MountPoint": c.mountpoint,
        "GraphDriver": {
            "Name": "unionfs",
            "Data": {
                "LowerDir": lowers.join(":"),
                "UpperDir": c.upper(store),
                "WorkDir": c.work(store),
                "MergedDir": c.mountpoint,
            },
        },
        "Volumes": c.volumes,
        "SizeRw": rw,
        "SizeRootFs": rw + image_size,
        "Limits": { "Size": c.limits.size, "Inodes": c.limits.inodes },
    }))
}

fn image_json(store: &Store, i: &Image) -> Value {
    let config = i.config_json();
    let size = layers::total_size(store, &i.layers);
    json!({
        "Id": i.id,
        "RepoTags": i.tags.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        "Created": config.get("created").cloned().unwrap_or_else(|| json!(oci::rfc3339(i.created))),
        "Architecture": config.get("architecture"),
        "Os": config.get("os"),
        "Config": config.get("config"),
        "Size": size,
        "RootFS": { "Type": "layers", "Layers": i.layers },
        "LayerDirs": i.layers.iter().map(|l| layers::diff_dir(store, l).map(|p| p.display().to_string()).unwrap_or_default()).collect::<Vec<_>>(),
        "History": config.get("history"),
        "Containers": images::users(store, i).unwrap_or_default(),
    })
}

fn volume_json(store: &Store, v: &volumes::Volume) -> Result<Value, Error> {
    let dir = volumes::data_dir(store, &v.name)?;
    Ok(json!({
        "Name": v.name,
        "Driver": "local",
        "CreatedAt": oci::rfc3339(v.created),
        "Mountpoint": dir,
        "Size": walk::tree_size(&dir).unwrap_or(0),
        "UsedBy": volumes::users(store, &v.name)?,
    }))
}

/// One object by name: a container, else an image, else a volume (or only `kind`).
fn one(store: &Store, name: &str, kind: Option<Kind>) -> Result<Value, Error> {
    let want = |k| kind.is_none_or(|x| x == k);
    if want(Kind::Container)
        && let Ok(c) = containers::get(store, name)
    {
        return container_json(store, &c);
    }
    if want(Kind::Image)
        && let Ok(i) = images::resolve(store, name)
    {
        return Ok(image_json(store, &i));
    }
    if want(Kind::Volume)
        && let Some(v) = volumes::list(store)?.into_iter().find(|v| v.name == name)
    {
        return volume_json(store, &v);
    }
    let what = match kind {
        Some(Kind::Container) => "container",
        Some(Kind::Image) => "image",
        Some(Kind::Volume) => "volume",
        None => "container, image or volume",
    };
    Err(Error::msg(format!("no such {what} '{}'", printable(name))))
}

/// `unionfs inspect NAME...`: every object found is printed; a name found nowhere is
/// reported and the exit is non-zero.
pub fn inspect(root: Option<&Path>, names: &[String], kind: Option<Kind>) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock_shared()?;
    let mut found = Vec::new();
    let mut failed = Vec::new();
    for n in names {
        match one(&store, n, kind) {
            Ok(v) => found.push(v),
            Err(e) => failed.push(e.to_string()),
        }
    }
    let text = serde_json::to_string_pretty(&Value::Array(found)).unwrap_or_default();
    crate::manager::partial(format!("{text}\n"), failed)
}
