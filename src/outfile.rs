//! Files the commands write whole (tarballs, records, pid files): made under a fresh name
//! beside their destination with `O_CREAT | O_EXCL | O_NOFOLLOW`, so a symlink or file
//! planted at any name in a directory others can write is never followed or truncated, and
//! renamed into place only once complete. Dropped before [`OutFile::commit`], the
//! temporary is removed: a failed write leaves nothing behind.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Context, Error};

/// A file being written, renamed to its destination by [`OutFile::commit`].
#[derive(Debug)]
pub struct OutFile {
    dest: PathBuf,
    tmp: PathBuf,
    file: Option<std::fs::File>,
    /// fsync the data and the directory at commit.
    durable: bool,
}

impl OutFile {
    /// Starts writing `dest` (mode 0644 before the umask), durably.
    pub fn create(dest: &Path) -> Result<OutFile, Error> {
        Self::with_mode(dest, 0o644)
    }

    /// Starts writing `dest` with permission bits `mode` (before the umask).
    pub fn with_mode(dest: &Path, mode: u32) -> Result<OutFile, Error> {
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = dest.file_name().ok_or_else(|| Error::msg(format!("'{}' names no file", dest.display())))?;
        for _ in 0..16 {
            let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), crate::manager::store::random_hex(6)));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .mode(mode)
                .open(&tmp)
            {
                Ok(f) => return Ok(OutFile { dest: dest.to_path_buf(), tmp, file: Some(f), durable: true }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(format!("cannot create a file in '{}'", dir.display()), e)),
            }
        }
        Err(Error::msg(format!("cannot create a temporary file in '{}'", dir.display())))
    }

    /// Skips the fsyncs at commit (files nothing depends on after a crash).
    pub fn volatile(mut self) -> OutFile {
        self.durable = false;
        self
    }

    /// Renames the complete file into place (replacing whatever is at the destination, a
    /// symlink included, without following it).
    pub fn commit(mut self) -> Result<(), Error> {
        let f = self.file.take().ok_or_else(|| Error::msg("file committed twice"))?;
        if self.durable {
            f.sync_all().context(|| format!("cannot write '{}'", self.dest.display()))?;
        }
        drop(f);
        std::fs::rename(&self.tmp, &self.dest).context(|| format!("cannot create '{}'", self.dest.display()))?;
        self.tmp = PathBuf::new();
        if self.durable
            && let Some(dir) = self.dest.parent().filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .context(|| format!("cannot sync '{}'", dir.display()))?;
        }
        Ok(())
    }
}

impl Write for OutFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(std::io::Error::other("the file was committed")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for OutFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _gone = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_planted_symlink_is_replaced_not_followed_and_a_failed_write_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let dest = d.path().join("out.tar");
        std::os::unix::fs::symlink(&victim, &dest).unwrap();
        let mut f = OutFile::create(&dest).unwrap();
        f.write_all(b"new").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "new");
        assert!(!std::fs::symlink_metadata(&dest).unwrap().file_type().is_symlink());
        // Dropped before commit: nothing new in the directory.
        let mut f = OutFile::create(&d.path().join("failed")).unwrap();
        f.write_all(b"half").unwrap();
        drop(f);
        let mut names: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["out.tar", "victim"]);
    }
}
