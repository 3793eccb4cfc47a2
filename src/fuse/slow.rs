//! A pool of threads for requests that may wait on slow I/O — copy-up of a large file,
//! `fsync`, `fallocate`, `copy_file_range` — so the event-loop threads hand them over and keep
//! serving everyone else. Replies are `Send`: the worker answers when done. The pool starts
//! small and adds a thread whenever a job finds every worker busy (up to [`MAX_SLOW`]), so a
//! job never waits behind others stuck on a hung layer: an `fsync` of one file waited for
//! copy-ups of others held by a stopped lower layer until it answered. Threads added that
//! way end after [`EXTRA_IDLE`] without a job.
//!
//! [`AsidePool`] is the other kind: threads for short jobs worth running beside the caller
//! (a large read, which a ring thread would otherwise serve on the reader's own CPU, taking
//! turns with it), which takes a job only when a worker is free.

use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub(super) type Job = Box<dyn FnOnce() + Send + 'static>;

/// Most threads a [`SlowPool`] grows to; beyond, jobs wait for a worker.
pub const MAX_SLOW: usize = 64;

/// How long a thread the pool added waits for a job before it ends.
pub const EXTRA_IDLE: Duration = Duration::from_secs(10);

/// The pool. Jobs run in order of arrival on the first free worker.
#[derive(Debug)]
pub(super) struct SlowPool {
    tx: Mutex<Sender<Job>>,
    rx: Arc<Mutex<Receiver<Job>>>,
    /// Workers less jobs handed over and not finished (below zero: jobs waiting for a worker).
    idle: Arc<AtomicIsize>,
    /// Workers running (the first ones, [`SlowPool::new`]'s, never end).
    threads: Arc<AtomicUsize>,
    /// How long an added worker waits for a job before it ends ([`EXTRA_IDLE`]).
    extra_idle: Duration,
}

impl SlowPool {
    /// Starts `threads` workers.
    pub(super) fn new(threads: usize) -> std::io::Result<SlowPool> {
        SlowPool::with_extra_idle(threads, EXTRA_IDLE)
    }

    /// [`SlowPool::new`], its added workers ending after `extra_idle` without a job.
    fn with_extra_idle(threads: usize, extra_idle: Duration) -> std::io::Result<SlowPool> {
        let base = threads.max(1);
        let (tx, rx) = channel::<Job>();
        let pool = SlowPool {
            tx: Mutex::new(tx),
            rx: Arc::new(Mutex::new(rx)),
            idle: Arc::new(AtomicIsize::new(base as isize)),
            threads: Arc::new(AtomicUsize::new(base)),
            extra_idle,
        };
        for i in 0..base {
            pool.spawn(i, false)?;
        }
        Ok(pool)
    }

    /// Starts worker `slow-N`; an `extra` one ends once it has waited `extra_idle` for a job
    /// while no job handed over counts on it (it was counted in `threads` and `idle` already).
    fn spawn(&self, n: usize, extra: bool) -> std::io::Result<()> {
        let (rx, idle, threads, wait) = (self.rx.clone(), self.idle.clone(), self.threads.clone(), self.extra_idle);
        std::thread::Builder::new().name(format!("slow-{n}")).spawn(move || {
            // Ends only if no job handed over counts on this worker (else one is on its way).
            let end = || {
                let unclaimed =
                    idle.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n > 0).then_some(n - 1)).is_ok();
                if unclaimed {
                    threads.fetch_sub(1, Ordering::AcqRel);
                }
                unclaimed
            };
            let done = || {
                idle.fetch_add(1, Ordering::AcqRel);
            };
            worker(&rx, done, extra.then_some((wait, &end as &dyn Fn() -> bool)));
        })?;
        Ok(())
    }

    /// Runs `job` on a worker (here, if the pool is gone): a free one, else one started for it.
    pub(super) fn run(&self, job: impl FnOnce() + Send + 'static) {
        let pending = Pending::start();
        let job = move || {
            let _pending = pending;
            job();
        };
        if self.idle.fetch_sub(1, Ordering::AcqRel) <= 0 && self.grow() {
            self.idle.fetch_add(1, Ordering::AcqRel);
        }
        if let Err(back) = send(&self.tx, Box::new(job)) {
            back();
        }
    }

    /// Starts a worker for a job that found none free, unless the pool has [`MAX_SLOW`];
    /// it ends after [`EXTRA_IDLE`] idle. Whether it started.
    fn grow(&self) -> bool {
        let more = self.threads.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_SLOW).then_some(n + 1));
        let Ok(n) = more else { return false };
        match self.spawn(n, true) {
            Ok(()) => true,
            Err(e) => {
                self.threads.fetch_sub(1, Ordering::AcqRel);
                tracing::warn!("cannot start another thread for slow requests: {e}");
                false
            }
        }
    }
}

/// Threads for short jobs run beside the caller instead of on its CPU's ring thread. A job
/// is taken only while some worker is free: a read stuck on a hung layer holds its worker,
/// and the jobs after it run where they arrived instead of queueing behind it. The threads
/// start with the first job offered (a mount whose reads never reach the daemon, with
/// passthrough, has none).
#[derive(Debug)]
pub(super) struct AsidePool {
    threads: usize,
    name: &'static str,
    /// The workers, once started; `None` if they could not start.
    started: OnceLock<Option<Workers>>,
}

/// An [`AsidePool`]'s running workers: their queue, and how many of them are free.
#[derive(Debug)]
struct Workers {
    tx: Mutex<Sender<Job>>,
    free: Arc<AtomicUsize>,
}

impl AsidePool {
    /// A pool of `threads` workers named `name-N`, started on first use.
    pub(super) fn new(threads: usize, name: &'static str) -> AsidePool {
        AsidePool { threads: threads.max(1), name, started: OnceLock::new() }
    }

    /// Runs `job` on a free worker; gives it back if none is free (or none could start).
    pub(super) fn try_run(&self, job: Job) -> Result<(), Job> {
        let started = self.started.get_or_init(|| {
            let free = Arc::new(AtomicUsize::new(self.threads));
            let done = free.clone();
            match spawn_workers(self.threads, self.name, move || {
                done.fetch_add(1, Ordering::AcqRel);
            }) {
                Ok(tx) => Some(Workers { tx: Mutex::new(tx), free }),
                Err(e) => {
                    tracing::warn!("cannot start {} threads ({e}); their jobs run where they arrive", self.name);
                    None
                }
            }
        });
        let Some(Workers { tx, free }) = started else { return Err(job) };
        if free.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_err() {
            return Err(job);
        }
        ASIDE.fetch_add(1, Ordering::SeqCst);
        let counted = move || {
            job();
            ASIDE.fetch_sub(1, Ordering::SeqCst);
        };
        // (A job given back still counts itself out when it runs.)
        send(tx, Box::new(counted)).inspect_err(|_| {
            free.fetch_add(1, Ordering::AcqRel);
        })
    }
}

/// Starts `threads` workers named `name-N` serving one queue, each calling `done` after every
/// job; returns the queue.
fn spawn_workers(threads: usize, name: &str, done: impl Fn() + Clone + Send + 'static) -> std::io::Result<Sender<Job>> {
    let (tx, rx) = channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..threads.max(1) {
        let (rx, done) = (rx.clone(), done.clone());
        std::thread::Builder::new().name(format!("{name}-{i}")).spawn(move || worker(&rx, done, None))?;
    }
    Ok(tx)
}

/// Queues `job` for a pool's workers; gives it back if they are gone.
fn send(tx: &Mutex<Sender<Job>>, job: Job) -> Result<(), Job> {
    let tx = tx.lock();
    tx.send(job).map_err(|back| back.0)
}

/// Jobs handed over and not finished, in every pool of the process.
static PENDING: AtomicUsize = AtomicUsize::new(0);

/// Whether some slow job (a copy-up, an fsync, …) waits or runs now. Ring threads then serve,
/// reply and wait at their normal priority: a copy-up keeps a CPU busy at normal priority,
/// and a ring thread at `SCHED_IDLE` beside it waits for it (a small read stalled for a
/// quarter of a second behind six copy-ups) — and so does a ring thread that has just handed
/// a job over and must register a fresh slot before the kernel runs out of free ones.
pub(super) fn busy() -> bool {
    PENDING.load(Ordering::SeqCst) > 0 || ASIDE.load(Ordering::SeqCst) > 0
}

/// Jobs handed to an [`AsidePool`] and not finished. A ring thread waiting at `SCHED_IDLE`
/// on the reader's CPU would commit their replies only once the reader blocks for want of
/// them, undoing the overlap the hand-over is for.
static ASIDE: AtomicUsize = AtomicUsize::new(0);

/// Counts a job as pending from its hand-over until it is dropped (run, or dropped unrun,
/// also when it panics).
struct Pending;

impl Pending {
    fn start() -> Pending {
        if PENDING.fetch_add(1, Ordering::SeqCst) == 0 {
            // Ring threads waiting at SCHED_IDLE check `busy` only when they next wait; the
            // one handing the job over (running now, maybe at SCHED_IDLE) is brought back first.
            super::priority::leave_idle_everywhere();
        }
        Pending
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        PENDING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs the pool's jobs as they come, calling `done` after each, until the pool is gone.
/// With `ends`, also once it has waited that long for a job — for the queue too, which a
/// worker waiting without end holds meanwhile — and the function agrees to end.
fn worker(rx: &Mutex<Receiver<Job>>, done: impl Fn(), ends: Option<(Duration, &dyn Fn() -> bool)>) {
    loop {
        let job = match ends {
            None => rx.lock().recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some((wait, _)) => {
                let deadline = Instant::now() + wait;
                match rx.try_lock_until(deadline) {
                    Some(queue) => queue.recv_timeout(deadline.saturating_duration_since(Instant::now())),
                    None => Err(RecvTimeoutError::Timeout),
                }
            }
        };
        match job {
            Ok(job) => {
                // A job that panics (handlers catch their own) leaves the worker serving.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                done();
            }
            Err(RecvTimeoutError::Timeout) => {
                if ends.is_some_and(|(_, end)| end()) {
                    return;
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slow_pool_starts_a_worker_for_a_job_that_finds_every_one_busy() {
        // Handing a job over brings every ring thread back to normal priority.
        let _alone = super::super::priority::PROCESS_WIDE.lock();
        let pool = SlowPool::new(1).unwrap();
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let (ran_tx, ran_rx) = std::sync::mpsc::channel::<u32>();
        let ran = ran_tx.clone();
        pool.run(move || {
            hold_rx.recv().unwrap();
            ran.send(1).unwrap();
        });
        // The one worker is held: the next two jobs run all the same, on workers added.
        let ran = ran_tx.clone();
        pool.run(move || ran.send(2).unwrap());
        let ran = ran_tx.clone();
        pool.run(move || ran.send(3).unwrap());
        let mut got = [ran_rx.recv().unwrap(), ran_rx.recv().unwrap()];
        got.sort_unstable();
        assert_eq!(got, [2, 3]);
        assert!(pool.threads.load(Ordering::Acquire) >= 2);
        hold_tx.send(()).unwrap();
        assert_eq!(ran_rx.recv().unwrap(), 1);
        // Every job finished: as many idle workers as threads.
        while pool.idle.load(Ordering::Acquire) != pool.threads.load(Ordering::Acquire) as isize {
            std::thread::yield_now();
        }
    }

    #[test]
    fn workers_the_slow_pool_added_end_once_idle_and_it_grows_again_after() {
        // Handing a job over brings every ring thread back to normal priority.
        let _alone = super::super::priority::PROCESS_WIDE.lock();
        let pool = SlowPool::with_extra_idle(1, Duration::from_millis(100)).unwrap();
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        pool.run(move || hold_rx.recv().unwrap());
        let (ran_tx, ran_rx) = std::sync::mpsc::channel::<()>();
        for _ in 0..3 {
            let ran = ran_tx.clone();
            pool.run(move || ran.send(()).unwrap());
        }
        for _ in 0..3 {
            ran_rx.recv().unwrap();
        }
        assert!(pool.threads.load(Ordering::Acquire) > 1, "no worker added");
        hold_tx.send(()).unwrap();
        // The first worker waits for the queue without end, holding it: the added ones must
        // end all the same (they once waited behind it for good).
        let bound = Instant::now() + Duration::from_secs(30);
        while pool.threads.load(Ordering::Acquire) > 1 {
            assert!(Instant::now() < bound, "added workers still run 30 s after their last job");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(pool.idle.load(Ordering::Acquire), 1);
        // And the pool still grows for a job that finds its one worker busy.
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        pool.run(move || hold_rx.recv().unwrap());
        let ran = ran_tx.clone();
        pool.run(move || ran.send(()).unwrap());
        ran_rx.recv().unwrap();
        hold_tx.send(()).unwrap();
    }

    #[test]
    fn the_aside_pool_gives_a_job_back_while_every_worker_is_busy() {
        let pool = AsidePool::new(1, "aside-test");
        assert!(pool.started.get().is_none(), "threads started before any job");
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let (ran_tx, ran_rx) = std::sync::mpsc::channel::<u32>();
        let ran = ran_tx.clone();
        assert!(
            pool.try_run(Box::new(move || {
                hold_rx.recv().unwrap();
                ran.send(1).unwrap();
            }))
            .is_ok()
        );
        // The one worker is held: the next job comes back to run where it arrived.
        let ran = ran_tx.clone();
        let back = pool.try_run(Box::new(move || ran.send(2).unwrap())).expect_err("taken with no worker free");
        back();
        assert_eq!(ran_rx.recv().unwrap(), 2);
        hold_tx.send(()).unwrap();
        assert_eq!(ran_rx.recv().unwrap(), 1);
        // Free again once the job ended.
        let free = &pool.started.get().unwrap().as_ref().unwrap().free;
        while free.load(Ordering::Acquire) == 0 {
            std::thread::yield_now();
        }
        let ran = ran_tx.clone();
        assert!(pool.try_run(Box::new(move || ran.send(3).unwrap())).is_ok());
        assert_eq!(ran_rx.recv().unwrap(), 3);
    }
}
