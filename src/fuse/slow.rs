//! A small pool of threads for requests that may wait on slow I/O — copy-up of a large
//! file, `fsync`, `fallocate`, `copy_file_range` — so the event-loop threads hand them over
//! and keep serving everyone else. Replies are `Send`: the worker answers when done.
//!
//! [`AsidePool`] is the other kind: threads for short jobs worth running beside the caller
//! (a large read, which a ring thread would otherwise serve on the reader's own CPU, taking
//! turns with it), which takes a job only when a worker is free.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

pub(super) type Job = Box<dyn FnOnce() + Send + 'static>;

/// The pool. Jobs run in order of arrival on the first free worker.
#[derive(Debug)]
pub(super) struct SlowPool {
    tx: Mutex<Sender<Job>>,
}

impl SlowPool {
    /// Starts `threads` workers.
    pub(super) fn new(threads: usize) -> std::io::Result<SlowPool> {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new().name(format!("slow-{i}")).spawn(move || worker(&rx, || ()))?;
        }
        Ok(SlowPool { tx: Mutex::new(tx) })
    }

    /// Runs `job` on a worker (here, if the pool is gone).
    pub(super) fn run(&self, job: impl FnOnce() + Send + 'static) {
        let pending = Pending::start();
        let job = move || {
            let _pending = pending;
            job();
        };
        let sent = match self.tx.lock() {
            Ok(tx) => tx.send(Box::new(job)),
            Err(poisoned) => poisoned.into_inner().send(Box::new(job)),
        };
        if let Err(back) = sent {
            (back.0)();
        }
    }
}

/// Threads for short jobs run beside the caller instead of on its CPU's ring thread. A job
/// is taken only while some worker is free: a read stuck on a hung layer holds its worker,
/// and the jobs after it run where they arrived instead of queueing behind it.
#[derive(Debug)]
pub(super) struct AsidePool {
    tx: Mutex<Sender<Job>>,
    free: Arc<AtomicUsize>,
}

impl AsidePool {
    /// Starts `threads` workers named `name-N`.
    pub(super) fn new(threads: usize, name: &str) -> std::io::Result<AsidePool> {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let free = Arc::new(AtomicUsize::new(0));
        for i in 0..threads.max(1) {
            let (rx, free) = (rx.clone(), free.clone());
            std::thread::Builder::new().name(format!("{name}-{i}")).spawn(move || {
                free.fetch_add(1, Ordering::AcqRel);
                worker(&rx, || {
                    free.fetch_add(1, Ordering::AcqRel);
                });
            })?;
        }
        Ok(AsidePool { tx: Mutex::new(tx), free })
    }

    /// Runs `job` on a free worker; gives it back if none is free.
    pub(super) fn try_run(&self, job: Job) -> Result<(), Job> {
        if self.free.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_err() {
            return Err(job);
        }
        ASIDE.fetch_add(1, Ordering::SeqCst);
        let counted = move || {
            job();
            ASIDE.fetch_sub(1, Ordering::SeqCst);
        };
        let sent = match self.tx.lock() {
            Ok(tx) => tx.send(Box::new(counted)),
            Err(poisoned) => poisoned.into_inner().send(Box::new(counted)),
        };
        // (A job given back still counts itself out when it runs.)
        sent.map_err(|back| {
            self.free.fetch_add(1, Ordering::AcqRel);
            back.0
        })
    }
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
fn worker(rx: &Mutex<Receiver<Job>>, done: impl Fn()) {
    loop {
        let job = {
            let guard = match rx.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            match guard.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        // A job that panics (handlers catch their own) leaves the worker serving.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aside_pool_gives_a_job_back_while_every_worker_is_busy() {
        let pool = AsidePool::new(1, "aside-test").unwrap();
        // Wait for the worker to start (it counts itself free).
        while pool.free.load(Ordering::Acquire) == 0 {
            std::thread::yield_now();
        }
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
        while pool.free.load(Ordering::Acquire) == 0 {
            std::thread::yield_now();
        }
        let ran = ran_tx.clone();
        assert!(pool.try_run(Box::new(move || ran.send(3).unwrap())).is_ok());
        assert_eq!(ran_rx.recv().unwrap(), 3);
    }
}
