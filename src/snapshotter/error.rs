//! What a snapshotter call can fail with: containerd's error kinds (its `errdefs`), which the
//! gRPC adapter turns into the status codes containerd maps back.

use std::fmt;

/// containerd's error kinds that the snapshots API uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// No snapshot (or parent) of that key.
    NotFound,
    /// The key is taken.
    AlreadyExists,
    /// The snapshot is not in a state the call needs (not active, has children, mounted).
    FailedPrecondition,
    /// A malformed argument (empty key, parent not committed, oversized label, bad filter).
    InvalidArgument,
    /// The snapshotter's own failure (disk, metadata file).
    Internal,
}

/// A failed call: its kind and a sentence saying what went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapError {
    /// The kind.
    pub code: Code,
    /// The sentence.
    pub message: String,
}

impl SnapError {
    /// An error of kind `code`.
    pub fn new(code: Code, message: impl Into<String>) -> SnapError {
        SnapError { code, message: message.into() }
    }

    /// [`Code::NotFound`] for snapshot `key`.
    pub fn not_found(key: &str) -> SnapError {
        SnapError::new(Code::NotFound, format!("snapshot '{key}' does not exist"))
    }

    /// [`Code::InvalidArgument`].
    pub fn invalid(message: impl Into<String>) -> SnapError {
        SnapError::new(Code::InvalidArgument, message)
    }

    /// [`Code::FailedPrecondition`].
    pub fn precondition(message: impl Into<String>) -> SnapError {
        SnapError::new(Code::FailedPrecondition, message)
    }

    /// [`Code::Internal`].
    pub fn internal(message: impl Into<String>) -> SnapError {
        SnapError::new(Code::Internal, message)
    }
}

impl fmt::Display for SnapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SnapError {}

impl From<crate::error::Error> for SnapError {
    fn from(e: crate::error::Error) -> SnapError {
        SnapError::internal(e.to_string())
    }
}

/// The metadata file's errors.
macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for SnapError {
            fn from(e: $t) -> SnapError {
                SnapError::internal(format!("the metadata file failed: {e}"))
            }
        }
    )*};
}

from_redb!(redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);
