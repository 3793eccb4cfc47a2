//! A small pool of threads for requests that may wait on slow I/O — copy-up of a large
//! file, `fsync`, `fallocate`, `copy_file_range` — so the event-loop threads hand them over
//! and keep serving everyone else. Replies are `Send`: the worker answers when done.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send + 'static>;

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
            std::thread::Builder::new().name(format!("slow-{i}")).spawn(move || worker(&rx))?;
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

/// Jobs handed over and not finished, in every pool of the process.
static PENDING: AtomicUsize = AtomicUsize::new(0);

/// Whether some slow job (a copy-up, an fsync, …) waits or runs now. Ring threads then serve,
/// reply and wait at their normal priority: a copy-up keeps a CPU busy at normal priority,
/// and a ring thread at `SCHED_IDLE` beside it waits for it (a small read stalled for a
/// quarter of a second behind six copy-ups) — and so does a ring thread that has just handed
/// a job over and must register a fresh slot before the kernel runs out of free ones.
pub(super) fn busy() -> bool {
    PENDING.load(Ordering::SeqCst) > 0
}

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

fn worker(rx: &Mutex<Receiver<Job>>) {
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
        job();
    }
}
