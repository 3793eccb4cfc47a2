//! (unionfs patch) Readers of `/dev/fuse` that spin, with as few wake-ups as possible.
//!
//! A synchronous caller (`ls -l`, `tar x`) sends one request, sleeps until the reply, then
//! sends the next. With fuser's default every worker sleeps in `read(2)`, each request wakes
//! one, and on a virtual machine waking a thread that sleeps on another CPU is a large part of
//! the round trip. Here the workers' descriptors are non-blocking and only *readers* read:
//!
//! * a reader polls the device for up to `spin` before it sleeps in `poll(2)`, so a request
//!   that follows the last reply within that time is taken without any wake-up, and it handles
//!   the request itself and reads again — a chain of requests is served by one thread;
//! * the other workers wait on a condition variable, never on the device, so a request does
//!   not wake them in vain. One is called in when a reader has found a request already
//!   waiting after each of its last `BACKLOG` requests (more callers than readers), or when
//!   the watch thread — which looks every `WATCH` while a reader is awake, and sleeps while
//!   they all sleep — sees every reader busy and a request waiting on the device (a request
//!   held up behind one that waits on slow I/O, or behind a reader stuck in a notification
//!   while the kernel waits on a request only another reader can take);
//! * a reader that spun in vain while another reader is still there goes back to waiting, so
//!   an idle daemon has one reader, asleep in `poll(2)`.

use std::time::Duration;
use std::time::Instant;

use nix::errno::Errno;
use parking_lot::Condvar;
use parking_lot::Mutex;

use crate::channel::Channel;

#[derive(Debug, Default)]
struct State {
    /// Workers reading or handling requests.
    readers: usize,
    /// Of those, handling a request.
    busy: usize,
    /// Of those, asleep in `poll(2)`.
    polling: usize,
    /// Waiting workers called in and not yet up.
    help: usize,
    /// The device is gone: every worker stops.
    closed: bool,
}

/// The workers' shared state (`Config::spin`).
#[derive(Debug)]
pub(crate) struct Leader {
    state: Mutex<State>,
    /// Waiting workers.
    turn: Condvar,
    /// The watch thread.
    tick: Condvar,
    spin: Duration,
    workers: usize,
}

/// One worker's part: whether it is a reader.
#[derive(Debug, Default)]
pub(crate) struct Worker {
    reader: bool,
    /// Requests in a row that were waiting when this reader came back for them.
    backlog: u32,
}

/// How often the watch thread looks, while a reader is awake.
const WATCH: Duration = Duration::from_micros(200);

/// Requests in a row found waiting before another worker is called in.
const BACKLOG: u32 = 4;

impl Leader {
    pub(crate) fn new(spin: Duration, workers: usize) -> Self {
        Leader {
            state: Mutex::new(State::default()),
            turn: Condvar::new(),
            tick: Condvar::new(),
            spin,
            workers: workers.max(1),
        }
    }

    /// Reads the next request for this worker (waiting for its turn first if it is not a
    /// reader); the caller handles it and then calls `done`. `ENODEV` once the device is gone.
    pub(crate) fn receive(&self, me: &mut Worker, ch: &Channel, buffer: &mut [u8]) -> nix::Result<usize> {
        // Whether this reader comes straight from handling a request (so a request that is
        // there at once was queued meanwhile).
        let mut fresh = me.reader;
        loop {
            if !me.reader {
                let mut st = self.state.lock();
                while !st.closed && st.readers > 0 && st.help == 0 {
                    self.turn.wait(&mut st);
                }
                if st.closed {
                    return Err(Errno::ENODEV);
                }
                st.help = st.help.saturating_sub(1);
                st.readers += 1;
                me.reader = true;
                fresh = false;
            }
            let start = Instant::now();
            let mut at_once = true;
            let got = loop {
                match ch.receive(buffer) {
                    Ok(size) => break Some(Ok(size)),
                    Err(Errno::ENOENT | Errno::EINTR) => {}
                    Err(Errno::EAGAIN) if start.elapsed() < self.spin => {
                        at_once = false;
                        std::hint::spin_loop();
                    }
                    Err(Errno::EAGAIN) => break None,
                    Err(err) => break Some(Err(err)),
                }
            };
            match got {
                Some(Ok(size)) => {
                    self.begin(me, fresh && at_once);
                    return Ok(size);
                }
                Some(Err(err)) => {
                    self.close();
                    return Err(err);
                }
                None => fresh = false,
            }
            {
                let mut st = self.state.lock();
                if st.readers > 1 {
                    st.readers -= 1;
                    me.reader = false;
                    continue;
                }
                st.polling += 1;
            }
            let waited = ch.wait_readable();
            {
                let mut st = self.state.lock();
                st.polling -= 1;
                if st.polling + 1 == st.readers {
                    self.tick.notify_one();
                }
            }
            if let Err(err) = waited {
                self.close();
                return Err(err);
            }
        }
    }

    /// A reader took a request; `backlog`: it was there at once when the reader came back
    /// from the last one. After a few of those in a row (more callers than readers) another
    /// worker is called in.
    fn begin(&self, me: &mut Worker, backlog: bool) {
        me.backlog = if backlog { me.backlog + 1 } else { 0 };
        let mut st = self.state.lock();
        st.busy += 1;
        if me.backlog >= BACKLOG && st.readers + st.help < self.workers {
            me.backlog = 0;
            st.help += 1;
            self.turn.notify_one();
        }
    }

    /// The request `receive` returned has been handled.
    pub(crate) fn done(&self) {
        self.state.lock().busy -= 1;
    }

    /// The device is gone, or a worker stops: every worker and the watch thread stop.
    pub(crate) fn close(&self) {
        let mut st = self.state.lock();
        st.closed = true;
        self.turn.notify_all();
        self.tick.notify_all();
    }

    /// The watch thread: while some reader is awake, every `WATCH`, calls in another
    /// worker if every reader is busy and a request waits on the device (`ch`: any of the
    /// session's descriptors; a zero-timeout `poll(2)` looks).
    pub(crate) fn watch(&self, ch: &Channel) {
        let mut st = self.state.lock();
        while !st.closed {
            if st.readers == 0 || st.polling == st.readers {
                self.tick.wait(&mut st);
                continue;
            }
            if st.busy == st.readers && st.readers + st.help < self.workers {
                let waiting = parking_lot::MutexGuard::unlocked(&mut st, || ch.pending());
                if waiting && !st.closed && st.busy == st.readers && st.readers + st.help < self.workers {
                    st.help += 1;
                    self.turn.notify_one();
                }
            }
            self.tick.wait_for(&mut st, WATCH);
        }
    }
}

