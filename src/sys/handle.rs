//! File handles (`name_to_handle_at(2)`) and filesystem UUIDs (`FS_IOC_GETFSUUID`), used to
//! record a copied-up file's origin in the kernel overlayfs format. `unsafe` here: libc has
//! no safe form of these calls.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd};

use crate::error::{Errno, Res};

/// Largest handle the kernel produces (`MAX_HANDLE_SZ`).
const MAX_HANDLE_SZ: usize = 128;

/// An exported file handle: the filesystem-specific type and the opaque bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileHandle {
    /// `handle_type`, the `fid_type` of the exporting filesystem.
    pub kind: i32,
    /// `f_handle`, a multiple of 4 bytes.
    pub bytes: Vec<u8>,
}

/// Safe wrapper for `name_to_handle_at(2)` of entry `name` of `dir`, not following a final
/// symlink. Filesystems without export support answer `EOPNOTSUPP`.
pub fn name_to_handle_at(dir: impl AsFd, name: &CStr) -> Res<FileHandle> {
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }, 4-aligned.
    let mut buf = [0u32; 2 + MAX_HANDLE_SZ / 4];
    buf[0] = MAX_HANDLE_SZ as u32;
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `buf` is a properly aligned `struct file_handle` whose `handle_bytes` says how
    // much room follows the header; `name` is NUL-terminated; `mount_id` is a valid out
    // pointer; all live across the call, and the kernel writes at most `handle_bytes`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            dir.as_fd().as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr(),
            &mut mount_id as *mut libc::c_int,
            0,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let len = (buf[0] as usize).min(MAX_HANDLE_SZ);
    let kind = buf[1] as i32;
    let bytes: Vec<u8> = buf[2..].iter().flat_map(|w| w.to_ne_bytes()).take(len).collect();
    if bytes.is_empty() {
        return Err(Errno::EOPNOTSUPP);
    }
    Ok(FileHandle { kind, bytes })
}

/// Safe wrapper for `open_by_handle_at(2)` (`O_PATH`): the object handle `kind`/`bytes`
/// names on the filesystem holding `mount_fd`. Needs `CAP_DAC_READ_SEARCH` (`EPERM`
/// without); `ESTALE` for an object that is gone.
pub fn open_by_handle_at(mount_fd: impl AsFd, kind: i32, bytes: &[u8]) -> Res<std::os::fd::OwnedFd> {
    if bytes.is_empty() || bytes.len() > MAX_HANDLE_SZ || !bytes.len().is_multiple_of(4) {
        return Err(Errno::EINVAL);
    }
    let mut buf = [0u32; 2 + MAX_HANDLE_SZ / 4];
    buf[0] = bytes.len() as u32;
    buf[1] = kind as u32;
    for (i, w) in bytes.chunks(4).enumerate() {
        buf[2 + i] = u32::from_ne_bytes([w[0], w[1], w[2], w[3]]);
    }
    let flags = libc::O_PATH | libc::O_CLOEXEC;
    // SAFETY: `buf` is a properly aligned `struct file_handle` holding `handle_bytes` bytes
    // of handle after its header, alive across the call; the kernel only reads it. The
    // returned descriptor, if any, is new and owned by no one else.
    let rc = unsafe { libc::syscall(libc::SYS_open_by_handle_at, mount_fd.as_fd().as_raw_fd(), buf.as_ptr(), flags) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: `rc` is a descriptor the kernel just opened for this process.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(rc as i32) })
}

/// The filesystem UUID of the filesystem holding directory `dir` (`FS_IOC_GETFSUUID`, Linux
/// 6.5+): what the kernel records in an origin handle to say which filesystem it belongs to.
/// `None` where the kernel or filesystem does not tell (the caller records a null UUID).
pub fn fs_uuid(dir: impl AsFd) -> Option<[u8; 16]> {
    let fd =
        crate::sys::open::openat(dir, crate::sys::DOT, rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY, 0)
            .ok()?;
    // struct fsuuid2 { __u8 len; __u8 uuid[16]; }; FS_IOC_GETFSUUID = _IOR(0x15, 0, fsuuid2).
    const FS_IOC_GETFSUUID: libc::c_ulong = 0x8011_1500;
    let mut buf = [0u8; 17];
    // SAFETY: `buf` is a 17-byte `struct fsuuid2` the kernel fills (it writes no more than
    // its size, encoded in the request number); `fd` is an open descriptor for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_GETFSUUID, buf.as_mut_ptr()) };
    if rc != 0 || buf[0] != 16 {
        return None;
    }
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&buf[1..]);
    Some(uuid)
}
