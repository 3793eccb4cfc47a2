//! File attribute flags of real objects (`chattr`/`lsattr`): `FS_IOC_GETFLAGS`/`SETFLAGS`
//! and `FS_IOC_FSGETXATTR`/`FSSETXATTR`.

use std::os::fd::AsFd;

use rustix::fs::IFlags;

use crate::error::Res;

/// `FS_IOC_GETFLAGS` (as the kernel's FUSE sends it, whatever the caller's word size).
pub const FS_IOC_GETFLAGS: u32 = 0x8008_6601;
/// `FS_IOC_SETFLAGS`.
pub const FS_IOC_SETFLAGS: u32 = 0x4008_6602;
/// `FS_IOC_FSGETXATTR`.
pub const FS_IOC_FSGETXATTR: u32 = 0x801c_581f;
/// `FS_IOC_FSSETXATTR`.
pub const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;

/// `FS_SYNC_FL`.
pub const FS_SYNC_FL: u32 = 0x08;
/// `FS_IMMUTABLE_FL`.
pub const FS_IMMUTABLE_FL: u32 = 0x10;
/// `FS_APPEND_FL`.
pub const FS_APPEND_FL: u32 = 0x20;
/// `FS_NOATIME_FL`.
pub const FS_NOATIME_FL: u32 = 0x80;
/// `FS_XFLAG_IMMUTABLE`.
pub const FS_XFLAG_IMMUTABLE: u32 = 0x08;
/// `FS_XFLAG_APPEND`.
pub const FS_XFLAG_APPEND: u32 = 0x10;

/// `struct fsxattr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsXattr {
    /// `fsx_xflags` (`FS_XFLAG_*`).
    pub xflags: u32,
    /// `fsx_extsize`.
    pub extsize: u32,
    /// `fsx_nextents`.
    pub nextents: u32,
    /// `fsx_projid`: the project id.
    pub projid: u32,
    /// `fsx_cowextsize`.
    pub cowextsize: u32,
    /// `fsx_pad`.
    pub pad: [u8; 8],
}

/// Size of `struct fsxattr`.
pub const FSXATTR_SIZE: usize = 28;

impl FsXattr {
    /// Reads the structure from the bytes of an ioctl request (`None` if too short).
    pub fn from_bytes(b: &[u8]) -> Option<FsXattr> {
        let w = |i: usize| b.get(i * 4..i * 4 + 4).and_then(|s| s.try_into().ok()).map(u32::from_ne_bytes);
        let pad = b.get(20..28)?.try_into().ok()?;
        Some(FsXattr { xflags: w(0)?, extsize: w(1)?, nextents: w(2)?, projid: w(3)?, cowextsize: w(4)?, pad })
    }

    /// The structure's bytes.
    pub fn to_bytes(self) -> [u8; FSXATTR_SIZE] {
        let mut out = [0u8; FSXATTR_SIZE];
        for (i, v) in [self.xflags, self.extsize, self.nextents, self.projid, self.cowextsize].iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
        }
        out[20..].copy_from_slice(&self.pad);
        out
    }
}

/// Safe wrapper for `ioctl(FS_IOC_GETFLAGS)`.
pub fn get_flags(fd: impl AsFd) -> Res<u32> {
    Ok(rustix::fs::ioctl_getflags(fd)?.bits())
}

/// Safe wrapper for `ioctl(FS_IOC_SETFLAGS)`.
pub fn set_flags(fd: impl AsFd, flags: u32) -> Res<()> {
    Ok(rustix::fs::ioctl_setflags(fd, IFlags::from_bits_retain(flags))?)
}

/// Safe wrapper for `ioctl(FS_IOC_FSGETXATTR)`.
#[allow(unsafe_code)]
pub fn get_fsxattr(fd: impl AsFd) -> Res<FsXattr> {
    // SAFETY: the opcode reads a `struct fsxattr`, which `FsXattr` lays out exactly
    // (`repr(C)`, 28 bytes), into the getter's buffer.
    let r = unsafe {
        let ctl = rustix::ioctl::Getter::<{ FS_IOC_FSGETXATTR as rustix::ioctl::Opcode }, FsXattr>::new();
        rustix::ioctl::ioctl(fd, ctl)
    };
    Ok(r?)
}

/// Safe wrapper for `ioctl(FS_IOC_FSSETXATTR)`.
#[allow(unsafe_code)]
pub fn set_fsxattr(fd: impl AsFd, fsx: FsXattr) -> Res<()> {
    // SAFETY: the opcode takes a pointer to a `struct fsxattr`, which `FsXattr` lays out
    // exactly; the setter passes a pointer to its own copy.
    let r = unsafe {
        let ctl = rustix::ioctl::Setter::<{ FS_IOC_FSSETXATTR as rustix::ioctl::Opcode }, FsXattr>::new(fsx);
        rustix::ioctl::ioctl(fd, ctl)
    };
    Ok(r?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsxattr_bytes_round_trip() {
        let f = FsXattr { xflags: 0x18, extsize: 2, nextents: 3, projid: 77, cowextsize: 5, pad: [9; 8] };
        let b = f.to_bytes();
        assert_eq!(FsXattr::from_bytes(&b), Some(f));
        assert_eq!(u32::from_ne_bytes(b[12..16].try_into().unwrap()), 77);
        assert_eq!(FsXattr::from_bytes(&b[..27]), None);
        assert_eq!(std::mem::size_of::<FsXattr>(), FSXATTR_SIZE);
    }
}
