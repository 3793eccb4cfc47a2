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
        let sent = match self.tx.lock() {
            Ok(tx) => tx.send(Box::new(job)),
            Err(poisoned) => poisoned.into_inner().send(Box::new(job)),
        };
        if let Err(back) = sent {
            (back.0)();
        }
    }
}

/// Jobs running now, in every pool of the process.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Whether some slow job (a copy-up, an fsync, …) runs now. Ring threads then send their
/// replies at their normal priority: a copy-up keeps a CPU busy at normal priority, and a
/// ring thread left at `SCHED_IDLE` beside it would wait for it (a small read stalled for a
/// quarter of a second behind six copy-ups).
pub(super) fn busy() -> bool {
    RUNNING.load(Ordering::Relaxed) > 0
}

/// Counts a job as running for as long as it lives (also when it panics).
struct Running;

impl Running {
    fn start() -> Running {
        RUNNING.fetch_add(1, Ordering::Relaxed);
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::Relaxed);
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
        let _running = Running::start();
        job();
    }
}
