//! Images: a name and tag for an ordered list of layers (bottom first), as in Docker.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::error::{Context, Error};
use crate::manager::layers;
use crate::manager::meta::{self, Record};
use crate::manager::store::{ImageRef, Store, now_secs};

/// A stored image.
#[derive(Clone, Debug)]
pub struct Image {
    /// Name and tag.
    pub r: ImageRef,
    /// `sha256:` of its layer list.
    pub id: String,
    /// Layer ids, bottom (base) first.
    pub layers: Vec<String>,
    /// Creation time.
    pub created: u64,
}

impl Image {
    /// Layer directories, topmost first (the order a mount wants).
    pub fn lower_dirs(&self, store: &Store) -> Result<Vec<PathBuf>, Error> {
        self.layers.iter().rev().map(|l| layers::diff_dir(store, l)).collect()
    }
}

/// The id of an image with these layers.
pub fn image_id(layer_ids: &[String]) -> String {
    let mut h = Sha256::new();
    for l in layer_ids {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    format!("sha256:{}", crate::manager::tarball::hex(&h.finalize()))
}

fn from_record(r: &Record) -> Result<Image, Error> {
    let name = r.get("name").ok_or_else(|| Error::msg("image record without a name"))?;
    let tag = r.get("tag").unwrap_or("latest");
    let layers: Vec<String> = r.all("layer").into_iter().map(String::from).collect();
    Ok(Image {
        r: ImageRef { name: name.into(), tag: tag.into() },
        id: image_id(&layers),
        layers,
        created: r.get("created").and_then(|c| c.parse().ok()).unwrap_or(0),
    })
}

/// Reads an image by reference.
pub fn get(store: &Store, r: &ImageRef) -> Result<Image, Error> {
    let p = store.image_path(r);
    if !p.exists() {
        return Err(Error::msg(format!("unknown image '{r}'")));
    }
    from_record(&meta::read(&p)?)
}

/// Every image, sorted by name and tag.
pub fn list(store: &Store) -> Result<Vec<Image>, Error> {
    let dir = store.root.join("images");
    let mut v = Vec::new();
    for e in std::fs::read_dir(&dir).context(|| format!("cannot read '{}'", dir.display()))? {
        let e = e.context(|| "cannot read the image list".into())?;
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        v.push(from_record(&meta::read(&e.path())?)?);
    }
    v.sort_by(|a, b| a.r.cmp(&b.r));
    Ok(v)
}

/// Stores an image record.
pub fn put(store: &Store, img: &Image) -> Result<(), Error> {
    let mut r = Record::new("image");
    r.set("name", img.r.name.clone());
    r.set("tag", img.r.tag.clone());
    r.set("created", img.created.to_string());
    for l in &img.layers {
        r.push("layer", l.clone());
    }
    meta::write(&store.image_path(&img.r), &r)
}

/// `unionfs image import NAME:TAG SOURCE...`: each source (a directory or a layer tarball,
/// plain, gzip or zstd) becomes a layer, the first at the bottom.
pub fn import(store: &Store, r: &ImageRef, sources: &[PathBuf]) -> Result<Image, Error> {
    if sources.is_empty() {
        return Err(Error::msg("no layer source given"));
    }
    if store.image_path(r).exists() {
        return Err(Error::msg(format!("image '{r}' already exists")));
    }
    let mut ids = Vec::with_capacity(sources.len());
    for s in sources {
        ids.push(layers::import(store, s)?);
    }
    let img = Image { r: r.clone(), id: image_id(&ids), layers: ids, created: now_secs() };
    put(store, &img)?;
    Ok(img)
}

/// `unionfs image rm`: refused while a container uses the image. Layers no image or
/// container needs any more are deleted.
pub fn remove(store: &Store, r: &ImageRef) -> Result<Vec<String>, Error> {
    let img = get(store, r)?;
    let users: Vec<String> = crate::manager::containers::list(store)?
        .into_iter()
        .filter(|c| c.image == img.r.to_string())
        .map(|c| c.name)
        .collect();
    if !users.is_empty() {
        return Err(Error::msg(format!("image '{r}' is used by container(s) {}; remove them first", users.join(", "))));
    }
    std::fs::remove_file(store.image_path(r)).context(|| format!("cannot remove image '{r}'"))?;
    gc_layers(store)
}

/// Deletes layers that no image and no container refers to; returns their ids.
pub fn gc_layers(store: &Store) -> Result<Vec<String>, Error> {
    let mut used = std::collections::HashSet::new();
    for i in list(store)? {
        used.extend(i.layers);
    }
    for c in crate::manager::containers::list(store)? {
        used.extend(c.layers);
    }
    let mut removed = Vec::new();
    for l in layers::all(store)? {
        if !used.contains(&l) {
            layers::remove(store, &l)?;
            removed.push(l);
        }
    }
    Ok(removed)
}
