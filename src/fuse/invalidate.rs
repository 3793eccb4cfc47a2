//! Kernel-cache invalidation requested by the core, sent from a thread of its own.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;

use fuser::INodeNo;
use tracing::debug;

use crate::union::Invalidator;

/// One kernel-cache invalidation.
#[derive(Debug)]
enum Inval {
    Entry(u64, CString),
    Inode(u64),
}

/// Kernel-cache invalidation through the session's notifier, sent from its own thread: an
/// invalidation may need a directory lock that the very system call being served holds, so
/// sending it from a request handler could deadlock. Queued ones go out right after.
pub struct NotifierInvalidator {
    tx: std::sync::mpsc::Sender<Inval>,
    /// For the invalidations that must reach the kernel before the reply (attributes only,
    /// which takes no lock a system call being served could hold).
    now: fuser::Notifier,
}

impl NotifierInvalidator {
    /// Starts the sending thread.
    pub fn start(notifier: fuser::Notifier) -> std::io::Result<NotifierInvalidator> {
        let (tx, rx) = std::sync::mpsc::channel::<Inval>();
        let now = notifier.clone();
        std::thread::Builder::new().name("invalidate".into()).spawn(move || {
            for msg in rx {
                let r = match &msg {
                    Inval::Entry(parent, name) => {
                        notifier.inval_entry(INodeNo(*parent), OsStr::from_bytes(name.as_bytes()))
                    }
                    Inval::Inode(ino) => notifier.inval_inode(INodeNo(*ino), 0, 0),
                };
                if let Err(e) = r {
                    debug!("{msg:?}: {e}");
                }
            }
        })?;
        Ok(NotifierInvalidator { tx, now })
    }
}

impl Invalidator for NotifierInvalidator {
    fn inval_entry(&self, parent: u64, name: &std::ffi::CStr) {
        // The receiver lives as long as the session; a send after it ended has nothing to do.
        let _gone = self.tx.send(Inval::Entry(parent, name.to_owned()));
    }

    fn inval_inode(&self, ino: u64) {
        let _gone = self.tx.send(Inval::Inode(ino));
    }

    fn inval_dir_now(&self, ino: u64) {
        if let Err(e) = self.now.inval_inode(INodeNo(ino), 0, 0) {
            debug!("listing invalidation of {ino}: {e}");
        }
    }

    fn inval_pages_now(&self, ino: u64) -> bool {
        // The kernel answers ENOENT for an inode it has forgotten (nothing cached then).
        self.now.inval_inode(INodeNo(ino), 0, 0).inspect_err(|e| debug!("page invalidation of {ino}: {e}")).is_ok()
    }

    fn store_pages_now(&self, ino: u64, data: &[u8]) -> bool {
        self.now.store(INodeNo(ino), 0, data).inspect_err(|e| debug!("page store of {ino}: {e}")).is_ok()
    }

    fn inval_attrs_now(&self, ino: u64) {
        // Offset -1: the attributes only, not the page cache (whose pages the writer that
        // asked may hold locked).
        if let Err(e) = self.now.inval_inode(INodeNo(ino), -1, 0) {
            debug!("attribute invalidation of {ino}: {e}");
        }
    }
}
