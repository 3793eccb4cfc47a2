//! Images, as in Docker: an image is its config (kept byte for byte; its sha256 is the
//! image id), which lists its layers bottom first; tags are names pointing at an image id.
//! Moving a tag (a `commit` or `load` onto a name in use) leaves the old image by id.
//!
//! ```text
//! ROOT/imagedb/<hex>/config.json   the config, as loaded or made
//! ROOT/imagedb/<hex>/meta          creation time and layer ids
//! ROOT/images/<name:tag>           a tag: the image id it names
//! ```
//! Stores written before configs were kept have tag records with the layers in them; they
//! are read as images with a config made from those layers, and rewritten by the next
//! command that changes the store.

use std::path::PathBuf;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Context, Error};
use crate::manager::meta::{self, Record};
use crate::manager::store::{ImageRef, Store, printable};
use crate::manager::{layers, oci};

/// A stored image.
#[derive(Clone, Debug)]
pub struct Image {
    /// `sha256:` of its config.
    pub id: String,
    /// The names that point at it, sorted.
    pub tags: Vec<ImageRef>,
    /// Layer ids, bottom (base) first.
    pub layers: Vec<String>,
    /// Creation time (seconds since the epoch).
    pub created: u64,
    /// The config as stored.
    pub config: Vec<u8>,
}

impl Image {
    /// Layer directories, topmost first (the order a mount wants).
    pub fn lower_dirs(&self, store: &Store) -> Result<Vec<PathBuf>, Error> {
        self.layers.iter().rev().map(|l| layers::diff_dir(store, l)).collect()
    }

    /// The config, parsed.
    pub fn config_json(&self) -> Value {
        serde_json::from_slice(&self.config).unwrap_or(Value::Null)
    }

    /// The name to show: its first tag, else its short id.
    pub fn shown(&self) -> String {
        self.tags.first().map(|t| t.to_string()).unwrap_or_else(|| crate::manager::report::short(&self.id))
    }
}

/// `sha256:<hex>` of bytes.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", crate::manager::streams::hex(&Sha256::digest(bytes)))
}

fn hex_of(id: &str) -> &str {
    id.strip_prefix("sha256:").unwrap_or(id)
}

fn db_dir(store: &Store, id: &str) -> Result<PathBuf, Error> {
    let hex = hex_of(id);
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(Error::msg(format!("invalid image id '{}'", printable(id))));
    }
    Ok(store.root.join("imagedb").join(hex))
}

/// What a tag record says: the image id, or (an old store) the layers themselves.
enum TagTarget {
    Id(String),
    Legacy { layers: Vec<String>, created: u64 },
}

fn read_tag(r: &Record) -> Result<(ImageRef, TagTarget), Error> {
    let name = r.get("name").ok_or_else(|| Error::msg("image record without a name"))?;
    let tag = r.get("tag").unwrap_or("latest");
    let target = match r.get("image") {
        Some(id) => TagTarget::Id(id.to_string()),
        None => TagTarget::Legacy {
            layers: r.all("layer").into_iter().map(String::from).collect(),
            created: r.get("created").and_then(|c| c.parse().ok()).unwrap_or(0),
        },
    };
    Ok((ImageRef { name: name.into(), tag: tag.into() }, target))
}

/// The config an old store's image is read with.
fn legacy_config(layers: &[String], created: u64) -> Vec<u8> {
    let history: Vec<String> = layers.iter().map(|_| "unionfs image import".to_string()).collect();
    oci::to_bytes(&oci::new_config(layers, &oci::rfc3339(created), &history))
}

fn read_image(store: &Store, id: &str) -> Result<Image, Error> {
    let dir = db_dir(store, id)?;
    let config = std::fs::read(dir.join("config.json")).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::msg(format!("no such image '{id}'")),
        _ => Error::io(format!("cannot read '{}'", dir.display()), e),
    })?;
    let r = meta::read(&dir.join("meta"))?;
    Ok(Image {
        id: digest(&config),
        tags: Vec::new(),
        layers: r.all("layer").into_iter().map(String::from).collect(),
        created: r.get("created").and_then(|c| c.parse().ok()).unwrap_or(0),
        config,
    })
}

/// Every image, with its tags; tagged images sorted by name, then untagged ones by age.
pub fn list(store: &Store) -> Result<Vec<Image>, Error> {
    let mut by_id: std::collections::BTreeMap<String, Image> = std::collections::BTreeMap::new();
    let db = store.root.join("imagedb");
    for e in std::fs::read_dir(&db).context(|| format!("cannot read '{}'", db.display()))? {
        let e = e.context(|| "cannot read the image list".into())?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !e.path().join("meta").exists() {
            continue;
        }
        let img = read_image(store, &format!("sha256:{name}"))?;
        by_id.insert(img.id.clone(), img);
    }
    for r in meta::read_files(&store.root.join("images"), "image")? {
        let (name, target) = read_tag(&r)?;
        let img = match target {
            TagTarget::Id(id) => by_id.get_mut(&id),
            TagTarget::Legacy { layers, created } => {
                let config = legacy_config(&layers, created);
                let id = digest(&config);
                Some(by_id.entry(id.clone()).or_insert(Image { id, tags: Vec::new(), layers, created, config }))
            }
        };
        if let Some(img) = img {
            img.tags.push(name);
        }
    }
    let mut v: Vec<Image> = by_id.into_values().collect();
    for i in &mut v {
        i.tags.sort();
    }
    v.sort_by(|a, b| match (a.tags.first(), b.tags.first()) {
        (Some(x), Some(y)) => x.cmp(y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => b.created.cmp(&a.created).then(a.id.cmp(&b.id)),
    });
    Ok(v)
}

/// An image by `NAME:TAG`, full id or unique id prefix (with or without `sha256:`).
pub fn resolve(store: &Store, s: &str) -> Result<Image, Error> {
    let all = list(store)?;
    if let Ok(r) = ImageRef::parse(s)
        && let Some(i) = all.iter().find(|i| i.tags.contains(&r))
    {
        return Ok(i.clone());
    }
    let hex = hex_of(s);
    if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let hits: Vec<&Image> = all.iter().filter(|i| hex_of(&i.id).starts_with(hex)).collect();
        match hits.as_slice() {
            [one] => return Ok((*one).clone()),
            [] => {}
            _ => return Err(Error::msg(format!("'{s}' matches several images; give more of the id"))),
        }
    }
    Err(Error::msg(format!("no such image '{}'", printable(s))))
}

/// Stores an image made of `config` (whose layers must all be stored), or finds it stored.
pub fn create(store: &Store, config: Vec<u8>, created: u64) -> Result<Image, Error> {
    let parsed: Value = oci::parse(&config, "image config")?;
    let layer_ids = oci::diff_ids(&parsed)?;
    for l in &layer_ids {
        if !layers::exists(store, l) {
            return Err(Error::msg(format!("layer {l} of the image is not stored")));
        }
    }
    let id = digest(&config);
    let dir = db_dir(store, &id)?;
    if !dir.join("meta").exists() {
        std::fs::create_dir_all(&dir).context(|| format!("cannot create '{}'", dir.display()))?;
        crate::manager::meta::write_bytes(&dir.join("config.json"), &config)?;
        let mut r = Record::new("image");
        r.set("created", created.to_string());
        for l in &layer_ids {
            r.push("layer", l.clone());
        }
        meta::write(&dir.join("meta"), &r)?;
    }
    read_image(store, &id)
}

/// `unionfs image import NAME:TAG SOURCE...`: each source (a directory or a layer tarball,
/// plain, gzip or zstd) becomes a layer, the first at the bottom; the name moves to the new
/// image.
pub fn import(store: &Store, r: &ImageRef, sources: &[PathBuf]) -> Result<Image, Error> {
    if sources.is_empty() {
        return Err(Error::msg("no layer source given"));
    }
    let mut ids = Vec::with_capacity(sources.len());
    let mut history = Vec::with_capacity(sources.len());
    for s in sources {
        ids.push(layers::import(store, s)?);
        let shown = s.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        history.push(format!("unionfs image import {shown}"));
    }
    let now = crate::manager::store::now_secs();
    let img = create(store, oci::to_bytes(&oci::new_config(&ids, &oci::now_rfc3339(), &history)), now)?;
    tag(store, &img.id, r)?;
    resolve(store, &img.id)
}

/// Points `r` at image `id` (an image it named before keeps its id).
pub fn tag(store: &Store, id: &str, r: &ImageRef) -> Result<(), Error> {
    let mut rec = Record::new("image");
    rec.set("name", r.name.clone());
    rec.set("tag", r.tag.clone());
    rec.set("image", id);
    meta::write(&store.image_path(r), &rec)
}

/// Removes the name `r`.
pub fn untag(store: &Store, r: &ImageRef) -> Result<(), Error> {
    std::fs::remove_file(store.image_path(r)).context(|| format!("cannot remove the name '{r}'"))
}

/// Whether container `c` was made from `img`.
pub fn made_from(c: &crate::manager::containers::Container, img: &Image) -> bool {
    match &c.image_id {
        Some(id) => *id == img.id,
        None => img.tags.iter().any(|t| t.to_string() == c.image),
    }
}

/// The containers made from an image (by id; containers made by an old version, by name).
pub fn users(store: &Store, img: &Image) -> Result<Vec<String>, Error> {
    Ok(crate::manager::containers::list(store)?.into_iter().filter(|c| made_from(c, img)).map(|c| c.name).collect())
}

/// Deletes an image record (its names must be gone) and the layers nothing uses any more;
/// returns those layers' ids.
pub fn delete(store: &Store, img: &Image) -> Result<Vec<String>, Error> {
    let dir = db_dir(store, &img.id)?;
    if dir.exists() {
        let gone = store.root.join("tmp").join(format!("rmi-{}", hex_of(&img.id)));
        std::fs::rename(&dir, &gone).context(|| format!("cannot remove image '{}'", img.id))?;
        std::fs::remove_dir_all(&gone).context(|| format!("cannot remove '{}'", gone.display()))?;
    }
    gc_layers(store)
}

/// Rewrites an old store's tag records (layers in them) as image records and tags. Run
/// under the store's exclusive lock.
pub fn migrate(store: &Store) -> Result<(), Error> {
    for r in meta::read_files(&store.root.join("images"), "image")? {
        if let (name, TagTarget::Legacy { layers, created }) = read_tag(&r)? {
            let img = create(store, legacy_config(&layers, created), created)?;
            tag(store, &img.id, &name)?;
        }
    }
    Ok(())
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
