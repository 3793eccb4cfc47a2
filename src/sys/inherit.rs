//! Handing a pipe to a re-executed child: the readiness channel of a background mount.
#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, OwnedFd};

use rustix::io::FdFlags;

use crate::error::Res;

/// Safe wrapper for `pipe2(2)`: returns (read end, write end); the read end is close-on-exec,
/// the write end is inherited by children (its number is passed to them).
pub fn pipe_for_child() -> Res<(OwnedFd, OwnedFd)> {
    let (rd, wr) = rustix::pipe::pipe()?;
    rustix::io::fcntl_setfd(&rd, FdFlags::CLOEXEC)?;
    rustix::io::fcntl_setfd(&wr, FdFlags::empty())?;
    Ok((rd, wr))
}

/// Takes ownership of the descriptor whose number the parent put in environment variable
/// `var`, and removes the variable. Must be called at start-up, before any thread exists.
pub fn take_fd_from_env(var: &str) -> Option<OwnedFd> {
    let n: i32 = std::env::var(var).ok()?.parse().ok()?;
    // SAFETY: start-up code, single-threaded: no other thread reads the environment.
    unsafe { std::env::remove_var(var) };
    if n < 3 {
        return None;
    }
    // SAFETY: fcntl(F_GETFD) on any number is defined; a closed one gives EBADF.
    if unsafe { libc::fcntl(n, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the parent created this descriptor for us and told us its number; it is open
    // (checked above) and nothing else in this process owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(n) };
    rustix::io::fcntl_setfd(&fd, FdFlags::CLOEXEC).ok()?;
    Some(fd)
}
