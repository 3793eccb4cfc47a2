//! The FUSE-over-io_uring transport: which requests it carries, its threads, and how a reply
//! made on any thread gets back to the ring it belongs to.
//!
//! Experimental, off by default. When the kernel offers `FUSE_OVER_IO_URING` (Linux 6.14+
//! with `fuse.enable_uring=Y`) and the mount asks for it (`-o uring`), `INIT` accepts it and, once the session runs,
//! [`start`] gives every possible CPU `threads_per_cpu` threads pinned to it, each with one
//! request slot on that CPU's queue ([`crate::sys::uring::FuseRing`]). The kernel then sends
//! every request except `FORGET` and `INTERRUPT` through the rings, to a thread on the
//! caller's CPU; the `/dev/fuse` threads keep serving those two and everything before the
//! rings are up.
//!
//! A handler may reply later from another thread (the slow pool): the ring thread waits for
//! that reply before it commits and fetches the next request. So that slow requests never
//! hold up the others, a ring thread that hands one off when that would leave its CPU fewer
//! than [`FREE_PER_CPU`] threads free of slow requests first starts another ring thread for
//! that CPU (up to [`MAX_PER_CPU`]). Known limit (why it is not the default): under many
//! parallel copy-ups, requests on the same CPU were measured to wait up to a third of the
//! copy-ups' time, and the copy-ups took 2–4× as long as on `/dev/fuse`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};
use tracing::{debug, info, warn};

use crate::error::Errno;
use crate::sys::uring::{self, FuseRing};

/// Whether a mount may use io_uring, and whether it does.
#[derive(Debug, Default)]
pub struct UringState {
    /// The mount asks for it (`-o uring`).
    pub(super) wanted: bool,
    /// `INIT` accepted `FUSE_OVER_IO_URING`.
    pub(super) negotiated: AtomicBool,
    /// The payload buffer every slot needs (the kernel's `max(max_write, max_pages × page)`).
    pub(super) payload: AtomicUsize,
    /// Ring threads serving.
    threads: AtomicUsize,
    /// Per queue (index into the CPU list): ring threads, and those waiting for a request.
    queues: Mutex<Vec<Arc<Queue>>>,
    /// Threads started while serving (joined by the first threads when the mount ends).
    extra: Mutex<Vec<JoinHandle<()>>>,
}

/// The ring threads of one CPU's queue.
#[derive(Debug, Default)]
struct Queue {
    threads: AtomicUsize,
    /// Threads waiting for the reply to a request another thread serves (a slow one).
    held: AtomicUsize,
}

/// Ring threads per CPU kept free of slow requests: when handing a request off would leave
/// fewer, another thread starts first.
pub const FREE_PER_CPU: usize = 2;

/// Most ring threads one CPU's queue gets, however many slow requests wait at once.
pub const MAX_PER_CPU: usize = 32;

impl UringState {
    pub(super) fn new(wanted: bool) -> UringState {
        UringState { wanted, ..Default::default() }
    }

    /// How many ring threads serve requests (0: the mount uses `/dev/fuse` reads only).
    pub fn threads(&self) -> usize {
        self.threads.load(Ordering::Relaxed)
    }
}

/// `FUSE_FORGET` and `FUSE_BATCH_FORGET` have no reply (the kernel sends them on `/dev/fuse`).
const NO_REPLY: [u32; 2] = [2, 42];

/// The reply to the request a ring thread is serving, made on whichever thread answers.
#[derive(Debug, Default)]
struct Slot {
    reply: Mutex<Option<Vec<u8>>>,
    ready: Condvar,
}

impl fuser::ReplySink for Slot {
    fn send(&self, data: &[std::io::IoSlice<'_>]) -> std::io::Result<()> {
        let mut v = Vec::with_capacity(data.iter().map(|d| d.len()).sum());
        for d in data {
            v.extend_from_slice(d);
        }
        *self.reply.lock() = Some(v);
        self.ready.notify_one();
        Ok(())
    }
}

impl Slot {
    fn replied(&self) -> bool {
        self.reply.lock().is_some()
    }

    fn take(&self) -> Vec<u8> {
        let mut r = self.reply.lock();
        loop {
            if let Some(v) = r.take() {
                return v;
            }
            self.ready.wait(&mut r);
        }
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
    let r = start_rings(&dispatcher, state, threads_per_cpu, &mut threads);
    if let Err(e) = r {
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
        let q = Arc::new(Queue::default());
        state.queues.lock().push(q.clone());
        for _ in 0..threads_per_cpu {
            let (d, st, q) = (dispatcher.clone(), state.clone(), q.clone());
            let t = spawn(cpu, &q, move |q| {
                let r = serve(&d, cpu, payload, &st, q);
                // The mount is over: wait for the threads started while serving.
                let extra = std::mem::take(&mut *st.extra.lock());
                for h in extra {
                    let _ = h.join();
                }
                r
            })?;
            threads.push(t);
        }
    }
    info!("FUSE over io_uring: {} queues × {threads_per_cpu} threads", cpus.len());
    Ok(())
}

/// Starts ring thread number `q.threads` of CPU `cpu`'s queue running `f`.
fn spawn<T: Send + 'static>(
    cpu: u16,
    q: &Arc<Queue>,
    f: impl FnOnce(&Queue) -> T + Send + 'static,
) -> std::io::Result<JoinHandle<T>> {
    let i = q.threads.fetch_add(1, Ordering::Relaxed);
    let q2 = q.clone();
    std::thread::Builder::new().name(format!("uring-{cpu}.{i}")).spawn(move || f(&q2)).inspect_err(|_| {
        q.threads.fetch_sub(1, Ordering::Relaxed);
    })
}

/// Called when a request was handed to another thread: if fewer than [`FREE_PER_CPU`] ring
/// threads of this CPU would be left free of slow requests, start one more, so the queue
/// keeps being served.
fn grow<FS: fuser::Filesystem + 'static>(
    d: &fuser::Dispatcher<FS>,
    cpu: u16,
    payload: usize,
    state: &Arc<UringState>,
    q: &Queue,
) {
    let threads = q.threads.load(Ordering::Relaxed);
    if threads >= MAX_PER_CPU || threads.saturating_sub(q.held.load(Ordering::Relaxed)) > FREE_PER_CPU {
        return;
    }
    let Some(queue) = state.queues.lock().iter().find(|x| std::ptr::eq(x.as_ref(), q)).cloned() else {
        return;
    };
    let (d, st) = (d.clone(), state.clone());
    match spawn(cpu, &queue, move |q| {
        if let Err(e) = serve(&d, cpu, payload, &st, q) {
            warn!("ring thread for CPU {cpu}: {e}");
        }
    }) {
        Ok(h) => {
            debug!(
                "CPU {cpu}: ring thread {} started (slow requests hold the others)",
                queue.threads.load(Ordering::Relaxed)
            );
            state.extra.lock().push(h);
        }
        Err(e) => debug!("cannot start another ring thread for CPU {cpu}: {e}"),
    }
}

/// One ring thread: register the slot, then serve requests until the unmount.
fn serve<FS: fuser::Filesystem + 'static>(
    d: &fuser::Dispatcher<FS>,
    cpu: u16,
    payload: usize,
    state: &Arc<UringState>,
    q: &Queue,
) -> std::io::Result<()> {
    uring::pin_to(cpu);
    let mut ring = FuseRing::new(d.device(), cpu, payload)?;
    // The request buffer, 8-byte aligned as fuser's parser wants.
    let mut raw = vec![0u8; payload + 4096 + 8];
    let off = (8 - raw.as_ptr() as usize % 8) % 8;
    let buf = &mut raw[off..];
    let slot = Arc::new(Slot::default());
    let mut registered = false;
    let mut tries = 0;
    ring.register()?;
    loop {
        let len = match ring.next_request(buf) {
            Ok(len) => len,
            Err(Errno::EAGAIN) if !registered && tries < 100 => {
                // The connection finishes INIT after the reply is read; try again shortly.
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
                ring.register()?;
                continue;
            }
            Err(Errno::ENOTCONN | Errno::ECANCELED | Errno::ENODEV) => break,
            Err(e) if !registered => {
                warn!("FUSE over io_uring refused on CPU {cpu} ({e}); this thread stops");
                return Ok(());
            }
            Err(e) => {
                warn!("FUSE over io_uring on CPU {cpu}: {e}; this thread stops");
                return Err(e.into());
            }
        };
        if !registered {
            registered = true;
            state.threads.fetch_add(1, Ordering::Relaxed);
        }
        let reply = if NO_REPLY.contains(&ring.opcode()) {
            debug!("opcode {} arrived on a ring; nothing to reply", ring.opcode());
            let _ = d.dispatch(&buf[..len], slot.clone());
            error_reply(ring.unique(), Errno::ENOSYS)
        } else if d.dispatch(&buf[..len], slot.clone()) {
            if slot.replied() {
                slot.take()
            } else {
                q.held.fetch_add(1, Ordering::Relaxed);
                grow(d, cpu, payload, state, q);
                let r = slot.take();
                q.held.fetch_sub(1, Ordering::Relaxed);
                r
            }
        } else {
            error_reply(ring.unique(), Errno::EIO)
        };
        crate::stats::add(crate::stats::Counter::RingRequests, 1);
        ring.commit(&reply)?;
    }
    if registered {
        state.threads.fetch_sub(1, Ordering::Relaxed);
    }
    debug!("ring thread for CPU {cpu} ends");
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
    fn a_reply_from_another_thread_reaches_the_waiting_one() {
        let slot = Arc::new(Slot::default());
        let s2 = slot.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            fuser::ReplySink::send(&*s2, &[std::io::IoSlice::new(b"abc"), std::io::IoSlice::new(b"de")]).unwrap();
        });
        assert_eq!(slot.take(), b"abcde");
        t.join().unwrap();
    }
}
