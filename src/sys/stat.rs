//! File status: the [`Stat`] value the core works with, and the calls that fill it.

use std::ffi::CStr;
use std::os::fd::AsFd;

use rustix::fs::{AtFlags, FileType};

use crate::error::Res;

/// Seconds and nanoseconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Timespec {
    /// Seconds.
    pub sec: i64,
    /// Nanoseconds, below 1e9.
    pub nsec: u32,
}

/// The type of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// Regular file.
    Regular,
    /// Directory.
    Directory,
    /// Symbolic link.
    Symlink,
    /// Character device (a 0/0 one is a whiteout).
    CharDev,
    /// Block device.
    BlockDev,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
}

impl FileKind {
    /// Decodes the `S_IFMT` bits of a mode.
    pub fn from_mode(mode: u32) -> Option<FileKind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::Regular,
            libc::S_IFDIR => FileKind::Directory,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFCHR => FileKind::CharDev,
            libc::S_IFBLK => FileKind::BlockDev,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            _ => return None,
        })
    }

    /// Decodes a `d_type` from getdents; `None` for `DT_UNKNOWN`.
    pub fn from_dirent(t: FileType) -> Option<FileKind> {
        Some(match t {
            FileType::RegularFile => FileKind::Regular,
            FileType::Directory => FileKind::Directory,
            FileType::Symlink => FileKind::Symlink,
            FileType::CharacterDevice => FileKind::CharDev,
            FileType::BlockDevice => FileKind::BlockDev,
            FileType::Fifo => FileKind::Fifo,
            FileType::Socket => FileKind::Socket,
            _ => return None,
        })
    }

    /// The `S_IFMT` bits of this kind.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileKind::Regular => libc::S_IFREG,
            FileKind::Directory => libc::S_IFDIR,
            FileKind::Symlink => libc::S_IFLNK,
            FileKind::CharDev => libc::S_IFCHR,
            FileKind::BlockDev => libc::S_IFBLK,
            FileKind::Fifo => libc::S_IFIFO,
            FileKind::Socket => libc::S_IFSOCK,
        }
    }
}

/// What `stat(2)` says about a real file in a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Device of the filesystem holding the file.
    pub dev: u64,
    /// Inode number on that filesystem.
    pub ino: u64,
    /// Type and permission bits.
    pub mode: u32,
    /// Hard link count.
    pub nlink: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number, for device files.
    pub rdev: u64,
    /// Size in bytes.
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    /// Preferred I/O size.
    pub blksize: u32,
    /// Last access.
    pub atime: Timespec,
    /// Last modification.
    pub mtime: Timespec,
    /// Last status change.
    pub ctime: Timespec,
}

impl Stat {
    fn from_rustix(s: &rustix::fs::Stat) -> Stat {
        let ts = |sec: i64, nsec: u64| Timespec { sec, nsec: nsec as u32 };
        Stat {
            dev: s.st_dev,
            ino: s.st_ino,
            mode: s.st_mode,
            nlink: s.st_nlink,
            uid: s.st_uid,
            gid: s.st_gid,
            rdev: s.st_rdev,
            size: s.st_size.max(0) as u64,
            blocks: s.st_blocks.max(0) as u64,
            blksize: s.st_blksize.clamp(0, i64::from(u32::MAX)) as u32,
            atime: ts(s.st_atime, s.st_atime_nsec),
            mtime: ts(s.st_mtime, s.st_mtime_nsec),
            ctime: ts(s.st_ctime, s.st_ctime_nsec),
        }
    }

    /// The file's type, if it is one Linux knows.
    pub fn kind(&self) -> Option<FileKind> {
        FileKind::from_mode(self.mode)
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    /// Whether this is a regular file.
    pub fn is_reg(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// Whether this is a 0/0 character device: the kernel overlay whiteout.
    pub fn is_chardev_whiteout(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFCHR && self.rdev == 0
    }

    /// The permission bits (including setuid, setgid, sticky).
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
}

/// A device number from its major and minor numbers.
pub fn makedev(major: u32, minor: u32) -> u64 {
    rustix::fs::makedev(major, minor)
}

/// The major and minor numbers of device number `dev`.
pub fn major_minor(dev: u64) -> (u32, u32) {
    (rustix::fs::major(dev), rustix::fs::minor(dev))
}

/// Safe wrapper for `fstatat(2)` with `AT_SYMLINK_NOFOLLOW`.
pub fn statat(dir: impl AsFd, name: &CStr) -> Res<Stat> {
    Ok(Stat::from_rustix(&rustix::fs::statat(dir, name, at_flags(name))?))
}

/// `AT_SYMLINK_NOFOLLOW`, and `AT_EMPTY_PATH` for an empty name (the object `dir` holds).
pub(crate) fn at_flags(name: &CStr) -> AtFlags {
    match name.is_empty() {
        true => AtFlags::SYMLINK_NOFOLLOW | AtFlags::EMPTY_PATH,
        false => AtFlags::SYMLINK_NOFOLLOW,
    }
}

/// Safe wrapper for `fstat(2)`; works on `O_PATH` descriptors too.
pub fn fstat(fd: impl AsFd) -> Res<Stat> {
    Ok(Stat::from_rustix(&rustix::fs::fstat(fd)?))
}

/// Filesystem statistics, as `statvfs(3)` reports them.
#[derive(Clone, Copy, Debug)]
pub struct FsStat {
    /// Total blocks (in `frsize` units).
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Free blocks for unprivileged users.
    pub bavail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Block size.
    pub bsize: u32,
    /// Longest name.
    pub namelen: u32,
    /// Fragment size.
    pub frsize: u32,
}

/// Safe wrapper for `fstatvfs(3)`.
pub fn fstatvfs(fd: impl AsFd) -> Res<FsStat> {
    let s = rustix::fs::fstatvfs(fd)?;
    Ok(FsStat {
        blocks: s.f_blocks,
        bfree: s.f_bfree,
        bavail: s.f_bavail,
        files: s.f_files,
        ffree: s.f_ffree,
        bsize: s.f_bsize as u32,
        namelen: s.f_namemax as u32,
        frsize: s.f_frsize as u32,
    })
}

/// Safe wrapper for `fstatfs(2)`: the filesystem magic number.
pub fn fs_magic(fd: impl AsFd) -> Res<i64> {
    Ok(rustix::fs::fstatfs(fd)?.f_type)
}

/// Whether directory `fd` is the root of a mount (`STATX_ATTR_MOUNT_ROOT`: a bind mount of
/// a directory of the same filesystem too).
pub fn is_mount_root(fd: impl AsFd) -> Res<bool> {
    let x = rustix::fs::statx(fd, c"", at_flags(c""), rustix::fs::StatxFlags::empty())?;
    let mount_root = rustix::fs::StatxAttributes::MOUNT_ROOT;
    Ok(x.stx_attributes_mask.contains(mount_root) && x.stx_attributes.contains(mount_root))
}

/// Immutable and append-only as `statx(2)` reports them (`STATX_ATTR_IMMUTABLE`,
/// `STATX_ATTR_APPEND`), for entry `name` of `dir`: `(immutable, append)`.
pub fn protection_at(dir: impl AsFd, name: &CStr) -> Res<(bool, bool)> {
    let x = rustix::fs::statx(dir, name, at_flags(name), rustix::fs::StatxFlags::empty())?;
    let attrs = (x.stx_attributes & x.stx_attributes_mask).bits();
    Ok((attrs & 0x10 != 0, attrs & 0x20 != 0))
}
