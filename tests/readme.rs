//! The README's examples (and `layers-fixtures/README.md`'s) run as written: each shell block marked `<!-- tested: NAME -->` is
//! run here with `bash -euo pipefail`, with this build first on `PATH` as `unionfs`, in a
//! scratch directory that has `layers-fixtures/`, and a scratch state root.

use crate::common::*;
use std::path::Path;
use std::process::Command;

/// The block after `<!-- tested: NAME` in the README (or, for `fixtures`, in
/// `layers-fixtures/README.md`).
fn block(name: &str) -> String {
    let file = if name == "fixtures" { "layers-fixtures/README.md" } else { "README.md" };
    let readme = std::fs::read_to_string(repo().join(file)).unwrap();
    let at = readme.find(&format!("<!-- tested: {name} ")).unwrap_or_else(|| panic!("no tested block '{name}'"));
    let rest = &readme[at..];
    let start = rest.find("```sh\n").unwrap() + 6;
    let end = rest[start..].find("```").unwrap() + start;
    rest[start..end].to_string()
}

/// Runs a README block; returns its output.
fn run_block(name: &str, dir: &Path) -> String {
    let bin_dir = dir.join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let _ = std::os::unix::fs::symlink(bin(), bin_dir.join("unionfs"));
    let _ = std::os::unix::fs::symlink(repo().join("layers-fixtures"), dir.join("layers-fixtures"));
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let o = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &block(name)])
        .current_dir(dir)
        .env("PATH", path)
        .env("UNIONFS_ROOT", dir.join("root"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "README block '{name}' failed:\n{out}\n{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// Unmounts whatever a failed block left under the scratch directory.
struct Scratch(tempfile::TempDir);

impl Drop for Scratch {
    fn drop(&mut self) {
        unmount_below(self.0.path());
    }
}

#[test]
fn the_quick_example_runs_as_written() {
    need_fuse!();
    let d = Scratch(tempfile::tempdir().unwrap());
    let out = run_block("quick", d.0.path());
    assert_eq!(out, "hello\n");
    let st = std::fs::symlink_metadata(d.0.path().join("up/main.py")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(&st.file_type()), "a whiteout");
    assert_eq!(std::fs::read_to_string(d.0.path().join("up/greeting")).unwrap(), "hello\nchanged\n");
}

#[test]
fn the_manager_example_runs_as_written() {
    need_fuse!();
    let d = Scratch(tempfile::tempdir().unwrap());
    let out = run_block("manager", d.0.path());
    assert!(out.contains("springpetclinic   1.1"), "{out}");
    assert!(out.contains("3B (virtual 384kB)"), "{out}");
    assert!(out.contains("A /tmp/greeting"), "{out}");
    assert!(out.contains("Loaded image: springpetclinic:1.1"), "{out}");
    assert!(out.contains("cont1 Up"), "{out}");
    assert!(d.0.path().join("changes.tar").is_file() && d.0.path().join("spc.tar").is_file());
}

#[test]
fn the_fixtures_example_runs_as_written() {
    let d = Scratch(tempfile::tempdir().unwrap());
    let out = run_block("fixtures", d.0.path());
    assert!(out.starts_with("sha256:"), "{out}");
    // The same image as from built layers: the whiteout and the opaque directory kept.
    let built = d.0.path().join("spc");
    unionfs::fixture::build(&repo().join("layers-fixtures/springpetclinic"), &built).unwrap();
    let root = d.0.path().join("root");
    let via_built = Command::new(bin())
        .arg("--root")
        .arg(&root)
        .args(["image", "import", "built:1"])
        .args(["l3-base", "l2-runtime", "l1-app"].map(|l| built.join(l)))
        .output()
        .unwrap();
    assert!(via_built.status.success());
    let m = crate::manager::Mgr { dir: tempfile::tempdir().unwrap(), root };
    let trees = crate::images::layer_trees(&m, "springpetclinic:1.0");
    assert_eq!(trees, crate::images::layer_trees(&m, "built:1"), "the same layers, times aside");
    assert!(d.0.path().join("basic-layers/l1").is_dir());
}

#[test]
fn install_says_where_unionfs_went_and_warns_about_another_program() {
    let d = Scratch(tempfile::tempdir().unwrap());
    let fake = d.0.path().join("fakebin");
    std::fs::create_dir(&fake).unwrap();
    std::fs::write(fake.join("unionfs"), "#!/bin/sh\necho 'unionfs-fuse version: 2.1'\n").unwrap();
    std::fs::set_permissions(fake.join("unionfs"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let prefix = d.0.path().join("prefix");
    let path = format!("{}:{}", fake.display(), std::env::var("PATH").unwrap_or_default());
    let o = Command::new(repo().join("scripts/install.sh")).env("PREFIX", &prefix).env("PATH", &path).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(out.contains(&format!("installed {}/bin/unionfs", prefix.display())), "{out}");
    assert!(err.contains(&format!("'unionfs' on your PATH is {}/unionfs, another program", fake.display())), "{err}");
    assert!(prefix.join("bin/unionfs").is_file());
}
