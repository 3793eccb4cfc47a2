//! Kernel overlayfs and unionfs side by side, each over its own copy of one lower stack
//! (`k-l0`, `k-l1`, … and `u-l0`, … in a scratch directory, topmost first): mounted, then
//! crossed (each mounts the upper the other wrote) and rotated (each upper becomes the top
//! lower of a new mount), as the kernel-equal tests and the differential judge need.

use super::Mount;
use super::oracle::{KernelMount, kernel_mount};
use std::path::PathBuf;
use std::process::Command;

/// The two mounts and their scratch directory.
pub struct Sides {
    pub dir: tempfile::TempDir,
    /// Lower layers per side.
    pub n: usize,
    /// Kept apart so the two never share a lower (a copy-up of one is not seen by the other).
    pub k: Option<KernelMount>,
    pub u: Option<Mount>,
    /// Leave the directory for a look on drop (its path is printed).
    pub keep: bool,
}

impl Sides {
    /// An empty scratch directory for `n` lower layers per side, which the caller builds at
    /// [`Sides::p`]`("k-l{i}")` and `("u-l{i}")` before [`Sides::mount`].
    pub fn new(prefix: &str, n: usize) -> Sides {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        Sides { dir, n, k: None, u: None, keep: false }
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn lowers(&self, side: &str) -> String {
        (0..self.n).map(|i| self.p(&format!("{side}-l{i}")).display().to_string()).collect::<Vec<_>>().join(":")
    }

    /// Mounts kernel overlayfs with `kopts` and unionfs with `uargs`.
    pub fn mount(&mut self, kopts: &str, uargs: &[&str]) {
        let (up, work, mnt) = (self.p("k-upper"), self.p("k-work"), self.p("k-mnt"));
        self.k = Some(kernel_mount(&self.lowers("k"), &up, &work, &mnt, kopts));
        for d in ["u-upper", "u-work", "u-mnt"] {
            std::fs::create_dir_all(self.p(d)).unwrap();
        }
        let mut args: Vec<String> = vec!["mount".into(), "--lower".into(), self.lowers("u")];
        for (flag, d) in [("--upper", "u-upper"), ("--work", "u-work")] {
            args.push(flag.into());
            args.push(self.p(d).display().to_string());
        }
        args.extend(uargs.iter().map(|s| s.to_string()));
        args.push(self.p("u-mnt").display().to_string());
        self.u = Some(Mount::new(&args, &self.p("u-mnt")));
    }

    /// The mount points: (kernel, unionfs).
    pub fn roots(&self) -> (PathBuf, PathBuf) {
        (self.k.as_ref().unwrap().0.clone(), self.u.as_ref().unwrap().path.clone())
    }

    /// Unmounts both.
    pub fn unmount(&mut self) {
        drop(self.k.take());
        if let Some(u) = self.u.take() {
            u.unmount();
        }
    }

    /// Interop: unmounts both, then kernel overlayfs mounts the upper (and work dir) unionfs
    /// wrote, and unionfs the kernel's, each over the lowers that upper was written over.
    pub fn cross(&mut self, kopts: &str, uargs: &[&str]) {
        self.unmount();
        for (a, b) in [("k-upper", "u-upper"), ("k-work", "u-work"), ("k-l", "u-l")] {
            self.rename_prefix(a, "tmp");
            self.rename_prefix(b, a);
            self.rename_prefix("tmp", b);
        }
        self.mount(kopts, uargs);
    }

    /// Renames every entry of the scratch directory named `from…` to `to…`.
    fn rename_prefix(&self, from: &str, to: &str) {
        for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix(from) {
                std::fs::rename(e.path(), self.p(&format!("{to}{rest}"))).unwrap();
            }
        }
    }

    /// Rotation: unmounts both; each upper becomes the top lower layer of a new mount of
    /// its side, over a new empty upper (as when an image is built from a container).
    pub fn rotate(&mut self, kopts: &str, uargs: &[&str]) {
        self.unmount();
        for side in ["k", "u"] {
            for i in (0..self.n).rev() {
                std::fs::rename(self.p(&format!("{side}-l{i}")), self.p(&format!("{side}-l{}", i + 1))).unwrap();
            }
            std::fs::rename(self.p(&format!("{side}-upper")), self.p(&format!("{side}-l0"))).unwrap();
            std::fs::remove_dir_all(self.p(&format!("{side}-work"))).unwrap();
        }
        self.n += 1;
        self.mount(kopts, uargs);
    }
}

impl Drop for Sides {
    fn drop(&mut self) {
        drop(self.k.take());
        drop(self.u.take());
        if self.keep {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()).keep();
            eprintln!("kept {}", kept.display());
            return;
        }
        // A lower file a test made immutable (or one a failed test left so) would keep the
        // directory from being removed.
        let _ = Command::new("chattr").arg("-R").arg("-ia").arg(self.dir.path()).output();
    }
}
