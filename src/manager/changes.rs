//! `unionfs diff`, `commit` and `export-layer`: what a container changed, read from its
//! writable layer alone. The cost grows with the writable layer, not with the image: the
//! image is only asked about the paths the writable layer names (and, for an opaque
//! directory, about that one directory's listing).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::error::Error;
use crate::manager::containers::Container;
use crate::manager::images::{self, Image};
use crate::manager::layers::{self, ImageView};
use crate::manager::oci;
use crate::manager::store::{ImageRef, Store, now_secs};
use crate::manager::walk::{self, Step};
use crate::sys::stat::FileKind;
use crate::union::whiteout;

/// One line of `unionfs diff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// `A`: not in the image.
    Added,
    /// `C`: in the image, changed (or a directory whose contents changed).
    Changed,
    /// `D`: in the image, deleted.
    Deleted,
}

impl Change {
    /// The letter `docker diff` prints.
    pub fn letter(self) -> char {
        match self {
            Change::Added => 'A',
            Change::Changed => 'C',
            Change::Deleted => 'D',
        }
    }
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = parent.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn parent_of(rel: &[u8]) -> &[u8] {
    rel.iter().rposition(|&b| b == b'/').map_or(&rel[..0], |i| &rel[..i])
}

/// The changes of a writable layer `upper` over the image seen through `view`, sorted by
/// path (paths are `/`-separated, relative).
pub fn changes(upper: &Path, view: &ImageView) -> Result<Vec<(Change, Vec<u8>)>, Error> {
    let mut out: BTreeMap<Vec<u8>, Change> = BTreeMap::new();
    let mut xwh_dirs: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    walk::walk(upper, &mut |e| {
        let parent = parent_of(e.rel);
        let name = e.name.to_bytes();
        if name == whiteout::OPAQUE_MARKER.to_bytes() {
            return Ok(Step::Skip);
        }
        let target = if e.stat.is_chardev_whiteout() {
            Some(e.rel.to_vec())
        } else if let Some(t) = whiteout::whiteout_target(name) {
            Some(join(parent, t))
        } else if e.stat.is_reg()
            && e.stat.size == 0
            && xwh_dirs.contains(parent)
            && whiteout::is_xattr_whiteout(e.dir, e.name, whiteout::Dialects::ANY).unwrap_or(false)
        {
            Some(e.rel.to_vec())
        } else {
            None
        };
        if let Some(t) = target {
            if view.lookup(&t)?.is_some() {
                out.insert(t, Change::Deleted);
            }
            return Ok(Step::Skip);
        }
        if whiteout::is_marker_name(name) {
            return Ok(Step::Skip);
        }
        let below = view.lookup(e.rel)?;
        let kind = if below.is_some() { Change::Changed } else { Change::Added };
        out.insert(e.rel.to_vec(), kind);
        if e.stat.is_dir() {
            let marks = whiteout::dir_marks(e.dir, e.name, None, whiteout::Dialects::ANY)
                .map_err(|x| Error::io("cannot read markers", x))?;
            if marks.xwhiteouts {
                xwh_dirs.insert(e.rel.to_vec());
            }
            if marks.opaque && matches!(below, Some((FileKind::Directory, _))) {
                // Everything the image had in it is gone, unless the upper has it again.
                for n in view.list(e.rel)? {
                    let p = join(e.rel, &n);
                    out.entry(p).or_insert(Change::Deleted);
                }
            }
        }
        Ok(Step::Descend)
    })?;
    // An opaque directory's own entries re-created in the upper replace the deletions above.
    Ok(out.into_iter().map(|(p, c)| (c, p)).collect())
}

/// `unionfs diff NAME`.
pub fn diff(store: &Store, c: &Container) -> Result<Vec<(Change, Vec<u8>)>, Error> {
    let view = ImageView::open(&c.lower_dirs(store)?)?;
    changes(&c.upper(store), &view)
}

/// Writes a container's changes as a deterministic OCI layer tarball (whiteouts that hide
/// nothing, and those inside opaque directories, left out).
pub fn export_layer(store: &Store, c: &Container, out: &mut dyn Write) -> Result<(), Error> {
    let view = ImageView::open(&c.lower_dirs(store)?)?;
    let keep = |rel: &[u8]| view.lookup(rel).map(|x| x.is_some()).unwrap_or(true);
    let upper = c.upper(store);
    let progress = crate::manager::units::Progress::new(
        format!("exporting {}", c.name),
        crate::manager::walk::tree_size(&upper).unwrap_or(0),
    );
    match crate::manager::tarball::write_layer_filtered(&upper, progress.wrap_write(out), Some(&keep)) {
        Ok(_) => {
            progress.finish();
            Ok(())
        }
        Err(e) => {
            progress.abandon();
            Err(e)
        }
    }
}

/// `unionfs commit NAME NEW:TAG`: the writable layer becomes a new read-only layer (markers
/// normalised), and the new image is the container's image plus that layer, its config
/// (command, environment) kept. The tag moves to it; an image it named before stays by id.
pub fn commit(store: &Store, c: &Container, new: &ImageRef) -> Result<Image, Error> {
    let view = ImageView::open(&c.lower_dirs(store)?)?;
    let keep = |rel: &[u8]| view.lookup(rel).map(|x| x.is_some()).unwrap_or(true);
    let id = layers::import_dir(store, &c.upper(store), Some(&keep))?;
    let parent = match c.image_id.as_deref().map(|i| images::resolve(store, i)) {
        Some(Ok(p)) if p.layers == c.layers => p.config_json(),
        _ => oci::new_config(
            &c.layers,
            &oci::rfc3339(c.created),
            &vec!["unionfs image import".to_string(); c.layers.len()],
        ),
    };
    let now = now_secs();
    let config = oci::child_config(&parent, &id, &oci::now_rfc3339(), &format!("unionfs commit {}", c.name));
    let img = images::create(store, oci::to_bytes(&config), now)?;
    images::tag(store, &img.id, new)?;
    images::resolve(store, &img.id)
}
