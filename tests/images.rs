//! Whole images in and out (`load`, `save`), what `image import` refuses, and the commands a
//! Docker user types (`ps -q`, `--format`, `inspect`, `tag`, `rmi`, `prune`, ...), through
//! the real binary. Archives made by real podman are in `podman.rs`.

use crate::common::*;
use crate::manager::Mgr;
use std::path::Path;
use std::process::Command;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs tar(1), which must succeed.
fn tar(args: &[&str]) {
    assert!(Command::new("tar").args(args).status().unwrap().success(), "tar {args:?}");
}

/// Stdout, stderr and success of a run.
fn run3(m: &Mgr, args: &[&str]) -> (String, String, bool) {
    let o = m.run(args);
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        o.status.success(),
    )
}

/// Nothing left behind by a failed command: no temporaries, no layers, no images.
fn store_is_empty(m: &Mgr) {
    for d in ["tmp", "layers", "imagedb", "images"] {
        let left: Vec<_> = std::fs::read_dir(m.root.join(d)).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "{d}/ holds {left:?}");
    }
}

#[test]
fn save_then_load_gives_the_same_ids_in_both_formats() {
    need_fuse!();
    let m = Mgr::new();
    m.demo_image();
    let p = m.mount_path(m.ok(&["create", "--name", "c1", "springpetclinic:1.0"]).trim());
    m.ok(&["start", "c1"]);
    std::fs::write(p.join("app/new-file"), "from the container\n").unwrap();
    std::fs::remove_file(p.join("app/app.jar")).unwrap_or(());
    m.ok(&["stop", "c1"]);
    let id = m.ok(&["commit", "c1", "spc:2"]).trim().to_string();
    let layer_ids = |m: &Mgr, r: &str| {
        let j = m.ok(&["inspect", "--type", "image", r]);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        v[0]["RootFS"]["Layers"].clone()
    };
    let layers = layer_ids(&m, "spc:2");
    assert_eq!(layers.as_array().unwrap().len(), 4);
    for format in ["oci-archive", "docker-archive"] {
        let out = m.dir.path().join(format!("{format}.tar"));
        m.ok(&["save", "--format", format, "-o", s(&out), "spc:2"]);
        let fresh = Mgr::new();
        assert_eq!(fresh.ok(&["load", "-i", s(&out)]), "Loaded image: spc:2\n", "{format}");
        assert_eq!(fresh.ok(&["images", "--format", "{{.Digest}}"]).trim(), id, "{format}: the same image id");
        assert_eq!(layer_ids(&fresh, "spc:2"), layers, "{format}: the same layer ids");
        let q = fresh.mount_path(fresh.ok(&["create", "--name", "back", "spc:2"]).trim());
        fresh.ok(&["start", "back"]);
        assert_eq!(std::fs::read_to_string(q.join("app/new-file")).unwrap(), "from the container\n");
        fresh.ok(&["rm", "-f", "back"]);
        // Loading again stores nothing twice; a gzip'd archive on standard input and -t.
        let before = std::fs::read_dir(fresh.root.join("layers")).unwrap().count();
        let gz = Command::new("sh")
            .arg("-c")
            .arg(format!("gzip -c {} | {} --root {} load -t again:1", s(&out), bin(), s(&fresh.root)))
            .output()
            .unwrap();
        assert!(gz.status.success(), "{}", String::from_utf8_lossy(&gz.stderr));
        assert_eq!(String::from_utf8_lossy(&gz.stdout), "Loaded image: again:1\n");
        assert_eq!(std::fs::read_dir(fresh.root.join("layers")).unwrap().count(), before);
    }
    m.ok(&["rm", "c1"]);
}

#[test]
fn load_checks_every_digest_and_cleans_up_after_a_failure() {
    let m = Mgr::new();
    let d = m.dir.path();
    let layer = d.join("l");
    std::fs::create_dir_all(layer.join("etc")).unwrap();
    std::fs::write(layer.join("etc/motd"), "hello\n").unwrap();
    m.ok(&["image", "import", "one:1", s(&layer)]);
    m.ok(&["save", "-o", s(&d.join("one.tar")), "one:1"]);
    // As an OCI layout directory, one blob changed: refused, naming the digest.
    let dir = d.join("layout");
    std::fs::create_dir(&dir).unwrap();
    tar(&["-xf", s(&d.join("one.tar")), "-C", s(&dir)]);
    let fresh = Mgr::new();
    assert_eq!(fresh.ok(&["load", "-i", s(&dir)]), "Loaded image: one:1\n");
    let blobs = dir.join("blobs/sha256");
    let biggest = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&biggest).unwrap();
    let at = bytes.windows(6).position(|w| w == b"hello\n").unwrap();
    bytes[at] = b'j';
    std::fs::write(&biggest, bytes).unwrap();
    let other = Mgr::new();
    std::fs::create_dir_all(&other.root).unwrap();
    let err = other.fails(&["load", "-i", s(&dir)], "not sha256:");
    assert!(err.contains("digest"), "{err}");
    store_is_empty(&other);
    // A docker-archive whose layer is a symlink to a file elsewhere in it (as docker save
    // writes a layer two images share) loads through the link, within the archive.
    m.ok(&["save", "--format", "docker-archive", "-o", s(&d.join("da.tar")), "one:1"]);
    let da = d.join("da");
    std::fs::create_dir(&da).unwrap();
    tar(&["-xf", s(&d.join("da.tar")), "-C", s(&da)]);
    let layer_tar =
        std::fs::read_dir(&da).unwrap().map(|e| e.unwrap().path()).find(|p| p.join("layer.tar").exists()).unwrap();
    std::fs::create_dir(da.join("shared")).unwrap();
    std::fs::rename(layer_tar.join("layer.tar"), da.join("shared/layer.tar")).unwrap();
    std::os::unix::fs::symlink("../shared/layer.tar", layer_tar.join("layer.tar")).unwrap();
    tar(&["-cf", s(&d.join("linked.tar")), "-C", s(&da), "."]);
    let linked = Mgr::new();
    assert_eq!(linked.ok(&["load", "-i", s(&d.join("linked.tar"))]), "Loaded image: one:1\n");
    // A link that leads outside the archive is refused.
    std::fs::remove_file(layer_tar.join("layer.tar")).unwrap();
    std::os::unix::fs::symlink("../../../../../etc/passwd", layer_tar.join("layer.tar")).unwrap();
    tar(&["-cf", s(&d.join("escape.tar")), "-C", s(&da), "."]);
    let escape = Mgr::new();
    escape.fails(&["load", "-i", s(&d.join("escape.tar"))], "leads outside it");
    // Not an archive at all.
    std::fs::write(d.join("junk"), vec![7u8; 4096]).unwrap();
    other.fails(&["load", "-i", s(&d.join("junk"))], "not a tar archive");
    let plain = d.join("plain.tar");
    tar(&["-cf", s(&plain), "-C", s(&layer), "."]);
    other.fails(&["load", "-i", s(&plain)], "not an image archive");
    store_is_empty(&other);
}

#[test]
fn image_import_refuses_what_is_not_a_layer_in_one_line() {
    let m = Mgr::new();
    let d = m.dir.path();
    let layer = d.join("l");
    std::fs::create_dir_all(layer.join("etc")).unwrap();
    std::fs::write(layer.join("etc/motd"), vec![b'm'; 100_000]).unwrap();
    m.ok(&["image", "import", "one:1", s(&layer)]);
    for format in ["oci-archive", "docker-archive"] {
        m.ok(&["save", "--format", format, "-o", s(&d.join(format)), "one:1"]);
    }
    let plain = d.join("layer.tar");
    tar(&["-cf", s(&plain), "-C", s(&layer), "."]);
    let full = std::fs::read(&plain).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &full).unwrap();
    let gz = gz.finish().unwrap();
    std::fs::write(d.join("cut.tar.gz"), &gz[..gz.len() / 2]).unwrap();
    let zst = ruzstd::encoding::compress_to_vec(&full[..], ruzstd::encoding::CompressionLevel::Fastest);
    std::fs::write(d.join("cut.tar.zst"), &zst[..zst.len() / 2]).unwrap();
    let mut random = vec![0u8; 64 << 10];
    for (i, b) in random.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] | 0x80;
    }
    std::fs::write(d.join("random"), &random).unwrap();
    std::fs::write(d.join("empty"), b"").unwrap();
    let other = Mgr::new();
    for (f, needle) in [
        ("oci-archive", "unionfs load -i"),
        ("docker-archive", "unionfs load -i"),
        ("random", "not a tar archive"),
        ("cut.tar.gz", "gzip stream is truncated or corrupt"),
        ("cut.tar.zst", "zstd stream is truncated or corrupt"),
        ("empty", "is empty"),
    ] {
        let err = other.fails(&["image", "import", "x:1", s(&d.join(f))], needle);
        assert!(err.chars().all(|c| c == '\n' || (' '..='~').contains(&c)), "{f}: printable ASCII only: {err:?}");
        assert!(!err.contains("Error {") && !err.contains("kind:"), "{f}: no debug formatting: {err}");
    }
    other.fails(&["image", "import", "x:1", "/etc/passwd"], "not a tar archive");
    store_is_empty(&other);
}

#[test]
fn raw_fixture_layers_import_with_their_specials() {
    let m = Mgr::new();
    let fx = repo().join("layers-fixtures/springpetclinic");
    let raw: Vec<String> =
        ["l3-base", "l2-runtime", "l1-app"].iter().map(|l| fx.join(l).display().to_string()).collect();
    let mut args = vec!["image", "import", "raw:1"];
    args.extend(raw.iter().map(String::as_str));
    m.ok(&args);
    m.demo_image();
    // The same layers as from `build-layers` (their times aside: each build makes its
    // directories when it runs): the opaque directory and the whiteout kept.
    assert_eq!(layer_trees(&m, "raw:1"), layer_trees(&m, "springpetclinic:1.0"));
    let trees = layer_trees(&m, "raw:1");
    assert!(trees[1].contains("usr/share/doc/base/README c 0 0"), "the whiteout: {}", trees[1]);
    assert!(trees[1].contains("var/cache/apt\n") && trees[1].contains("overlay.opaque=\"y\""), "{}", trees[1]);
}

/// Each layer of an image (bottom first) as text: every entry's path, type, mode, link
/// target, a file's size, a device's numbers, then every xattr; times left out.
pub(crate) fn layer_trees(m: &Mgr, image: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&m.ok(&["inspect", "--type", "image", image])).unwrap();
    let mut out = Vec::new();
    for dir in v[0]["LayerDirs"].as_array().unwrap() {
        let dir = dir.as_str().unwrap();
        // Sizes of regular files only (a directory's size depends on its filesystem).
        let find = Command::new("find")
            .args([".", "-mindepth", "1", "-printf", "%P %y %m %l\n", "-type", "f", "-printf", "%P size %s\n"])
            .current_dir(dir)
            .output()
            .unwrap();
        let mut lines: Vec<String> = String::from_utf8(find.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                // A device's size is its numbers: print those (stat) instead.
                let path = l.split(' ').next().unwrap_or("");
                if l.split(' ').nth(1) == Some("c") {
                    let st =
                        Command::new("stat").args(["-c", "%n c %t %T"]).arg(path).current_dir(dir).output().unwrap();
                    String::from_utf8(st.stdout).unwrap().trim().to_string()
                } else {
                    l.to_string()
                }
            })
            .collect();
        lines.sort();
        let attrs =
            Command::new("getfattr").args(["-R", "-h", "-d", "-m", "-", "."]).current_dir(dir).output().unwrap();
        out.push(format!("{}\n{}", lines.join("\n"), String::from_utf8_lossy(&attrs.stdout)));
    }
    out
}

#[test]
fn docker_verbs_quiet_format_inspect_tag_rmi_prune() {
    need_fuse!();
    let m = Mgr::new();
    m.demo_image();
    let image_id = m.ok(&["images", "-q"]);
    assert_eq!(image_id.lines().count(), 1);
    assert_eq!(m.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]), "springpetclinic:1.0\n");
    let j: serde_json::Value =
        serde_json::from_str(m.ok(&["images", "--format", "json"]).lines().next().unwrap()).unwrap();
    assert_eq!(j["Repository"], "springpetclinic");
    m.fails(&["images", "--format", "{{.Nope}}"], "no field 'Nope'");

    m.ok(&["run", "--name", "up", "springpetclinic:1.0"]);
    m.ok(&["create", "--name", "made", "springpetclinic:1.0"]);
    let up_id = m.ok(&["ps", "-q"]);
    assert_eq!(up_id.lines().count(), 1);
    assert_eq!(m.ok(&["ps", "-aq"]).lines().count(), 2);
    let mut states: Vec<String> =
        m.ok(&["ps", "-a", "--format", "{{.Names}} {{.State}}"]).lines().map(String::from).collect();
    states.sort();
    assert_eq!(states, ["made created", "up running"]);
    // start of a running container changes nothing.
    m.ok(&["start", "up"]);
    assert_eq!(m.ok(&["ps", "-q"]), up_id);
    m.ok(&["stop", "up"]);
    let ps = m.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (0) Less than a second ago") || ps.contains("Exited (0) 1 second ago"), "{ps}");
    let insp: serde_json::Value = serde_json::from_str(&m.ok(&["inspect", "up"])).unwrap();
    assert_eq!(insp[0]["Name"], "up");
    assert_eq!(insp[0]["State"]["Status"], "exited");
    assert!(insp[0]["GraphDriver"]["Data"]["UpperDir"].as_str().unwrap().ends_with("containers/up/upper"));

    // tag, then commit onto the tag moves it; the old image stays by id.
    m.ok(&["tag", "springpetclinic:1.0", "spc:latest"]);
    m.ok(&["start", "up"]);
    std::fs::write(m.mount_path("up").join("tmp/x"), "1").unwrap();
    let first = m.ok(&["commit", "up", "spc"]).trim().to_string();
    let second = m.ok(&["commit", "up", "spc"]).trim().to_string();
    assert_ne!(first, second, "a commit is a new image (its own time and history)");
    let images = m.ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.Digest}}"]);
    assert!(images.contains(&format!("spc:latest {second}")), "{images}");
    assert!(images.contains(&format!("<none>:<none> {first}")), "{images}");

    // rmi: refused while a container uses the image, -f takes the name only.
    let err = m.fails(&["rmi", "springpetclinic:1.0"], "used by container");
    assert!(err.contains("up") && err.contains("made"), "{err}");
    assert_eq!(m.ok(&["rmi", "-f", "springpetclinic:1.0"]), "Untagged: springpetclinic:1.0\n");
    assert!(m.ok(&["images", "-q"]).contains(image_id.trim()), "the image stays for its containers");

    // rm of several names: the ones that exist go, the missing one is reported, exit 1.
    let (out, err, ok) = run3(&m, &["rm", "-f", "made", "nosuch", "up"]);
    assert!(!ok);
    assert_eq!(out, "made\nup\n");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("nosuch"), "{err}");
    assert_eq!(m.ok(&["ps", "-aq"]), "");

    // prune: refused without -f when it cannot ask; then reports what went.
    m.fails(&["image", "prune"], "add -f");
    let pruned = m.ok(&["image", "prune", "-f"]);
    assert!(pruned.contains(&format!("deleted: {first}")) && pruned.contains("Total reclaimed space"), "{pruned}");
    m.ok(&["volume", "create", "v1"]);
    assert!(m.ok(&["volume", "prune", "-f"]).contains("v1"));
    assert_eq!(m.ok(&["volume", "ls", "-q"]), "");
    m.ok(&["create", "--name", "idle", "spc"]);
    assert!(m.ok(&["container", "prune", "-f"]).contains("Deleted Containers:"));
    assert_eq!(m.ok(&["ps", "-aq"]), "");
    let all = m.ok(&["image", "prune", "-a", "-f"]);
    assert!(all.contains("untagged: spc:latest"), "{all}");
    assert_eq!(m.ok(&["images", "-q"]), "");
    assert_eq!(std::fs::read_dir(m.root.join("layers")).unwrap().count(), 0);
}

#[test]
fn a_volume_on_a_file_of_the_image_is_refused() {
    need_fuse!();
    let m = Mgr::new();
    m.demo_image();
    m.fails(&["run", "-v", "data:/bin/sh", "springpetclinic:1.0"], "the image has a file at /bin/sh");
    m.fails(&["run", "-v", "data:/bin/sh/below", "springpetclinic:1.0"], "the image has a file at /bin/sh");
    assert_eq!(std::fs::read_dir(m.root.join("containers")).unwrap().count(), 0);
    let p = m.ok(&["run", "--name", "ok", "-v", "data:/srv/data", "springpetclinic:1.0"]);
    assert!(Path::new(p.trim()).join("srv/data").is_dir());
    m.ok(&["rm", "-f", "ok"]);
}

#[test]
fn usage_errors_name_what_is_wrong() {
    let m = Mgr::new();
    for (args, needles) in [
        (&["imgaes"][..], &["unrecognized subcommand 'imgaes'", "images"][..]),
        (&["exec", "c1", "sh"][..], &["unrecognized subcommand 'exec'"][..]),
        (&["run"][..], &["<IMAGE>", "Usage: unionfs run"][..]),
        (&["save", "--format", "zip", "x"][..], &["oci-archive", "docker-archive"][..]),
    ] {
        let o = m.run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        for n in needles {
            assert!(err.contains(n), "{args:?}: {err} should mention {n}");
        }
    }
    let o = Command::new(bin()).output().unwrap();
    let help = String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
    assert!(help.contains("Usage: unionfs") && help.contains("Commands:"), "bare unionfs prints the help: {help}");
    for v in ["--version", "version"] {
        let o = Command::new(bin()).arg(v).output().unwrap();
        assert!(o.status.success());
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), format!("unionfs {}", env!("CARGO_PKG_VERSION")));
    }
    // Each command's own flags have their own lines; the global options stand once, apart.
    let help = |args: &[&str]| String::from_utf8(Command::new(bin()).args(args).output().unwrap().stdout).unwrap();
    let flag = |h: String, text: &str| h.lines().any(|l| l.contains("-f, --force") && l.contains(text));
    assert!(flag(help(&["stop", "--help"]), "Detach a busy mount now"));
    assert!(flag(help(&["rm", "--help"]), "Remove running containers too"));
    for args in [&["--help"][..], &["ps", "--help"][..]] {
        let h = help(args);
        assert_eq!(h.matches("Global options:").count(), 1, "{h}");
        assert_eq!(h.matches("--root <DIR>").count(), 1, "{h}");
    }
    let lower = m.dir.path().join("l");
    std::fs::create_dir_all(&lower).unwrap();
    let o = Command::new(bin())
        .arg("mount")
        .arg("--lower")
        .arg(&lower)
        .arg("-o")
        .arg(format!("lowerdir={}", lower.display()))
        .arg(m.dir.path())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("both --lower and -o lowerdir="));
}

/// A tree with `mb` MiB of data that neither compresses nor becomes holes.
fn big_tree(at: &Path, mb: usize) {
    std::fs::create_dir_all(at.join("etc")).unwrap();
    let data: Vec<u8> = (0..mb << 20).map(|i| ((i * 7 + 3) % 251 + 1) as u8).collect();
    std::fs::write(at.join("etc/blob"), data).unwrap();
}

#[test]
fn a_full_disk_says_no_space_and_leaves_nothing_behind() {
    need_fuse!();
    need_root!();
    let m = Mgr::new();
    let d = m.dir.path();
    big_tree(&d.join("big"), 8);
    m.ok(&["image", "import", "big:1", s(&d.join("big"))]);
    m.ok(&["save", "-o", s(&d.join("big.tar")), "big:1"]);
    let disk = d.join("disk");
    let _fs = mount_tmpfs(&disk, "size=12m");
    let small = Mgr { dir: tempfile::tempdir_in(&disk).unwrap(), root: disk.join("root") };
    // A container with 8 MiB of changes fits; their copy for a commit does not.
    small.ok(&["image", "import", "base:1", s(&repo().join("layers-fixtures/basic/l1"))]);
    let p = small.mount_path(small.ok(&["create", "--name", "c", "base:1"]).trim());
    small.ok(&["start", "c"]);
    big_tree(&p, 8);
    small.ok(&["stop", "c"]);
    let before = small.ok(&["images", "--format", "{{.Digest}}"]);
    let layers_before = std::fs::read_dir(small.root.join("layers")).unwrap().count();
    for args in [
        vec!["commit", "c", "big:2"],
        vec!["image", "import", "big:1", s(&d.join("big"))],
        vec!["load", "-i", s(&d.join("big.tar"))],
    ] {
        small.fails(&args, "no space left on device");
        assert_eq!(small.ok(&["images", "--format", "{{.Digest}}"]), before, "{args:?}: no image made");
        assert_eq!(std::fs::read_dir(small.root.join("layers")).unwrap().count(), layers_before, "{args:?}");
        assert_eq!(std::fs::read_dir(small.root.join("tmp")).unwrap().count(), 0, "{args:?}: no leftovers");
    }
    // Output files on the full disk: the error says so, and no partial file is left.
    for args in [vec!["export-layer", "-o", "OUT", "c"], vec!["save", "-o", "OUT", "base:1"]] {
        let out = disk.join("out.tar");
        std::fs::write(disk.join("filler"), vec![1u8; 3 << 20]).unwrap_or(());
        let args: Vec<&str> = args.iter().map(|a| if *a == "OUT" { s(&out) } else { a }).collect();
        if args[0] == "save" {
            // Fill the disk so that even the small image does not fit.
            let free = rustix::fs::statvfs(&disk).unwrap();
            let left = free.f_bavail * free.f_frsize;
            let _ = std::fs::write(disk.join("filler2"), vec![1u8; left.saturating_sub(4096) as usize]);
        }
        small.fails(&args, "no space left on device");
        let left: Vec<_> = std::fs::read_dir(&disk)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("out.tar"))
            .collect();
        assert!(left.is_empty(), "{args:?}: partial output left: {left:?}");
    }
    small.ok(&["rm", "c"]);
}

#[test]
fn a_store_from_before_image_configs_reads_and_migrates() {
    need_fuse!();
    let m = Mgr::new();
    m.demo_image();
    // The record as versions without configs wrote it: the layers in the tag file.
    let v: serde_json::Value = serde_json::from_str(&m.ok(&["inspect", "springpetclinic:1.0"])).unwrap();
    let layers: Vec<String> =
        v[0]["RootFS"]["Layers"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().into()).collect();
    let mut old = "# unionfs image\nname: springpetclinic\ntag: 1.0\ncreated: 1700000000\n".to_string();
    for l in &layers {
        old.push_str(&format!("layer: {l}\n"));
    }
    std::fs::write(m.root.join("images/springpetclinic:1.0"), old).unwrap();
    std::fs::remove_dir_all(m.root.join("imagedb")).unwrap();
    std::fs::create_dir(m.root.join("imagedb")).unwrap();
    // Read as it is (a shared-lock command changes nothing)...
    let id = m.ok(&["images", "--format", "{{.Digest}}"]).trim().to_string();
    assert!(id.starts_with("sha256:"));
    assert_eq!(std::fs::read_dir(m.root.join("imagedb")).unwrap().count(), 0);
    // ...and rewritten, with the same id, by the next command that changes the store.
    let p = m.ok(&["run", "--name", "c", "springpetclinic:1.0"]);
    assert!(Path::new(p.trim()).join("app").is_dir());
    assert_eq!(std::fs::read_dir(m.root.join("imagedb")).unwrap().count(), 1);
    assert_eq!(m.ok(&["images", "--format", "{{.Digest}}"]).trim(), id);
    let tag = std::fs::read_to_string(m.root.join("images/springpetclinic:1.0")).unwrap();
    assert!(tag.contains(&format!("image: {id}")) && !tag.contains("layer:"), "{tag}");
    m.ok(&["rm", "-f", "c"]);
}

#[test]
fn stop_of_a_busy_container_says_what_holds_it() {
    need_fuse!();
    let m = Mgr::new();
    m.demo_image();
    let p = m.ok(&["run", "--name", "busy", "springpetclinic:1.0"]);
    let mut sleeper = Command::new("sleep").arg("600").current_dir(p.trim()).spawn().unwrap();
    let err = m.fails(&["stop", "busy"], "is busy");
    assert!(err.contains(&format!("sleep (pid {})", sleeper.id())), "{err}");
    assert!(m.ok(&["ps", "-q"]).lines().count() == 1, "still running");
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    m.ok(&["stop", "busy"]);
    m.ok(&["rm", "busy"]);
}

/// The blob of `digest` in an OCI archive.
fn blob_of(archive: &Path, digest: &str) -> Vec<u8> {
    let mut a = tar::Archive::new(std::fs::File::open(archive).unwrap());
    let want = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some(want.as_str()) {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut v).unwrap();
            return v;
        }
    }
    panic!("{want} is not in the archive");
}

#[test]
fn save_writes_foreign_layer_tarballs_back_byte_for_byte() {
    let m = Mgr::new();
    let d = m.dir.path();
    let t = d.join("tree");
    let long = "a-name-longer-than-the-hundred-bytes-a-plain-tar-header-holds-for-one-path-".repeat(2);
    std::fs::create_dir_all(t.join(&long).join("sub")).unwrap();
    std::fs::write(t.join(&long).join("sub/file"), "deep\n").unwrap();
    std::fs::write(t.join("data"), vec![5u8; 70_000]).unwrap();
    std::fs::hard_link(t.join("data"), t.join("data-link")).unwrap();
    std::os::unix::fs::symlink("data", t.join("sym")).unwrap();
    let sparse = std::fs::File::create(t.join("sparse")).unwrap();
    sparse.set_len(4 << 20).unwrap();
    std::io::Write::write_all(&mut &sparse, b"head").unwrap();
    std::fs::write(t.join(".wh.gone"), "").unwrap();
    let _ = Command::new("setfattr").args(["-n", "user.note", "-v", "kept"]).arg(t.join("data")).status();
    for (name, flags) in
        [("gnu.tar", &["--format=gnu", "--sparse"][..]), ("pax.tar", &["--format=pax", "--xattrs"][..])]
    {
        let tar = d.join(name);
        let st = Command::new("tar").args(flags).arg("-cf").arg(&tar).arg("-C").arg(&t).arg(".").status().unwrap();
        assert!(st.success());
        let id = m.ok(&["image", "import", &format!("t:{}", &name[..3]), s(&tar)]).trim().to_string();
        let v: serde_json::Value = serde_json::from_str(&m.ok(&["inspect", &format!("t:{}", &name[..3])])).unwrap();
        let layer = v[0]["RootFS"]["Layers"][0].as_str().unwrap().to_string();
        let out = d.join(format!("{name}.oci"));
        m.ok(&["save", "-o", s(&out), &id]);
        assert!(blob_of(&out, &layer) == std::fs::read(&tar).unwrap(), "{name}: the layer comes out as it went in");
    }
    // A layer whose files changed in the store cannot be written back: said so, no archive.
    let v: serde_json::Value = serde_json::from_str(&m.ok(&["inspect", "t:pax"])).unwrap();
    let dir = v[0]["LayerDirs"][0].as_str().unwrap().to_string();
    std::fs::write(Path::new(&dir).join("data"), vec![6u8; 70_000]).unwrap();
    m.fails(&["save", "-o", s(&d.join("bad.oci")), "t:pax"], "changed since it was stored");
    assert!(!d.join("bad.oci").exists());
}

#[test]
fn progress_shows_on_a_terminal_ends_at_100_percent_and_is_silent_on_a_pipe() {
    let m = Mgr::new();
    let d = m.dir.path();
    big_tree(&d.join("big"), 4);
    // On a terminal (script(1) gives the command one): the bar's last state is whole, and
    // its line ends before the id is printed.
    let cmd = format!("{} --root {} image import big:1 {}", bin(), s(&m.root), s(&d.join("big")));
    let o = Command::new("script").args(["-qec", &cmd, "/dev/null"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let tty = String::from_utf8_lossy(&o.stdout).replace('\r', "\n");
    let lines: Vec<&str> =
        tty.lines().map(|l| l.trim_start_matches("\u{1b}[2K").trim_end()).filter(|l| !l.is_empty()).collect();
    let id = lines.iter().position(|l| l.starts_with("sha256:")).unwrap_or_else(|| panic!("no id line: {tty:?}"));
    assert_eq!(lines[id].len(), 71, "the id alone on its line: {:?}", lines[id]);
    let bar = lines[id - 1];
    assert!(bar.starts_with("importing big [====="), "{bar:?}");
    let (done, total) = bar.rsplit_once("] ").unwrap().1.split_once(" / ").unwrap();
    assert_eq!(done, total, "the bar ends at 100 %: {bar:?}");
    // On a pipe: nothing but the id.
    let o = m.run(&["save", "-o", s(&d.join("x.tar")), "big:1"]);
    assert!(o.status.success() && o.stderr.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = m.run(&["load", "-i", s(&d.join("x.tar"))]);
    assert!(o.status.success() && o.stderr.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
}
