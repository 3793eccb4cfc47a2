//! Compact file names for nodes: most names are short, and a node's name is kept for as
//! long as the kernel remembers the node, so short names live inline instead of in a heap
//! allocation of their own (a walk of half a million files keeps that many names).

use std::ffi::{CStr, CString};
use std::fmt;

/// Bytes stored inline, the terminating NUL included.
const INLINE: usize = 23;

/// A NUL-terminated file name; dereferences to [`CStr`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Name(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    /// Up to 22 bytes and the NUL, then zero padding.
    Short([u8; INLINE]),
    /// Longer names.
    Long(Box<CStr>),
}

impl Name {
    /// The name as a C string.
    pub fn as_c_str(&self) -> &CStr {
        match &self.0 {
            // The buffer always holds a NUL (it is zero-padded after the name).
            Repr::Short(b) => CStr::from_bytes_until_nul(b).unwrap_or_default(),
            Repr::Long(c) => c,
        }
    }
}

impl From<&CStr> for Name {
    fn from(c: &CStr) -> Name {
        let bytes = c.to_bytes();
        if bytes.len() < INLINE {
            let mut b = [0u8; INLINE];
            b[..bytes.len()].copy_from_slice(bytes);
            Name(Repr::Short(b))
        } else {
            Name(Repr::Long(c.into()))
        }
    }
}

impl From<CString> for Name {
    fn from(c: CString) -> Name {
        Name::from(c.as_c_str())
    }
}

impl From<&Name> for CString {
    fn from(n: &Name) -> CString {
        n.as_c_str().to_owned()
    }
}

impl std::ops::Deref for Name {
    type Target = CStr;
    fn deref(&self) -> &CStr {
        self.as_c_str()
    }
}

impl AsRef<CStr> for Name {
    fn as_ref(&self) -> &CStr {
        self.as_c_str()
    }
}

impl PartialEq<CStr> for Name {
    fn eq(&self, other: &CStr) -> bool {
        self.as_c_str() == other
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_c_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_names_round_trip() {
        for s in ["", "a", "file_00.rs", "exactly-twenty-two-ch", "twenty-three-bytes-long", &"x".repeat(255)] {
            let c = CString::new(s).unwrap();
            let n = Name::from(c.as_c_str());
            assert_eq!(n.as_c_str(), c.as_c_str());
            assert_eq!(CString::from(&n), c);
            assert_eq!(n, Name::from(c.clone()));
        }
        assert_eq!(std::mem::size_of::<Name>(), 24);
        assert_ne!(Name::from(c"a"), Name::from(c"b"));
    }
}
