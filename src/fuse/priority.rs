//! The scheduling priority of the io_uring ring threads: when they run at `SCHED_IDLE`, when
//! at normal priority, and the watcher that brings back those that wait too long.
//!
//! A reply wakes a caller that slept on the ring thread's CPU, where the ring thread still
//! runs; the scheduler then moves the caller to the other, idle CPU, and every round trip pays
//! an idle CPU's wake-up (on a VM, a halted vCPU's). A CPU that runs only `SCHED_IDLE` work
//! counts as idle, so a ring thread at `SCHED_IDLE` when it replies keeps the caller on its
//! CPU: it takes the CPU at once, and the ring thread goes on when the caller next waits —
//! which is when its next request comes. Caller and ring thread then share one CPU, two
//! context switches per round trip.
//!
//! A ring thread that has served a request therefore replies, and waits for the next, at
//! `SCHED_IDLE`, and serves short requests there too: a switch of policy is a system call
//! that costs more than serving a cached `getxattr`. It goes back to normal priority
//! * before a request that may keep it busy for long ([`Priority::before_request`], [`long`]);
//! * while the slow pool has work ([`leave_idle_everywhere`], called when it gets some): a
//!   copy-up keeps a CPU busy at normal priority, and a ring thread at `SCHED_IDLE` beside it
//!   would wait for it;
//! * when no request came for a while ([`WATCH_PERIOD`], the watcher thread): requests of
//!   a chain follow each other within microseconds, but after a pause they may come in a
//!   burst beside other busy threads, and a thread woken at `SCHED_IDLE` then serves them
//!   late — worse, a request the kernel queues because no slot of its CPU was free waits for
//!   some reply on that CPU, however many slots are registered meanwhile. A timeout on the
//!   wait itself would do the same, but arming a timer on every wait costs more than it
//!   saves.
//!
//! The measurements behind each rule (and the machine they were taken on) are in
//! `docs/performance.md`, "FUSE over io_uring".

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tracing::{debug, warn};

use crate::sys::proc::IdlePolicy;

/// How long a ring thread may wait at `SCHED_IDLE` with no request before the watcher
/// brings it back to normal priority (between one and two periods).
pub const WATCH_PERIOD: Duration = Duration::from_millis(2);

/// Requests served at normal priority, not at `SCHED_IDLE`: every opcode but these short
/// ones — lookups, attributes, xattrs, creating and removing names, open and release (their
/// slow cases, copy-ups, go to the slow pool), and `IOCTL` (unionfs refuses every one). Long:
/// `READ`, `WRITE` (data through the daemon), `READDIR`, `READDIRPLUS`, renames, locks,
/// `LSEEK`, `FSYNC`, `FALLOCATE`, `COPY_FILE_RANGE`, `POLL`, and opcodes not known here.
const SHORT: [u32; 23] = [1, 3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 17, 18, 21, 22, 23, 24, 25, 27, 29, 34, 35, 39];

/// Whether a request with `opcode` is served at normal priority (see [`SHORT`]).
pub fn long(opcode: u32) -> bool {
    !SHORT.contains(&opcode)
}

/// What the watcher and the slow pool see of one ring thread.
#[derive(Debug)]
struct Shared {
    policy: Arc<IdlePolicy>,
    /// Waits begun so far (the watcher brings back a thread whose count stands still).
    waits: AtomicU64,
}

/// Every ring thread of the process.
static THREADS: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

/// One ring thread's priority, owned by that thread.
#[derive(Debug)]
pub struct Priority {
    shared: Arc<Shared>,
    /// This process may leave `SCHED_IDLE` again (else the thread never goes there).
    enabled: bool,
    /// A request came since the last wait (a thread that only timed out stays normal).
    served: bool,
}

impl Priority {
    /// The calling ring thread's, at normal priority now.
    pub fn new() -> Priority {
        let p = Priority::unwatched();
        let mut all = THREADS.lock();
        all.retain(|t| t.strong_count() > 0);
        all.push(Arc::downgrade(&p.shared));
        drop(all);
        p
    }

    /// One that neither the watcher nor [`leave_idle_everywhere`] sees (for tests of what
    /// the thread itself does, which the watcher would undo if the thread waited long for a
    /// CPU in between).
    fn unwatched() -> Priority {
        let shared = Arc::new(Shared { policy: IdlePolicy::current(), waits: AtomicU64::new(0) });
        Priority { shared, enabled: crate::sys::proc::idle_policy_reversible(), served: false }
    }

    /// Before the thread sends its replies and waits for the next request: `SCHED_IDLE` if
    /// it served one and the slow pool (`busy`) has no work.
    pub fn before_wait(&mut self, busy: impl Fn() -> bool) {
        self.shared.waits.fetch_add(1, Ordering::Relaxed);
        let idle = self.enabled && std::mem::take(&mut self.served) && !busy();
        self.set_idle(idle);
        if idle && busy() {
            // The pool got work while the thread went to SCHED_IDLE (the hand-over brings
            // back only the threads it sees there).
            self.set_idle(false);
        }
        if self.shared.policy.is_idle() {
            match watcher() {
                Some(w) => w.unpark(),
                None => {
                    self.enabled = false;
                    self.set_idle(false);
                }
            }
        }
    }

    /// Before the thread serves a request with `opcode`.
    pub fn before_request(&mut self, opcode: u32) {
        self.served = true;
        if long(opcode) {
            self.set_idle(false);
        }
    }

    /// Whether the thread is at `SCHED_IDLE` now.
    #[cfg(test)]
    fn is_idle(&self) -> bool {
        self.shared.policy.is_idle()
    }

    /// Switches the thread's policy if it differs; a refusal to leave `SCHED_IDLE` (it cannot
    /// happen once the probe passed) keeps it from going there again.
    fn set_idle(&mut self, idle: bool) {
        let policy = &self.shared.policy;
        if policy.is_idle() == idle {
            return;
        }
        let r = if idle { policy.enter() } else { policy.leave() };
        if let Err(e) = r
            && !idle
        {
            warn!("cannot leave SCHED_IDLE ({e}); replies are sent at normal priority from now on");
            self.enabled = false;
        }
    }
}

/// The ring threads at `SCHED_IDLE` now.
fn idle_threads() -> Vec<Arc<Shared>> {
    THREADS.lock().iter().filter_map(Weak::upgrade).filter(|t| t.policy.is_idle()).collect()
}

/// Brings every ring thread at `SCHED_IDLE` back to normal priority, the calling thread first
/// (a ring thread handing a job to the slow pool); they stay there while the pool has work.
pub fn leave_idle_everywhere() {
    let me = rustix::thread::gettid();
    let mut all = idle_threads();
    all.sort_by_key(|t| t.policy.tid() != me);
    for t in all {
        if let Err(e) = t.policy.leave() {
            debug!("cannot bring a ring thread back to normal priority: {e}");
        }
    }
}

/// The watcher thread (started with the first ring thread that goes to `SCHED_IDLE`): while
/// some ring thread is there, it looks every [`WATCH_PERIOD`] and brings back those that
/// began no wait since its last look; with none there it sleeps until one goes. `None` if it
/// cannot be started (ring threads then never wait at `SCHED_IDLE`).
fn watcher() -> Option<&'static std::thread::Thread> {
    static WATCHER: OnceLock<Option<std::thread::Thread>> = OnceLock::new();
    WATCHER
        .get_or_init(|| match std::thread::Builder::new().name("ring-watch".into()).spawn(watch) {
            Ok(h) => Some(h.thread().clone()),
            Err(e) => {
                warn!("cannot start the ring watcher ({e}); replies are sent at normal priority");
                None
            }
        })
        .as_ref()
}

fn watch() {
    let mut last: Vec<(Weak<Shared>, u64)> = Vec::new();
    loop {
        let idle = idle_threads();
        if idle.is_empty() {
            last.clear();
            std::thread::park();
            continue;
        }
        for t in &idle {
            let waits = t.waits.load(Ordering::Relaxed);
            let seen = last.iter().find(|(w, _)| w.as_ptr() == Arc::as_ptr(t)).map(|(_, n)| *n);
            if seen == Some(waits)
                && let Err(e) = t.policy.leave()
            {
                debug!("cannot bring a waiting ring thread back to normal priority: {e}");
            }
        }
        last = idle.iter().map(|t| (Arc::downgrade(t), t.waits.load(Ordering::Relaxed))).collect();
        std::thread::sleep(WATCH_PERIOD);
    }
}

/// Held by unit tests that change or check ring threads' priority process-wide (a slow job
/// handed over brings every ring thread of the process back to normal priority), so that
/// they do not run beside each other.
#[cfg(test)]
pub(super) static PROCESS_WIDE: Mutex<()> = Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_and_listings_are_long_lookups_and_attributes_short() {
        for op in [15, 16, 28, 44, 12, 45, 46, 20, 43, 47, 33, 40, 99] {
            assert!(long(op), "opcode {op}");
        }
        for op in [1, 3, 4, 22, 35, 18, 39, 10, 11, 9, 14] {
            assert!(!long(op), "opcode {op}");
        }
    }

    #[test]
    fn a_waiting_thread_that_served_goes_idle_and_the_watcher_brings_it_back() {
        let _alone = PROCESS_WIDE.lock();
        if !crate::sys::proc::idle_policy_reversible() {
            eprintln!("skipped: this process may not leave SCHED_IDLE");
            return;
        }
        std::thread::spawn(|| {
            // What the thread does itself, out of the watcher's sight: on a busy machine a
            // thread at SCHED_IDLE can wait long enough for a CPU that the watcher takes it
            // back to normal priority between two of these lines.
            let mut p = Priority::unwatched();
            // Only timed out: stays normal.
            p.before_wait(|| false);
            assert!(!p.is_idle());
            // Served a short request: idle; a long one brings it back.
            p.before_request(22);
            p.before_wait(|| false);
            assert!(p.is_idle());
            p.before_request(15);
            assert!(!p.is_idle());
            // The slow pool has work: normal.
            p.before_request(22);
            p.before_wait(|| true);
            assert!(!p.is_idle());
            p.before_request(22);
            p.before_wait(|| false);
            assert!(p.is_idle());
            drop(p);
            // Idle, then no wait for a few watch periods: the watcher brings it back.
            let mut p = Priority::new();
            p.before_request(22);
            p.before_wait(|| false);
            let t = std::time::Instant::now();
            while p.is_idle() && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(WATCH_PERIOD);
            }
            assert!(!p.is_idle(), "the watcher left a thread at SCHED_IDLE");
            // Really back: the thread's policy (field 41 of its stat) is SCHED_OTHER (0).
            let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            assert_eq!(rest.split(' ').nth(38), Some("0"));
        })
        .join()
        .unwrap();
    }
}
