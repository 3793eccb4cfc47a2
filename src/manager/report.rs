//! `unionfs info` and `unionfs df`: the storage driver's view, as `docker info` and
//! `docker system df` print it.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use crate::error::Error;
use crate::manager::containers::{self, State};
use crate::manager::store::Store;
use crate::manager::units::Progress;
use crate::manager::units::{ago, human_size};
use crate::manager::{images, layers, volumes, walk};

/// Columns aligned like `docker`'s tables (left-aligned, three spaces apart).
pub fn table(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut w = vec![0; n];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            line.push_str(c);
            if i + 1 < r.len() {
                line.push_str(&" ".repeat(w[i] - c.chars().count() + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn backing_fs(magic: i64) -> &'static str {
    match magic {
        0xEF53 => "extfs",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x2FC1_2FC1 => "zfs",
        0x794C_7630 => "overlayfs",
        0x6573_5546 => "fuse",
        _ => "unknown",
    }
}

fn kernel_has_overlay() -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .is_ok_and(|t| t.lines().any(|l| l.split_whitespace().last() == Some("overlay")))
}

/// Whether this kernel is built with FUSE passthrough, and whether this process may use it.
fn passthrough() -> &'static str {
    let mut cfg = String::new();
    let built = match std::fs::File::open("/proc/config.gz") {
        Ok(f) => {
            flate2::read::GzDecoder::new(f).read_to_string(&mut cfg).is_ok()
                && cfg.contains("CONFIG_FUSE_PASSTHROUGH=y")
        }
        Err(_) => {
            let uname = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
            std::fs::read_to_string(format!("/boot/config-{}", uname.trim()))
                .is_ok_and(|c| c.contains("CONFIG_FUSE_PASSTHROUGH=y"))
        }
    };
    match (built, crate::sys::proc::privileged()) {
        (true, true) => "available",
        (true, false) => "in the kernel, but needs root in the initial user namespace",
        (false, _) => "not available",
    }
}

fn probe_store(store: &Store) -> (bool, bool) {
    let dir = store.root.join("tmp");
    let f = dir.join(format!(".probe-{}", std::process::id()));
    let wrote = std::fs::write(&f, b"").is_ok();
    let xattrs = wrote
        && crate::sys::open::open_plain(&f, crate::sys::open::OFlags::RDONLY, 0).is_ok_and(|fd| {
            use std::os::fd::AsFd;
            let t = crate::sys::xattr::XTarget::Fd(fd.as_fd());
            crate::sys::xattr::set(t, c"user.unionfs.probe", b"1", crate::sys::xattr::SetMode::Any).is_ok()
        });
    let d_type = wrote
        && crate::sys::open::open_dir_path(&dir)
            .and_then(|d| crate::sys::open::open_dir_for_read(&d))
            .and_then(|d| crate::sys::dir::read_all(&d))
            .is_ok_and(|es| es.iter().all(|e| e.kind.is_some()));
    let _cleanup = std::fs::remove_file(&f);
    (d_type, xattrs)
}

/// `unionfs info`.
pub fn info(store: &Store) -> Result<String, Error> {
    let cs = containers::list(store)?;
    let states: Vec<State> = cs.iter().map(containers::state).collect();
    let running = states.iter().filter(|s| **s == State::Running).count();
    let dead = states.iter().filter(|s| **s == State::Dead).count();
    let magic = crate::sys::open::open_dir_path(&store.root).and_then(|d| crate::sys::stat::fs_magic(&d)).unwrap_or(0);
    let (d_type, xattrs) = probe_store(store);
    let dialect = if crate::sys::proc::privileged() { "trusted.overlay.*" } else { "user.overlay.*" };
    let yes = |b: bool| if b { "true" } else { "false" };
    let mut s = String::new();
    s.push_str(&format!("Containers: {}\n Running: {running}\n Stopped: {}\n", cs.len(), cs.len() - running - dead));
    if dead > 0 {
        s.push_str(&format!(" Dead: {dead}\n"));
    }
    s.push_str(&format!("Images: {}\n", images::list(store)?.len()));
    s.push_str(&format!("Layers: {}\n", layers::all(store)?.len()));
    s.push_str(&format!("Volumes: {}\n", volumes::list(store)?.len()));
    s.push_str("Storage Driver: unionfs\n");
    s.push_str(&format!(" Version: {}\n", env!("CARGO_PKG_VERSION")));
    s.push_str(&format!(" Root Dir: {}\n", store.root.display()));
    s.push_str(&format!(" Backing Filesystem: {}\n", backing_fs(magic)));
    s.push_str(&format!(" Supports d_type: {}\n", yes(d_type)));
    s.push_str(&format!(" Supports xattrs: {}\n", yes(xattrs)));
    s.push_str(&format!(" Markers: whiteouts as 0/0 character devices, opaque dirs as {dialect}\n"));
    s.push_str(&format!(" Kernel overlayfs: {}\n", if kernel_has_overlay() { "available" } else { "not available" }));
    s.push_str(&format!(
        " FUSE: {}\n",
        if std::path::Path::new("/dev/fuse").exists() { "available" } else { "not available" }
    ));
    s.push_str(&format!(" FUSE passthrough: {}\n", passthrough()));
    Ok(s)
}

fn pct(part: u64, whole: u64) -> String {
    match (part * 100).checked_div(whole) {
        Some(p) => format!("{p}%"),
        None => "0%".into(),
    }
}

/// `unionfs df [-v]`.
pub fn df(store: &Store, verbose: bool) -> Result<String, Error> {
    let u = Usage::of(store)?;
    let mut out = u.summary();
    if verbose {
        out.push_str("\nImages space usage:\n\n");
        out.push_str(&u.images_table());
        out.push_str("\nContainers space usage:\n\n");
        out.push_str(&u.containers_table());
        out.push_str("\nLocal Volumes space usage:\n\n");
        out.push_str(&u.volumes_table(store));
    }
    Ok(out)
}

/// What the store holds and what uses it: images, containers and volumes with their sizes.
struct Usage {
    imgs: Vec<images::Image>,
    cs: Vec<containers::Container>,
    vols: Vec<volumes::Volume>,
    /// Each layer of an image, by id: its size.
    layer_size: HashMap<String, u64>,
    /// Each container's state and upper size.
    states: Vec<State>,
    sizes: Vec<u64>,
    /// Each volume's size, and whether a container uses it.
    vsizes: Vec<u64>,
    vused: Vec<bool>,
}

impl Usage {
    fn of(store: &Store) -> Result<Usage, Error> {
        let imgs = images::list(store)?;
        let cs = containers::list(store)?;
        let vols = volumes::list(store)?;
        let mut layer_size: HashMap<String, u64> = HashMap::new();
        for l in imgs.iter().flat_map(|i| &i.layers) {
            if !layer_size.contains_key(l) {
                layer_size.insert(l.clone(), layers::info(store, l).map(|x| x.size).unwrap_or(0));
            }
        }
        let states = cs.iter().map(containers::state).collect();
        // Walking every writable layer and volume takes a while on a big store.
        let progress = Progress::items("measuring containers and volumes", (cs.len() + vols.len()) as u64);
        let measured = |size: u64| {
            progress.add(1);
            size
        };
        let sizes = cs.iter().map(|c| measured(walk::tree_size(&c.upper(store)).unwrap_or(0))).collect();
        let vsizes = vols
            .iter()
            .map(|v| measured(volumes::data_dir(store, &v.name).and_then(|d| walk::tree_size(&d)).unwrap_or(0)))
            .collect();
        progress.finish();
        let vused = vols.iter().map(|v| volumes::users(store, &v.name).is_ok_and(|u| !u.is_empty())).collect();
        Ok(Usage { imgs, cs, vols, layer_size, states, sizes, vsizes, vused })
    }

    /// The TYPE / TOTAL / ACTIVE / SIZE / RECLAIMABLE table.
    fn summary(&self) -> String {
        let used_layers: HashSet<&String> = self.cs.iter().flat_map(|c| c.layers.iter()).collect();
        let images_size: u64 = self.layer_size.values().sum();
        let reclaim_img: u64 = self.layer_size.iter().filter(|(l, _)| !used_layers.contains(l)).map(|(_, s)| s).sum();
        let running = |s: &State| *s == State::Running;
        let c_size: u64 = self.sizes.iter().sum();
        let c_reclaim: u64 = self.sizes.iter().zip(&self.states).filter(|(_, s)| !running(s)).map(|(z, _)| z).sum();
        let v_size: u64 = self.vsizes.iter().sum();
        let v_reclaim: u64 = self.vsizes.iter().zip(&self.vused).filter(|(_, u)| !**u).map(|(z, _)| z).sum();
        let row = |kind: &str, total: usize, active: usize, size: u64, reclaim: u64| {
            vec![
                kind.to_string(),
                total.to_string(),
                active.to_string(),
                human_size(size),
                format!("{} ({})", human_size(reclaim), pct(reclaim, size)),
            ]
        };
        let active_images = self.imgs.iter().filter(|i| self.cs.iter().any(|c| images::made_from(c, i))).count();
        table(&[
            header(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]),
            row("Images", self.imgs.len(), active_images, images_size, reclaim_img),
            row("Containers", self.cs.len(), self.states.iter().filter(|s| running(s)).count(), c_size, c_reclaim),
            row("Local Volumes", self.vols.len(), self.vused.iter().filter(|u| **u).count(), v_size, v_reclaim),
        ])
    }

    /// Each image: its size, the part it shares with other images, its containers.
    fn images_table(&self) -> String {
        let mut count: HashMap<&String, usize> = HashMap::new();
        for l in self.imgs.iter().flat_map(|i| &i.layers) {
            *count.entry(l).or_default() += 1;
        }
        let size_of = |l: &String| self.layer_size.get(l).copied().unwrap_or(0);
        let mut r = vec![header(&[
            "REPOSITORY",
            "TAG",
            "IMAGE ID",
            "CREATED",
            "SIZE",
            "SHARED SIZE",
            "UNIQUE SIZE",
            "CONTAINERS",
        ])];
        for (t, i) in crate::manager::imagecmd::image_rows(&self.imgs) {
            let size: u64 = i.layers.iter().map(size_of).sum();
            let shared: u64 = i.layers.iter().filter(|l| count.get(l).copied().unwrap_or(0) > 1).map(size_of).sum();
            let users = self.cs.iter().filter(|c| images::made_from(c, i)).count();
            r.push(vec![
                t.map(|t| t.name.clone()).unwrap_or_else(|| "<none>".into()),
                t.map(|t| t.tag.clone()).unwrap_or_else(|| "<none>".into()),
                short(&i.id),
                ago(std::time::UNIX_EPOCH + std::time::Duration::from_secs(i.created)),
                human_size(size),
                human_size(shared),
                human_size(size - shared),
                users.to_string(),
            ]);
        }
        table(&r)
    }

    /// Each container: its state and upper size.
    fn containers_table(&self) -> String {
        let mut r = vec![header(&["CONTAINER ID", "IMAGE", "STATUS", "SIZE", "NAMES"])];
        for ((c, s), z) in self.cs.iter().zip(&self.states).zip(&self.sizes) {
            r.push(vec![c.id[..12].to_string(), c.image.clone(), s.word().into(), human_size(*z), c.name.clone()]);
        }
        table(&r)
    }

    /// Each volume: how many containers use it, its size.
    fn volumes_table(&self, store: &Store) -> String {
        let mut r = vec![header(&["VOLUME NAME", "LINKS", "SIZE"])];
        for (v, z) in self.vols.iter().zip(&self.vsizes) {
            let links = volumes::users(store, &v.name).map(|u| u.len()).unwrap_or(0);
            r.push(vec![v.name.clone(), links.to_string(), human_size(*z)]);
        }
        table(&r)
    }
}

/// A table's header row.
fn header(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// The 12-digit short form of an id.
pub fn short(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(&[vec!["A".into(), "BB".into()], vec!["CCC".into(), "D".into()]]);
        assert_eq!(t, "A     BB\nCCC   D\n");
    }
}
