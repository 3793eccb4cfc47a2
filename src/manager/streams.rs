//! Byte streams of layers and archives: compression recognised and undone (gzip, zstd),
//! digests of what passes through, and read failures told in words.

use std::io::{Read, Write};

use sha2::{Digest, Sha256};

use crate::error::Error;

/// Compression of a layer tarball, recognised by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

/// Recognises the compression from the first bytes of a file.
pub fn detect(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Wraps a reader to hash what passes through (the layer's diff id) and count the bytes
/// read from the underlying file (for progress).
pub struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    /// Bytes passed through.
    pub bytes: u64,
}

impl<R: Read> Hashing<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Hashing<R> {
        Hashing { inner, hasher: Sha256::new(), bytes: 0 }
    }

    /// `sha256:<hex>` of everything read.
    pub fn digest(self) -> String {
        format!("sha256:{}", hex(&self.hasher.finalize()))
    }

    /// `sha256:<hex>` of everything read so far.
    pub fn digest_so_far(&self) -> String {
        format!("sha256:{}", hex(&self.hasher.clone().finalize()))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Wraps a writer to hash what passes through.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> HashingWriter<W> {
        HashingWriter { inner, hasher: Sha256::new() }
    }

    /// `sha256:<hex>` of everything written, and the inner writer.
    pub fn finish(self) -> (String, W) {
        (format!("sha256:{}", hex(&self.hasher.finalize())), self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Opens a layer tarball, undoing its compression.
pub fn open_decompressed<R: Read + 'static>(mut raw: R) -> Result<Box<dyn Read>, Error> {
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < head.len() {
        match raw.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(Error::io("cannot read the tarball", e)),
        }
    }
    let chained = std::io::Cursor::new(head[..got].to_vec()).chain(raw);
    Ok(match detect(&head[..got]) {
        Compression::None => Box::new(chained),
        Compression::Gzip => Box::new(Decompressed { inner: flate2::read::MultiGzDecoder::new(chained), what: "gzip" }),
        Compression::Zstd => Box::new(Decompressed {
            inner: crate::manager::zstd::Frames::new(std::io::BufReader::new(chained)),
            what: "zstd",
        }),
    })
}

/// The one-line message for a failed read of a layer tarball, `entries` entries in: what
/// went wrong in words (never the bytes the parser choked on).
pub fn read_error(e: &std::io::Error, entries: u64) -> Error {
    let text = e.to_string();
    if text.starts_with("the gzip stream ") || text.starts_with("the zstd stream ") {
        return Error::msg(text);
    }
    if let Some(code) = e.raw_os_error() {
        return Error::io("cannot read the tarball", std::io::Error::from_raw_os_error(code));
    }
    if e.kind() == std::io::ErrorKind::UnexpectedEof || text.contains("entire block") {
        return Error::msg(if entries == 0 {
            "not a tar archive (or one cut short in its first entry)"
        } else {
            "the tarball is truncated (it ends inside an entry)"
        });
    }
    if entries == 0 {
        Error::msg("not a tar archive (its first block is not a tar header)")
    } else {
        Error::msg(format!("the tarball is corrupt (a header after {entries} entries is damaged)"))
    }
}

/// A decompressor whose errors say, in one sentence, which stream broke.
struct Decompressed<R> {
    inner: R,
    what: &'static str,
}

impl<R: Read> Read for Decompressed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            // An OS error, or a sentence the decoder already wrote about its stream, passes.
            if e.raw_os_error().is_some() || e.to_string().starts_with(&format!("the {} stream ", self.what)) {
                return e;
            }
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the {} stream is truncated or corrupt", self.what),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_is_detected() {
        assert_eq!(detect(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(detect(b"usta"), Compression::None);
    }
}
