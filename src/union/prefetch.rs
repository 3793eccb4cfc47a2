//! Reading ahead of tree walks. Kernel overlayfs has nothing like it; a FUSE daemon needs it
//! more than the kernel does: each directory a walk lists is one request, and it waits for
//! every disk read it causes, one after the other, while the caller waits for it.
//!
//! When a listing of a directory is served for the first time, its subdirectories are
//! queued for a small pool of threads. For each one the kernel already has a node for
//! (`READDIRPLUS` just looked them all up) a thread builds its listing the way the request
//! path would, probes what each entry's lower layer holds (lower layers never change), and
//! keeps both as the directory's next snapshot ([`crate::union::readdir`]): when the walk gets
//! there, its `READDIRPLUS` is answered from memory. When a walk is under way (the directory's
//! parent was listed too), the threads also *warm* the levels below: they read those real
//! directories and stat their entries, so the disk reads are done before anyone waits for
//! them. A walk visits a directory's first subdirectory right after listing it, so only the
//! levels below can be ahead of it. Warming pays only where the layers are not cached: a
//! few warm jobs in a row that read nothing from storage (the kernel's per-thread
//! accounting) and were not blocked on I/O turn it down to one job in [`SAMPLE_EVERY`]
//! until one reads again, or two in a row are blocked (`Verdict`; on cached layers it
//! only took CPU time from the walk: a fresh mount's `find` over warm layers went from
//! 140–170 to 105–145 ms). Entries a lean reply sends without attributes
//! ([`crate::union::lean`]) are not probed ahead either.
//!
//! Bounds: a few threads (`-o prefetch=N`; 0 turns it off) at the lowest priority (nice 19:
//! with `SCHED_IDLE` cold walks were slower, with normal priority warm ones); a queue of
//! [`MAX_JOBS`] that drops its oldest jobs; a descriptor budget for the directories queued
//! jobs keep open; at most [`MAX_WARM_ENTRIES`] entries warmed per directory. The queue is last-in first-out, so the
//! directories just listed — those a depth-first walk enters next — are read first.
//!
//! Prefetching only reads: directories are opened below the layer directories' own
//! descriptors with `O_NOFOLLOW` (never through a symlink), with `O_NOATIME` where the daemon
//! may, and nothing in the layers changes. Its failures are ignored: the request that needs
//! the directory meets them again and reports them. With live layers (`--watch`) no probes
//! are kept, and a change seen bumps the directory's version, so a listing built ahead from
//! the old contents is never served.

use std::collections::VecDeque;
use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::Errno;
use crate::stats::{self, Counter};
use crate::sys::open::{self, OFlags};
use crate::sys::stat::FileKind;
use crate::sys::{dir as sdir, stat};
use crate::union::UnionFs;
use crate::union::lookup::Seen;
use crate::union::node::{Node, flag};
use crate::union::readdir::DirEntry;
use crate::union::tables::Side;

/// Most queued jobs; past it the oldest are dropped.
pub const MAX_JOBS: usize = 512;
/// Most entries stat'ed when warming one real directory.
pub const MAX_WARM_ENTRIES: usize = 4096;
/// Entries of a listing built ahead whose lower layer is probed ahead (a `READDIRPLUS`
/// reply of one page holds about 25).
pub const PROBED_ENTRIES: usize = 64;
/// Default number of prefetch threads (`-o prefetch=N`).
pub const DEFAULT_THREADS: usize = 4;
/// While warming finds the layers' directories and inodes cached, one warm job in this many
/// still runs (the others would only take CPU time from the walk).
pub const SAMPLE_EVERY: u32 = 16;
/// A warm job blocked longer than this per entry pays even without storage reads the
/// kernel counts (a layer on a network or FUSE filesystem).
const SLOW_ENTRY: Duration = Duration::from_micros(50);
/// Levels below a listed directory's subdirectories that a walk warms (1 and 2 measured
/// alike on the benchmark's tree, 0 slower).
const WALK_DEPTH: u8 = 1;

/// Directory descriptors kept open by queued jobs, counted against the pool's budget.
#[derive(Debug)]
struct Held {
    fds: Vec<Arc<OwnedFd>>,
    budget: Arc<AtomicUsize>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.fetch_add(self.fds.len(), Ordering::AcqRel);
    }
}

/// A fresh listing being served ([`UnionFs::readdir`]): while it lives, the read-ahead it
/// will start counts as pending.
#[derive(Debug)]
pub struct Serving {
    counted: bool,
}

impl Drop for Serving {
    fn drop(&mut self) {
        if self.counted {
            stats::sub(Counter::PrefetchPending, 1);
        }
    }
}

/// One directory to read ahead.
#[derive(Debug)]
enum Job {
    /// A subdirectory the listing of `parent` showed: build its listing (or, if the kernel
    /// has no node for it yet, warm it), then warm `depth` levels below it.
    List { ino: u64, parent: u64, name: CString, depth: u8 },
    /// Warm directory `name` in each of its parent's real directories, then `depth` levels
    /// below it; `ino` is its node, where known (a walk that has listed it is past it).
    Warm { dirs: Arc<Held>, name: CString, ino: Option<u64>, depth: u8 },
}

/// A last-in first-out queue, bounded by dropping the oldest.
#[derive(Debug)]
struct Stack<T> {
    jobs: VecDeque<T>,
    cap: usize,
}

impl<T> Stack<T> {
    fn new(cap: usize) -> Stack<T> {
        Stack { jobs: VecDeque::new(), cap }
    }

    /// Adds a batch, whose first job is served first (then the rest, in order); returns
    /// the old jobs dropped to stay within the bound.
    fn push_batch(&mut self, batch: Vec<T>) -> Vec<T> {
        for j in batch.into_iter().rev() {
            self.jobs.push_back(j);
        }
        let over = self.jobs.len().saturating_sub(self.cap);
        self.jobs.drain(..over).collect()
    }

    fn pop(&mut self) -> Option<T> {
        self.jobs.pop_back()
    }
}

/// What a warm job found it cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Paid {
    /// It read from storage: the layers are not cached.
    Read,
    /// It read nothing the kernel counts but was blocked on I/O long enough (a layer on a
    /// network or FUSE filesystem — or, now and then on any machine, a stall of a few
    /// milliseconds that had nothing to do with the layers).
    Blocked,
    /// It found everything cached.
    Nothing,
}

/// Warm jobs in a row that found everything cached before warming is turned down: one
/// such job among jobs that read is no sign the layers are cached (a sibling directory's
/// job can have read the blocks it needed).
const CACHED_JOBS_TO_STOP: u32 = 4;
/// Warm jobs in a row that were blocked, without reading, before warming is turned on
/// again: a single stall is no sign the layers are slow.
const BLOCKED_JOBS_TO_START: u32 = 2;

/// Whether warming pays, decided from the warm jobs' costs with some hysteresis: a read
/// from storage turns it on at once, but a blocked job, and a job that found everything
/// cached, are each told apart from noise by the jobs next to them.
#[derive(Debug)]
struct Verdict {
    on: bool,
    /// Jobs in a row that found everything cached.
    cached: u32,
    /// Jobs in a row that were blocked without reading.
    blocked: u32,
    /// Chances to warm passed over while warming was down.
    passed: u32,
}

impl Default for Verdict {
    /// On: a fresh mount warms until it finds the layers cached.
    fn default() -> Verdict {
        Verdict { on: true, cached: 0, blocked: 0, passed: 0 }
    }
}

impl Verdict {
    /// Whether to warm now: while warming is on, always; while it is down, one chance in
    /// [`SAMPLE_EVERY`] (to notice when the layers stop being cached).
    fn warm_now(&mut self) -> bool {
        if self.on {
            return true;
        }
        self.passed = self.passed.wrapping_add(1);
        self.passed.is_multiple_of(SAMPLE_EVERY)
    }

    /// Takes in what a warm job paid.
    fn record(&mut self, paid: Paid) {
        match paid {
            Paid::Read => (self.on, self.cached, self.blocked) = (true, 0, 0),
            Paid::Blocked => {
                self.cached = 0;
                self.blocked += 1;
                self.on |= self.blocked >= BLOCKED_JOBS_TO_START;
            }
            Paid::Nothing => {
                self.blocked = 0;
                self.cached += 1;
                self.on &= self.cached < CACHED_JOBS_TO_STOP;
            }
        }
    }
}

#[derive(Debug)]
struct Queue {
    jobs: Stack<Job>,
    stop: bool,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

/// The read-ahead pool of one mount. Its threads end when it is dropped.
#[derive(Debug)]
pub struct Prefetch {
    shared: Arc<Shared>,
    threads: usize,
    /// Directory descriptors queued jobs may still open.
    budget: Arc<AtomicUsize>,
    /// `O_NOATIME` was refused once (a layer the daemon does not own): not asked again.
    no_noatime: AtomicBool,
    /// Whether warming pays, from what the last warm jobs cost.
    verdict: Mutex<Verdict>,
}

impl Prefetch {
    /// A pool of `threads` threads (0: prefetching off) whose queued jobs keep at most
    /// `fds` directories open. The threads start with [`UnionFs::start_prefetch`].
    pub fn new(threads: usize, fds: usize) -> Prefetch {
        Prefetch {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue { jobs: Stack::new(MAX_JOBS), stop: false }),
                ready: Condvar::new(),
            }),
            threads,
            budget: Arc::new(AtomicUsize::new(fds)),
            no_noatime: AtomicBool::new(false),
            verdict: Mutex::new(Verdict::default()),
        }
    }

    /// Whether to warm the levels below a directory now ([`Verdict::warm_now`]).
    fn should_warm(&self) -> bool {
        self.verdict.lock().warm_now()
    }

    /// Whether prefetching is on.
    pub fn enabled(&self) -> bool {
        self.threads > 0
    }

    fn push(&self, batch: Vec<Job>) {
        if batch.is_empty() || !self.enabled() {
            return;
        }
        let (n, wake) = (batch.len() as u64, batch.len().min(self.threads));
        let dropped = {
            let mut q = self.shared.queue.lock();
            let dropped = q.jobs.push_batch(batch);
            // Counted under the lock, before any thread can finish one of them.
            stats::add(Counter::PrefetchPending, n);
            stats::sub(Counter::PrefetchPending, dropped.len() as u64);
            dropped
        };
        for _ in 0..wake {
            self.shared.ready.notify_one();
        }
        // Dropped jobs give back their descriptors here, outside the lock.
        stats::add(Counter::PrefetchDropped, dropped.len() as u64);
    }

    /// Takes `fds` out of the descriptor budget, if it allows.
    fn hold(&self, fds: Vec<Arc<OwnedFd>>) -> Option<Arc<Held>> {
        let n = fds.len();
        self.budget.fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| b.checked_sub(n)).ok()?;
        Some(Arc::new(Held { fds, budget: self.budget.clone() }))
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        let mut q = self.shared.queue.lock();
        q.stop = true;
        stats::sub(Counter::PrefetchPending, q.jobs.jobs.len() as u64);
        q.jobs.jobs.clear();
        drop(q);
        self.shared.ready.notify_all();
    }
}

/// Takes the next job, waiting for one; `None` once the pool is stopped.
fn next_job(shared: &Shared) -> Option<Job> {
    let mut q = shared.queue.lock();
    loop {
        if q.stop {
            return None;
        }
        if let Some(j) = q.jobs.pop() {
            return Some(j);
        }
        shared.ready.wait(&mut q);
    }
}

impl UnionFs {
    /// Starts the prefetch threads (none if prefetching is off). They hold the core weakly.
    pub fn start_prefetch(self: &Arc<Self>) -> std::io::Result<()> {
        for i in 0..self.prefetch.threads {
            let shared = self.prefetch.shared.clone();
            let weak: Weak<UnionFs> = Arc::downgrade(self);
            std::thread::Builder::new().name(format!("prefetch-{i}")).spawn(move || {
                // Reading ahead must not take CPU time from requests.
                if let Err(e) = crate::sys::proc::lower_priority() {
                    tracing::debug!("prefetch thread keeps its priority: {e}");
                }
                while let Some(job) = next_job(&shared) {
                    crate::hooks::prefetch_wait();
                    let Some(fs) = weak.upgrade() else { return };
                    fs.run_job(job);
                    stats::sub(Counter::PrefetchPending, 1);
                }
            })?;
        }
        Ok(())
    }

    /// Directory `dir` is being listed afresh: marks it listed (from now on warming it would
    /// be late) and, with prefetching on, counts the read-ahead its listing will start as
    /// pending until the listing is dropped, after [`UnionFs::listed`] has queued it. So
    /// `prefetch_pending` at 0 means that nothing more is coming from the listings served so
    /// far (a listing is answered before its read-ahead is queued).
    pub(crate) fn serving(&self, dir: &Node) -> Serving {
        dir.set(flag::LISTED);
        let counted = self.prefetch.enabled();
        if counted {
            stats::add(Counter::PrefetchPending, 1);
        }
        Serving { counted }
    }

    /// A listing of `dir` was served for the first time: queue its subdirectories.
    pub(crate) fn read_ahead(&self, dir: &Arc<Node>, entries: &[DirEntry]) {
        if !self.prefetch.enabled() {
            return;
        }
        // A walk: this directory's parent was listed before it.
        let depth = if dir.parent().is_some_and(|p| p.has(flag::LISTED)) { WALK_DEPTH } else { 0 };
        let batch: Vec<Job> = subdirs(entries)
            .take(MAX_JOBS)
            .map(|e| Job::List { ino: e.ino, parent: dir.ino, name: CString::from(&e.name), depth })
            .collect();
        self.prefetch.push(batch);
    }

    fn run_job(&self, job: Job) {
        match job {
            Job::List { ino, parent, name, depth } => match self.inodes.get(ino) {
                Ok(node) if node.is_dir() && node.parent().is_some_and(|p| p.ino == parent) => {
                    let Some(entries) = self.list_ahead(&node) else { return };
                    if depth > 0 && self.prefetch.should_warm() {
                        let names = subdirs(&entries).map(|e| (CString::from(&e.name), Some(e.ino))).collect();
                        if let Some(dirs) = self.prefetch.hold(self.real_dirs(&node)) {
                            self.warm_later(&dirs, names, depth - 1);
                        }
                    }
                }
                // No node yet (the kernel has not looked the name up): warm it.
                _ => {
                    if let Ok(p) = self.inodes.get(parent)
                        && self.prefetch.should_warm()
                        && let Some(dirs) = self.prefetch.hold(self.real_dirs(&p))
                    {
                        self.warm(&dirs, &name, None, depth);
                    }
                }
            },
            Job::Warm { dirs, name, ino, depth } => self.warm(&dirs, &name, ino, depth),
        }
    }

    /// Builds `dir`'s listing now and keeps it, with what its entries' lower layers hold, as
    /// the newest snapshot, unless one for its current version exists.
    fn list_ahead(&self, dir: &Arc<Node>) -> Option<Arc<Vec<DirEntry>>> {
        if dir.has(flag::DEAD) {
            return None;
        }
        let version = dir.dir_version.load(Ordering::Acquire);
        if let Some(s) = self.listings.current(dir.ino, version) {
            return Some(s);
        }
        let entries = Arc::new(self.list(dir).ok()?);
        // Lower layers never change (unless watched live): what they hold under each name
        // can be asked now, off the request path.
        // Only the first READDIRPLUS reply of a listing uses them (later replies continue
        // a snapshot): a big directory gets probes for as many entries as one reply holds.
        let seen = match self.watching() {
            true => Vec::new(),
            false => {
                // Entries a lean reply sends without attributes need no probe.
                let lean = self.lean.is_lean();
                entries
                    .iter()
                    .take(PROBED_ENTRIES)
                    .map(|e| match lean && !crate::union::lean::keeps_attrs(e) {
                        true => None,
                        false => self.probe_lower(dir, e),
                    })
                    .collect()
            }
        };
        self.listings.add_ahead(dir.ino, version, entries.clone(), seen);
        stats::add(Counter::PrefetchListings, 1);
        Some(entries)
    }

    /// What entry `e` of `dir`'s listing is in the lower layer showing it.
    fn probe_lower(&self, dir: &Arc<Node>, e: &DirEntry) -> Option<Seen> {
        let idx = e.lower?;
        let layer = dir.dir_lower()?.layers.iter().find(|l| l.idx == idx).copied()?;
        let fd = self.dir_fd(dir, Side::Lower(idx)).ok()?;
        // Opacity from xattrs only: the lookup that uses it looks for the marker file when it
        // matters.
        self.probe_kind(fd.as_fd(), &e.name, layer.xwhiteouts).ok()
    }

    /// The descriptors of `dir`'s real directories (upper first).
    fn real_dirs(&self, dir: &Arc<Node>) -> Vec<Arc<OwnedFd>> {
        let mut sides = Vec::with_capacity(4);
        if dir.has_upper() {
            sides.push(Side::Upper);
        }
        if let Some(dl) = dir.dir_lower() {
            sides.extend(dl.layers.iter().map(|l| Side::Lower(l.idx)));
        }
        sides.into_iter().filter_map(|s| self.dir_fd(dir, s).ok()).collect()
    }

    /// Queues warming of `names` (with their nodes, where known) in `dirs`.
    fn warm_later(&self, dirs: &Arc<Held>, names: Vec<(CString, Option<u64>)>, depth: u8) {
        let batch = names.into_iter().map(|(name, ino)| Job::Warm { dirs: dirs.clone(), name, ino, depth }).collect();
        self.prefetch.push(batch);
    }

    /// Reads directory `name` (node `ino`, where known) in each of `dirs` and stats its
    /// entries, so that listing it later finds them cached; then queues the same for `depth`
    /// levels below. A directory the walk has listed by now is skipped: it is cached, which
    /// says nothing about the layers (on a busy machine the walk overtakes the low-priority
    /// threads), and warming it cannot help.
    fn warm(&self, dirs: &Arc<Held>, name: &CString, ino: Option<u64>, depth: u8) {
        if ino.and_then(|i| self.inodes.get(i).ok()).is_some_and(|n| n.has(flag::LISTED)) {
            stats::add(Counter::PrefetchLate, 1);
            return;
        }
        let cost = Cost::now();
        let mut stated = 0u32;
        let mut below: Vec<Arc<OwnedFd>> = Vec::new();
        let mut names: Vec<CString> = Vec::new();
        for pfd in &dirs.fds {
            let Some(d) = self.open_dir_quietly(pfd.as_fd(), name) else { continue };
            let Ok(entries) = sdir::read_all(&d) else { continue };
            for e in entries.into_iter().take(MAX_WARM_ENTRIES) {
                let Ok(n) = CString::new(e.name) else { continue };
                let _ = stat::statat(&d, &n);
                stated += 1;
                if depth > 0 && e.kind == Some(FileKind::Directory) && !names.contains(&n) {
                    names.push(n);
                }
            }
            below.push(Arc::new(d));
        }
        stats::add(Counter::PrefetchWarmed, 1);
        let paid = cost.paid(stated);
        self.prefetch.verdict.lock().record(paid);
        if paid != Paid::Nothing
            && !names.is_empty()
            && let Some(held) = self.prefetch.hold(below)
        {
            self.warm_later(&held, names.into_iter().map(|n| (n, None)).collect(), depth - 1);
        }
    }

    /// Opens directory `name` in `dir` for reading, without following a symlink and, where
    /// allowed, without touching its access time.
    fn open_dir_quietly(&self, dir: BorrowedFd<'_>, name: &CString) -> Option<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY;
        if !self.prefetch.no_noatime.load(Ordering::Relaxed) {
            match open::openat(dir, name, flags | OFlags::NOATIME, 0) {
                Ok(fd) => return Some(fd),
                Err(Errno::EPERM) => self.prefetch.no_noatime.store(true, Ordering::Relaxed),
                Err(_) => return None,
            }
        }
        open::openat(dir, name, flags, 0).ok()
    }
}

/// What a warm job cost the thread doing it, from its start: whether it read from storage
/// or waited for I/O.
struct Cost {
    at: Instant,
    read: Option<u64>,
    sched: Option<(u64, u64)>,
}

impl Cost {
    /// From now. The CPU and run-queue times are read before the clock here and after it in
    /// [`Cost::paid`], so the wall time measured lies within them: a wait while they are
    /// read (reading `/proc` can be preempted, and a nice-19 thread often is) makes the
    /// job look less blocked, never more.
    fn now() -> Cost {
        let read = crate::sys::proc::thread_read_bytes();
        #[cfg(test)]
        tests::pause_between_readings();
        let sched = crate::sys::proc::thread_sched_ns();
        Cost { at: Instant::now(), read, sched }
    }

    /// What the job, which stat'ed `entries` entries, paid: it read from storage, or was
    /// blocked (neither on a CPU nor waiting for one) longer than [`SLOW_ENTRY`] an entry —
    /// a layer on a network or FUSE filesystem, whose reads are not counted as storage
    /// reads — or neither. Time spent waiting for a CPU does not count: a busy machine does
    /// not make cached layers worth warming. Without the kernel's accounting, every job
    /// counts as a read.
    fn paid(&self, entries: u32) -> Paid {
        let wall = u64::try_from(self.at.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let read = self.read.zip(crate::sys::proc::thread_read_bytes()).map(|(a, b)| b > a);
        let blocked = self.sched.zip(crate::sys::proc::thread_sched_ns()).map(|((cpu0, q0), (cpu1, q1))| {
            wall.saturating_sub(cpu1.saturating_sub(cpu0)).saturating_sub(q1.saturating_sub(q0))
        });
        let slow = SLOW_ENTRY.as_nanos() as u64 * (u64::from(entries) + 1);
        match (read, blocked) {
            (None, None) | (Some(true), _) => Paid::Read,
            (_, Some(b)) if b > slow => Paid::Blocked,
            _ => Paid::Nothing,
        }
    }
}

/// The subdirectories of a listing (without `.` and `..`).
fn subdirs(entries: &[DirEntry]) -> impl Iterator<Item = &DirEntry> {
    entries.iter().filter(|e| e.kind == FileKind::Directory && !matches!(e.name.to_bytes(), b"." | b".."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_served_first_to_last_and_newer_batches_first() {
        let mut s = Stack::new(10);
        s.push_batch(vec![1, 2, 3]);
        s.push_batch(vec![10, 11]);
        let order: Vec<i32> = std::iter::from_fn(|| s.pop()).collect();
        assert_eq!(order, [10, 11, 1, 2, 3]);
    }

    #[test]
    fn the_oldest_jobs_go_when_the_queue_is_full() {
        let mut s = Stack::new(4);
        assert!(s.push_batch(vec![1, 2, 3]).is_empty());
        // 3 and 2 (the oldest batch's last-served jobs) are dropped.
        assert_eq!(s.push_batch(vec![4, 5, 6]), [3, 2]);
        let order: Vec<i32> = std::iter::from_fn(|| s.pop()).collect();
        assert_eq!(order, [4, 5, 6, 1]);
    }

    thread_local! {
        /// How long [`Cost::now`] waits between its readings on this thread.
        static PAUSE: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
    }

    /// Where a thread reading its costs is preempted (under load) — or, here, made to wait.
    pub(super) fn pause_between_readings() {
        let pause = PAUSE.get();
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }

    /// A 5 ms spin as a job, its cost read from a `Cost` taken after `pause` (see
    /// [`pause_between_readings`]).
    fn spin_job(pause: Duration) -> Paid {
        // Switched out and in again: the job starts where the scheduler last looked.
        std::thread::sleep(Duration::from_millis(1));
        PAUSE.set(pause);
        let cost = Cost::now();
        PAUSE.set(Duration::ZERO);
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(5) {
            std::hint::black_box(start);
        }
        cost.paid(MAX_WARM_ENTRIES as u32 / 128)
    }

    /// A job that only used the CPU (no storage reads, no waits) did not pay, however its
    /// time on the CPU falls between the scheduler's ticks.
    #[test]
    fn time_on_a_cpu_is_not_taken_for_waiting_on_storage() {
        for _ in 0..20 {
            assert_eq!(spin_job(Duration::ZERO), Paid::Nothing, "5 ms on a CPU taken for a blocked job");
        }
    }

    /// A wait while the costs are read at the start (a busy machine preempts the thread
    /// there) is not the job's: the unit test above failed 1 run in 35 beside `stress-ng`.
    #[test]
    fn a_wait_while_the_costs_are_read_is_not_the_jobs() {
        let paid = spin_job(Duration::from_millis(5));
        assert_eq!(paid, Paid::Nothing, "a 5 ms wait inside Cost::now taken for a blocked job");
    }

    fn verdicts(jobs: &[Paid]) -> Vec<bool> {
        let mut v = Verdict::default();
        jobs.iter()
            .map(|&p| {
                v.record(p);
                v.on
            })
            .collect()
    }

    /// A warm job that found everything cached among jobs that read (its blocks read by a
    /// sibling's job) leaves warming on; jobs in a row that found everything cached turn
    /// it down.
    #[test]
    fn one_job_that_found_its_blocks_cached_leaves_warming_on() {
        use Paid::*;
        assert_eq!(verdicts(&[Read, Nothing, Read, Nothing, Nothing, Read]), [true; 6]);
        assert_eq!(verdicts(&[Nothing, Nothing, Nothing, Nothing, Nothing]), [true, true, true, false, false]);
    }

    /// Over cached layers, one job stalled for a few milliseconds without reading does not
    /// turn warming back on; stalls in a row (a slow layer) do, and one read does at once.
    #[test]
    fn one_stalled_job_over_cached_layers_leaves_warming_down() {
        use Paid::*;
        let cached = [Nothing; CACHED_JOBS_TO_STOP as usize];
        let after = |jobs: &[Paid]| verdicts(&[&cached[..], jobs].concat())[cached.len()..].to_vec();
        assert_eq!(after(&[Blocked, Nothing, Blocked, Nothing]), [false; 4]);
        assert_eq!(after(&[Blocked, Blocked, Nothing]), [false, true, true]);
        assert_eq!(after(&[Read]), [true]);
    }

    /// While warming is down, one chance in `SAMPLE_EVERY` warms all the same.
    #[test]
    fn warming_that_is_down_runs_one_chance_in_sample_every() {
        let mut v = Verdict::default();
        assert!(v.warm_now());
        for _ in 0..CACHED_JOBS_TO_STOP {
            v.record(Paid::Nothing);
        }
        let chances: Vec<bool> = (0..2 * SAMPLE_EVERY).map(|_| v.warm_now()).collect();
        let taken: Vec<usize> = chances.iter().enumerate().filter(|(_, w)| **w).map(|(i, _)| i).collect();
        assert_eq!(taken, [SAMPLE_EVERY as usize - 1, 2 * SAMPLE_EVERY as usize - 1]);
    }

    #[test]
    fn queued_descriptors_stay_within_the_budget() {
        let p = Prefetch::new(1, 3);
        let fd = || Arc::new(open::open_plain(std::path::Path::new("/"), OFlags::PATH, 0).unwrap());
        let a = p.hold(vec![fd(), fd()]).unwrap();
        assert!(p.hold(vec![fd(), fd()]).is_none(), "over budget");
        let b = p.hold(vec![fd()]).unwrap();
        drop(a);
        assert_eq!(p.budget.load(Ordering::Acquire), 2);
        drop(b);
        assert_eq!(p.budget.load(Ordering::Acquire), 3);
    }
}
