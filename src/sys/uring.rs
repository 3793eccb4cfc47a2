//! FUSE over io_uring (Linux 6.14+, `CONFIG_FUSE_IO_URING`, module parameter
//! `fuse.enable_uring`): a safe wrapper around one io_uring with registered request slots.
//!
//! The kernel keeps one request queue per CPU. A daemon thread registers a slot — a 288-byte
//! header buffer (`struct fuse_uring_req_header`: the `fuse_in_header`/`fuse_out_header`, the
//! operation's fixed-size argument, and `struct fuse_uring_ent_in_out`) and a payload buffer —
//! on the queue of its CPU with `FUSE_IO_URING_CMD_REGISTER`. The command completes when the
//! kernel has written a request into the slot; the daemon answers by writing the reply into the
//! same buffers and submitting `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`, which hands the reply to
//! the kernel and waits for the next request in one system call. A caller's request goes to a
//! daemon thread on the caller's own CPU, so the hand-off costs a wake-up on one CPU instead of
//! a cross-CPU one, and there is no `read`/`write` pair on `/dev/fuse`.
//!
//! A ring may hold several slots: a request that waits for another thread's reply (a slow
//! one) keeps its slot, and the ring thread adds a slot to go on serving; an eventfd read in
//! the same ring wakes the thread when that reply is ready.
//!
//! The buffers belong to the kernel from a submission until its completion; [`FuseRing`] only
//! touches them in between (`&mut self` methods, `in_kernel` tracks the state). They are
//! allocated here and never moved; if the ring goes away while the kernel may still own them,
//! they are leaked rather than freed.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use crate::error::{Errno, Res};

/// Size of `struct fuse_uring_req_header`.
const HEADER_SIZE: usize = 288;
/// Offset of the `fuse_in_header` (request) / `fuse_out_header` (reply).
const IN_OUT: usize = 0;
/// Offset of the operation's fixed-size argument (`fuse_read_in`, `fuse_open_in`, ...).
const OP_IN: usize = 128;
/// Room for that argument.
const OP_IN_SIZE: usize = 128;
/// Offset of `struct fuse_uring_ent_in_out { flags, commit_id, payload_sz, padding, reserved }`.
const ENT_IN_OUT: usize = 256;
/// `sizeof(struct fuse_in_header)`.
const IN_HEADER: usize = 40;
/// `sizeof(struct fuse_out_header)`.
const OUT_HEADER: usize = 16;
/// `FUSE_IO_URING_CMD_REGISTER`.
const CMD_REGISTER: u32 = 1;
/// `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`.
const CMD_COMMIT_AND_FETCH: u32 = 2;
/// `FUSE_NOTIFY_RETRIEVE`.
const NOTIFY_RETRIEVE: i32 = 5;
/// `FUSE_ROOT_ID`.
pub const ROOT_ID: u64 = 1;
/// `FUSE_NOTIFY_REPLY`: the request the kernel sends for a `FUSE_NOTIFY_RETRIEVE` (no reply
/// expected; on a ring its slot is committed all the same).
pub const NOTIFY_REPLY: u32 = 41;

/// A zeroed buffer at a fixed address, shared with the kernel: an anonymous mapping of its
/// own, so pages nobody wrote cost no memory (a slot's payload is as large as the largest
/// request, most requests are a few bytes; a zeroed heap allocation would be written through
/// at once).
struct Buffer {
    ptr: NonNull<u8>,
    len: usize,
}

impl Buffer {
    fn new(len: usize) -> Res<Buffer> {
        let len = len.max(1);
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().into());
        }
        NonNull::new(ptr.cast::<u8>()).map(|ptr| Buffer { ptr, len }).ok_or(Errno::ENOMEM)
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Copies `len` bytes at `at` out of the buffer into `out`.
    fn read(&self, at: usize, out: &mut [u8]) -> Res<()> {
        if at.checked_add(out.len()).is_none_or(|end| end > self.len()) {
            return Err(Errno::EIO);
        }
        // SAFETY: the range is inside the allocation (checked above); the kernel does not
        // write the buffer now (FuseRing reads only between a completion and the next
        // submission), and `out` is a distinct Rust allocation.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(at), out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// Copies `data` into the buffer at `at`.
    fn write(&mut self, at: usize, data: &[u8]) -> Res<()> {
        if at.checked_add(data.len()).is_none_or(|end| end > self.len()) {
            return Err(Errno::EIO);
        }
        // SAFETY: as in `read`, with the copy going the other way.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(at), data.len()) };
        Ok(())
    }

    fn iovec(&self) -> libc::iovec {
        libc::iovec { iov_base: self.ptr.as_ptr().cast(), iov_len: self.len() }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: mapped by `Buffer::new` with this length, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

// SAFETY: the buffer is plain memory owned by one FuseRing; access goes through `&self`/
// `&mut self` of its owner.
unsafe impl Send for Buffer {}

/// A ring thread's buffer for the request it handles: page-aligned (fuser's parser wants 8),
/// and an anonymous mapping, so only what requests wrote into it costs memory.
pub struct RequestBuffer(Buffer);

impl RequestBuffer {
    /// A zeroed buffer of `len` bytes.
    pub fn new(len: usize) -> Res<RequestBuffer> {
        Buffer::new(len).map(RequestBuffer)
    }

    /// The buffer.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` bytes, readable and writable, owned by this value and
        // never shared with the kernel; `&mut self` makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.0.ptr.as_ptr(), self.0.len) }
    }
}

/// One request slot: the buffers registered with the kernel and what the kernel last put in.
struct Slot {
    header: Buffer,
    payload: Buffer,
    /// The two iovecs `FUSE_IO_URING_CMD_REGISTER` points at (header, payload).
    iov: Box<[libc::iovec; 2]>,
    /// The kernel owns the buffers (a command is submitted and not completed).
    in_kernel: bool,
    /// The request id the kernel gave the request in the slot (its `unique`).
    commit_id: u64,
    /// The opcode of the request in the slot.
    opcode: u32,
    /// Its payload buffer is lent out ([`FuseRing::lend_payload`]) to fill a reply in place.
    lent: bool,
}

/// A slot's payload buffer, lent out to fill the reply to the request in it in place
/// ([`FuseRing::lend_payload`]); given back with [`FuseRing::commit_lent`]. While it is out,
/// the ring neither touches the buffer nor hands it to the kernel, and if the ring goes away
/// first the buffer is leaked, never unmapped: so it stays memory only its holder writes.
pub struct Lent {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the memory is the lent slot's payload, which nothing else touches while lent (above).
unsafe impl Send for Lent {}

impl Lent {
    /// The buffer (as large as the slot's payload).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `len` bytes mapped readable and writable, exclusively this value's while it
        // exists (see the type's invariant); `&mut self` makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl std::fmt::Debug for Lent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lent").field("len", &self.len).finish()
    }
}

/// What [`FuseRing::next_event`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A request arrived in `slot`, copied out (`len` bytes).
    Request { slot: usize, len: usize },
    /// The kernel ended `slot`'s command with an error (`ENOTCONN` at unmount; `EAGAIN`
    /// before the connection is initialised).
    Failed { slot: usize, err: Errno },
    /// The watched eventfd was written to (it is no longer watched: [`FuseRing::watch`] again).
    Wake,
    /// The FUSE connection ended (the device polled error or hang-up; [`FuseRing::watch_hangup`]).
    Hangup,
}

/// `user_data` of the eventfd read.
const WAKE: u64 = u64::MAX;
/// `user_data` of the poll of the device for its end.
const HANGUP: u64 = u64::MAX - 1;

/// One io_uring with request slots registered on one CPU's FUSE queue, and optionally an
/// eventfd it also waits on (so another thread can wake it to commit a reply made there).
pub struct FuseRing {
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    dev: i32,
    qid: u16,
    payload: usize,
    slots: Vec<Slot>,
    /// The eventfd read's 8-byte target, and whether the read is submitted.
    wake_buf: Box<[u8; 8]>,
    wake_armed: bool,
}

// SAFETY: the iovecs point into the ring's own buffers; the ring is used by one thread at a time.
unsafe impl Send for FuseRing {}

/// The first bytes of a 128-byte SQE with `len` (offset 24) set: the io-uring crate's
/// `UringCmd80` builder has no `len` field, and `FUSE_IO_URING_CMD_REGISTER` needs `len = 2`
/// (two iovecs at `addr`).
fn with_len(e: squeue::Entry128, len: u32) -> squeue::Entry128 {
    const _: () = assert!(size_of::<squeue::Entry128>() == 128);
    // SAFETY: Entry128 is `#[repr(C)]` plain data (a 64-byte `io_uring_sqe` and 64 bytes), every
    // bit pattern of which is valid; the sizes are equal (asserted above).
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(e) };
    raw[24..28].copy_from_slice(&len.to_ne_bytes());
    // SAFETY: as above.
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(raw) }
}

/// The 80-byte command area: `struct fuse_uring_cmd_req { flags, commit_id, qid, padding }`.
fn cmd_req(commit_id: u64, qid: u16) -> [u8; 80] {
    let mut cmd = [0u8; 80];
    cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
    cmd
}

fn io(e: std::io::Error) -> Errno {
    Errno::from(e)
}

impl FuseRing {
    /// A ring for queue `qid` (a CPU number) of the FUSE connection `dev`, whose slots get
    /// payload buffers of `payload` bytes (at least the kernel's `max(max_write, max_pages ×
    /// page)`). It has no slot yet: [`FuseRing::add_slot`].
    pub fn new(dev: BorrowedFd<'_>, qid: u16, payload: usize) -> Res<FuseRing> {
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder().build(128).map_err(io)?;
        Ok(FuseRing {
            ring,
            dev: dev.as_raw_fd(),
            qid,
            payload,
            slots: Vec::new(),
            wake_buf: Box::new([0; 8]),
            wake_armed: false,
        })
    }

    fn push(&mut self, e: &squeue::Entry128) -> Res<()> {
        for _ in 0..2 {
            // SAFETY: the SQE points at a slot's iovecs and, through them, at its buffers, or
            // at `wake_buf`; all live as long as `self` and are not freed while the kernel
            // owns them (Drop leaks them then).
            if unsafe { self.ring.submission().push(e) }.is_ok() {
                return Ok(());
            }
            // The submission queue is full: hand what is there to the kernel first.
            self.ring.submit().map_err(io)?;
        }
        Err(Errno::EBUSY)
    }

    /// How many slots the ring has.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Adds a slot and queues its registration (sent with the next [`FuseRing::wait`]).
    pub fn add_slot(&mut self) -> Res<usize> {
        let header = Buffer::new(HEADER_SIZE)?;
        let payload = Buffer::new(self.payload)?;
        let iov = Box::new([header.iovec(), payload.iovec()]);
        self.slots.push(Slot { header, payload, iov, in_kernel: false, commit_id: 0, opcode: 0, lent: false });
        let i = self.slots.len() - 1;
        self.register(i)?;
        Ok(i)
    }

    /// Queues (again) the registration of `slot`.
    pub fn register(&mut self, slot: usize) -> Res<()> {
        let s = self.slots.get(slot).ok_or(Errno::EINVAL)?;
        let e = opcode::UringCmd80::new(types::Fd(self.dev), CMD_REGISTER)
            .cmd(cmd_req(0, self.qid))
            .addr(Some(s.iov.as_ptr() as u64))
            .build()
            .user_data(slot as u64);
        self.push(&with_len(e, 2))?;
        self.slots[slot].in_kernel = true;
        Ok(())
    }

    /// Queues a read of the eventfd `efd`: [`Event::Wake`] once it is written to.
    pub fn watch(&mut self, efd: BorrowedFd<'_>) -> Res<()> {
        let e = opcode::Read::new(types::Fd(efd.as_raw_fd()), self.wake_buf.as_mut_ptr(), 8).build().user_data(WAKE);
        // SAFETY: as in `push`; `wake_buf` is boxed (a stable address) and leaked if armed at drop.
        let e128: squeue::Entry128 = e.into();
        self.push(&e128)?;
        self.wake_armed = true;
        Ok(())
    }

    /// Queues a poll of the FUSE device for its end: [`Event::Hangup`] once the connection is
    /// gone (unmounted or aborted). Requests queued on the device (`FORGET`, `INTERRUPT`) do
    /// not complete it (their wake-up of the device's waiters may wake the watching thread
    /// once, to find nothing and wait again). One ring of a session watches, so that a slot
    /// the kernel never cancels cannot keep a thread waiting after the unmount, without a
    /// timer waking it.
    pub fn watch_hangup(&mut self) -> Res<()> {
        let events = (libc::POLLERR | libc::POLLHUP) as u32;
        let e = opcode::PollAdd::new(types::Fd(self.dev), events).build().user_data(HANGUP);
        // SAFETY: as in `push`; a poll points at no memory of ours.
        let e128: squeue::Entry128 = e.into();
        self.push(&e128)
    }

    /// Sends what is queued (registrations, commits) without waiting.
    pub fn submit(&mut self) -> Res<()> {
        self.ring.submit().map(drop).map_err(io)
    }

    /// Sends what is queued and waits until at least one event is ready, in one
    /// `io_uring_enter`. No timer: an idle ring thread sleeps until a request, a wake-up
    /// ([`FuseRing::watch`]) or the end of the connection ([`FuseRing::watch_hangup`]).
    pub fn wait(&mut self) -> Res<()> {
        loop {
            match self.ring.submitter().submit_and_wait(1) {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {
                    if !self.ring.completion().is_empty() {
                        return Ok(());
                    }
                }
                Err(e) => return Err(io(e)),
            }
        }
    }

    /// Whether the FUSE connection still exists (`/dev/fuse` polls readable-or-error; after
    /// the unmount, error).
    pub fn connected(&self) -> bool {
        // SAFETY: `dev` is the session's device descriptor, open for the ring's life.
        let dev = unsafe { BorrowedFd::borrow_raw(self.dev) };
        let mut fds = [rustix::event::PollFd::new(&dev, rustix::event::PollFlags::empty())];
        match rustix::event::poll(&mut fds, Some(&rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 })) {
            Ok(_) => !fds[0].revents().intersects(rustix::event::PollFlags::ERR | rustix::event::PollFlags::HUP),
            Err(_) => true,
        }
    }

    /// The next ready event, if any. A request is copied into `out` (8-byte aligned, at
    /// least 40 + 128 + payload bytes) as `/dev/fuse` would deliver it (`fuse_in_header`, the
    /// fixed argument, the rest).
    pub fn next_event(&mut self, out: &mut [u8]) -> Option<Res<Event>> {
        let cqe = self.ring.completion().next()?;
        let data = cqe.user_data();
        if data == WAKE {
            self.wake_armed = false;
            return Some(Ok(Event::Wake));
        }
        if data == HANGUP {
            return Some(Ok(Event::Hangup));
        }
        let slot = data as usize;
        let Some(s) = self.slots.get_mut(slot) else {
            return Some(Err(Errno::EPROTO));
        };
        s.in_kernel = false;
        if cqe.result() < 0 {
            return Some(Ok(Event::Failed { slot, err: Errno::from_raw(-cqe.result()) }));
        }
        Some(Self::copy_request(s, out).map(|len| Event::Request { slot, len }))
    }

    fn copy_request(s: &mut Slot, out: &mut [u8]) -> Res<usize> {
        let mut h = [0u8; IN_HEADER];
        s.header.read(IN_OUT, &mut h)?;
        let mut ent = [0u8; 24];
        s.header.read(ENT_IN_OUT, &mut ent)?;
        let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        s.opcode = u32::from_ne_bytes([h[4], h[5], h[6], h[7]]);
        s.commit_id = u64::from_ne_bytes([ent[8], ent[9], ent[10], ent[11], ent[12], ent[13], ent[14], ent[15]]);
        let payload = u32::from_ne_bytes([ent[16], ent[17], ent[18], ent[19]]) as usize;
        // len counts the header and every argument; the first argument sits in OP_IN, the
        // others in the payload buffer.
        let op = len.checked_sub(IN_HEADER + payload).filter(|&n| n <= OP_IN_SIZE).ok_or(Errno::EPROTO)?;
        if len > out.len() || payload > s.payload.len() {
            return Err(Errno::EPROTO);
        }
        out[..IN_HEADER].copy_from_slice(&h);
        s.header.read(OP_IN, &mut out[IN_HEADER..IN_HEADER + op])?;
        s.payload.read(0, &mut out[IN_HEADER + op..len])?;
        Ok(len)
    }

    /// The opcode of the request in `slot`.
    pub fn opcode(&self, slot: usize) -> u32 {
        self.slots.get(slot).map_or(0, |s| s.opcode)
    }

    /// The `unique` of the request in `slot`.
    pub fn unique(&self, slot: usize) -> u64 {
        self.slots.get(slot).map_or(0, |s| s.commit_id)
    }

    /// Writes `reply` (a `fuse_out_header` and the reply's arguments, as written to
    /// `/dev/fuse`) into `slot` and queues `COMMIT_AND_FETCH` (sent with the next
    /// [`FuseRing::wait`]).
    pub fn commit(&mut self, slot: usize, reply: &[u8]) -> Res<()> {
        let s = self.slots.get_mut(slot).ok_or(Errno::EINVAL)?;
        if s.in_kernel || s.lent || reply.len() < OUT_HEADER {
            return Err(Errno::EIO);
        }
        let body = &reply[OUT_HEADER..];
        if body.len() > s.payload.len() {
            return Err(Errno::EOVERFLOW);
        }
        s.payload.write(0, body)?;
        self.commit_written(slot, &reply[..OUT_HEADER], body.len())
    }

    /// Lends out `slot`'s payload buffer, so that the reply to the request in it can be
    /// written there directly (from any thread) instead of copied in by
    /// [`FuseRing::commit`]; [`FuseRing::commit_lent`] sends it.
    pub fn lend_payload(&mut self, slot: usize) -> Res<Lent> {
        let s = self.slots.get_mut(slot).ok_or(Errno::EINVAL)?;
        if s.in_kernel || s.lent {
            return Err(Errno::EBUSY);
        }
        s.lent = true;
        Ok(Lent { ptr: s.payload.ptr, len: s.payload.len() })
    }

    /// Sends the reply `header` (a `fuse_out_header`) with the first `len` bytes of the
    /// payload `lent` (lent out from `slot`) as its body, and queues `COMMIT_AND_FETCH`.
    pub fn commit_lent(&mut self, slot: usize, lent: Lent, header: &[u8], len: usize) -> Res<()> {
        let s = self.slots.get_mut(slot).ok_or(Errno::EINVAL)?;
        if !s.lent || lent.ptr != s.payload.ptr || len > lent.len || header.len() != OUT_HEADER {
            return Err(Errno::EIO);
        }
        s.lent = false;
        self.commit_written(slot, header, len)
    }

    /// Commits `slot`, whose payload holds the reply's `len`-byte body, with `header`.
    fn commit_written(&mut self, slot: usize, header: &[u8], len: usize) -> Res<()> {
        let (qid, dev) = (self.qid, self.dev);
        let s = self.slots.get_mut(slot).ok_or(Errno::EINVAL)?;
        s.header.write(IN_OUT, header)?;
        let mut ent = [0u8; 24];
        ent[8..16].copy_from_slice(&s.commit_id.to_ne_bytes());
        ent[16..20].copy_from_slice(&(len as u32).to_ne_bytes());
        s.header.write(ENT_IN_OUT, &ent)?;
        let e = opcode::UringCmd80::new(types::Fd(dev), CMD_COMMIT_AND_FETCH)
            .cmd(cmd_req(s.commit_id, qid))
            .build()
            .user_data(slot as u64);
        self.push(&e)?;
        self.slots[slot].in_kernel = true;
        Ok(())
    }
}

impl Drop for FuseRing {
    fn drop(&mut self) {
        // The kernel may still write into a slot, or the eventfd read's target, after the
        // ring is closed, and a lent payload may still be written: never free memory the
        // kernel or a holder owns.
        if self.slots.iter().any(|s| s.in_kernel || s.lent) {
            std::mem::forget(std::mem::take(&mut self.slots));
        }
        if self.wake_armed {
            std::mem::forget(std::mem::replace(&mut self.wake_buf, Box::new([0; 8])));
        }
    }
}

/// Makes the kernel send one request, with unique `unique`, on the FUSE queue of the calling
/// thread's CPU: a `FUSE_NOTIFY_RETRIEVE` of no bytes of node `node`, which the kernel answers
/// at once (the write does not wait for it) with a [`NOTIFY_REPLY`] request. The kernel
/// needs the node's inode in its cache (else `ENOENT`) and, since Linux 6.19 and its stable
/// updates, a regular file (else `EINVAL`). A request goes
/// into a free slot if the queue has one; committing its slot then hands that slot the oldest
/// request the queue holds, as any commit does — the one way a daemon can get a request the
/// kernel queued while every slot was taken. `unique` must be one no kernel request has (the
/// kernel counts from 2 in steps of 2) and no other such request still in a slot.
pub fn nudge(dev: BorrowedFd<'_>, unique: u64, node: u64) -> Res<()> {
    let msg = retrieve_nothing(unique, node);
    let n = rustix::io::write(dev, &msg).map_err(|e| Errno::from_raw(e.raw_os_error()))?;
    if n == msg.len() { Ok(()) } else { Err(Errno::EIO) }
}

/// The notification [`nudge`] writes: `fuse_out_header { len, error: the notification's code,
/// unique: 0 }`, then `fuse_notify_retrieve_out { notify_unique, nodeid, offset: 0, size: 0,
/// padding }`.
fn retrieve_nothing(unique: u64, node: u64) -> [u8; 48] {
    let mut msg = [0u8; 48];
    msg[0..4].copy_from_slice(&48u32.to_ne_bytes());
    msg[4..8].copy_from_slice(&NOTIFY_RETRIEVE.to_ne_bytes());
    msg[16..24].copy_from_slice(&unique.to_ne_bytes());
    msg[24..32].copy_from_slice(&node.to_ne_bytes());
    msg
}

/// Turns io_uring off for the connection `dev` after `INIT` accepted it: a registration the
/// kernel refuses (a queue number no CPU has) makes it serve `/dev/fuse` again instead of
/// holding requests until every queue has a slot.
pub fn refuse(dev: BorrowedFd<'_>) -> Res<()> {
    let mut ring = FuseRing::new(dev, u16::MAX, 8192)?;
    ring.add_slot()?;
    ring.wait()?;
    let mut buf = [0u8; 64];
    match ring.next_event(&mut buf) {
        Some(Ok(Event::Failed { .. })) => Ok(()),
        _ => Err(Errno::EPROTO),
    }
}

/// The CPU numbers the kernel may run tasks on (`/sys/devices/system/cpu/possible`): the
/// kernel keeps one FUSE queue per possible CPU and uses the ring only once every queue has a
/// slot.
pub fn possible_cpus() -> Res<Vec<u16>> {
    parse_cpu_list(&std::fs::read_to_string("/sys/devices/system/cpu/possible").map_err(Errno::from)?)
}

/// Parses a kernel CPU list (`0-3,8,10-11`).
fn parse_cpu_list(s: &str) -> Res<Vec<u16>> {
    let mut cpus = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: u16 = a.parse().map_err(|_| Errno::EINVAL)?;
        let b: u16 = b.parse().map_err(|_| Errno::EINVAL)?;
        cpus.extend(a..=b);
    }
    Ok(cpus)
}

/// Pins the calling thread to `cpu` (best effort: a CPU that is offline or outside the
/// cgroup's set leaves the thread unpinned).
pub fn pin_to(cpu: u16) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(usize::from(cpu));
    if let Err(e) = rustix::thread::sched_setaffinity(None, &set) {
        tracing::debug!("cannot pin to CPU {cpu}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmd_req_layout() {
        let c = cmd_req(0x0102030405060708, 3);
        assert_eq!(&c[0..8], &[0; 8]);
        assert_eq!(u64::from_ne_bytes(c[8..16].try_into().unwrap()), 0x0102030405060708);
        assert_eq!(u16::from_ne_bytes(c[16..18].try_into().unwrap()), 3);
    }

    #[test]
    fn sqe_len_is_patched_at_offset_24() {
        let e = opcode::UringCmd80::new(types::Fd(7), CMD_REGISTER).addr(Some(0xdead)).build();
        let e = with_len(e, 2);
        // SAFETY: as in `with_len`.
        let raw: [u8; 128] = unsafe { std::mem::transmute(e) };
        assert_eq!(u32::from_ne_bytes(raw[24..28].try_into().unwrap()), 2);
        assert_eq!(u64::from_ne_bytes(raw[16..24].try_into().unwrap()), 0xdead);
        assert_eq!(i32::from_ne_bytes(raw[4..8].try_into().unwrap()), 7);
    }

    #[test]
    fn a_retrieval_of_nothing_is_a_notification_of_code_5_for_the_node() {
        let m = retrieve_nothing(1 << 63 | 4, 77);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 48);
        assert_eq!(i32::from_ne_bytes(m[4..8].try_into().unwrap()), 5);
        assert_eq!(&m[8..16], &[0; 8], "a notification's unique is 0");
        assert_eq!(u64::from_ne_bytes(m[16..24].try_into().unwrap()), 1 << 63 | 4);
        assert_eq!(u64::from_ne_bytes(m[24..32].try_into().unwrap()), 77);
        assert_eq!(&m[32..48], &[0; 16], "offset 0, size 0");
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1\n").unwrap(), vec![0, 1]);
        assert_eq!(parse_cpu_list("0,2-4,7").unwrap(), vec![0, 2, 3, 4, 7]);
        assert_eq!(parse_cpu_list("5").unwrap(), vec![5]);
        assert!(parse_cpu_list("x-1").is_err());
    }

    #[test]
    fn possible_cpus_parses() {
        let cpus = possible_cpus().unwrap();
        assert!(!cpus.is_empty());
        assert_eq!(cpus[0], 0);
    }
}
