//! Layer tarballs written back byte for byte, as containers/storage's tar-split does.
//!
//! A layer's id is the sha256 of the tar stream it came from, and an image's config lists
//! those ids: to save an image, each layer's stream must come out again exactly. While a
//! tarball is unpacked, a [`Recorder`] between the decompressor and the tar parser keeps
//! every byte that is not a regular file's data (headers, PAX records, padding, the end
//! marker) and, for file data, only the path and length. [`replay`] plays that record back
//! with the data read from the stored layer, and the caller checks the digest.
//!
//! The record (`tar-split.gz` beside a layer's `diff/`) is gzip of a sequence of
//! `R <u32 len> <bytes>` (bytes as they were) and `F <u64 len> <u16 pathlen> <path>` (that
//! many bytes from the file at that path in the layer).

use std::cell::RefCell;
use std::io::{Read, Write};
use std::path::Path;
use std::rc::Rc;

use crate::error::{Context, Error};

/// Raw bytes are kept in runs of at most this many.
const RUN: usize = 64 << 10;

/// The record being written while a tarball is unpacked.
pub struct SplitWriter {
    out: flate2::write::GzEncoder<std::fs::File>,
    raw: Vec<u8>,
    /// Set while a regular file's data is read: its path in the layer, and bytes so far.
    content: Option<(Vec<u8>, u64)>,
    error: Option<std::io::Error>,
}

impl SplitWriter {
    /// Starts a record in the new file `path`.
    pub fn create(path: &Path) -> Result<SplitWriter, Error> {
        let f = std::fs::File::create(path).context(|| format!("cannot create '{}'", path.display()))?;
        Ok(SplitWriter {
            out: flate2::write::GzEncoder::new(f, flate2::Compression::fast()),
            raw: Vec::with_capacity(RUN),
            content: None,
            error: None,
        })
    }

    fn flush_raw(&mut self) -> std::io::Result<()> {
        if self.raw.is_empty() {
            return Ok(());
        }
        self.out.write_all(b"R")?;
        self.out.write_all(&(self.raw.len() as u32).to_le_bytes())?;
        self.out.write_all(&self.raw)?;
        self.raw.clear();
        Ok(())
    }

    fn bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        match &mut self.content {
            Some((_, n)) => *n += b.len() as u64,
            None => {
                self.raw.extend_from_slice(b);
                if self.raw.len() >= RUN {
                    self.flush_raw()?;
                }
            }
        }
        Ok(())
    }

    fn end_content(&mut self) -> std::io::Result<()> {
        if let Some((path, n)) = self.content.take() {
            self.flush_raw()?;
            self.out.write_all(b"F")?;
            self.out.write_all(&n.to_le_bytes())?;
            self.out.write_all(&(path.len() as u16).to_le_bytes())?;
            self.out.write_all(&path)?;
        }
        Ok(())
    }

    /// Ends the record, synced to disk.
    pub fn finish(mut self) -> Result<(), Error> {
        if let Some(e) = self.error.take() {
            return Err(Error::io("cannot write the layer's tar-split record", e));
        }
        let werr = |e| Error::io("cannot write the layer's tar-split record", e);
        self.end_content().map_err(werr)?;
        self.flush_raw().map_err(werr)?;
        let f = self.out.finish().map_err(werr)?;
        f.sync_all().map_err(werr)
    }
}

/// Shared handle to a [`SplitWriter`]: the [`Recorder`] feeds it, the unpacker marks where
/// file data starts and ends.
#[derive(Clone)]
pub struct Split(Rc<RefCell<SplitWriter>>);

impl Split {
    /// Wraps a writer.
    pub fn new(w: SplitWriter) -> Split {
        Split(Rc::new(RefCell::new(w)))
    }

    /// The bytes read next, until [`Split::file_end`], are the data of the regular file at
    /// `path` (`/`-separated, relative to the layer).
    pub fn file_start(&self, path: Vec<u8>) {
        let mut w = self.0.borrow_mut();
        if path.len() <= usize::from(u16::MAX) {
            w.content = Some((path, 0));
        }
    }

    /// The file's data is read.
    pub fn file_end(&self) {
        let mut w = self.0.borrow_mut();
        if let Err(e) = w.end_content() {
            w.error.get_or_insert(e);
        }
    }

    /// Ends the record (an error while a [`Recorder`] still holds it).
    pub fn finish(self) -> Result<(), Error> {
        let w = Rc::try_unwrap(self.0).map_err(|_| Error::msg("the tar-split record is still in use"))?;
        w.into_inner().finish()
    }
}

/// A reader that records what passes through into a [`Split`].
pub struct Recorder<R> {
    inner: R,
    split: Split,
}

impl<R: Read> Recorder<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, split: Split) -> Recorder<R> {
        Recorder { inner, split }
    }
}

impl<R: Read> Read for Recorder<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut w = self.split.0.borrow_mut();
        if let Err(e) = w.bytes(&buf[..n]) {
            w.error.get_or_insert(e);
        }
        Ok(n)
    }
}

/// One step of a record.
enum Seg {
    Raw(Vec<u8>),
    File(Vec<u8>, u64),
}

fn next_seg(r: &mut impl Read) -> std::io::Result<Option<Seg>> {
    let mut tag = [0u8; 1];
    if r.read(&mut tag)? == 0 {
        return Ok(None);
    }
    match tag[0] {
        b'R' => {
            let mut len = [0u8; 4];
            r.read_exact(&mut len)?;
            let mut b = vec![0u8; u32::from_le_bytes(len) as usize];
            r.read_exact(&mut b)?;
            Ok(Some(Seg::Raw(b)))
        }
        b'F' => {
            let mut len = [0u8; 8];
            r.read_exact(&mut len)?;
            let mut plen = [0u8; 2];
            r.read_exact(&mut plen)?;
            let mut p = vec![0u8; usize::from(u16::from_le_bytes(plen))];
            r.read_exact(&mut p)?;
            Ok(Some(Seg::File(p, u64::from_le_bytes(len))))
        }
        _ => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "bad tar-split record")),
    }
}

fn open_record(path: &Path) -> Result<impl Read, Error> {
    let f = std::fs::File::open(path).context(|| format!("cannot open '{}'", path.display()))?;
    Ok(flate2::read::GzDecoder::new(std::io::BufReader::new(f)))
}

/// The length of the stream a record replays (to write a tar header before it).
pub fn stream_len(record: &Path) -> Result<u64, Error> {
    let mut r = open_record(record)?;
    let mut total = 0u64;
    while let Some(s) = next_seg(&mut r).map_err(|e| Error::io("cannot read a tar-split record", e))? {
        total += match s {
            Seg::Raw(b) => b.len() as u64,
            Seg::File(_, n) => n,
        };
    }
    Ok(total)
}

/// Writes the stream a record replays to `out`, file data from the layer tree `diff`
/// (opened beneath it, never through a symlink). Returns its `sha256:` digest.
pub fn replay(record: &Path, diff: &Path, out: &mut dyn Write) -> Result<String, Error> {
    let root = crate::sys::open::open_dir_path(diff).context(|| format!("cannot open '{}'", diff.display()))?;
    let mut r = open_record(record)?;
    let mut hw = crate::manager::streams::HashingWriter::new(out);
    let werr = |e| Error::io("cannot write the layer", e);
    while let Some(s) = next_seg(&mut r).map_err(|e| Error::io("cannot read a tar-split record", e))? {
        match s {
            Seg::Raw(b) => hw.write_all(&b).map_err(werr)?,
            Seg::File(p, n) => {
                let shown = || String::from_utf8_lossy(&p).into_owned();
                let name =
                    std::ffi::CString::new(p.clone()).map_err(|_| Error::msg("bad path in a tar-split record"))?;
                let fd = crate::sys::open::resolve_beneath(&root, &name, crate::sys::open::OFlags::RDONLY)
                    .map_err(|e| Error::msg(format!("file '{}' of the layer is gone ({e})", shown())))?;
                let mut f = std::fs::File::from(fd);
                let copied = std::io::copy(&mut (&mut f).take(n), &mut hw).map_err(werr)?;
                if copied != n {
                    return Err(Error::msg(format!("file '{}' of the layer is shorter than when imported", shown())));
                }
            }
        }
    }
    Ok(hw.finish().0)
}
