//! Reading zstd-compressed layer tarballs: every frame of the stream in turn (a stream may
//! hold several, and skippable ones), each frame's content checksum verified when it has one
//! (`zstd -t` would say so): a damaged layer is refused, never imported with damaged data.

use std::io::{BufRead, Read};

use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

/// A reader of the decompressed data of every frame of a zstd stream.
pub struct Frames<R: BufRead> {
    src: R,
    dec: FrameDecoder,
    /// A frame is being decoded.
    in_frame: bool,
}

fn invalid(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

impl<R: BufRead> Frames<R> {
    /// Reads the zstd stream `src`.
    pub fn new(src: R) -> Frames<R> {
        Frames { src, dec: FrameDecoder::new(), in_frame: false }
    }

    /// Starts the next frame; false at the end of the stream.
    fn next_frame(&mut self) -> std::io::Result<bool> {
        loop {
            if self.src.fill_buf()?.is_empty() {
                return Ok(false);
            }
            match self.dec.reset(&mut self.src) {
                Ok(()) => return Ok(true),
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame { length, .. })) => {
                    let skipped = std::io::copy(&mut (&mut self.src).take(u64::from(length)), &mut std::io::sink())?;
                    if skipped != u64::from(length) {
                        return Err(invalid("the zstd stream is truncated (a skippable frame is cut short)"));
                    }
                }
                Err(_) => return Err(invalid("the zstd stream is truncated or corrupt")),
            }
        }
    }
}

impl<R: BufRead> Read for Frames<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if !self.next_frame()? {
                    return Ok(0);
                }
                self.in_frame = true;
            }
            if self.dec.can_collect() > 0 {
                return self.dec.read(buf);
            }
            if !self.dec.is_finished() {
                self.dec
                    .decode_blocks(&mut self.src, BlockDecodingStrategy::UptoBlocks(1))
                    .map_err(|_| invalid("the zstd stream is truncated or corrupt"))?;
                continue;
            }
            // The frame is decoded and drained: its checksum, if it carries one.
            if let Some(want) = self.dec.get_checksum_from_data()
                && self.dec.get_calculated_checksum() != Some(want)
            {
                return Err(invalid("the zstd stream is corrupt (its content checksum does not match)"));
            }
            self.in_frame = false;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `printf 'hello zstd\n' | zstd -c --check` (one frame, with a checksum).
    const HELLO: &[u8] = &[
        0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x58, 0x59, 0x00, 0x00, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x20, 0x7a, 0x73, 0x74,
        0x64, 0x0a, 0x6c, 0x57, 0xf9, 0x51,
    ];
    fn decode(b: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Frames::new(std::io::BufReader::new(b)).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn every_frame_and_skippable_frames_are_read() {
        assert_eq!(decode(HELLO).unwrap(), b"hello zstd\n");
        let mut two = HELLO.to_vec();
        // A skippable frame (magic 0x184D2A50, 3 bytes) between two frames.
        two.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3]);
        two.extend_from_slice(HELLO);
        assert_eq!(decode(&two).unwrap(), b"hello zstd\nhello zstd\n");
    }

    #[test]
    fn a_bad_checksum_or_a_cut_stream_is_an_error() {
        let mut bad = HELLO.to_vec();
        let n = bad.len();
        bad[n - 1] ^= 0xff;
        let e = decode(&bad).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        assert!(decode(&HELLO[..HELLO.len() - 6]).is_err());
    }
}
