//! The image commands: `images`, `image import`, `rmi`, `tag`, `load`, `save`,
//! `image prune`.

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::manager::archive::{self, Format, Input};
use crate::manager::listing::{Column, Listing, Style};
use crate::manager::report::short;
use crate::manager::store::{ImageRef, Store};
use crate::manager::units::{ago, human_size};
use crate::manager::{images, layers, oci, when};

/// The rows `images` shows: one per name, and one `<none>` row for an image without one.
pub fn image_rows(imgs: &[images::Image]) -> Vec<(Option<&ImageRef>, &images::Image)> {
    let mut rows = Vec::new();
    for i in imgs {
        if i.tags.is_empty() {
            rows.push((None, i));
        }
        for t in &i.tags {
            rows.push((Some(t), i));
        }
    }
    rows
}

/// `unionfs images [-q] [--format F]`.
pub fn images(root: Option<&Path>, style: &Style) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock_shared()?;
    let col = Column::new;
    let columns = vec![
        col("Repository", "REPOSITORY", true),
        col("Tag", "TAG", true),
        col("ID", "IMAGE ID", true),
        col("CreatedSince", "CREATED", true),
        col("Layers", "LAYERS", true),
        col("Size", "SIZE", true),
        col("CreatedAt", "CREATED AT", false),
        col("Digest", "DIGEST", false),
    ];
    let all = images::list(&store)?;
    let mut rows = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (t, i) in image_rows(&all) {
        // `-q` lists each image once, as docker does.
        if style.quiet && !seen.insert(i.id.clone()) {
            continue;
        }
        let size = layers::total_size(&store, &i.layers);
        rows.push(vec![
            t.map(|t| t.name.clone()).unwrap_or_else(|| "<none>".into()),
            t.map(|t| t.tag.clone()).unwrap_or_else(|| "<none>".into()),
            short(&i.id),
            ago(when(i.created)),
            i.layers.len().to_string(),
            human_size(size),
            oci::rfc3339(i.created),
            i.id.clone(),
        ]);
    }
    Listing { columns, rows, id_field: "ID" }.render(style)
}

/// `unionfs image import NAME:TAG SOURCE...`.
pub fn image_import(root: Option<&Path>, name: &str, sources: &[PathBuf]) -> Result<String, Error> {
    let r = ImageRef::parse(name)?;
    let store = Store::open(root)?;
    let _lock = store.lock()?;
    let img = images::import(&store, &r, sources)?;
    Ok(format!("{}\n", img.id))
}

/// `unionfs image rm [-f] IMAGE...` (a name, or an id): a name is removed, and the image
/// with it once no name and no container is left; an image a container uses, or (by id)
/// one with several names, only with `force` (which removes its names; the image stays
/// while a container uses it). Prints what it did, one line each; an image it cannot remove
/// is reported and the rest still done.
pub fn image_rm(root: Option<&Path>, names: &[String], force: bool) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock()?;
    super::each(names, |n| image_rm_one(&store, n, force))
}

fn image_rm_one(store: &Store, n: &str, force: bool) -> Result<String, Error> {
    let img = images::resolve(store, n)?;
    let by_name = ImageRef::parse(n).ok().filter(|r| img.tags.contains(r));
    let users = images::users(store, &img)?;
    let untag: Vec<ImageRef> = match &by_name {
        Some(r) => vec![r.clone()],
        None => img.tags.clone(),
    };
    if !force && !users.is_empty() && (by_name.is_none() || img.tags.len() == 1) {
        return Err(Error::msg(format!(
            "image '{n}' is used by container(s) {}; remove them first, or use rmi -f to remove its name",
            users.join(", ")
        )));
    }
    if !force && by_name.is_none() && img.tags.len() > 1 {
        return Err(Error::msg(format!("image '{n}' has several names; remove them one by one, or use rmi -f")));
    }
    let mut out = String::new();
    for r in &untag {
        images::untag(store, r)?;
        out.push_str(&format!("Untagged: {r}\n"));
    }
    if img.tags.len() == untag.len() && users.is_empty() {
        let gone = images::delete(store, &img)?;
        out.push_str(&format!("Deleted: {}\n", img.id));
        for l in gone {
            out.push_str(&format!("Deleted layer: {l}\n"));
        }
    }
    Ok(out)
}

/// `unionfs tag SOURCE TARGET`.
pub fn tag(root: Option<&Path>, source: &str, target: &str) -> Result<String, Error> {
    let r = ImageRef::parse(target)?;
    let store = Store::open(root)?;
    let _lock = store.lock()?;
    let img = images::resolve(&store, source)?;
    images::tag(&store, &img.id, &r)?;
    Ok(String::new())
}

/// `unionfs load [-i FILE|DIR] [-t NAME:TAG]`: prints `Loaded image: NAME:TAG` (or the id
/// of an image without a name) for each image, as docker does.
pub fn load(root: Option<&Path>, input: Option<&Path>, tag: Option<&str>, quiet: bool) -> Result<String, Error> {
    let tag = tag.map(ImageRef::parse).transpose()?;
    let store = Store::open(root)?;
    let _lock = store.lock()?;
    let input = match input {
        Some(p) if p != Path::new("-") => Input::Path(p),
        _ => Input::Stdin,
    };
    let loaded = archive::load(&store, input, tag.as_ref())?;
    let mut out = String::new();
    for l in loaded {
        if quiet {
            out.push_str(&format!("{}\n", l.id));
            continue;
        }
        if l.tags.is_empty() {
            out.push_str(&format!("Loaded image ID: {}\n", l.id));
        }
        for t in &l.tags {
            out.push_str(&format!("Loaded image: {t}\n"));
        }
    }
    Ok(out)
}

/// `unionfs save [-o FILE] [--format F] IMAGE...`: to a file (written whole or not at all)
/// or to standard output when it is not a terminal.
pub fn save(root: Option<&Path>, images: &[String], output: Option<&Path>, format: Format) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock_shared()?;
    let saved = archive::resolve(&store, images)?;
    match output {
        Some(p) if p != Path::new("-") => {
            let mut f = std::io::BufWriter::with_capacity(1 << 20, crate::outfile::OutFile::create(p)?);
            archive::save(&store, &saved, format, &mut f)?;
            let f = f.into_inner().map_err(|e| Error::io("cannot write the archive", e.into_error()))?;
            f.commit()?;
        }
        _ => {
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                return Err(Error::msg("refusing to write an archive to a terminal; use -o FILE or a pipe"));
            }
            let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            archive::save(&store, &saved, format, &mut out)?;
        }
    }
    Ok(String::new())
}

/// `unionfs image prune [-a]`: removes images without a name (with `-a`, every image)
/// that no container uses, then their unused layers; prints what went and the space freed.
pub fn image_prune(root: Option<&Path>, all: bool) -> Result<String, Error> {
    let store = Store::open(root)?;
    let _lock = store.lock()?;
    let sizes: std::collections::HashMap<String, u64> = layers::all(&store)?
        .into_iter()
        .map(|l| {
            let s = layers::info(&store, &l).map(|i| i.size).unwrap_or(0);
            (l, s)
        })
        .collect();
    let mut out = String::new();
    for img in images::list(&store)? {
        if (!all && !img.tags.is_empty()) || !images::users(&store, &img)?.is_empty() {
            continue;
        }
        for t in &img.tags {
            images::untag(&store, t)?;
            out.push_str(&format!("untagged: {t}\n"));
        }
        images::delete(&store, &img)?;
        out.push_str(&format!("deleted: {}\n", img.id));
    }
    let gone = images::gc_layers(&store)?;
    let freed: u64 = gone.iter().filter_map(|l| sizes.get(l)).sum();
    let head = if out.is_empty() { String::new() } else { format!("Deleted Images:\n{out}\n") };
    Ok(format!("{head}Total reclaimed space: {}\n", human_size(freed)))
}
