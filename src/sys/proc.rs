//! Process, mount and credential calls used by the daemon's lifecycle.

use std::ffi::CStr;
use std::path::Path;

use rustix::mount::UnmountFlags;
use rustix::process::Pid;

use crate::error::{Errno, Res};

/// The effective user id of this process.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The effective group id of this process.
pub fn egid() -> u32 {
    rustix::process::getegid().as_raw()
}

/// Safe wrapper for `umask(2)`; returns the previous mask.
pub fn set_umask(mask: u32) -> u32 {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(mask)).as_raw_mode()
}

/// Gives the calling thread its own filesystem context (`unshare(CLONE_FS)`) with umask 0,
/// so objects are created with exactly the modes asked for, without changing the umask of
/// the rest of the process (which matters when the union runs inside someone else's
/// program).
#[allow(unsafe_code)]
pub fn private_umask_zero() -> Res<()> {
    // SAFETY: CLONE_FS only gives this thread its own cwd, root and umask; it does not touch
    // the descriptor table (CLONE_FILES is what could invalidate borrowed descriptors).
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }?;
    set_umask(0);
    Ok(())
}

/// Safe wrapper for `setsid(2)`.
pub fn setsid() -> Res<()> {
    rustix::process::setsid().map(|_| ()).map_err(Errno::from)
}

/// Safe wrapper for `umount2(2)`, optionally with `MNT_DETACH`.
pub fn unmount(path: &Path, detach: bool) -> Res<()> {
    let flags = if detach { UnmountFlags::DETACH } else { UnmountFlags::empty() };
    Ok(rustix::mount::unmount(path, flags)?)
}

/// Whether process `pid` exists and has not exited: some thread of it is not a zombie (a
/// process whose every thread is a zombie, waiting to be reaped, counts as exited).
pub fn process_alive(pid: u32) -> bool {
    let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    let exists = match rustix::process::test_kill_process(p) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    };
    if !exists {
        return false;
    }
    // Every thread's state ("pid (comm) S ..."; the state follows the last ')'): the main
    // thread of a process that is exiting is a zombie while other threads still finish what
    // they were doing (a write stuck on a busy disk), and those still hold the process's
    // files, and with them its locks.
    let live = |stat: &str| stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()) != Some('Z');
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| std::fs::read_to_string(t.path().join("stat")).is_ok_and(|st| live(&st)))
}

/// Safe wrapper for `kill(2)` with `SIGTERM`.
pub fn terminate(pid: u32) -> Res<()> {
    let pid = i32::try_from(pid).ok().and_then(Pid::from_raw).ok_or(Errno::EINVAL)?;
    Ok(rustix::process::kill_process(pid, rustix::process::Signal::TERM)?)
}

/// Safe wrapper for `kill(2)` with `SIGKILL`.
pub fn kill_hard(pid: u32) -> Res<()> {
    let pid = i32::try_from(pid).ok().and_then(Pid::from_raw).ok_or(Errno::EINVAL)?;
    Ok(rustix::process::kill_process(pid, rustix::process::Signal::KILL)?)
}

/// Sends `SIGKILL` to this process (the crash tests' hooks): it does not return.
pub fn kill_self() -> ! {
    let _ignored = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    std::process::abort()
}

/// The number of CPUs this process may run on (at least 1).
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Safe wrapper for `getrlimit(RLIMIT_NOFILE)` then `setrlimit` raising the soft limit to the
/// hard one; returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if let Some(max) = lim.maximum {
        lim.current = Some(max);
        // Failure leaves the old limit, which still works, only with a smaller fd cache.
        if setrlimit(Resource::Nofile, lim).is_err() {
            return getrlimit(Resource::Nofile).current.unwrap_or(1024);
        }
        return max;
    }
    lim.current.unwrap_or(1024)
}

/// Grows this process's descriptor table now to hold at least `n` descriptors (numbers
/// `0..n`), by duplicating a descriptor to number `n - 1` and closing it again: the table
/// never shrinks. The kernel grows the table by doubling whenever a new descriptor does not
/// fit, and in a process with more than one thread each growth first waits for an RCU grace
/// period (`expand_fdtable`: 8–15 ms on an idle two-CPU VM, longer on a busy one) — inside
/// whichever `open` crossed 64, 128, 256, … descriptors, so a request waited that long.
/// Called while the daemon is still one thread, the growth waits for nothing.
pub fn reserve_fd_table(n: u64) -> Res<()> {
    let Some(last) = n.checked_sub(1) else { return Ok(()) };
    let last = i32::try_from(last).map_err(|_| Errno::EMFILE)?;
    let root =
        rustix::fs::open("/", rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC, rustix::fs::Mode::empty())?;
    drop(rustix::io::fcntl_dupfd_cloexec(&root, last)?);
    Ok(())
}

/// Bytes the calling thread has caused to be read from storage so far (`read_bytes` of
/// `/proc/thread-self/io`; block devices only, not network filesystems), if the kernel
/// shows it.
pub fn thread_read_bytes() -> Option<u64> {
    proc_field("/proc/thread-self/io", "read_bytes")?.parse().ok()
}

/// The calling thread's time on a CPU and time waiting for one, in nanoseconds, if the
/// kernel shows the second (`/proc/thread-self/schedstat`). The CPU time is the thread's CPU
/// clock: schedstat's first field is only brought up to date when the thread is switched
/// out or at a timer tick, so a thread reading it around a short stretch of work sees none.
pub fn thread_sched_ns() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let waited = s.split_whitespace().nth(1)?.parse().ok()?;
    let cpu = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let cpu =
        u64::try_from(cpu.tv_sec).ok()?.checked_mul(1_000_000_000)?.checked_add(u64::try_from(cpu.tv_nsec).ok()?)?;
    Some((cpu, waited))
}

/// The size of this process's descriptor table (`FDSize` of `/proc/self/status`).
pub fn fd_table_size() -> Option<u64> {
    proc_field("/proc/self/status", "FDSize")?.parse().ok()
}

/// Whether this process has a capability in its effective set (read from
/// `/proc/self/status`, so no libcap is needed).
pub fn has_capability(cap: u32) -> bool {
    proc_field("/proc/self/status", "CapEff")
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .is_some_and(|bits| bits & (1u64 << cap) != 0)
}

/// The value of the `key: value` line `key` of a `/proc` file (`status`, `io`), trimmed.
fn proc_field(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':')).map(|v| v.trim().to_string())
}

/// `CAP_SYS_ADMIN`.
pub const CAP_SYS_ADMIN: u32 = 21;
/// `CAP_MKNOD`.
pub const CAP_MKNOD: u32 = 27;
/// `CAP_CHOWN`.
pub const CAP_CHOWN: u32 = 0;

/// Whether this process may do what root does on the layers (chown to anyone, `trusted.*`
/// xattrs, FUSE passthrough): root in the initial user namespace.
pub fn privileged() -> bool {
    euid() == 0 && in_initial_userns()
}

/// Whether this process runs in the initial user namespace (where FUSE passthrough and
/// `trusted.*` xattrs are allowed to root).
pub fn in_initial_userns() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| {
            let f: Vec<&str> = m.split_whitespace().collect();
            f.len() == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295"
        })
        .unwrap_or(false)
}

/// A CStr for a path, for the few callers that need one.
pub fn path_cstr(path: &Path) -> Res<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

/// Returns `s` as a `&CStr` if it has exactly one trailing NUL.
pub fn as_cstr(s: &[u8]) -> Option<&CStr> {
    CStr::from_bytes_with_nul(s).ok()
}

/// The supplementary groups of process `pid` (empty if it is gone).
pub fn supplementary_groups(pid: u32) -> Vec<u32> {
    proc_field(&format!("/proc/{pid}/status"), "Groups")
        .map(|g| g.split_whitespace().filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default()
}

/// Safe wrapper for `mallopt(M_ARENA_MAX, n)`: at most `n` malloc arenas. The daemon's many
/// small long-lived allocations (nodes) otherwise spread over one arena per thread, each
/// with its own free fragments. Best effort: the call only tunes the allocator.
#[allow(unsafe_code)]
pub fn limit_malloc_arenas(n: i32) {
    // SAFETY: mallopt only changes allocator tuning parameters; called at start-up.
    let _ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, n) };
}

/// Safe wrapper for `malloc_trim(0)`: hands free heap pages back to the system (after a
/// burst of forgotten nodes). Best effort.
#[allow(unsafe_code)]
pub fn trim_heap() {
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    let _released = unsafe { libc::malloc_trim(0) };
}

/// Safe wrapper for `setpriority(PRIO_PROCESS, 0, 19)`: the calling thread (Linux gives
/// each thread its own nice value) gets the smallest share of a busy CPU, for background
/// work that must not delay requests.
///
/// # Errors
/// The system's refusal.
pub fn lower_priority() -> Res<()> {
    Ok(rustix::process::setpriority_process(None, 19)?)
}

/// Safe wrapper for `sched_setscheduler(0, SCHED_IDLE or SCHED_OTHER)`: the calling thread's
/// scheduling policy (Linux keeps one per thread).
///
/// # Errors
/// The system's refusal (leaving `SCHED_IDLE` needs `CAP_SYS_NICE` or an `RLIMIT_NICE` of 20).
pub fn set_idle_policy(idle: bool) -> Res<()> {
    set_thread_policy(0, idle)
}

/// `sched_setscheduler(tid, SCHED_IDLE or SCHED_OTHER)`; tid 0 names the calling thread.
#[allow(unsafe_code)]
fn set_thread_policy(tid: libc::pid_t, idle: bool) -> Res<()> {
    let param = libc::sched_param { sched_priority: 0 };
    let policy = if idle { libc::SCHED_IDLE } else { libc::SCHED_OTHER };
    // SAFETY: `param` is a valid `sched_param` for the duration of the call; `tid` is 0 or
    // a thread of this process (one that has exited is refused with ESRCH).
    let r = unsafe { libc::sched_setscheduler(tid, policy, &param) };
    if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error().into()) }
}

/// A thread's place between `SCHED_IDLE` and `SCHED_OTHER` as the daemon switches it: the
/// thread itself goes to `SCHED_IDLE` ([`IdlePolicy::enter`]); it, or any other thread of the
/// process, brings it back ([`IdlePolicy::leave`]). Exactly one of those who see it at
/// `SCHED_IDLE` makes the call that brings it back, and the thread only ever believes it is
/// at normal priority when it is.
#[derive(Debug)]
pub struct IdlePolicy {
    tid: Pid,
    idle: std::sync::atomic::AtomicBool,
}

impl IdlePolicy {
    /// The calling thread's, at its normal priority now.
    pub fn current() -> std::sync::Arc<IdlePolicy> {
        std::sync::Arc::new(IdlePolicy { tid: rustix::thread::gettid(), idle: false.into() })
    }

    /// The thread's id.
    pub fn tid(&self) -> Pid {
        self.tid
    }

    /// Whether the thread is at `SCHED_IDLE` (or about to leave it).
    pub fn is_idle(&self) -> bool {
        self.idle.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Moves the calling thread, which must be this policy's, to `SCHED_IDLE`; a caller that
    /// must not stay there checks its reason again after this returns (a [`IdlePolicy::leave`]
    /// from another thread before it saw the change finds nothing to undo).
    ///
    /// # Errors
    /// The system's refusal.
    pub fn enter(&self) -> Res<()> {
        set_idle_policy(true)?;
        self.idle.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Brings the thread back to `SCHED_OTHER` if it is at `SCHED_IDLE`; from any thread.
    ///
    /// # Errors
    /// The system's refusal (leaving `SCHED_IDLE` needs `CAP_SYS_NICE` or an `RLIMIT_NICE`
    /// of 20).
    pub fn leave(&self) -> Res<()> {
        if !self.idle.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        set_thread_policy(self.tid.as_raw_nonzero().get(), false)
    }
}

/// Whether a thread of this process may go to `SCHED_IDLE` and come back, tried once on a
/// thread of its own (so a refusal to come back strands nobody).
pub fn idle_policy_reversible() -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| {
        std::thread::Builder::new()
            .name("sched-probe".into())
            .spawn(|| set_idle_policy(true).is_ok() && set_idle_policy(false).is_ok())
            .ok()
            .and_then(|t| t.join().ok())
            .unwrap_or(false)
    })
}

/// The processes that use something below `dir`: their working directory, root or an
/// open file is there. Each as `(pid, command name)`, sorted by pid; processes this user
/// may not inspect are left out.
pub fn holders(dir: &Path) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return out };
    for e in procs.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let base = e.path();
        let below = |p: &Path| std::fs::read_link(p).is_ok_and(|t| t.starts_with(dir));
        let mut uses = below(&base.join("cwd")) || below(&base.join("root"));
        if !uses && let Ok(fds) = std::fs::read_dir(base.join("fd")) {
            uses = fds.flatten().any(|f| below(&f.path()));
        }
        if uses {
            let comm = std::fs::read_to_string(base.join("comm")).unwrap_or_default().trim().to_string();
            out.push((pid, comm));
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserved_descriptor_table_holds_the_number_asked_for_and_stays() {
        let before = fd_table_size().expect("FDSize in /proc/self/status");
        let want = (before * 4).min(raise_nofile_limit());
        reserve_fd_table(want).unwrap();
        let after = fd_table_size().unwrap();
        assert!(after >= want, "table of {after} after reserving {want} (was {before})");
        // The descriptor it took to grow it is closed again.
        let probe = rustix::fs::open("/", rustix::fs::OFlags::PATH, rustix::fs::Mode::empty()).unwrap();
        assert!((rustix::fd::AsRawFd::as_raw_fd(&probe) as u64) < want - 1);
        reserve_fd_table(0).unwrap();
    }
}
