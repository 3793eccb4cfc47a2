//! Errors, in two kinds.
//!
//! * [`Errno`] travels the request path. It is `Copy`, always holds a positive errno, and an
//!   I/O error that carries no OS code becomes `EIO` (never 0). The FUSE adapter is the only
//!   place that turns it into a reply.
//! * [`Error`] is for the edges (command line, mount setup, manager): one human sentence that
//!   names the problem, printed as one line.

use std::fmt;
use std::io;

/// A positive errno value returned by the union core.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(i32);

/// Result type of the request path.
pub type Res<T> = Result<T, Errno>;

macro_rules! errnos {
    ($($name:ident),* $(,)?) => {
        impl Errno {
            $(
                #[doc = concat!("`", stringify!($name), "`")]
                pub const $name: Errno = Errno(libc::$name);
            )*
        }
    };
}

errnos!(
    EPERM,
    ENOENT,
    EIO,
    EBADF,
    EAGAIN,
    ENOMEM,
    EACCES,
    EBUSY,
    EEXIST,
    EXDEV,
    ENODEV,
    ENOTDIR,
    EISDIR,
    EINVAL,
    ENFILE,
    EMFILE,
    ENOTTY,
    EFBIG,
    ENOSPC,
    ESPIPE,
    EROFS,
    EMLINK,
    ERANGE,
    ENAMETOOLONG,
    ENOSYS,
    ENOTEMPTY,
    ELOOP,
    ENODATA,
    EOPNOTSUPP,
    EDQUOT,
    ESTALE,
    ENXIO,
    EINTR,
    EOVERFLOW,
    ETXTBSY,
    EPROTO,
    ENOTCONN,
    ECANCELED,
);

impl Errno {
    /// Wraps a raw errno; anything that is not positive becomes `EIO`.
    pub fn from_raw(code: i32) -> Self {
        if code > 0 { Errno(code) } else { Errno::EIO }
    }

    /// The raw positive errno value.
    pub fn raw(self) -> i32 {
        self.0
    }
}

impl From<rustix::io::Errno> for Errno {
    fn from(e: rustix::io::Errno) -> Self {
        Errno::from_raw(e.raw_os_error())
    }
}

impl From<io::Error> for Errno {
    fn from(e: io::Error) -> Self {
        e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
    }
}

impl From<Errno> for io::Error {
    fn from(e: Errno) -> Self {
        io::Error::from_raw_os_error(e.0)
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", rustix::io::Errno::from_raw_os_error(self.0), self.0)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&io::Error::from_raw_os_error(self.0), f)
    }
}

/// An error at the edges of the program: one line that names the problem.
#[derive(Debug)]
pub enum Error {
    /// A complete sentence.
    Msg(String),
    /// An operating-system failure, with what was being done.
    Io {
        /// What was being attempted, e.g. "cannot open lower layer '/x'".
        context: String,
        /// The underlying failure.
        source: io::Error,
    },
}

impl Error {
    /// An error from a message.
    pub fn msg(m: impl Into<String>) -> Self {
        Error::Msg(m.into())
    }

    /// An error from an I/O failure with context.
    pub fn io(context: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Error::Io { context: context.into(), source: source.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Msg(m) => f.write_str(m),
            Error::Io { context, source } => write!(f, "{context}: {}", cause(source)),
        }
    }
}

/// An I/O failure in words, as a clause: `no space left on device` (the system's text
/// with a lower-case first letter and without `(os error 28)`).
pub fn cause(e: &io::Error) -> String {
    let text = e.to_string();
    let text = match (e.raw_os_error(), text.rfind(" (os error ")) {
        (Some(_), Some(i)) => &text[..i],
        _ => &text,
    };
    let mut c = text.chars();
    match c.next() {
        Some(first) => first.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

impl std::error::Error for Error {}

/// Adds context to fallible I/O at the edges.
pub trait Context<T> {
    /// Turns the error into an [`Error`] that says what was being done.
    fn context(self, what: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T, E: Into<io::Error>> Context<T> for Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|e| Error::io(what(), e))
    }
}

impl From<Errno> for Error {
    fn from(e: Errno) -> Self {
        Error::Io { context: "operation failed".into(), source: e.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_os_errors_become_eio_not_zero() {
        let e = io::Error::other("no code");
        assert_eq!(Errno::from(e), Errno::EIO);
        assert_eq!(Errno::from_raw(0), Errno::EIO);
        assert_eq!(Errno::from_raw(-3), Errno::EIO);
        assert_eq!(Errno::from_raw(libc::ENOENT), Errno::ENOENT);
    }

    #[test]
    fn io_causes_read_as_clauses() {
        let e = Error::io("cannot write 'x'", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.to_string(), "cannot write 'x': no space left on device");
        assert_eq!(cause(&io::Error::other("Broken")), "broken");
    }

    #[test]
    fn rustix_errno_keeps_its_code() {
        assert_eq!(Errno::from(rustix::io::Errno::NOTEMPTY), Errno::ENOTEMPTY);
    }
}
