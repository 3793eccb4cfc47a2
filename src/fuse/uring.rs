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
//! the ring thread and an eventfd the ring also waits on wakes it to commit. Threads are
//! added while every one of a CPU's is busy inline (`Elastic`, up to `MAX_THREADS_PER_CPU`),
//! so requests stuck on a hung layer leave free slots for the rest.
//!
//! The kernel puts a request that finds every slot of its CPU taken on a list, and hands it
//! only to a slot that *commits* a reply, never to one registered afterwards. So a thread
//! that registers a slot where there was none — in place of one a handed-off request keeps,
//! or as a thread started while every other was busy — then asks the kernel for a request
//! (`nudge`: a `FUSE_NOTIFY_RETRIEVE` of nothing, answered with a `FUSE_NOTIFY_REPLY` on
//! this CPU's queue) and commits its slot, which hands the slot the oldest request queued
//! meanwhile. Without it, a request queued while a ring thread was preempted between a
//! hand-off and its new slot waited for a copy-up to finish, or for good behind a stopped
//! layer (`tests/uring.rs`).
//!
//! An idle ring thread sleeps without a timer: one thread of the session also polls the device
//! for the end of the connection and wakes the others then (`Watch`).
//!
//! Replies are sent, and the next request awaited, at `SCHED_IDLE` where the thread may come
//! back from it, so that the woken caller keeps its CPU: `fuse::priority` owns when.
//!
//! `READ` takes a path of its own ([`DirectRead`]): the file's data is read straight into the
//! slot's payload buffer (lent out, [`FuseRing::lend_payload`]) instead of into a buffer that
//! is then copied twice more, and a large read ([`ASIDE_READ`] bytes or more: the kernel's
//! read-ahead) runs on a thread beside the reader rather than on the reader's own CPU, where
//! the two took turns: a reader copying one window out of the page cache while the daemon
//! fills the next. (Reading 1 GiB of a cached lower file without passthrough: 810–840 ms
//! before, `/dev/fuse` 490–530.)

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::{JoinHandle, ThreadId};

use parking_lot::Mutex;
use tracing::{debug, info, warn};

use super::priority::Priority;
use crate::error::Errno;
use crate::sys::uring::{self, Event, FuseRing};

/// Reads file data into a buffer the ring lends out: how the rings serve `READ`.
pub trait DirectRead: std::fmt::Debug + Send + Sync {
    /// Reads up to `buf.len()` bytes of open file `fh` at `offset` into `buf` (fewer only
    /// at the end of the file).
    fn read_into(&self, fh: u64, offset: u64, buf: &mut [u8]) -> Result<usize, Errno>;
    /// Runs `job` on a thread beside the caller, or gives it back when none is free.
    fn aside(&self, job: super::slow::Job) -> Result<(), super::slow::Job>;
}

/// How the rings serve `READ`: from the core straight into the ring's reply buffer, large
/// reads on a thread beside the reader ([`DirectRead`]).
#[derive(Debug)]
struct RingReader {
    fs: Arc<crate::union::UnionFs>,
    aside: super::slow::AsidePool,
}

impl DirectRead for RingReader {
    fn read_into(&self, fh: u64, offset: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.fs.read_into(fh, offset, buf))).unwrap_or_else(
            |_| {
                tracing::error!("BUG: read handler panicked; answered EIO");
                Err(Errno::EIO)
            },
        )
    }

    fn aside(&self, job: super::slow::Job) -> Result<(), super::slow::Job> {
        self.aside.try_run(job)
    }
}

/// The rings' reader over `fs` (its threads start with the first large read).
pub(super) fn core_reader(fs: &Arc<crate::union::UnionFs>) -> Arc<dyn DirectRead> {
    let aside = super::slow::AsidePool::new(crate::sys::proc::cpus().clamp(2, 4), "read");
    Arc::new(RingReader { fs: fs.clone(), aside })
}

/// `FUSE_READ`.
const READ: u32 = 15;

/// Reads of at least this many bytes run beside the reader ([`DirectRead::aside`]); smaller
/// ones (a program's own reads of a file opened `O_DIRECT`, random reads) are answered at
/// once on the ring thread, where a hand-over would only add a wake-up.
pub const ASIDE_READ: usize = 64 << 10;

/// Whether a mount may use io_uring, and whether it does.
#[derive(Debug, Default)]
pub struct UringState {
    /// The mount asks for it (`-o uring`).
    pub(super) wanted: bool,
    /// `INIT` accepted `FUSE_OVER_IO_URING`.
    pub(super) negotiated: AtomicBool,
    /// The payload buffer every slot needs (the kernel's `max(max_write, max_pages × page)`).
    pub(super) payload: AtomicUsize,
    /// How `READ` is served in place (`None`: through the dispatcher like the rest).
    reader: Option<Arc<dyn DirectRead>>,
}

impl UringState {
    pub(super) fn new(wanted: bool, reader: Option<Arc<dyn DirectRead>>) -> UringState {
        UringState { wanted, reader, ..Default::default() }
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

/// A reply made for a slot.
#[derive(Debug)]
enum Reply {
    /// The reply's bytes, as written to `/dev/fuse`.
    Bytes(Vec<u8>),
    /// A `fuse_out_header` for a body of `len` bytes already in the slot's payload buffer.
    InPlace { lent: uring::Lent, header: [u8; 16], len: usize },
}

/// Replies made for one ring thread's slots, by that thread or another.
#[derive(Debug)]
struct Replies {
    /// (slot, reply) not committed yet.
    done: Mutex<Vec<(usize, Reply)>>,
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

impl Replies {
    /// Queues `reply` for `slot`, waking the ring thread if another thread made it.
    fn push(&self, slot: usize, reply: Reply) -> std::io::Result<()> {
        self.done.lock().push((slot, reply));
        if std::thread::current().id() != self.owner {
            rustix::io::write(&self.wake, &1u64.to_ne_bytes())?;
        }
        Ok(())
    }
}

impl fuser::ReplySink for SlotSink {
    fn send(&self, data: &[std::io::IoSlice<'_>]) -> std::io::Result<()> {
        let mut v = Vec::with_capacity(data.iter().map(|d| d.len()).sum());
        for d in data {
            v.extend_from_slice(d);
        }
        self.replies.push(self.slot, Reply::Bytes(v))
    }
}

/// A `fuse_out_header` for request `unique`: `error` (0 or a negative errno) and `body` bytes.
fn out_header(unique: u64, error: i32, body: usize) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&(16 + body as u32).to_ne_bytes());
    h[4..8].copy_from_slice(&error.to_ne_bytes());
    h[8..16].copy_from_slice(&unique.to_ne_bytes());
    h
}

/// The node a request (as `/dev/fuse` delivers it) is for: `fuse_in_header.nodeid`.
fn node_of(req: &[u8]) -> u64 {
    req.get(16..24).and_then(|b| b.try_into().ok()).map_or(0, u64::from_ne_bytes)
}

/// A reply carrying only an error for request `unique`.
fn error_reply(unique: u64, e: Errno) -> Reply {
    Reply::Bytes(out_header(unique, -e.raw(), 0).to_vec())
}

/// The arguments of a `READ` in a request as `/dev/fuse` delivers it (`fuse_in_header`, then
/// `struct fuse_read_in { fh, offset, size, … }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReadArgs {
    unique: u64,
    fh: u64,
    offset: u64,
    size: usize,
}

impl ReadArgs {
    fn parse(req: &[u8]) -> Option<ReadArgs> {
        let u64_at = |at: usize| req.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes);
        let size = req.get(56..60).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes)?;
        Some(ReadArgs { unique: u64_at(8)?, fh: u64_at(40)?, offset: u64_at(48)?, size: size as usize })
    }
}

/// The job serving `READ` `r` in `slot`: it reads into the slot's payload buffer `lent` and
/// queues the reply. Handed to a thread beside the reader if the read is large and one is
/// free (`None`), else given back to run here.
fn read_job(
    reader: &Arc<dyn DirectRead>,
    r: ReadArgs,
    mut lent: uring::Lent,
    replies: &Arc<Replies>,
    slot: usize,
) -> Option<super::slow::Job> {
    let (reader2, replies) = (reader.clone(), replies.clone());
    let job = move || {
        let timer = crate::stats::begin("read");
        let buf = &mut lent.as_mut_slice()[..r.size];
        let (header, len) = match reader2.read_into(r.fh, r.offset, buf) {
            Ok(n) => (out_header(r.unique, 0, n), n),
            Err(e) => (out_header(r.unique, -e.raw(), 0), 0),
        };
        timer.end();
        if let Err(e) = replies.push(slot, Reply::InPlace { lent, header, len }) {
            warn!("cannot wake a ring thread for a read's reply: {e}");
        }
    };
    let job: super::slow::Job = Box::new(job);
    if r.size < ASIDE_READ {
        return Some(job);
    }
    match reader.aside(job) {
        Ok(()) => {
            crate::stats::add(crate::stats::Counter::RingReadsAside, 1);
            None
        }
        Err(job) => Some(job),
    }
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
            let (d, el, reader) = (dispatcher.clone(), elastic.clone(), state.reader.clone());
            let t = std::thread::Builder::new().name(format!("uring-{cpu}.{i}")).spawn(move || {
                let r = serve(&d, None, Ring { cpu, queue: q, payload, elastic: el.clone(), reader });
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
    reader: Option<Arc<dyn DirectRead>>,
}

/// Starts one more ring thread on `at`'s queue (counted by [`Elastic::enter`] already), while
/// this one serves a request for node `near`.
fn grow<FS: fuser::Filesystem + 'static>(d: &fuser::Dispatcher<FS>, at: &Ring, near: u64) {
    let (d, r) = (d.clone(), at.clone());
    let started =
        std::thread::Builder::new().name(format!("uring-{}.more", at.cpu)).spawn(move || serve(&d, Some(near), r));
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

/// One ring thread: register a slot, then serve requests until the unmount. `grown`: started
/// while the ring serves ([`grow`]), beside a request for that node.
fn serve<FS: fuser::Filesystem + 'static>(
    d: &fuser::Dispatcher<FS>,
    grown: Option<u64>,
    at: Ring,
) -> std::io::Result<()> {
    let (cpu, payload) = (at.cpu, at.payload);
    uring::pin_to(cpu);
    let mut ring = FuseRing::new(d.device(), cpu, payload)?;
    let wake = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)?;
    let replies = Arc::new(Replies { done: Mutex::new(Vec::new()), wake, owner: std::thread::current().id() });
    at.elastic.rings.lock().push(replies.clone());
    ring.watch(replies.wake.as_fd())?;
    if grown.is_some()
        && let Some(pause) = crate::hooks::ring_handoff_delay()
    {
        std::thread::sleep(pause);
    }
    for _ in 0..SPARE {
        ring.add_slot()?;
    }
    let mut slots = Slots { free: SPARE, ..Default::default() };
    if let Some(near) = grown {
        // Requests that came while every thread of the queue was busy wait for a commit.
        ring.submit()?;
        nudge(d, near);
    }
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
    // The node of the latest request (see `nudge`).
    let mut near = 0;
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
                    let opcode = ring.opcode(slot);
                    near = node_of(&buf[..len]);
                    if opcode == OPEN {
                        LAST_FILE.store(near, Ordering::Relaxed);
                    }
                    prio.before_request(opcode);
                    serve_request(d, at, ring, replies, slot, &buf[..len], near);
                }
            }
            commit_replies(ring, replies, &mut done, slots);
            // Keep SPARE slots the kernel can fill; the others wait for slow replies.
            if slots.free < SPARE
                && slots.dead == 0
                && let Some(pause) = crate::hooks::ring_handoff_delay()
            {
                std::thread::sleep(pause);
            }
            let mut replaced = false;
            while slots.free < SPARE && slots.dead == 0 && ring.slots() < MAX_SLOTS {
                ring.add_slot()?;
                slots.free += 1;
                replaced = true;
            }
            if replaced && slots.live {
                // A request the kernel queued while this thread had no free slot would wait
                // for a commit, not for this registration: ask for one.
                ring.submit()?;
                nudge(d, near);
            }
        }
        if at.elastic.ended.load(Ordering::Acquire) && !ring.connected() {
            debug!("the FUSE connection is gone; {} slots were never cancelled", ring.slots() - slots.dead);
            break;
        }
    }
    Ok(())
}

/// Serves the request in `slot` (`req` its bytes): a `READ` the core can answer straight
/// into the slot's buffer, beside the ring thread when large ([`read_job`]); any other
/// through the dispatcher, whose reply lands in `replies`.
fn serve_request<FS: fuser::Filesystem + 'static>(
    d: &fuser::Dispatcher<FS>,
    at: &Ring,
    ring: &mut FuseRing,
    replies: &Arc<Replies>,
    slot: usize,
    req: &[u8],
    near: u64,
) {
    crate::stats::add(crate::stats::Counter::RingRequests, 1);
    let opcode = ring.opcode(slot);
    if opcode == READ
        && let Some(reader) = &at.reader
        && let Some(r) = ReadArgs::parse(req).filter(|r| r.size <= at.payload)
        && let Ok(lent) = ring.lend_payload(slot)
    {
        if let Some(job) = read_job(reader, r, lent, replies, slot) {
            busy_with(d, at, near, job);
        }
    } else if opcode == uring::NOTIFY_REPLY {
        // The request a nudge asked for: its commit is what hands the slot a queued request.
        replies.done.lock().push((slot, Reply::Bytes(out_header(ring.unique(slot), 0, 0).to_vec())));
    } else if NO_REPLY.contains(&opcode) {
        let sink = Arc::new(SlotSink { replies: replies.clone(), slot });
        debug!("opcode {opcode} arrived on a ring; nothing to reply");
        let _ = d.dispatch(req, sink);
        replies.done.lock().push((slot, error_reply(ring.unique(slot), Errno::ENOSYS)));
    } else {
        let sink = Arc::new(SlotSink { replies: replies.clone(), slot });
        let ok = busy_with(d, at, near, || d.dispatch(req, sink));
        if !ok {
            replies.done.lock().push((slot, error_reply(ring.unique(slot), Errno::EIO)));
        }
    }
}

/// Counts the requests ring threads ask for ([`nudge`]).
static NUDGES: AtomicU64 = AtomicU64::new(0);

/// The node of the file the latest `OPEN` on a ring named: a regular file the kernel has,
/// for a nudge whose own request named a directory.
static LAST_FILE: AtomicU64 = AtomicU64::new(0);

/// `FUSE_OPEN`.
const OPEN: u32 = 14;

/// Asks the kernel for a request on this thread's CPU queue ([`uring::nudge`]): once its slot
/// commits, the kernel hands that slot the oldest request it queued while every slot of the
/// queue was taken. A thread registering a slot in place of one a handed-off request holds
/// (or a thread started while every other was busy) calls it: the kernel gives a queued
/// request to a slot that commits, never to one registered, so without it a request queued
/// in that window waited for the handed-off request's reply (for good behind a stuck layer).
/// Its unique has the top bit set, which the kernel's own (counted from 2 in steps of 2)
/// never reach, and is even, as theirs are. The kernel asks for a regular file it has: the
/// node `near` (that of the request handed off: the file a copy-up, `fsync` or large read is
/// for), else the file of the latest `OPEN`, else the root (enough before Linux 6.19). A
/// handed-off request on a directory (`fsyncdir`, a directory's copy-up for `chmod`) with no
/// file opened through the rings is left without a nudge.
fn nudge<FS: fuser::Filesystem + 'static>(d: &fuser::Dispatcher<FS>, near: u64) {
    let n = NUDGES.fetch_add(1, Ordering::Relaxed);
    let unique = (1 << 63) | ((n << 1) & !(1 << 63));
    let nodes = [near, LAST_FILE.load(Ordering::Relaxed), uring::ROOT_ID];
    for (i, &node) in nodes.iter().enumerate() {
        if node == 0 || nodes[..i].contains(&node) {
            continue;
        }
        match uring::nudge(d.device(), unique, node) {
            Ok(()) => return crate::stats::add(crate::stats::Counter::RingNudges, 1),
            Err(Errno::EINVAL | Errno::ENOENT) => continue,
            Err(e) => return debug!("cannot ask the kernel for a request: {e}"),
        }
    }
    debug!("no file to ask the kernel for a request with (nodes {nodes:?})");
}

/// Runs `work` as a request served inline on this ring's queue; when that leaves the queue
/// no free thread, another is started first ([`grow`]). `near`: the request's node.
fn busy_with<FS: fuser::Filesystem + 'static, T>(
    d: &fuser::Dispatcher<FS>,
    at: &Ring,
    near: u64,
    work: impl FnOnce() -> T,
) -> T {
    if at.elastic.enter(at.queue) {
        grow(d, at, near);
    }
    let r = work();
    at.elastic.leave(at.queue);
    r
}

/// Commits every reply made so far (on this thread or another); `done` is kept to reuse
/// its allocation.
fn commit_replies(ring: &mut FuseRing, replies: &Replies, done: &mut Vec<(usize, Reply)>, slots: &mut Slots) {
    std::mem::swap(done, &mut *replies.done.lock());
    for (slot, reply) in done.drain(..) {
        let committed = match reply {
            Reply::Bytes(b) => ring.commit(slot, &b),
            Reply::InPlace { lent, header, len } => ring.commit_lent(slot, lent, &header, len),
        };
        match committed {
            Ok(()) => slots.free += 1,
            Err(e) => {
                debug!("cannot commit slot {slot}: {e}");
                slots.dead += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_request_s_arguments_and_its_reply_header_are_where_the_kernel_puts_them() {
        // fuse_in_header { len, opcode, unique, nodeid, uid, gid, pid, total_extlen, padding }
        // then fuse_read_in { fh, offset, size, read_flags, lock_owner, flags, padding }.
        let mut req = vec![0u8; 80];
        req[0..4].copy_from_slice(&80u32.to_ne_bytes());
        req[4..8].copy_from_slice(&READ.to_ne_bytes());
        req[8..16].copy_from_slice(&77u64.to_ne_bytes());
        req[40..48].copy_from_slice(&5u64.to_ne_bytes());
        req[48..56].copy_from_slice(&(1u64 << 33).to_ne_bytes());
        req[56..60].copy_from_slice(&131072u32.to_ne_bytes());
        assert_eq!(ReadArgs::parse(&req), Some(ReadArgs { unique: 77, fh: 5, offset: 1 << 33, size: 131072 }));
        assert_eq!(ReadArgs::parse(&req[..59]), None, "a truncated request is not read");
        req[16..24].copy_from_slice(&42u64.to_ne_bytes());
        assert_eq!(node_of(&req), 42);
        assert_eq!(node_of(&req[..20]), 0, "a truncated header names no node");
        let h = out_header(77, -5, 0);
        assert_eq!(h[0..4], 16u32.to_ne_bytes());
        assert_eq!(h[4..8], (-5i32).to_ne_bytes());
        assert_eq!(h[8..16], 77u64.to_ne_bytes());
        assert_eq!(out_header(1, 0, 4096)[0..4], 4112u32.to_ne_bytes());
    }

    #[test]
    fn error_reply_is_a_bare_out_header() {
        let Reply::Bytes(r) = error_reply(0x1234, Errno::ENOENT) else { panic!("not bytes") };
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
        let done: Vec<(usize, Vec<u8>)> = std::mem::take(&mut *replies.done.lock())
            .into_iter()
            .map(|(slot, r)| match r {
                Reply::Bytes(b) => (slot, b),
                Reply::InPlace { .. } => panic!("a sink's reply is bytes"),
            })
            .collect();
        assert_eq!(done, vec![(3, b"ab".to_vec()), (5, b"cde".to_vec())]);
        // Only the other thread's reply wrote to the eventfd.
        let mut n = [0u8; 8];
        rustix::io::read(&replies.wake, &mut n).unwrap();
        assert_eq!(u64::from_ne_bytes(n), 1);
    }
}
