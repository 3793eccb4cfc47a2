//! The FUSE-over-io_uring transport: which requests it carries, its threads, and how a reply
//! made on any thread gets back to the ring it belongs to.
//!
//! When the kernel offers `FUSE_OVER_IO_URING` (Linux 6.14+ with `fuse.enable_uring=Y`) and
//! the mount wants it ([`crate::config::MountOptions::wants_uring`]), `INIT` accepts it and,
//! once the session runs, [`start`]
//! gives every possible CPU `threads_per_cpu` threads pinned to it, each with its own io_uring
//! and request slots on that CPU's queue ([`crate::sys::uring::FuseRing`]). The kernel then
//! sends every request except `FORGET` and `INTERRUPT` through the rings, to a thread on the
//! caller's CPU; the `/dev/fuse` threads keep serving those two.
//!
//! A ring thread keeps [`SPARE`] (one) slot free for the kernel: while it runs a request
//! inline it has none, so the kernel gives new requests to the CPU's other threads and a
//! request stuck on slow I/O holds up no other. A request a handler answers later from another
//! thread (the slow pool: copy-ups, fsync, …) keeps its slot until that reply, so the thread
//! registers another slot (up to [`MAX_SLOTS`]) and goes on serving; the reply is queued for
//! the ring thread and an eventfd the ring also waits on wakes it to commit. The kernel hands
//! a request that found every slot of its CPU busy only to a slot that commits, not to one
//! registered afterwards, so it is the number of threads per CPU that absorbs a burst of slow
//! requests; a burst larger than that can leave a request waiting for one of them to finish.
//! Threads are added while every one of a CPU's is busy inline (`Elastic`, up to
//! `MAX_THREADS_PER_CPU`), so requests stuck on a hung layer leave free slots for the
//! rest; but requests the kernel queued while none was free stay queued until some slot
//! commits, so a burst of requests on a hung layer can still hold up the others queued
//! behind it on that CPU until the layer answers (the `/dev/fuse` transport has no such
//! queue: `-o nouring` where layers may hang).
//!
//! An idle ring thread sleeps without a timer: one thread of the session also polls the device
//! for the end of the connection and wakes the others then (`Watch`).
//!
//! Replies are sent, and the next request awaited, at `SCHED_IDLE` where the thread may come
//! back from it, so that the woken caller keeps its CPU: `fuse::priority` owns when.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{JoinHandle, ThreadId};

use parking_lot::Mutex;
use tracing::{debug, info, warn};

use super::priority::Priority;
use crate::error::Errno;
use crate::sys::uring::{self, Event, FuseRing};

/// Whether a mount may use io_uring, and whether it does.
#[derive(Debug, Default)]
pub struct UringState {
    /// The mount asks for it (`-o uring`).
    pub(super) wanted: bool,
    /// `INIT` accepted `FUSE_OVER_IO_URING`.
    pub(super) negotiated: AtomicBool,
    /// The payload buffer every slot needs (the kernel's `max(max_write, max_pages × page)`).
    pub(super) payload: AtomicUsize,
}

impl UringState {
    pub(super) fn new(wanted: bool) -> UringState {
        UringState { wanted, ..Default::default() }
    }
}

/// Most slots one ring thread registers, however many slow requests wait at once (beyond,
/// requests wait for a slot to commit, as they wait for a free thread on `/dev/fuse`).
pub const MAX_SLOTS: usize = 64;

/// Free slots each ring thread keeps registered: one, so a thread busy with a request inline
/// exposes none the kernel could fill while it is busy (with more, a request stuck on slow
/// I/O held up the requests waiting in its thread's other slots).
pub const SPARE: usize = 1;

/// `FUSE_FORGET` and `FUSE_BATCH_FORGET` have no reply (the kernel sends them on `/dev/fuse`).
const NO_REPLY: [u32; 2] = [2, 42];

/// Replies made for one ring thread's slots, by that thread or another.
#[derive(Debug)]
struct Replies {
    /// (slot, reply bytes) not committed yet.
    done: Mutex<Vec<(usize, Vec<u8>)>>,
    /// Written to when a reply comes from another thread (the ring waits on it).
    wake: OwnedFd,
    /// The ring thread (its own replies need no wake-up).
    owner: ThreadId,
}

/// Where the reply to the request in one slot goes.
#[derive(Debug)]
struct SlotSink {
    replies: Arc<Replies>,
    slot: usize,
}

impl fuser::ReplySink for SlotSink {
    fn send(&self, data: &[std::io::IoSlice<'_>]) -> std::io::Result<()> {
        let mut v = Vec::with_capacity(data.iter().map(|d| d.len()).sum());
        for d in data {
            v.extend_from_slice(d);
        }
        self.replies.done.lock().push((self.slot, v));
        if std::thread::current().id() != self.replies.owner {
            rustix::io::write(&self.replies.wake, &1u64.to_ne_bytes())?;
        }
        Ok(())
    }
}

/// A `fuse_out_header` carrying only an error for request `unique`.
fn error_reply(unique: u64, e: Errno) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&16u32.to_ne_bytes());
    v.extend_from_slice(&(-e.raw()).to_ne_bytes());
    v.extend_from_slice(&unique.to_ne_bytes());
    v
}

/// Starts the ring threads of a session whose `INIT` accepted io_uring (none otherwise).
pub fn start<FS: fuser::Filesystem + 'static>(
    dispatcher: fuser::Dispatcher<FS>,
    state: &Arc<UringState>,
    threads_per_cpu: usize,
) -> std::io::Result<Vec<JoinHandle<std::io::Result<()>>>> {
    if !state.negotiated.load(Ordering::Relaxed) {
        return Ok(Vec::new());
    }
    // Once INIT accepted io_uring the kernel holds requests until every queue has a slot:
    // if the rings cannot be set up, turn io_uring off for the connection instead.
    let mut threads = Vec::new();
    if let Err(e) = start_rings(&dispatcher, state, threads_per_cpu, &mut threads) {
        warn!("cannot start FUSE over io_uring ({e}); serving /dev/fuse reads");
        if let Err(e) = uring::refuse(dispatcher.device()) {
            warn!("cannot turn FUSE over io_uring off ({e}): requests may wait");
        }
    }
    Ok(threads)
}

fn start_rings<FS: fuser::Filesystem + 'static>(
    dispatcher: &fuser::Dispatcher<FS>,
    state: &Arc<UringState>,
    threads_per_cpu: usize,
    threads: &mut Vec<JoinHandle<std::io::Result<()>>>,
) -> std::io::Result<()> {
    if crate::hooks::fault_uring() {
        return Err(std::io::Error::other("the test hook UNIONFS_FAULT_URING is set"));
    }
    let cpus = uring::possible_cpus()?;
    let payload = state.payload.load(Ordering::Relaxed);
    let elastic = Arc::new(Elastic::new(cpus.len(), threads_per_cpu));
    for (q, &cpu) in cpus.iter().enumerate() {
        for i in 0..threads_per_cpu {
            let (d, el) = (dispatcher.clone(), elastic.clone());
            let t = std::thread::Builder::new().name(format!("uring-{cpu}.{i}")).spawn(move || {
                let r = serve(&d, Ring { cpu, queue: q, payload, elastic: el.clone() });
                el.join_extra();
                r
            })?;
            threads.push(t);
        }
    }
    info!("FUSE over io_uring: {} queues × {threads_per_cpu} threads", cpus.len());
    Ok(())
}

/// Most ring threads on one CPU's queue.
const MAX_THREADS_PER_CPU: usize = 64;

/// Ring threads that grow while every one of a CPU's is busy with a request: a request stuck
/// on a hung layer holds its thread, and the kernel gives a CPU's requests only to that
/// CPU's threads, so without a free one they would all wait.
#[derive(Debug)]
struct Elastic {
    /// Per queue: threads running a request inline.
    busy: Vec<AtomicUsize>,
    /// Per queue: threads alive.
    total: Vec<AtomicUsize>,
    /// Threads started while serving, joined by the first ones before they end.
    extra: Mutex<Vec<JoinHandle<std::io::Result<()>>>>,
    /// Every ring thread's reply queue, for its eventfd: how the thread that sees the end of
    /// the connection, or gives up watching for it, wakes the others.
    rings: Mutex<Vec<Arc<Replies>>>,
    /// Some ring thread polls the device for the end of the connection ([`Watch`]).
    watched: AtomicBool,
    /// That thread saw the end.
    ended: AtomicBool,
}

impl Elastic {
    fn new(queues: usize, per_queue: usize) -> Elastic {
        Elastic {
            busy: (0..queues).map(|_| AtomicUsize::new(0)).collect(),
            total: (0..queues).map(|_| AtomicUsize::new(per_queue)).collect(),
            extra: Mutex::new(Vec::new()),
            rings: Mutex::new(Vec::new()),
            watched: AtomicBool::new(false),
            ended: AtomicBool::new(false),
        }
    }

    /// Wakes every ring thread (through its eventfd).
    fn wake_all(&self) {
        for r in self.rings.lock().iter() {
            if let Err(e) = rustix::io::write(&r.wake, &1u64.to_ne_bytes()) {
                debug!("cannot wake a ring thread: {e}");
            }
        }
    }

    /// A thread of queue `q` starts a request inline: whether it was the last free one and
    /// another may start (counted already).
    fn enter(&self, q: usize) -> bool {
        let busy = self.busy[q].fetch_add(1, Ordering::AcqRel) + 1;
        busy >= self.total[q].load(Ordering::Acquire)
            && self.total[q]
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| (t < MAX_THREADS_PER_CPU).then_some(t + 1))
                .is_ok()
    }

    fn leave(&self, q: usize) {
        self.busy[q].fetch_sub(1, Ordering::AcqRel);
    }

    /// Waits for the threads started while serving (they end with the connection).
    fn join_extra(&self) {
        loop {
            let more = std::mem::take(&mut *self.extra.lock());
            if more.is_empty() {
                return;
            }
            for t in more {
                if let Ok(Err(e)) = t.join() {
                    debug!("ring thread: {e}");
                }
            }
        }
    }
}

/// Where a ring thread serves.
#[derive(Debug, Clone)]
struct Ring {
    cpu: u16,
    /// Index of the CPU's queue.
    queue: usize,
    payload: usize,
    elastic: Arc<Elastic>,
}

/// Starts one more ring thread on `at`'s queue (counted by [`Elastic::enter`] already).
fn grow<FS: fuser::Filesystem + 'static>(d: &fuser::Dispatcher<FS>, at: &Ring) {
    let (d, r) = (d.clone(), at.clone());
    let started = std::thread::Builder::new().name(format!("uring-{}.more", at.cpu)).spawn(move || serve(&d, r));
    match started {
        Ok(t) => at.elastic.extra.lock().push(t),
        Err(e) => {
            at.elastic.total[at.queue].fetch_sub(1, Ordering::AcqRel);
            warn!("cannot start another ring thread: {e}");
        }
    }
}

/// Whether this ring thread is the one polling the device for the end of the connection. The
/// first thread to wait takes it; a thread that stops hands it over (wakes the others, the
/// next to wait takes it), so some thread always watches while any serves. Ring threads wait
/// without a timer, so this poll is what ends a thread whose slots the kernel never cancels.
struct Watch<'a> {
    elastic: &'a Elastic,
    mine: bool,
}

impl Watch<'_> {
    /// Takes the watch if nobody has it; true if this thread must queue the poll now.
    fn take(&mut self) -> bool {
        if self.mine || self.elastic.watched.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.mine = true;
        true
    }

    /// The device polled its end: every thread is to look whether its connection is gone.
    fn ended(&self) {
        self.elastic.ended.store(true, Ordering::Release);
        self.elastic.wake_all();
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if self.mine {
            self.elastic.watched.store(false, Ordering::Release);
            self.elastic.wake_all();
        }
    }
}

/// What a ring thread knows of its slots.
#[derive(Debug, Default)]
struct Slots {
    /// Registered or fetching: the kernel may put a request in it.
    free: usize,
    /// Ended by the kernel (unmount).
    dead: usize,
    /// Some slot received a request (the ring is live).
    live: bool,
    /// Registrations refused with `EAGAIN` so far (the connection was not ready).
    retries: usize,
}

/// One ring thread: register a slot, then serve requests until the unmount.
fn serve<FS: fuser::Filesystem + 'static>(d: &fuser::Dispatcher<FS>, at: Ring) -> std::io::Result<()> {
    let (cpu, payload) = (at.cpu, at.payload);
    uring::pin_to(cpu);
    let mut ring = FuseRing::new(d.device(), cpu, payload)?;
    let wake = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)?;
    let replies = Arc::new(Replies { done: Mutex::new(Vec::new()), wake, owner: std::thread::current().id() });
    at.elastic.rings.lock().push(replies.clone());
    ring.watch(replies.wake.as_fd())?;
    for _ in 0..SPARE {
        ring.add_slot()?;
    }
    let mut slots = Slots { free: SPARE, ..Default::default() };
    // The request buffer (page-aligned; fuser's parser wants 8).
    let mut raw = uring::RequestBuffer::new(payload + 4096)?;
    let mut prio = Priority::new();
    let r = serve_loop(d, &at, &mut ring, &mut prio, &replies, &mut slots, raw.as_mut_slice());
    debug!("ring thread for CPU {cpu} ends");
    r
}

fn serve_loop<FS: fuser::Filesystem + 'static>(
    d: &fuser::Dispatcher<FS>,
    at: &Ring,
    ring: &mut FuseRing,
    prio: &mut Priority,
    replies: &Arc<Replies>,
    slots: &mut Slots,
    buf: &mut [u8],
) -> std::io::Result<()> {
    // Replies taken from `replies.done` to commit (kept to reuse its allocation).
    let mut done = Vec::new();
    let mut watch = Watch { elastic: &at.elastic, mine: false };
    while slots.dead < ring.slots() {
        if watch.take() {
            ring.watch_hangup()?;
        }
        prio.before_wait(super::slow::busy);
        ring.wait()?;
        while let Some(ev) = ring.next_event(buf) {
            match ev? {
                Event::Wake => ring.watch(replies.wake.as_fd())?,
                Event::Hangup => watch.ended(),
                Event::Failed { slot, err: Errno::EAGAIN } if !slots.live && slots.retries < 100 => {
                    // The connection finishes INIT after its reply is read; try again shortly.
                    slots.retries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    ring.register(slot)?;
                }
                Event::Failed { err: Errno::ENOTCONN | Errno::ECANCELED | Errno::ENODEV, .. } => {
                    slots.free = slots.free.saturating_sub(1);
                    slots.dead += 1;
                }
                Event::Failed { err, .. } => {
                    warn!("FUSE over io_uring: {err}; this ring thread stops");
                    return if slots.live { Err(err.into()) } else { Ok(()) };
                }
                Event::Request { slot, len } => {
                    slots.live = true;
                    slots.free -= 1;
                    crate::stats::add(crate::stats::Counter::RingRequests, 1);
                    let sink = Arc::new(SlotSink { replies: replies.clone(), slot });
                    let opcode = ring.opcode(slot);
                    prio.before_request(opcode);
                    if NO_REPLY.contains(&opcode) {
                        debug!("opcode {opcode} arrived on a ring; nothing to reply");
                        let _ = d.dispatch(&buf[..len], sink);
                        replies.done.lock().push((slot, error_reply(ring.unique(slot), Errno::ENOSYS)));
                    } else {
                        if at.elastic.enter(at.queue) {
                            grow(d, at);
                        }
                        let ok = d.dispatch(&buf[..len], sink);
                        at.elastic.leave(at.queue);
                        if !ok {
                            replies.done.lock().push((slot, error_reply(ring.unique(slot), Errno::EIO)));
                        }
                    }
                }
            }
            // Commit every reply made so far (here or on another thread).
            std::mem::swap(&mut done, &mut *replies.done.lock());
            for (slot, reply) in done.drain(..) {
                match ring.commit(slot, &reply) {
                    Ok(()) => slots.free += 1,
                    Err(e) => {
                        debug!("cannot commit slot {slot}: {e}");
                        slots.dead += 1;
                    }
                }
            }
            // Keep SPARE slots the kernel can fill; the others wait for slow replies.
            while slots.free < SPARE && slots.dead == 0 && ring.slots() < MAX_SLOTS {
                ring.add_slot()?;
                slots.free += 1;
            }
        }
        if at.elastic.ended.load(Ordering::Acquire) && !ring.connected() {
            debug!("the FUSE connection is gone; {} slots were never cancelled", ring.slots() - slots.dead);
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reply_is_a_bare_out_header() {
        let r = error_reply(0x1234, Errno::ENOENT);
        assert_eq!(r.len(), 16);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 16);
        assert_eq!(i32::from_ne_bytes(r[4..8].try_into().unwrap()), -libc::ENOENT);
        assert_eq!(u64::from_ne_bytes(r[8..16].try_into().unwrap()), 0x1234);
    }

    #[test]
    fn a_reply_from_another_thread_is_queued_and_wakes_the_ring() {
        let wake = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
        let replies = Arc::new(Replies { done: Mutex::new(Vec::new()), wake, owner: std::thread::current().id() });
        let sink = SlotSink { replies: replies.clone(), slot: 3 };
        fuser::ReplySink::send(&sink, &[std::io::IoSlice::new(b"ab")]).unwrap();
        let sink = SlotSink { replies: replies.clone(), slot: 5 };
        std::thread::spawn(move || {
            fuser::ReplySink::send(&sink, &[std::io::IoSlice::new(b"cd"), std::io::IoSlice::new(b"e")]).unwrap();
        })
        .join()
        .unwrap();
        assert_eq!(*replies.done.lock(), vec![(3, b"ab".to_vec()), (5, b"cde".to_vec())]);
        // Only the other thread's reply wrote to the eventfd.
        let mut n = [0u8; 8];
        rustix::io::read(&replies.wake, &mut n).unwrap();
        assert_eq!(u64::from_ne_bytes(n), 1);
    }
}
