//! Per-mount counters, read live by `unionfs stats MOUNTPOINT`: requests by type with
//! latency histograms, copy-ups and the bytes they copied, whiteouts written, and cache
//! hits and misses. One daemon serves one mount, so the counters are process-wide atomics
//! (relaxed: they are statistics, not synchronisation). The daemon answers a `getxattr` of
//! [`XATTR`] on the mount's root with [`report`]; nothing else is reserved.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The reserved attribute on the mount's root that reads the counters.
pub const XATTR: &str = "user.unionfs.stats";

/// Request types, as the FUSE adapter names them.
const OPS: &[&str] = &[
    "lookup",
    "forget",
    "getattr",
    "setattr",
    "readlink",
    "mknod",
    "mkdir",
    "unlink",
    "rmdir",
    "symlink",
    "rename",
    "link",
    "open",
    "read",
    "write",
    "release",
    "fsync",
    "readdir",
    "readdirplus",
    "fsyncdir",
    "statfs",
    "setxattr",
    "getxattr",
    "listxattr",
    "removexattr",
    "access",
    "create",
    "fallocate",
    "lseek",
    "copy_file_range",
    "ioctl",
    "other",
];

/// Latency buckets: bucket `i` holds requests that took less than 2^i µs (the last one
/// everything slower).
const BUCKETS: usize = 24;

struct OpStats {
    count: AtomicU64,
    total_ns: AtomicU64,
    hist: [AtomicU64; BUCKETS],
}

impl OpStats {
    const fn new() -> OpStats {
        OpStats { count: AtomicU64::new(0), total_ns: AtomicU64::new(0), hist: [const { AtomicU64::new(0) }; BUCKETS] }
    }
}

static OP_STATS: [OpStats; OPS.len()] = [const { OpStats::new() }; OPS.len()];

/// Event counters.
#[derive(Clone, Copy, Debug)]
pub enum Counter {
    /// Objects copied up.
    CopyUps,
    /// Data bytes those copy-ups copied (reflinked bytes included).
    CopyUpBytes,
    /// Whiteouts written.
    Whiteouts,
    /// Extended-attribute answers served from the node cache.
    XattrHits,
    /// Extended-attribute reads that went to the layers.
    XattrMisses,
    /// Directory descriptors found in the cache.
    DirfdHits,
    /// Directory descriptors opened.
    DirfdMisses,
    /// Requests that arrived through FUSE over io_uring (the rest came by `/dev/fuse`).
    RingRequests,
    /// Of those, `READ`s whose data went straight into the ring's reply buffer, read by
    /// another thread beside the reader (large reads).
    RingReadsAside,
    /// Requests a ring thread asked the kernel for after registering a slot in place of one a
    /// handed-off request holds, so that a request queued meanwhile gets a slot
    /// ([`crate::fuse::uring`]).
    RingNudges,
    /// Directory listings built ahead of a walk ([`crate::union::prefetch`]).
    PrefetchListings,
    /// Listings built ahead that a walk then used.
    PrefetchHits,
    /// Directories whose layers were read ahead without a listing (no node yet).
    PrefetchWarmed,
    /// Read-ahead jobs dropped because the queue was full.
    PrefetchDropped,
    /// Warm jobs skipped because the walk had listed their directory by then.
    PrefetchLate,
    /// Read-ahead jobs queued or running now (goes down as they finish).
    PrefetchPending,
    /// Closed lower files whose pages the kernel was asked to drop ([`crate::union::idle`]).
    IdlePagesDropped,
    /// Opens of small lower files served from the page cache, not passthrough, because they
    /// were closed lately ([`crate::union::idle`]).
    ReopensCached,
    /// Files of those whose pages the daemon put in the page cache at the open
    /// ([`crate::union::UnionFs::prefill_pages`]).
    PagesPrefilled,
}

const COUNTER_NAMES: [&str; 19] = [
    "copy_ups",
    "copy_up_bytes",
    "whiteouts",
    "xattr_cache_hits",
    "xattr_cache_misses",
    "dirfd_cache_hits",
    "dirfd_cache_misses",
    "uring_requests",
    "uring_reads_aside",
    "uring_nudges",
    "prefetch_listings",
    "prefetch_hits",
    "prefetch_warmed",
    "prefetch_dropped",
    "prefetch_late",
    "prefetch_pending",
    "idle_pages_dropped",
    "reopens_cached",
    "pages_prefilled",
];

static COUNTERS: [AtomicU64; COUNTER_NAMES.len()] = [const { AtomicU64::new(0) }; COUNTER_NAMES.len()];

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Marks the start of the mount (for the uptime in the report).
pub fn start() {
    let _ = START.set(Instant::now());
}

/// Adds `n` to a counter.
pub fn add(c: Counter, n: u64) {
    COUNTERS[c as usize].fetch_add(n, Relaxed);
}

/// Takes `n` off a counter that goes down ([`Counter::PrefetchPending`]).
pub fn sub(c: Counter, n: u64) {
    COUNTERS[c as usize].fetch_sub(n, Relaxed);
}

/// One request being served, counted from its start ([`begin`]).
#[must_use = "a request's latency is recorded by `end`"]
pub struct Timer {
    op: usize,
    t0: Instant,
}

/// Counts one request of type `op` as it starts: a caller that has its reply sees it
/// counted (the reply goes out before the handler returns). [`Timer::end`] records how long
/// it took.
pub fn begin(op: &str) -> Timer {
    let i = OPS.iter().position(|o| *o == op).unwrap_or(OPS.len() - 1);
    OP_STATS[i].count.fetch_add(1, Relaxed);
    Timer { op: i, t0: Instant::now() }
}

impl Timer {
    /// Records the request's latency.
    pub fn end(self) {
        let (s, took) = (&OP_STATS[self.op], self.t0.elapsed());
        s.total_ns.fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        s.hist[bucket(took)].fetch_add(1, Relaxed);
    }
}

fn bucket(took: Duration) -> usize {
    let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    // Smallest i with us < 2^i.
    let i = (u64::BITS - us.leading_zeros()) as usize;
    i.min(BUCKETS - 1)
}

/// The upper bound (µs) of the bucket holding the `q` quantile of `hist`.
fn quantile(hist: &[u64], q: f64) -> u64 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return 0;
    }
    let want = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= want {
            return 1u64 << i;
        }
    }
    1u64 << (hist.len() - 1)
}

/// The counters as text, one `name value` line each, then one line per request type seen:
/// `op NAME count N mean_us M p50_us A p90_us B p99_us C` (percentiles are bucket upper
/// bounds, powers of two).
pub fn report(nodes: usize) -> String {
    let mut out = String::new();
    let up = START.get().map_or(0, |s| s.elapsed().as_secs());
    out.push_str(&format!("uptime_s {up}\nnodes {nodes}\n"));
    for (name, c) in COUNTER_NAMES.iter().zip(COUNTERS.iter()) {
        out.push_str(&format!("{name} {}\n", c.load(Relaxed)));
    }
    for (name, s) in OPS.iter().zip(OP_STATS.iter()) {
        let count = s.count.load(Relaxed);
        if count == 0 {
            continue;
        }
        let hist: Vec<u64> = s.hist.iter().map(|h| h.load(Relaxed)).collect();
        let mean = s.total_ns.load(Relaxed) / count / 1000;
        out.push_str(&format!(
            "op {name} count {count} mean_us {mean} p50_us {} p90_us {} p99_us {}\n",
            quantile(&hist, 0.5),
            quantile(&hist, 0.9),
            quantile(&hist, 0.99)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_microseconds() {
        assert_eq!(bucket(Duration::from_nanos(500)), 0);
        assert_eq!(bucket(Duration::from_micros(1)), 1);
        assert_eq!(bucket(Duration::from_micros(3)), 2);
        assert_eq!(bucket(Duration::from_micros(4)), 3);
        assert_eq!(bucket(Duration::from_secs(100)), BUCKETS - 1);
    }

    #[test]
    fn quantiles_come_from_the_histogram() {
        let mut h = [0u64; BUCKETS];
        h[3] = 90; // < 8 µs
        h[10] = 10; // < 1024 µs
        assert_eq!(quantile(&h, 0.5), 8);
        assert_eq!(quantile(&h, 0.9), 8);
        assert_eq!(quantile(&h, 0.99), 1024);
        assert_eq!(quantile(&[0; BUCKETS], 0.5), 0);
    }

    #[test]
    fn report_lists_counters_and_requests_seen() {
        let t = begin("lookup");
        // Counted before it ends.
        assert!(report(7).lines().any(|l| l.starts_with("op lookup count ")));
        t.end();
        add(Counter::CopyUps, 2);
        let r = report(7);
        assert!(r.contains("nodes 7\n"));
        assert!(r.lines().any(|l| l.starts_with("copy_ups ") && l != "copy_ups 0"));
        assert!(r.lines().any(|l| l.starts_with("op lookup count ")));
        assert!(!r.contains("op mknod "));
    }
}
