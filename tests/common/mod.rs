//! Shared test harness: build fixtures, mount for real through FUSE, dump trees, and always
//! unmount (the `Mount` guard unmounts on drop, also when a test fails).

pub mod core;
pub mod oracle;
pub mod scenario;
pub mod sides;

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The binary under test.
/// Whether mounts made by this process get FUSE passthrough (as `unionfs info` reports it).
pub fn passthrough_available() -> bool {
    let root = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin()).arg("--root").arg(root.path()).arg("info").output().unwrap();
    String::from_utf8_lossy(&out.stdout).contains("FUSE passthrough: available")
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_unionfs")
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether this process is root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether FUSE mounts can be made here.
pub fn fuse_available() -> bool {
    let dev = std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse").is_ok();
    dev && (is_root() || Path::new("/usr/bin/fusermount3").exists() || Path::new("/bin/fusermount3").exists())
}

/// The switch that refuses skips: under `UNIONFS_TEST_REQUIRE=all` (the test command sets it)
/// a test that cannot run here fails instead of passing without having run.
pub const REQUIRE_ENV: &str = "UNIONFS_TEST_REQUIRE";

/// What a test that cannot run here does before it returns: says why on the terminal (past
/// the test harness's capture, so a skip never reads as a plain pass), or, under
/// [`REQUIRE_ENV`]`=all`, fails.
pub fn skip(reason: &str) {
    if std::env::var(REQUIRE_ENV).as_deref() == Ok("all") {
        panic!("this test cannot run here: {reason} ({REQUIRE_ENV}=all refuses skips)");
    }
    use std::io::Write;
    let name = std::thread::current().name().unwrap_or("a test").to_string();
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {name}: {reason}");
}

/// Skips the test (see [`skip`]) with a reason, and returns.
#[macro_export]
macro_rules! skip {
    ($($reason:tt)*) => {{
        $crate::common::skip(&format!($($reason)*));
        return;
    }};
}

/// Skips the test when FUSE is unusable here. Also holds the machine for the rest of the
/// test (see [`machine`]).
#[macro_export]
macro_rules! need_fuse {
    () => {
        let _machine = $crate::common::machine(module_path!());
        if !$crate::common::fuse_available() {
            $crate::skip!("FUSE is not usable here (/dev/fuse, fusermount3)");
        }
    };
}

/// Held by every test that mounts: shared, except by the tests of the modules in [`ALONE`],
/// which change what every mount on the machine does (FUSE over io_uring switched on for
/// the whole kernel) and so run while no other test mounts.
static MACHINE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Modules whose tests hold the machine alone (`setup_errors` closes `/dev/fuse` to users).
const ALONE: &[&str] = &["::uring", "::setup_errors"];

/// The machine, held as the test's module needs it (a test that failed holding it does
/// not keep the others from running).
pub enum Machine {
    // The guards are held for their drop, never read.
    Shared(#[allow(dead_code)] std::sync::RwLockReadGuard<'static, ()>),
    Alone(#[allow(dead_code)] std::sync::RwLockWriteGuard<'static, ()>),
}

/// Takes the machine for a test of module `module` (its `module_path!()`).
pub fn machine(module: &str) -> Machine {
    if ALONE.iter().any(|m| module.ends_with(m)) {
        Machine::Alone(MACHINE.write().unwrap_or_else(std::sync::PoisonError::into_inner))
    } else {
        Machine::Shared(MACHINE.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// The full name of test `name` of the calling module, as the test binary lists it (for
/// running it alone in another process: [`one_test`]).
#[macro_export]
macro_rules! test_name {
    ($name:literal) => {
        &format!("{}::{}", module_path!().split_once("::").map_or("", |(_, m)| m), $name)
    };
}

/// Skips the test unless running as root (kernel overlayfs, trusted xattrs, chown).
#[macro_export]
macro_rules! need_root {
    () => {
        if !$crate::common::is_root() {
            $crate::skip!("it needs root");
        }
    };
}

impl Drop for Stack {
    /// A mount still on the stack's mount point (its guard dropped after the stack, or a
    /// test that failed before it unmounted) is detached first, so that the scratch
    /// directory is removed whole.
    fn drop(&mut self) {
        // Not canonicalize(mnt): a mount whose daemon died answers ENOTCONN.
        let Some(name) = self.mnt.file_name() else { return };
        if let Ok(dir) = std::fs::canonicalize(self.mnt.parent().unwrap_or(self.dir.path()))
            && is_mounted(&dir.join(name))
        {
            let mnt = dir.join(name);
            if rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::DETACH).is_err() {
                let _ = Command::new("fusermount3").args(["-u", "-z"]).arg(&mnt).status();
            }
        }
    }
}

/// Skips the test when the binary has no test hooks (`src/hooks.rs`: built without the
/// `test-hooks` feature, which the test command turns on).
#[macro_export]
macro_rules! need_hooks {
    () => {
        if !unionfs::hooks::ENABLED {
            $crate::skip!("it needs the test hooks: cargo test --features test-hooks");
        }
    };
}

/// Waits until `cond` holds, polling; fails naming `what` after a minute. The minute is the
/// bound of a hung test, not a measure: a loaded machine stretches every step, and how
/// fast something happens belongs in `scripts/bench.sh`.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "{what}: not seen in a minute");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A scratch directory with a layer stack and a mount point.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub mnt: PathBuf,
}

impl Stack {
    /// Builds `layers-fixtures/<name>` with the project's fixture builder.
    pub fn fixture(name: &str) -> Stack {
        let dir = tempfile::Builder::new().prefix("unionfs-test-").tempdir().unwrap();
        let lowers =
            unionfs::fixture::build(&repo().join("layers-fixtures").join(name), &dir.path().join("layers")).unwrap();
        Self::finish(dir, lowers)
    }

    /// `n` empty lower layers.
    pub fn empty(n: usize) -> Stack {
        let dir = tempfile::Builder::new().prefix("unionfs-test-").tempdir().unwrap();
        let lowers: Vec<PathBuf> = (1..=n).map(|i| dir.path().join(format!("layers/l{i}"))).collect();
        for l in &lowers {
            std::fs::create_dir_all(l).unwrap();
        }
        Self::finish(dir, lowers)
    }

    fn finish(dir: tempfile::TempDir, lowers: Vec<PathBuf>) -> Stack {
        let upper = dir.path().join("upper");
        let work = dir.path().join("work");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&upper).unwrap();
        std::fs::create_dir(&work).unwrap();
        std::fs::create_dir(&mnt).unwrap();
        Stack { dir, lowers, upper, work, mnt }
    }

    /// A lower layer by index (0 = topmost).
    pub fn lower(&self, i: usize) -> &Path {
        &self.lowers[i]
    }

    /// The `--lower` argument.
    pub fn lower_arg(&self) -> String {
        self.lowers.iter().map(|p| p.to_str().unwrap().replace(':', "\\:")).collect::<Vec<_>>().join(":")
    }

    /// Mounts lowers + upper + work at `mnt`.
    pub fn mount(&self) -> Mount {
        self.mount_with(&[])
    }

    /// Mounts with extra arguments.
    pub fn mount_with(&self, extra: &[&str]) -> Mount {
        Mount::new(&self.mount_args(extra), &self.mnt)
    }

    /// Mounts with `extra` arguments, the daemon started with variables `env` (test hooks).
    pub fn mount_with_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Mount {
        Mount::new_with_env(&self.mount_args(extra), &self.mnt, env)
    }

    /// The arguments of `unionfs` that mount lowers + upper + work at `mnt` with `extra`.
    fn mount_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec!["mount".into(), "--lower".into(), self.lower_arg()];
        args.extend([
            "--upper".into(),
            self.upper.display().to_string(),
            "--work".into(),
            self.work.display().to_string(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(self.mnt.display().to_string());
        args
    }

    /// The `unionfs mount` command for this stack with `extra` arguments, not run yet (for
    /// callers that set the daemon's environment).
    pub fn mount_command(&self, extra: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(self.mount_args(extra));
        c
    }

    /// Mounts the lowers only (read-only).
    pub fn mount_ro(&self) -> Mount {
        let args = vec!["mount".into(), "--lower".into(), self.lower_arg(), self.mnt.display().to_string()];
        Mount::new(&args, &self.mnt)
    }

    /// A path inside the mount.
    pub fn m(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// A path inside the upper layer.
    pub fn u(&self, rel: &str) -> PathBuf {
        self.upper.join(rel)
    }
}

/// A live union mount; unmounts on drop, whatever happened.
pub struct Mount {
    pub path: PathBuf,
    live: bool,
}

impl Mount {
    /// Runs `unionfs ARGS` and expects a live mount at `path`.
    pub fn new(args: &[String], path: &Path) -> Mount {
        Mount::new_with_env(args, path, &[])
    }

    /// Runs `unionfs ARGS` with variables `env` set and expects a live mount at `path`.
    pub fn new_with_env(args: &[String], path: &Path, env: &[(&str, &str)]) -> Mount {
        let out = Command::new(bin()).args(args).envs(env.iter().copied()).output().unwrap();
        if !out.status.success() {
            let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            panic!(
                "mount failed: {:?}\nstderr: {}\nmount table:\n{}",
                args,
                String::from_utf8_lossy(&out.stderr),
                table
            );
        }
        let path = std::fs::canonicalize(path).unwrap();
        assert!(is_mounted(&path), "unionfs mount returned 0 but {path:?} is not mounted");
        Mount { path, live: true }
    }

    /// Takes charge of a mount made some other way (it is unmounted on drop).
    pub fn adopt(path: &Path) -> Mount {
        Mount { path: path.to_path_buf(), live: true }
    }

    /// Unmounts now, expecting success. A mount reported busy is tried again for a while:
    /// tests run on threads of one process, and a child another test spawns holds a copy of
    /// every descriptor open at that moment (one of ours, in this mount, too) until it has
    /// started its program, which a loaded machine delays; nothing of this test holds it.
    pub fn unmount(mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let out = loop {
            let out = Command::new(bin()).arg("umount").arg(&self.path).output().unwrap();
            let busy = String::from_utf8_lossy(&out.stderr).contains("is busy");
            if out.status.success() || !busy || std::time::Instant::now() >= deadline {
                break out;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        // On failure the guard stays live, so Drop still detaches the mount.
        assert!(out.status.success(), "umount failed: {}", String::from_utf8_lossy(&out.stderr));
        self.live = false;
        assert!(!is_mounted(&self.path));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if !self.live {
            return;
        }
        let ok =
            Command::new(bin()).arg("umount").arg(&self.path).output().map(|o| o.status.success()).unwrap_or(false);
        if !ok && is_mounted(&self.path) {
            // Lazy detach so a failing test never leaves a mount behind.
            let _ignored = Command::new(bin()).args(["umount", "--lazy"]).arg(&self.path).status();
            if is_mounted(&self.path) {
                let _ignored = rustix::mount::unmount(&self.path, rustix::mount::UnmountFlags::DETACH);
            }
        }
    }
}

/// The process id of the daemon serving the mount at `path`.
pub fn daemon_pid(path: &Path) -> Option<u32> {
    let want = path.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let daemon = args.first().is_some_and(|a| a.ends_with(b"unionfs"));
        (daemon && args.contains(&want)).then_some(pid)
    })
}

/// Waits up to 5 s for process `pid` to end (gone, or a zombie); whether it did.
pub fn exits_soon(pid: u32) -> bool {
    exits_soon_ms(pid, 5000)
}

/// Waits up to `ms` for process `pid` to end (gone, or a zombie); whether it did.
pub fn exits_soon_ms(pid: u32, ms: u64) -> bool {
    (0..ms.div_ceil(20)).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| st.contains(") Z "))
    })
}

/// Whether `path` is a mount point of type fuse.unionfs.
pub fn is_mounted(path: &Path) -> bool {
    let t = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    unionfs::mounts::parse(&t).iter().any(|m| m.mount_point == path && m.fstype == unionfs::mounts::FSTYPE)
}

/// The errno of a failed call (0 for success).
pub fn errno<T>(r: io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// Reads a file as a string.
pub fn read(p: impl AsRef<Path>) -> String {
    std::fs::read_to_string(p.as_ref()).unwrap_or_else(|e| panic!("read {:?}: {e}", p.as_ref()))
}

/// Writes a file.
pub fn write(p: impl AsRef<Path>, s: &str) {
    std::fs::write(p.as_ref(), s).unwrap_or_else(|e| panic!("write {:?}: {e}", p.as_ref()))
}

/// Sorted names in a directory.
pub fn ls(p: impl AsRef<Path>) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(p.as_ref()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// Whether `WORK/work` is empty within 5 s: the daemon removes what a removed directory
/// leaves there after answering (`src/union/reap.rs`).
pub fn work_dir_empties(work: &Path) -> bool {
    (0..250).any(|i| {
        if i > 0 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::fs::read_dir(work.join("work")).unwrap().next().is_none()
    })
}

/// Gets an xattr (`None` if absent).
pub fn getxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65536];
    match rustix::fs::lgetxattr(p, name, &mut buf[..]) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

/// Lists xattr names.
pub fn listxattr(p: &Path) -> Vec<String> {
    let mut buf = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(p, &mut buf[..]).unwrap_or(0);
    let mut v: Vec<String> = buf[..n]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    v.sort();
    v
}

/// Sets an xattr.
pub fn setxattr(p: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty()).map_err(io::Error::from)
}

pub fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// A stable text dump of a tree: one line per entry with type, permissions, owner, size,
/// content digest or link target, and `user.*` xattrs. Directory sizes and times are left
/// out (they legitimately differ between filesystems).
pub fn tree(root: &Path) -> String {
    let mut lines = BTreeMap::new();
    walk(root, root, &mut lines, true);
    lines.into_values().collect::<Vec<_>>().join("\n")
}

/// [`tree`] without owners (for comparing across user namespaces, where ids differ).
pub fn tree_no_owners(root: &Path) -> String {
    let mut lines = BTreeMap::new();
    walk(root, root, &mut lines, false);
    lines.into_values().collect::<Vec<_>>().join("\n")
}

/// The letter `ls -l` shows for a file type (`d`, `l`, `f` for a regular file, `p`, `s`, `c`, `b`).
pub fn kind_letter(ft: std::fs::FileType) -> char {
    if ft.is_dir() {
        'd'
    } else if ft.is_symlink() {
        'l'
    } else if ft.is_file() {
        'f'
    } else if ft.is_fifo() {
        'p'
    } else if ft.is_socket() {
        's'
    } else if ft.is_char_device() {
        'c'
    } else {
        'b'
    }
}

fn walk(root: &Path, p: &Path, out: &mut BTreeMap<Vec<u8>, String>, owners: bool) {
    let meta = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {p:?}: {e}"));
    let rel = p.strip_prefix(root).unwrap();
    let name = if rel.as_os_str().is_empty() { ".".to_string() } else { rel.to_string_lossy().into_owned() };
    let ft = meta.file_type();
    let kind = kind_letter(ft);
    let mut line = format!("{name} {kind} {:o}", meta.mode() & 0o7777);
    if owners {
        line.push_str(&format!(" {}:{}", meta.uid(), meta.gid()));
    }
    if ft.is_file() {
        let data = std::fs::read(p).unwrap();
        line.push_str(&format!(" size={} #{:016x} nlink={}", data.len(), fnv(&data), meta.nlink()));
    } else if ft.is_symlink() {
        line.push_str(&format!(" -> {}", std::fs::read_link(p).unwrap().display()));
    } else if ft.is_char_device() || ft.is_block_device() {
        line.push_str(&format!(" rdev={}", meta.rdev()));
    }
    if !ft.is_symlink() {
        let xs: Vec<String> = listxattr(p)
            .into_iter()
            .filter(|n| n.starts_with("user."))
            .map(|n| {
                let v = getxattr(p, &n).unwrap_or_default();
                format!("{n}={}", String::from_utf8_lossy(&v))
            })
            .collect();
        if !xs.is_empty() {
            line.push_str(&format!(" [{}]", xs.join(",")));
        }
    }
    out.insert(rel.as_os_str().as_bytes().to_vec(), line);
    if ft.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        for n in names {
            walk(root, &p.join(n), out, owners);
        }
    }
}

/// Whether a name is visible in a directory listing.
pub fn listed(dir: &Path, name: &str) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| e.unwrap().file_name() == OsStr::new(name))
}

/// The unprivileged user tests switch to.
pub const TEST_USER: &str = "unionfs-tester";

/// As root: makes sure the test user exists and may use FUSE (`/dev/fuse` mode 666, the
/// setuid `fusermount3`); returns its uid and gid.
pub fn ensure_test_user() -> (u32, u32) {
    static ONCE: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    *ONCE.get_or_init(make_test_user)
}

fn make_test_user() -> (u32, u32) {
    assert!(is_root());
    let exists = Command::new("id").arg(TEST_USER).output().map(|o| o.status.success()).unwrap_or(false);
    if !exists {
        let st = Command::new("useradd").args(["-M", "-s", "/usr/sbin/nologin", TEST_USER]).status().unwrap();
        assert!(st.success(), "useradd {TEST_USER}");
    }
    let id = |flag: &str| -> u32 {
        let o = Command::new("id").args([flag, TEST_USER]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
    };
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(0o666)).unwrap();
    (id("-u"), id("-g"))
}

/// Runs this test binary's test `name` as the test user, with `env` set; returns its output.
pub fn run_test_as_user(name: &str, uid: u32, gid: u32, env: &[(&str, &Path)]) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(one_test(name)).uid(uid).gid(gid).env_remove("XDG_RUNTIME_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    ran_one(name, cmd.output().unwrap())
}

/// The arguments that make a test binary run its test `name` alone, ignored or not (the
/// unprivileged halves are `#[ignore]`d: they run only when their outer test starts them).
pub fn one_test(name: &str) -> [&str; 5] {
    ["--exact", name, "--include-ignored", "--nocapture", "--test-threads=1"]
}

/// `out`, after checking that a run that exited 0 did run its one test (a name that
/// matched nothing would pass without running anything).
pub fn ran_one(name: &str, out: std::process::Output) -> std::process::Output {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() || stdout.contains(" 1 passed;"), "the inner test {name} did not run:\n{stdout}");
    out
}

/// The first block of subordinate ids the test user has in `file` (`/etc/subuid` or
/// `/etc/subgid`): (first, count). `useradd` gives every new user one on Debian.
pub fn subordinate_ids(file: &str) -> (u32, u32) {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let line = text.lines().find_map(|l| l.strip_prefix(&format!("{TEST_USER}:")));
    let line = line.unwrap_or_else(|| panic!("{TEST_USER} has no subordinate ids in {file}"));
    let (first, count) = line.split_once(':').unwrap();
    (first.parse().unwrap(), count.parse().unwrap())
}

/// Runs this test binary's test `name` as the test user inside a new user and mount
/// namespace that maps it to root and its subordinate ids to 1… (as rootless podman runs its
/// mount program), with `flag` set in the environment so the test knows it is the inner run.
pub fn run_test_in_userns(name: &str, flag: &str) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let (uid, gid) = ensure_test_user();
    let map = |file: &str| {
        let (first, count) = subordinate_ids(file);
        format!("{first},1,{}", count.min(65535))
    };
    let mut cmd = Command::new("unshare");
    cmd.arg("--map-root-user")
        .arg(format!("--map-users={}", map("/etc/subuid")))
        .arg(format!("--map-groups={}", map("/etc/subgid")))
        .args(["--mount", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(one_test(name))
        .uid(uid)
        .gid(gid)
        .env_remove("XDG_RUNTIME_DIR")
        .env(flag, "1");
    ran_one(name, cmd.output().unwrap())
}

/// For a test that runs in a user namespace as the test user (see [`run_test_in_userns`]):
/// in that inner run (`flag` set) returns true, and the test goes on; outside, runs test
/// `name` there, fails unless it passed, prints the lines of its output that start with
/// `show`, and returns false.
pub fn in_userns(name: &str, flag: &str, show: &str) -> bool {
    if std::env::var_os(flag).is_some() {
        return true;
    }
    let out = run_test_in_userns(name, flag);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Indented, so that the inner run's own summary is not read as this binary's.
    let indent = |t: &str| t.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n");
    assert!(out.status.success(), "{name} failed in a user namespace:\n{}\n{}", indent(&stdout), indent(&stderr));
    stdout.lines().filter(|l| !show.is_empty() && l.contains(show)).for_each(|l| println!("{l}"));
    false
}

/// A scratch directory the test user owns.
pub fn user_tempdir(uid: u32, gid: u32) -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix("unionfs-user-").tempdir().unwrap();
    std::os::unix::fs::chown(d.path(), Some(uid), Some(gid)).unwrap();
    d
}

/// A filesystem mounted for one test, unmounted (lazily) on drop, and its image file, if
/// any, removed.
pub struct FsMount(pub PathBuf, pub Option<PathBuf>);

impl Drop for FsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        if let Some(img) = &self.1 {
            let _ = std::fs::remove_file(img);
        }
    }
}

/// An ext4 filesystem in an image file of its own (needs root): mounted through a loop
/// device, it can be unmounted for good and mounted again with nothing of it cached.
pub struct Ext4Image {
    img: PathBuf,
    /// Where [`Ext4Image::mount`] mounts it.
    pub at: PathBuf,
}

impl Ext4Image {
    /// A fresh filesystem of `mb` MiB in `dir/NAME.img`, to be mounted on `dir/NAME`.
    pub fn new(dir: &Path, name: &str, mb: u64) -> Ext4Image {
        let img = dir.join(format!("{name}.img"));
        std::fs::File::create(&img).unwrap().set_len(mb << 20).unwrap();
        assert!(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img).status().unwrap().success());
        let at = dir.join(name);
        std::fs::create_dir(&at).unwrap();
        Ext4Image { img, at }
    }

    /// Mounts it with `opts` (may be empty) through a loop device attached afresh, which
    /// goes away when it is unmounted.
    ///
    /// Not `mount -o loop`: that reuses a loop device still attached to the image (one that
    /// something held open when the last mount of it went), and with it every block of the
    /// filesystem that device had cached.
    pub fn mount(&self, opts: &str) -> FsMount {
        let out = Command::new("losetup").args(["--find", "--show"]).arg(&self.img).output().unwrap();
        assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
        let dev = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let mut mount = Command::new("mount");
        if !opts.is_empty() {
            mount.args(["-o", opts]);
        }
        let st = mount.arg(&dev).arg(&self.at).status().unwrap();
        // Detaching a device in use only marks it to go with its last user: the mount.
        let detached = Command::new("losetup").arg("-d").arg(&dev).status().unwrap();
        assert!(st.success(), "mount -o {opts} {dev} ({})", self.img.display());
        assert!(detached.success(), "losetup -d {dev}");
        FsMount(self.at.clone(), None)
    }

    /// Unmounts `fs` for good (not lazily) and mounts it again with `opts`: nothing of it
    /// is cached then.
    pub fn remount_cold(&self, fs: FsMount, opts: &str) -> FsMount {
        std::mem::forget(fs);
        unmount_for_good(&self.at);
        self.mount(opts)
    }
}

/// Field `key` of `/proc/PID/FILE` (`status`, `io`) as a number.
pub fn proc_number(pid: u32, file: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    let value = text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':'));
    value.unwrap_or_else(|| panic!("no {key} in /proc/{pid}/{file}")).trim().parse().unwrap()
}

/// Unmounts `at` (not lazily: its filesystem is gone when this returns), trying again
/// while another program holds it for a moment (`stress-ng --io` opens every mount point to
/// `syncfs` it; file managers and indexers do the like).
pub fn unmount_for_good(at: &Path) {
    wait_for(&format!("{} to be unmounted", at.display()), || {
        match rustix::mount::unmount(at, rustix::mount::UnmountFlags::empty()) {
            Ok(()) => true,
            Err(rustix::io::Errno::BUSY) => false,
            Err(e) => panic!("umount {}: {e}", at.display()),
        }
    });
}

/// Detaches every mount at or below `dir` (what a failing test left mounted there).
pub fn unmount_below(dir: &Path) {
    let t = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for m in unionfs::mounts::parse(&t) {
        if m.mount_point.starts_with(dir) {
            let _ignored = rustix::mount::unmount(&m.mount_point, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

/// Mounts a tmpfs with `opts` (may be empty) at `at`.
pub fn mount_tmpfs(at: &Path, opts: &str) -> FsMount {
    std::fs::create_dir_all(at).unwrap();
    let mut cmd = Command::new("mount");
    cmd.args(["-t", "tmpfs"]);
    if !opts.is_empty() {
        cmd.args(["-o", opts]);
    }
    assert!(cmd.arg("tmpfs").arg(at).status().unwrap().success(), "mount tmpfs -o {opts}");
    FsMount(at.to_path_buf(), None)
}

/// A stack whose bottom layer is another unionfs mount (the gate), whose daemon a test
/// stops to hold every request that reaches that layer: an order the test controls, where
/// waiting for a time would only guess (a loaded machine stretches every request). Fields
/// drop in order: the mount under test before the gate.
pub struct Gated {
    pub m: Mount,
    pub s: Stack,
    pub gate_m: Mount,
    /// The gate's layers, kept for as long as its mount.
    _gate: Stack,
}

impl Gated {
    /// A one-layer stack (its lower made by `top`) over the gate (made by `bottom`), mounted
    /// with `-o opts`; the gate without passthrough, so its daemon serves every read.
    /// The daemon under test is started with variables `env` (test hooks).
    pub fn with_env(top: impl FnOnce(&Path), bottom: impl FnOnce(&Path), opts: &str, env: &[(&str, &str)]) -> Gated {
        let gate = Stack::empty(1);
        bottom(gate.lower(0));
        let gate_m = gate.mount_with(&["-o", "nopassthrough,nouring"]);
        let mut s = Stack::empty(1);
        top(s.lower(0));
        s.lowers.push(gate_m.path.clone());
        let m = if opts.is_empty() { s.mount_with_env(&[], env) } else { s.mount_with_env(&["-o", opts], env) };
        Gated { m, s, gate_m, _gate: gate }
    }

    /// Closes the gate: stops its daemon (the guard lets it go on, also when a test fails).
    pub fn close(&self) -> Continue {
        stop(daemon_pid(&self.gate_m.path).expect("the gate's daemon"))
    }

    /// Waits (up to a minute: a bound for a hung test, not a measure) until `n` threads of
    /// the daemon under test wait at the closed gate: inside a system call whose first
    /// argument is a descriptor of the gate mount (an `openat` in one of its directories, a
    /// read or copy of one of its files).
    pub fn wait_until_held(&self, n: usize) {
        let pid = daemon_pid(&self.m.path).expect("the daemon under test");
        let gate = std::fs::canonicalize(&self.gate_m.path).unwrap();
        let held = || {
            let at_gate = |t: &std::fs::DirEntry| {
                let call = std::fs::read_to_string(t.path().join("syscall")).unwrap_or_default();
                let Some(fd) =
                    call.split(' ').nth(1).and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
                else {
                    return false;
                };
                std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).is_ok_and(|p| p.starts_with(&gate))
            };
            std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten().filter(at_gate).count()
        };
        wait_for(&format!("{n} requests held at the gate"), || held() >= n);
    }
}

/// Runs `work` in a thread and waits up to a minute (the bound of a hung test, not a measure)
/// for it to finish: whether it did, and the thread, to join once what held it is let go (a
/// failure in `work` shows at that join).
pub fn bounded(work: impl FnOnce() + Send + 'static) -> (bool, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        work();
        let _ = tx.send(());
    });
    (rx.recv_timeout(std::time::Duration::from_secs(60)).is_ok(), t)
}

/// Copy-ups beside other requests, in a mount made with `-o opts`: `n` lower files of `mib`
/// MiB behind a closed gate ([`Gated`]) and 400 small ones above it. Starts a copy-up of each
/// big file (append one byte) and, once copy-ups wait at the gate, reads every small file and
/// writes and `fsync`s a new one: all must be answered while no copy-up can finish. Then
/// opens the gate and checks that the copies are whole. Returns the stacks and mounts for
/// more checks.
pub fn copy_ups_beside_reads(n: usize, mib: usize, opts: &str) -> Gated {
    copy_ups_beside_reads_with_env(n, mib, opts, &[])
}

/// [`copy_ups_beside_reads`], the daemon under test started with variables `env`.
pub fn copy_ups_beside_reads_with_env(n: usize, mib: usize, opts: &str, env: &[(&str, &str)]) -> Gated {
    use std::io::Write;
    let block: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let small = |l: &Path| {
        for i in 0..400 {
            std::fs::write(l.join(format!("small{i}")), format!("{i}")).unwrap();
        }
    };
    let big = |l: &Path| {
        for i in 0..n {
            let mut f = std::fs::File::create(l.join(format!("big{i}"))).unwrap();
            for _ in 0..mib {
                f.write_all(&block).unwrap();
            }
        }
    };
    let g = Gated::with_env(small, big, opts, env);
    // Looked up before the gate closes: what waits there is the copy-up.
    for i in 0..n {
        std::fs::metadata(g.s.m(&format!("big{i}"))).unwrap();
    }
    // Made before too (a new name is looked up in every layer, the gate's as well).
    let mut fresh = std::fs::File::create(g.s.m("fresh")).unwrap();
    let cont = g.close();
    let copies: Vec<_> = (0..n)
        .map(|i| {
            let p = g.s.m(&format!("big{i}"));
            std::thread::spawn(move || {
                let mut f = std::fs::OpenOptions::new().append(true).open(p).unwrap();
                f.write_all(b"!").unwrap();
            })
        })
        .collect();
    g.wait_until_held(n.min(2));
    // In a thread, so that reads held up too are a failure here, not a test that hangs.
    let root = g.m.path.clone();
    let (answered, reads) = bounded(move || {
        for i in 0..400 {
            assert_eq!(read(root.join(format!("small{i}"))), i.to_string());
        }
        // A slow request of its own (fsync runs where copy-ups do) for an upper file.
        fresh.write_all(b"durable").unwrap();
        fresh.sync_all().unwrap();
    });
    let finished = copies.iter().filter(|c| c.is_finished()).count();
    drop(cont);
    reads.join().unwrap();
    for c in copies {
        c.join().unwrap();
    }
    assert!(
        answered,
        "400 small reads and an fsync beside {n} copy-ups held at the gate were not answered in a minute"
    );
    assert_eq!(finished, 0, "copy-ups finished while their lower layer was stopped");
    for i in 0..n {
        assert_eq!(std::fs::metadata(g.s.u(&format!("big{i}"))).unwrap().len(), ((mib as u64) << 20) + 1);
    }
    assert_eq!(std::fs::read(g.s.u("fresh")).unwrap(), b"durable");
    g
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: rustix::process::Signal) -> std::io::Result<()> {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(pid, sig).map_err(std::io::Error::from)
}

/// Stops process `pid` (SIGSTOP) and waits until every thread of it has stopped: `kill`
/// returns before they do, and a thread still running may take a request off `/dev/fuse`
/// in that window, or answer it. A request a FUSE daemon has taken is waited for without
/// end by its caller (the kernel cancels only those still queued), so a test that needs a
/// stuck layer must know that nothing reached it. The returned guard lets it go on.
pub fn stop(pid: u32) -> Continue {
    signal(pid, rustix::process::Signal::STOP).unwrap();
    let guard = Continue(pid);
    let stopped = || {
        std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten().all(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            // "tid (comm) S ...": the state follows the last ')'.
            matches!(stat.rsplit_once(')').and_then(|(_, r)| r.trim_start().chars().next()), Some('T' | 't') | None)
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !stopped() {
        assert!(std::time::Instant::now() < deadline, "process {pid} did not stop");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    guard
}

/// Lets a stopped daemon go on, even when the test fails (else its mount could not be
/// unmounted and the reader thread would never return).
pub struct Continue(pub u32);

impl Drop for Continue {
    fn drop(&mut self) {
        let _ = signal(self.0, rustix::process::Signal::CONT);
    }
}

/// A read stuck in the daemon under test (its lower layer is behind a closed gate, see
/// [`Gated`]) while 200 fresh lookups are answered: a request waiting on slow I/O holds up
/// no other. `opts` are the mount's `-o` options (they must keep the daemon reading the
/// slow layer itself: `nopassthrough`).
pub fn lookups_beside_a_stuck_read(opts: &str) {
    lookups_beside_stuck_reads(1, opts, &[]);
}

/// [`lookups_beside_a_stuck_read`] with `readers` reads stuck at once (each of another page),
/// the daemon under test started with variables `env`.
pub fn lookups_beside_stuck_reads(readers: usize, opts: &str, env: &[(&str, &str)]) {
    use std::os::fd::AsFd;
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    let names = |l: &Path| {
        for i in 0..200 {
            std::fs::write(l.join(format!("n{i}")), b"x").unwrap();
        }
    };
    let g = Gated::with_env(names, |l| std::fs::write(l.join("slow"), &data).unwrap(), opts, env);
    let f = std::sync::Arc::new(std::fs::File::open(g.m.path.join("slow")).unwrap());
    // One page per read: no readahead requests to occupy more workers.
    rustix::fs::fadvise(f.as_fd(), 0, None, rustix::fs::Advice::Random).unwrap();

    let cont = g.close();
    let at = |r: usize| (1usize << 20) + r * 8192;
    let stuck: Vec<_> = (0..readers)
        .map(|r| {
            let f = f.clone();
            std::thread::spawn(move || {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; 4096];
                let n = f.read_at(&mut buf, at(r) as u64).unwrap();
                buf.truncate(n);
                buf
            })
        })
        .collect();
    g.wait_until_held(readers);
    // Every name is new to the kernel: 200 lookups while the read waits at the gate (in a
    // thread, so that a failure is a bounded wait here, not a test that hangs).
    let root = g.m.path.clone();
    let (answered, lookups) = bounded(move || {
        for i in 0..200 {
            assert_eq!(std::fs::metadata(root.join(format!("n{i}"))).unwrap().len(), 1);
        }
    });
    let stuck_meanwhile = stuck.iter().all(|r| !r.is_finished());
    drop(cont);
    let got: Vec<_> = stuck.into_iter().map(|r| r.join().unwrap()).collect();
    lookups.join().unwrap();
    assert!(answered, "200 lookups beside {readers} stuck reads were not answered in a minute");
    assert!(stuck_meanwhile, "a read returned while its layer was stopped");
    for (r, got) in got.iter().enumerate() {
        assert_eq!(got[..], data[at(r)..at(r) + 4096], "data read after the layer went on");
    }
}

/// `unionfs stats --raw` of a mount: every counter by name, and each request type's count as
/// `op.NAME`.
pub fn stats_raw(mnt: &Path) -> std::collections::HashMap<String, u64> {
    let out = Command::new(bin()).args(["stats", "--raw"]).arg(mnt).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut m = std::collections::HashMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            [name, v] => {
                m.insert(name.to_string(), v.parse().unwrap());
            }
            ["op", name, "count", c, ..] => {
                m.insert(format!("op.{name}"), c.parse().unwrap());
            }
            _ => panic!("unexpected line {line:?}"),
        }
    }
    m
}
