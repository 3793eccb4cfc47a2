//! Data calls on open descriptors, and the copy-up data path.

use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{FallocateFlags, FlockOperation, SeekFrom};

use crate::error::{Errno, Res};

/// Safe wrapper for `pread(2)`: reads up to `size` bytes at `offset`, fewer only at end of file.
pub fn pread(fd: impl AsFd, offset: u64, size: usize) -> Res<Vec<u8>> {
    let mut buf = vec![0u8; size];
    let n = pread_into(fd, offset, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// Reads into all of `buf` from `offset`, short only at the end of the file; returns the
/// number of bytes read.
pub fn pread_into(fd: impl AsFd, offset: u64, buf: &mut [u8]) -> Res<usize> {
    let fd = fd.as_fd();
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::pread(fd, &mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

/// Safe wrapper for `pwrite(2)`: writes all of `data` at `offset`.
pub fn pwrite(fd: impl AsFd, offset: u64, data: &[u8]) -> Res<usize> {
    let fd = fd.as_fd();
    let mut done = 0;
    while done < data.len() {
        match rustix::io::pwrite(fd, &data[done..], offset + done as u64) {
            Ok(0) => return Err(Errno::EIO),
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => continue,
            // A short write that hit a limit reports what was written.
            Err(e) if done > 0 && (e == rustix::io::Errno::NOSPC || e == rustix::io::Errno::DQUOT) => {
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

/// Safe wrapper for `fsync(2)`.
pub fn fsync(fd: impl AsFd) -> Res<()> {
    Ok(rustix::fs::fsync(fd)?)
}

/// Safe wrapper for `sync_file_range(fd, offset, len, SYNC_FILE_RANGE_WRITE)`: starts
/// writeback of a range without waiting for it (a hint; errors are reported, not fatal).
#[allow(unsafe_code)]
pub fn start_writeback(fd: impl AsFd, offset: u64, len: u64) -> Res<()> {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else { return Err(Errno::EINVAL) };
    // SAFETY: plain syscall on a borrowed, open descriptor; no memory is passed.
    let r = unsafe { libc::sync_file_range(fd.as_fd().as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE) };
    if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error().into()) }
}

/// Safe wrapper for `fdatasync(2)`.
pub fn fdatasync(fd: impl AsFd) -> Res<()> {
    Ok(rustix::fs::fdatasync(fd)?)
}

/// Safe wrapper for `syncfs(2)`.
pub fn syncfs(fd: impl AsFd) -> Res<()> {
    Ok(rustix::fs::syncfs(fd)?)
}

/// Safe wrapper for `ftruncate(2)`.
pub fn ftruncate(fd: impl AsFd, len: u64) -> Res<()> {
    Ok(rustix::fs::ftruncate(fd, len)?)
}

/// Safe wrapper for `fallocate(2)`; `mode` is the raw `FALLOC_FL_*` bits.
pub fn fallocate(fd: impl AsFd, mode: i32, offset: u64, len: u64) -> Res<()> {
    let flags = FallocateFlags::from_bits(mode as u32).ok_or(Errno::EOPNOTSUPP)?;
    Ok(rustix::fs::fallocate(fd, flags, offset, len)?)
}

/// Safe wrapper for `lseek(2)`; `whence` is `SEEK_SET`, `SEEK_CUR`, `SEEK_END`, `SEEK_DATA`
/// or `SEEK_HOLE`.
pub fn lseek(fd: impl AsFd, offset: i64, whence: i32) -> Res<u64> {
    let pos = match whence {
        libc::SEEK_SET => SeekFrom::Start(u64::try_from(offset).map_err(|_| Errno::EINVAL)?),
        libc::SEEK_CUR => SeekFrom::Current(offset),
        libc::SEEK_END => SeekFrom::End(offset),
        libc::SEEK_DATA => SeekFrom::Data(u64::try_from(offset).map_err(|_| Errno::ENXIO)?),
        libc::SEEK_HOLE => SeekFrom::Hole(u64::try_from(offset).map_err(|_| Errno::ENXIO)?),
        _ => return Err(Errno::EINVAL),
    };
    Ok(rustix::fs::seek(fd, pos)?)
}

/// Safe wrapper for `flock(2)` with `LOCK_EX | LOCK_NB`: `Ok(false)` if another holder has it.
pub fn try_lock_exclusive(fd: impl AsFd) -> Res<bool> {
    match rustix::fs::flock(fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Safe wrapper for `flock(2)`, waiting for the lock: exclusive or shared.
pub fn lock_wait(fd: impl AsFd, exclusive: bool) -> Res<()> {
    let op = if exclusive { FlockOperation::LockExclusive } else { FlockOperation::LockShared };
    Ok(rustix::fs::flock(fd, op)?)
}

/// Fills `buf` from the kernel's random number generator (`getrandom(2)`): how many bytes.
pub fn random(buf: &mut [u8]) -> Res<usize> {
    Ok(rustix::rand::getrandom(buf, rustix::rand::GetRandomFlags::empty())?)
}

/// Safe wrapper for `copy_file_range(2)` between two descriptors at explicit offsets.
pub fn copy_file_range(src: impl AsFd, src_off: u64, dst: impl AsFd, dst_off: u64, len: usize) -> Res<usize> {
    let (mut a, mut b) = (src_off, dst_off);
    Ok(rustix::fs::copy_file_range(src, Some(&mut a), dst, Some(&mut b), len)?)
}

/// `sendfile(2)` of `len` bytes of `src` from `src_off` into `dst` at `dst_off`: the kernel
/// moves the data (through the page cache, as kernel overlayfs copies up across
/// filesystems), with no copy through the daemon's memory.
fn sendfile_at(src: BorrowedFd<'_>, src_off: u64, dst: BorrowedFd<'_>, dst_off: u64, len: usize) -> Res<usize> {
    rustix::fs::seek(dst, SeekFrom::Start(dst_off))?;
    let mut off = src_off;
    loop {
        match rustix::fs::sendfile(dst, src, Some(&mut off), len) {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// How [`copy_data`] moves bytes: the first that works of these, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mover {
    /// `copy_file_range(2)`: shared extents or an in-filesystem copy.
    CopyFileRange,
    /// `sendfile(2)`: an in-kernel copy between filesystems (`copy_file_range` gives `EXDEV`
    /// across ext4 filesystems since Linux 5.19).
    Sendfile,
    /// `pread`/`pwrite` through a buffer.
    ReadWrite,
}

impl Mover {
    /// The way to try when this one does not apply (none after the last).
    fn next(self) -> Option<Mover> {
        match self {
            Mover::CopyFileRange => Some(Mover::Sendfile),
            Mover::Sendfile => Some(Mover::ReadWrite),
            Mover::ReadWrite => None,
        }
    }
}

/// How much [`copy_data`] copies between writeback hints.
const WRITEBACK_CHUNK: u64 = 16 << 20;

/// What [`copy_data`] did, for statistics and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// The whole file was shared by reflink (no bytes copied).
    pub cloned: bool,
    /// Bytes moved by copy_file_range or read/write.
    pub copied: u64,
}

/// Copies the first `len` bytes of `src` into the empty file `dst` and sets `dst`'s size to
/// `len`. Tries, in order: a reflink of the whole file (`FICLONE`), then `copy_file_range`
/// over the data extents only (holes stay holes, found with `SEEK_DATA`/`SEEK_HOLE`), then
/// `sendfile` over the same extents (another filesystem), then plain reads and writes.
pub fn copy_data(src: impl AsFd, dst: impl AsFd, len: u64, src_size: u64, writeback: bool) -> Res<CopyReport> {
    let (src, dst) = (src.as_fd(), dst.as_fd());
    if len == src_size && len > 0 && rustix::fs::ioctl_ficlone(dst, src).is_ok() {
        return Ok(CopyReport { cloned: true, copied: 0 });
    }
    let mut report = CopyReport::default();
    let mut mover = Mover::CopyFileRange;
    // Errors that mean "this way of copying does not apply here", not "the copy failed".
    let unsupported = [Errno::EXDEV, Errno::EINVAL, Errno::ENOSYS, Errno::EOPNOTSUPP];
    let mut pos = 0u64;
    while pos < len {
        // Find the next data extent; a filesystem without SEEK_DATA has one extent.
        let data = match rustix::fs::seek(src, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => pos,
        };
        if data >= len {
            break;
        }
        let hole = match rustix::fs::seek(src, SeekFrom::Hole(data)) {
            Ok(h) => h.min(len),
            Err(_) => len,
        };
        let mut off = data;
        while off < hole {
            // Chunks of 16 MiB, each handed to writeback as soon as it is copied, so the disk
            // writes while the next chunk is read and the final sync has little left to do.
            let chunk = (hole - off).min(WRITEBACK_CHUNK) as usize;
            let moved = match mover {
                Mover::CopyFileRange => copy_file_range(src, off, dst, off, chunk),
                Mover::Sendfile => sendfile_at(src, off, dst, off, chunk),
                Mover::ReadWrite => pread(src, off, chunk.min(1 << 20)).and_then(|buf| pwrite(dst, off, &buf)),
            };
            let n = match (moved, mover.next()) {
                (Ok(n), _) => n,
                (Err(e), Some(next)) if unsupported.contains(&e) => {
                    mover = next;
                    continue;
                }
                (Err(e), _) => return Err(e),
            };
            if n == 0 {
                // The source shrank under us; what is there is what we copy.
                break;
            }
            if writeback {
                let _hint = start_writeback(dst, off, n as u64);
            }
            off += n as u64;
            report.copied += n as u64;
        }
        if hole <= pos {
            break;
        }
        pos = hole;
    }
    ftruncate(dst, len)?;
    Ok(report)
}
