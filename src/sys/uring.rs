//! FUSE over io_uring (Linux 6.14+, `CONFIG_FUSE_IO_URING`, module parameter
//! `fuse.enable_uring`): a safe wrapper around one io_uring with one registered request slot.
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
//! The buffers belong to the kernel from a submission until its completion; [`FuseRing`] only
//! touches them in between (`&mut self` methods, `in_kernel` tracks the state). They are
//! allocated here and never moved; if the ring goes away while the kernel may still own them,
//! they are leaked rather than freed.
#![allow(unsafe_code)]

use std::alloc::{Layout, alloc_zeroed, dealloc};
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

/// A zeroed heap buffer at a fixed address, shared with the kernel.
struct Buffer {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Buffer {
    fn new(len: usize) -> Res<Buffer> {
        let layout = Layout::from_size_align(len.max(1), 4096).map_err(|_| Errno::EINVAL)?;
        // SAFETY: the layout has a non-zero size; a null result is handled.
        let ptr = unsafe { alloc_zeroed(layout) };
        NonNull::new(ptr).map(|ptr| Buffer { ptr, layout }).ok_or(Errno::ENOMEM)
    }

    fn len(&self) -> usize {
        self.layout.size()
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
        // SAFETY: allocated by `alloc_zeroed` with this layout, freed once.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

// SAFETY: the buffer is plain memory owned by one FuseRing; access goes through `&self`/
// `&mut self` of its owner.
unsafe impl Send for Buffer {}

/// One io_uring with one request slot registered on one CPU's FUSE queue.
pub struct FuseRing {
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    dev: i32,
    qid: u16,
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
    /// A ring for queue `qid` (a CPU number) of the FUSE connection `dev`, with a payload
    /// buffer of `payload` bytes (at least the kernel's `max(max_write, max_pages × page)`).
    pub fn new(dev: BorrowedFd<'_>, qid: u16, payload: usize) -> Res<FuseRing> {
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder().build(4).map_err(io)?;
        let header = Buffer::new(HEADER_SIZE)?;
        let payload = Buffer::new(payload)?;
        let iov = Box::new([header.iovec(), payload.iovec()]);
        Ok(FuseRing {
            ring,
            dev: dev.as_raw_fd(),
            qid,
            header,
            payload,
            iov,
            in_kernel: false,
            commit_id: 0,
            opcode: 0,
        })
    }

    fn push(&mut self, e: &squeue::Entry128) -> Res<()> {
        // SAFETY: the SQE points at `self.iov` and, through it, at `self.header` and
        // `self.payload`, which live as long as `self` and are not freed while the kernel owns
        // them (Drop leaks them then).
        unsafe { self.ring.submission().push(e) }.map_err(|_| Errno::EBUSY)?;
        self.in_kernel = true;
        Ok(())
    }

    /// Queues the registration of the slot (sent with the next [`FuseRing::next_request`]).
    pub fn register(&mut self) -> Res<()> {
        let e = opcode::UringCmd80::new(types::Fd(self.dev), CMD_REGISTER)
            .cmd(cmd_req(0, self.qid))
            .addr(Some(self.iov.as_ptr() as u64))
            .build();
        self.push(&with_len(e, 2))
    }

    /// Sends what is queued and waits for the next request; copies it into `out` (8-byte
    /// aligned, at least 40 + 128 + payload bytes) as `/dev/fuse` would deliver it
    /// (`fuse_in_header`, the fixed argument, the rest) and returns its length. `ENOTCONN`
    /// once the file system is unmounted.
    pub fn next_request(&mut self, out: &mut [u8]) -> Res<usize> {
        let cqe = loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(io(e)),
            }
            if let Some(cqe) = self.ring.completion().next() {
                break cqe;
            }
        };
        self.in_kernel = false;
        if cqe.result() < 0 {
            return Err(Errno::from_raw(-cqe.result()));
        }
        let mut h = [0u8; IN_HEADER];
        self.header.read(IN_OUT, &mut h)?;
        let mut ent = [0u8; 24];
        self.header.read(ENT_IN_OUT, &mut ent)?;
        let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        self.opcode = u32::from_ne_bytes([h[4], h[5], h[6], h[7]]);
        self.commit_id = u64::from_ne_bytes([ent[8], ent[9], ent[10], ent[11], ent[12], ent[13], ent[14], ent[15]]);
        let payload = u32::from_ne_bytes([ent[16], ent[17], ent[18], ent[19]]) as usize;
        // len counts the header and every argument; the first argument sits in OP_IN, the
        // others in the payload buffer.
        let op = len.checked_sub(IN_HEADER + payload).filter(|&n| n <= OP_IN_SIZE).ok_or(Errno::EPROTO)?;
        if len > out.len() || payload > self.payload.len() {
            return Err(Errno::EPROTO);
        }
        out[..IN_HEADER].copy_from_slice(&h);
        self.header.read(OP_IN, &mut out[IN_HEADER..IN_HEADER + op])?;
        self.payload.read(0, &mut out[IN_HEADER + op..len])?;
        Ok(len)
    }

    /// The opcode of the request in the slot.
    pub fn opcode(&self) -> u32 {
        self.opcode
    }

    /// The `unique` of the request in the slot.
    pub fn unique(&self) -> u64 {
        self.commit_id
    }

    /// Writes `reply` (a `fuse_out_header` and the reply's arguments, as written to
    /// `/dev/fuse`) into the slot and queues `COMMIT_AND_FETCH` (sent with the next
    /// [`FuseRing::next_request`]).
    pub fn commit(&mut self, reply: &[u8]) -> Res<()> {
        if self.in_kernel || reply.len() < OUT_HEADER {
            return Err(Errno::EIO);
        }
        let body = &reply[OUT_HEADER..];
        if body.len() > self.payload.len() {
            return Err(Errno::EOVERFLOW);
        }
        self.header.write(IN_OUT, &reply[..OUT_HEADER])?;
        self.payload.write(0, body)?;
        let mut ent = [0u8; 24];
        ent[8..16].copy_from_slice(&self.commit_id.to_ne_bytes());
        ent[16..20].copy_from_slice(&(body.len() as u32).to_ne_bytes());
        self.header.write(ENT_IN_OUT, &ent)?;
        let e = opcode::UringCmd80::new(types::Fd(self.dev), CMD_COMMIT_AND_FETCH)
            .cmd(cmd_req(self.commit_id, self.qid))
            .build();
        self.push(&e)
    }
}

impl Drop for FuseRing {
    fn drop(&mut self) {
        if self.in_kernel {
            // The kernel may still write into the slot after the ring is closed: never free
            // memory it owns.
            let header =
                std::mem::replace(&mut self.header, Buffer { ptr: NonNull::dangling(), layout: Layout::new::<()>() });
            let payload =
                std::mem::replace(&mut self.payload, Buffer { ptr: NonNull::dangling(), layout: Layout::new::<()>() });
            std::mem::forget(header);
            std::mem::forget(payload);
        }
    }
}

/// Turns io_uring off for the connection `dev` after `INIT` accepted it: a registration the
/// kernel refuses (a queue number no CPU has) makes it serve `/dev/fuse` again instead of
/// holding requests until every queue has a slot.
pub fn refuse(dev: BorrowedFd<'_>) -> Res<()> {
    let mut ring = FuseRing::new(dev, u16::MAX, 8192)?;
    ring.register()?;
    let mut buf = [0u8; 64];
    match ring.next_request(&mut buf) {
        Err(_) => Ok(()),
        Ok(_) => Err(Errno::EPROTO),
    }
}

/// Whether the running kernel lets FUSE connections use io_uring (`/sys/module/fuse/
/// parameters/enable_uring` is `Y`); the kernel offers `FUSE_OVER_IO_URING` at `INIT` only then.
pub fn enabled() -> bool {
    std::fs::read_to_string("/sys/module/fuse/parameters/enable_uring").is_ok_and(|s| s.trim() == "Y")
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
