//! fuse-overlayfs's command line, so container engines can use unionfs as their
//! `mount_program`, and `mount -t fuse.unionfs` (through `mount.fuse3`) works:
//!
//! * `unionfs -o lowerdir=A:B,upperdir=U,workdir=W[,more] MOUNTPOINT` (podman, buildah);
//! * `unionfs SOURCE MOUNTPOINT -o OPTS [-o OPTS...]` (mount.fuse3, containerd);
//! * `-f` (foreground), `-d`/`--debug` (debug, foreground), `-o` repeated or glued (`-oOPTS`).
//!
//! Either form mounts exactly like `unionfs mount`.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::config::{MountOptions, MountRequest};
use crate::error::Error;

/// Whether `args` (without the program name) are fuse-overlayfs-style rather than a
/// subcommand: they carry `-o` options (every engine and `mount.fuse3` passes its options
/// so) and the first positional argument is not one of `subcommands`. Anything else (an
/// unknown or misspelt subcommand, bare `unionfs`) goes to the normal parser.
pub fn is_compat(args: &[OsString], subcommands: &[String]) -> bool {
    if !args.iter().any(|a| a.to_string_lossy().starts_with("-o")) {
        return false;
    }
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        match s.as_ref() {
            "-o" | "--root" => {
                it.next();
            }
            s if s.starts_with('-') => {}
            s => return !subcommands.iter().any(|c| c == s),
        }
    }
    true
}

/// Parses fuse-overlayfs-style arguments into a mount request.
pub fn parse(args: &[OsString]) -> Result<MountRequest, Error> {
    let mut options = MountOptions::default();
    let mut positional: Vec<PathBuf> = Vec::new();
    let (mut foreground, mut debug) = (false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        match s.as_ref() {
            "-o" => {
                let v = it.next().ok_or_else(|| Error::msg("-o needs a value"))?;
                options.apply(&v.to_string_lossy());
            }
            "-f" | "--foreground" => foreground = true,
            "-d" | "--debug" => {
                debug = true;
                foreground = true;
            }
            // Single-threaded mode and other libfuse switches: unionfs chooses its threads.
            "-s" | "--no-allow-other" => {}
            x if x.starts_with("-o") => options.apply(&x[2..]),
            x if x.starts_with('-') => return Err(Error::msg(format!("unknown argument '{x}' (see unionfs --help)"))),
            _ => positional.push(PathBuf::from(a)),
        }
    }
    if options.debug {
        debug = true;
    }
    // Engines pass `metacopy=on` meant for kernel overlayfs, and then read the upper
    // directory themselves (to diff and commit), where a metadata-only copy would look empty:
    // in this form it is warned about and ignored, as fuse-overlayfs does.
    if options.metacopy {
        options.metacopy = false;
        options.unknown.push("metacopy=on".into());
    }
    // Likewise `index=on`: a name not linked up yet would look unchanged to such a diff.
    if options.index {
        options.index = false;
        options.unknown.push("index=on".into());
    }
    // Engines diff the upper themselves, where a redirected directory would look new and
    // empty: as fuse-overlayfs, directory renames fail with EXDEV here unless asked for.
    if options.redirect_dir.is_none() {
        options.redirect_dir = Some(false);
    }
    let mountpoint = match positional.len() {
        1 | 2 => positional.pop().unwrap_or_default(),
        0 => return Err(Error::msg("no mount point given")),
        _ => return Err(Error::msg(format!("too many arguments: {}", positional.len()))),
    };
    Ok(MountRequest {
        lower: None,
        upper: None,
        work: None,
        mountpoint,
        options,
        foreground,
        debug,
        log: None,
        volumes: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }
    fn subs() -> Vec<String> {
        ["mount", "umount", "run", "ps"].iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn recognises_the_forms() {
        assert!(is_compat(&os(&["-o", "lowerdir=/a,upperdir=/u,workdir=/w", "/mnt"]), &subs()));
        assert!(is_compat(&os(&["overlay", "/mnt", "-o", "lowerdir=/a"]), &subs()));
        assert!(is_compat(&os(&["-olowerdir=/a", "/m"]), &subs()));
        assert!(!is_compat(&os(&["mount", "--lower", "/a", "/m"]), &subs()));
        assert!(!is_compat(&os(&["--root", "/r", "ps"]), &subs()));
        assert!(!is_compat(&os(&["--help"]), &subs()));
        assert!(!is_compat(&os(&[]), &subs()));
        // A misspelt subcommand is the normal parser's to report.
        assert!(!is_compat(&os(&["imgaes"]), &subs()));
        assert!(!is_compat(&os(&["exec", "c1", "sh"]), &subs()));
    }

    #[test]
    fn podman_form() {
        let r = parse(&os(&["-o", "lowerdir=/l1:/l2,upperdir=/u,workdir=/w,,volatile", "/merged"])).unwrap();
        assert_eq!(r.mountpoint, PathBuf::from("/merged"));
        assert_eq!(r.options.lowerdir.as_deref(), Some("/l1:/l2"));
        assert!(r.options.volatile && !r.foreground);
        // The engine's kernel-only metacopy=on is ignored (with a warning) in this form.
        let r = parse(&os(&["-o", "lowerdir=/l1,upperdir=/u,workdir=/w,metacopy=on", "/merged"])).unwrap();
        assert!(!r.options.metacopy);
        assert_eq!(r.options.unknown, ["metacopy=on"]);
        // Directory renames are EXDEV in this form unless asked for.
        assert_eq!(r.options.redirect_dir, Some(false));
        let r = parse(&os(&["-o", "lowerdir=/l1,upperdir=/u,workdir=/w,redirect_dir=on", "/merged"])).unwrap();
        assert_eq!(r.options.redirect_dir, Some(true));
    }

    #[test]
    fn mount_fuse3_and_containerd_forms() {
        let r = parse(&os(&["none", "/mnt", "-o", "rw,lowerdir=/a,upperdir=/u,workdir=/w,dev,suid"])).unwrap();
        assert_eq!(r.mountpoint, PathBuf::from("/mnt"));
        assert_eq!(r.options.nodev, Some(false));
        let r =
            parse(&os(&["overlay", "/t", "-o", "lowerdir=/a", "-o", "upperdir=/u", "-o", "workdir=/w", "-f"])).unwrap();
        assert_eq!(r.options.workdir, Some(PathBuf::from("/w")));
        assert!(r.foreground);
        let r = parse(&os(&["-d", "-olowerdir=/a", "/t"])).unwrap();
        assert!(r.debug && r.foreground);
    }

    #[test]
    fn bad_forms() {
        assert!(parse(&os(&["-o", "lowerdir=/a"])).is_err());
        assert!(parse(&os(&["a", "b", "c"])).is_err());
        assert!(parse(&os(&["-x", "/m"])).is_err());
        assert!(parse(&os(&["/m", "-o"])).is_err());
    }
}
