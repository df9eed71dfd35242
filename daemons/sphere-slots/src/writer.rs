//! Streaming an image into a slot: written as it arrives, hashed as it is written, verified
//! against the expected length and SHA-256 before anyone may mark the slot bootable.
//!
//! Memory is bounded by the caller's chunk size (no copy of the image is kept). The writer
//! refuses a single byte past the expected length (endless-data attack), and
//! [`SlotWriter::finish`] fails on a short image or a hash mismatch; only a [`Verified`] (which
//! only `finish` makes) lets [`crate::Slots::install`] mark the slot bootable.
//!
//! Resuming after a power cut: the bytes already in the slot are re-read and re-hashed
//! ([`SlotWriter::resume`]), and writing continues at that offset. [`SlotWriter::checkpoint`]
//! makes what was written durable and returns the offset a resume may start from.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::hash::Sha256Stream;

/// What the image must be: its exact length and SHA-256 (from signed update metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedImage {
    pub len: u64,
    pub sha256: [u8; 32],
}

impl ExpectedImage {
    /// From a length and a hex SHA-256 (64 hex digits).
    pub fn from_hex(len: u64, sha256_hex: &str) -> Result<Self, WriteError> {
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(sha256_hex.trim(), &mut sha256)
            .map_err(|_| WriteError::BadHash(sha256_hex.trim().to_string()))?;
        Ok(ExpectedImage { len, sha256 })
    }
}

/// Why an image could not be written into a slot.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the image: {0}")]
    Source(#[source] std::io::Error),
    #[error("image is longer than the expected {expected} bytes")]
    TooLong { expected: u64 },
    #[error("image ended after {got} bytes, expected {expected}")]
    TooShort { got: u64, expected: u64 },
    #[error("image SHA-256 {got} does not match the expected {expected}")]
    HashMismatch { got: String, expected: String },
    #[error("image of {image} bytes does not fit the slot's {slot} bytes")]
    SlotTooSmall { image: u64, slot: u64 },
    #[error("resume offset {offset} is beyond the image length {len}")]
    BadResume { offset: u64, len: u64 },
    #[error("{0:?} is not a SHA-256 in hex")]
    BadHash(String),
}

/// Proof that a slot holds exactly the expected image (made only by [`SlotWriter::finish`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub len: u64,
    pub sha256: [u8; 32],
    device: PathBuf,
}

impl Verified {
    pub fn device(&self) -> &Path {
        &self.device
    }
}

/// Writes one image into one slot device (or file), hashing as it goes.
pub struct SlotWriter {
    file: File,
    path: PathBuf,
    expected: ExpectedImage,
    hasher: Sha256Stream,
    written: u64,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> WriteError + '_ {
    move |source| WriteError::Io { path: path.to_path_buf(), source }
}

/// Size of a block device or regular file.
pub fn device_size(file: &mut File) -> std::io::Result<u64> {
    // lseek(SEEK_END) works for both (a block device's metadata length is 0).
    let size = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    Ok(size)
}

impl SlotWriter {
    /// Starts writing at the beginning of `device`, which must be at least the image's size
    /// (a regular file that does not exist yet is created: host tools and tests).
    pub fn create(device: &Path, expected: ExpectedImage) -> Result<Self, WriteError> {
        Self::resume(device, expected, 0)
    }

    /// Continues an interrupted write at `offset`: re-hashes the first `offset` bytes already
    /// in the slot, then accepts the rest of the image. If those bytes are not what was sent
    /// the final hash check fails, so a wrong offset cannot produce a bootable slot.
    pub fn resume(device: &Path, expected: ExpectedImage, offset: u64) -> Result<Self, WriteError> {
        if offset > expected.len {
            return Err(WriteError::BadResume { offset, len: expected.len });
        }
        let is_block = std::fs::metadata(device).map(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_block_device()
        });
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(!matches!(is_block, Ok(true)))
            .truncate(false)
            .open(device)
            .map_err(io(device))?;
        if let Ok(true) = is_block {
            let size = device_size(&mut file).map_err(io(device))?;
            if size < expected.len {
                return Err(WriteError::SlotTooSmall { image: expected.len, slot: size });
            }
        }
        let mut hasher = Sha256Stream::new();
        if offset > 0 {
            let mut remaining = offset;
            let mut buf = vec![0u8; 1 << 20];
            file.seek(SeekFrom::Start(0)).map_err(io(device))?;
            while remaining > 0 {
                let want = usize::try_from(remaining.min(buf.len() as u64)).unwrap_or(buf.len());
                file.read_exact(&mut buf[..want]).map_err(io(device))?;
                hasher.update(&buf[..want]);
                remaining -= want as u64;
            }
        }
        file.seek(SeekFrom::Start(offset)).map_err(io(device))?;
        Ok(SlotWriter { file, path: device.to_path_buf(), expected, hasher, written: offset })
    }

    /// Bytes accepted so far (including a resumed prefix).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes the next chunk of the image. Fails, writing nothing, if the chunk would take
    /// the image past its expected length.
    pub fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), WriteError> {
        let end = self.written + chunk.len() as u64;
        if end > self.expected.len {
            return Err(WriteError::TooLong { expected: self.expected.len });
        }
        self.file.write_all(chunk).map_err(io(&self.path))?;
        self.hasher.update(chunk);
        self.written = end;
        Ok(())
    }

    /// Makes everything written so far durable; returns the offset a resume can start from.
    pub fn checkpoint(&mut self) -> Result<u64, WriteError> {
        self.file.sync_data().map_err(io(&self.path))?;
        Ok(self.written)
    }

    /// Copies `reader` to the end of the image in `chunk`-sized pieces (bounded memory),
    /// calling `progress(written)` after each piece. Reads one byte past the expected end to
    /// catch an over-long source.
    pub fn copy_from(
        &mut self,
        mut reader: impl Read,
        chunk: usize,
        mut progress: impl FnMut(u64),
    ) -> Result<(), WriteError> {
        let mut buf = vec![0u8; chunk.max(4096)];
        loop {
            let remaining = self.expected.len - self.written;
            // Ask for at least one byte even when complete, to detect extra data.
            let want = usize::try_from(remaining.min(buf.len() as u64)).unwrap_or(buf.len()).max(1);
            let n = loop {
                match reader.read(&mut buf[..want]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(WriteError::Source(e)),
                }
            };
            if n == 0 {
                return Ok(());
            }
            self.write_chunk(&buf[..n])?;
            progress(self.written);
        }
    }

    /// Syncs the slot and checks length and hash. Only this makes a [`Verified`].
    pub fn finish(mut self) -> Result<Verified, WriteError> {
        if self.written != self.expected.len {
            return Err(WriteError::TooShort { got: self.written, expected: self.expected.len });
        }
        self.file.flush().map_err(io(&self.path))?;
        self.file.sync_all().map_err(io(&self.path))?;
        let got: [u8; 32] = self.hasher.finish();
        if got != self.expected.sha256 {
            return Err(WriteError::HashMismatch {
                got: hex::encode(got),
                expected: hex::encode(self.expected.sha256),
            });
        }
        Ok(Verified { len: self.written, sha256: got, device: self.path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn image(len: usize) -> (Vec<u8>, ExpectedImage) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let sha256: [u8; 32] = Sha256::digest(&data).into();
        (data, ExpectedImage { len: len as u64, sha256 })
    }

    #[test]
    fn streams_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let slot = dir.path().join("slot");
        let (data, expected) = image(300_000);
        let mut writer = SlotWriter::create(&slot, expected).unwrap();
        let mut calls = 0;
        writer.copy_from(&data[..], 65536, |_| calls += 1).unwrap();
        let verified = writer.finish().unwrap();
        assert_eq!(verified.len, 300_000);
        assert_eq!(calls, 5, "65536-byte pieces: bounded buffer");
        assert_eq!(std::fs::read(&slot).unwrap(), data);
    }

    #[test]
    fn rejects_bad_hash_short_and_long_images() {
        let dir = tempfile::tempdir().unwrap();
        let slot = dir.path().join("slot");
        let (data, expected) = image(10_000);
        let wrong = ExpectedImage { sha256: [0; 32], ..expected };
        let mut writer = SlotWriter::create(&slot, wrong).unwrap();
        writer.copy_from(&data[..], 4096, |_| {}).unwrap();
        assert!(matches!(writer.finish(), Err(WriteError::HashMismatch { .. })));

        let mut writer = SlotWriter::create(&slot, expected).unwrap();
        writer.copy_from(&data[..9_999], 4096, |_| {}).unwrap();
        assert!(matches!(writer.finish(), Err(WriteError::TooShort { got: 9_999, .. })));

        let mut long = data.clone();
        long.push(0);
        let mut writer = SlotWriter::create(&slot, expected).unwrap();
        assert!(matches!(writer.copy_from(&long[..], 4096, |_| {}), Err(WriteError::TooLong { .. })));
        // An endless source stops at expected length + 1 read, not at memory exhaustion.
        let mut writer = SlotWriter::create(&slot, expected).unwrap();
        assert!(matches!(writer.copy_from(std::io::repeat(1), 4096, |_| {}), Err(WriteError::TooLong { .. })));
    }

    #[test]
    fn resume_rehashes_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let slot = dir.path().join("slot");
        let (data, expected) = image(100_000);
        let mut writer = SlotWriter::create(&slot, expected).unwrap();
        writer.write_chunk(&data[..40_000]).unwrap();
        assert_eq!(writer.checkpoint().unwrap(), 40_000);
        drop(writer); // power cut
        let mut writer = SlotWriter::resume(&slot, expected, 40_000).unwrap();
        writer.copy_from(&data[40_000..], 8192, |_| {}).unwrap();
        writer.finish().unwrap();

        // A resume from a wrong offset cannot verify.
        let mut writer = SlotWriter::resume(&slot, expected, 30_000).unwrap();
        writer.copy_from(&data[40_000..], 8192, |_| {}).unwrap();
        assert!(writer.finish().is_err());
        assert!(matches!(SlotWriter::resume(&slot, expected, 100_001), Err(WriteError::BadResume { .. })));
    }

    #[test]
    fn parses_hex_hashes() {
        let e = ExpectedImage::from_hex(3, &"ab".repeat(32)).unwrap();
        assert_eq!(e.sha256[0], 0xab);
        assert!(ExpectedImage::from_hex(3, "xyz").is_err());
    }
}
