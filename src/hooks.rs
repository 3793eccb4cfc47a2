//! Fault injection and delays that only tests use. They are compiled in with the
//! `test-hooks` cargo feature, which the test command builds with; a binary built without it
//! (`cargo build --release`, `cargo install`, a package) reads none of these variables and
//! cannot be made to fail on purpose.

/// With `UNIONFS_FAULT_AFTER=N`, the daemon aborts (like `kill -9`: no cleanup, no unmount)
/// right before its N-th upper-layer mutation. The crash tests use it to stop a mount at every
/// point of a workload and check that what the upper holds afterwards is always consistent.
pub const FAULT_AFTER: &str = "UNIONFS_FAULT_AFTER";

/// With `UNIONFS_FAULT_URING` set, the FUSE over io_uring set-up fails (the fall-back test).
pub const FAULT_URING: &str = "UNIONFS_FAULT_URING";

/// With `UNIONFS_REAP_DELAY_MS=N`, the reap thread waits N ms before each tree, so a test can
/// see trees still queued when it unmounts.
pub const REAP_DELAY_MS: &str = "UNIONFS_REAP_DELAY_MS";

/// With `UNIONFS_PREFETCH_HOLD=PATH`, the prefetch threads wait before each job while
/// PATH exists, so a test can queue read-ahead jobs and decide what happens before they run.
pub const PREFETCH_HOLD: &str = "UNIONFS_PREFETCH_HOLD";

/// With `UNIONFS_RING_HANDOFF_DELAY_MS=N`, a FUSE-over-io_uring thread that handed a request
/// to another thread (a copy-up, an `fsync`: its slot stays taken until that reply) waits N ms
/// before it registers a slot in its place, and a ring thread started while every other of
/// its CPU was busy waits N ms before its first: what a ring thread preempted on a busy
/// machine does, made long enough for a test to send requests into that window.
pub const RING_HANDOFF_DELAY_MS: &str = "UNIONFS_RING_HANDOFF_DELAY_MS";

/// Whether the hooks are compiled in.
pub const ENABLED: bool = cfg!(feature = "test-hooks");

/// The number in variable `name`, if it is set.
#[cfg(feature = "test-hooks")]
fn number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[cfg(not(feature = "test-hooks"))]
fn number(_name: &str) -> Option<u64> {
    None
}

/// Whether variable `name` is set.
#[cfg(feature = "test-hooks")]
fn set(name: &str) -> bool {
    std::env::var_os(name).is_some()
}

#[cfg(not(feature = "test-hooks"))]
fn set(_name: &str) -> bool {
    false
}

/// [`FAULT_AFTER`]: the mutation to abort before.
pub fn fault_after() -> Option<u64> {
    number(FAULT_AFTER)
}

/// [`FAULT_URING`]: whether the ring set-up is to fail.
pub fn fault_uring() -> bool {
    set(FAULT_URING)
}

/// [`REAP_DELAY_MS`]: the wait before each tree.
pub fn reap_delay() -> Option<std::time::Duration> {
    number(REAP_DELAY_MS).map(std::time::Duration::from_millis)
}

/// [`RING_HANDOFF_DELAY_MS`]: the wait before a slot replaces one a handed-off request holds.
pub fn ring_handoff_delay() -> Option<std::time::Duration> {
    number(RING_HANDOFF_DELAY_MS).map(std::time::Duration::from_millis)
}

/// [`PREFETCH_HOLD`]: waits while the file named there exists.
#[cfg(feature = "test-hooks")]
pub fn prefetch_wait() {
    let Some(path) = std::env::var_os(PREFETCH_HOLD) else { return };
    while std::path::Path::new(&path).exists() {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// [`PREFETCH_HOLD`]: compiled out.
#[cfg(not(feature = "test-hooks"))]
pub fn prefetch_wait() {}

/// With `UNIONFS_SNAPSHOTTER_KILL=POINT:N`, the snapshotter kills itself with `SIGKILL` the
/// N-th time it passes crash point POINT ([`snapshotter_kill_point`]): `prepare` (a new
/// snapshot's directory renamed to its id, its record not yet committed) or `remove` (the
/// record's deletion committed, the directory not yet removed).
pub const SNAPSHOTTER_KILL: &str = "UNIONFS_SNAPSHOTTER_KILL";

/// [`SNAPSHOTTER_KILL`]: dies here if this is the point and pass the variable names.
#[cfg(feature = "test-hooks")]
pub fn snapshotter_kill_point(point: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PASSES: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
    let Some((want, n)) = std::env::var(SNAPSHOTTER_KILL).ok().and_then(|v| {
        let (p, n) = v.split_once(':')?;
        Some((p.to_string(), n.parse::<u64>().ok()?))
    }) else {
        return;
    };
    if want != point {
        return;
    }
    let slot = usize::from(point == "remove");
    if PASSES[slot].fetch_add(1, Ordering::SeqCst) + 1 == n {
        crate::sys::proc::kill_self();
    }
}

/// [`SNAPSHOTTER_KILL`]: compiled out.
#[cfg(not(feature = "test-hooks"))]
pub fn snapshotter_kill_point(_point: &str) {}
