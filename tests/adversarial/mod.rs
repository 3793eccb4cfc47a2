//! Our own red team: what an attacker, the kernel and a loaded machine do to a mount, not
//! only the paths the code was written for. Each module is one class of attack; each test
//! names the finding it guards against (issue 17's numbers in brackets) and fails without
//! the fix. Most need root: a second user against a root mount, loop filesystems, mount
//! namespaces.

mod beneath;
mod check;
mod crash;
mod identity;
mod others;
mod setid;
mod store;
mod stuck;
mod swap;
mod util;
