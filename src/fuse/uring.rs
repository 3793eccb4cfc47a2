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
    if std::env::var_os("UNIONFS_FAULT_URING").is_some() {
        // Test hook: the ring set-up fails (tests/uring.rs checks the fall-back).
        return Err(std::io::Error::other("UNIONFS_FAULT_URING is set"));
    }
    let cpus = uring::possible_cpus()?;
    let payload = state.payload.load(Ordering::Relaxed);
    for &cpu in &cpus {
        for i in 0..threads_per_cpu {
            let d = dispatcher.clone();
            let t =
                std::thread::Builder::new().name(format!("uring-{cpu}.{i}")).spawn(move || serve(&d, cpu, payload))?;
            threads.push(t);
        }
    }
    info!("FUSE over io_uring: {} queues × {threads_per_cpu} threads", cpus.len());
    Ok(())
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
fn serve<FS: fuser::Filesystem>(d: &fuser::Dispatcher<FS>, cpu: u16, payload: usize) -> std::io::Result<()> {
    uring::pin_to(cpu);
    let mut ring = FuseRing::new(d.device(), cpu, payload)?;
    let wake = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)?;
    let replies = Arc::new(Replies { done: Mutex::new(Vec::new()), wake, owner: std::thread::current().id() });
    ring.watch(replies.wake.as_fd())?;
    for _ in 0..SPARE {
        ring.add_slot()?;
    }
    let mut slots = Slots { free: SPARE, ..Default::default() };
    // The request buffer (page-aligned; fuser's parser wants 8).
    let mut raw = uring::RequestBuffer::new(payload + 4096)?;
    let mut prio = Priority::new();
    let r = serve_loop(d, &mut ring, &mut prio, &replies, &mut slots, raw.as_mut_slice());
    debug!("ring thread for CPU {cpu} ends");
    r
}

fn serve_loop<FS: fuser::Filesystem>(
    d: &fuser::Dispatcher<FS>,
    ring: &mut FuseRing,
    prio: &mut Priority,
    replies: &Arc<Replies>,
    slots: &mut Slots,
    buf: &mut [u8],
) -> std::io::Result<()> {
    // Replies taken from `replies.done` to commit (kept to reuse its allocation).
    let mut done = Vec::new();
    while slots.dead < ring.slots() {
        prio.before_wait(super::slow::busy);
        ring.wait()?;
        if ring.idle() && !ring.connected() {
            debug!("the FUSE connection is gone; {} slots were never cancelled", ring.slots() - slots.dead);
            break;
        }
        while let Some(ev) = ring.next_event(buf) {
            match ev? {
                Event::Wake => ring.watch(replies.wake.as_fd())?,
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
                    } else if !d.dispatch(&buf[..len], sink) {
                        replies.done.lock().push((slot, error_reply(ring.unique(slot), Errno::EIO)));
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
