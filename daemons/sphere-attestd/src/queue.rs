//! The outbox: messages (error reports) waiting for the cloud, kept on the data partition
//! while the device is offline and sent, oldest first, when the MQTT link is up.
//!
//! One file per message, `NNNNNNNNNNNNNNNNNNNN.msg` (a 20-digit sequence number), written to a
//! temporary name, fsynced and renamed into place: an append is atomic, so a power cut leaves
//! the queue with or without the new message but never with half of one (temporary files are
//! deleted on open). A message is deleted only after the broker acknowledged it (QoS 1), so a
//! crash between send and delete sends it again: delivery is at least once.
//!
//! The queue is bounded by message count and bytes: when full, the OLDEST messages go first
//! (newer error reports are the more useful ones) and the number dropped is kept in
//! `dropped.count` so the next report can say that some were lost.

use std::fs;
use std::path::{Path, PathBuf};

use crate::fsutil::{sync_dir, write_atomic};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub seq: u64,
    /// The topic leaf under the device's prefix (`errors`, `telemetry`).
    pub leaf: String,
    pub payload: Vec<u8>,
}

pub struct Outbox {
    dir: PathBuf,
    max_messages: usize,
    max_bytes: u64,
}

const SUFFIX: &str = ".msg";

impl Outbox {
    /// Open (creating) the queue directory and remove what an interrupted append left.
    pub fn open(dir: &Path, max_messages: usize, max_bytes: u64) -> std::io::Result<Outbox> {
        fs::create_dir_all(dir)?;
        for entry in fs::read_dir(dir)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Outbox { dir: dir.to_owned(), max_messages: max_messages.max(1), max_bytes })
    }

    fn entries(&self) -> std::io::Result<Vec<(u64, PathBuf, u64)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(seq) = name.strip_suffix(SUFFIX).and_then(|s| s.parse::<u64>().ok()) else { continue };
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            out.push((seq, entry.path(), size));
        }
        out.sort_by_key(|(seq, _, _)| *seq);
        Ok(out)
    }

    /// Append a message; returns how many old messages were dropped to make room.
    pub fn push(&self, leaf: &str, payload: &[u8]) -> std::io::Result<usize> {
        if leaf.is_empty() || leaf.contains(['/', '\n', '+', '#']) {
            return Err(std::io::Error::other("topic leaf must be one plain level"));
        }
        let mut entries = self.entries()?;
        let seq = entries.last().map(|(s, _, _)| s + 1).unwrap_or(1);
        let mut bytes = Vec::with_capacity(leaf.len() + 1 + payload.len());
        bytes.extend_from_slice(leaf.as_bytes());
        bytes.push(b'\n');
        bytes.extend_from_slice(payload);
        write_atomic(&self.dir.join(format!("{seq:020}{SUFFIX}")), &bytes, 0o600)?;
        entries.push((seq, PathBuf::new(), bytes.len() as u64));
        // Enforce the bounds, oldest first (never the message just written).
        let mut dropped = 0;
        let mut total: u64 = entries.iter().map(|(_, _, size)| size).sum();
        let mut count = entries.len();
        for (_, path, size) in &entries[..entries.len() - 1] {
            if count <= self.max_messages && total <= self.max_bytes {
                break;
            }
            fs::remove_file(path)?;
            count -= 1;
            total -= size;
            dropped += 1;
        }
        if dropped > 0 {
            let counter = self.dir.join("dropped.count");
            let before: u64 = fs::read_to_string(&counter).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
            write_atomic(&counter, (before + dropped as u64).to_string().as_bytes(), 0o600)?;
        }
        Ok(dropped)
    }

    /// The oldest message, if any.
    pub fn peek(&self) -> std::io::Result<Option<Message>> {
        for (seq, path, _) in self.entries()? {
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let Some(split) = bytes.iter().position(|b| *b == b'\n') else {
                // Cannot happen with our own writes; a corrupt file must not block the queue.
                fs::remove_file(&path)?;
                continue;
            };
            let leaf = String::from_utf8_lossy(&bytes[..split]).into_owned();
            return Ok(Some(Message { seq, leaf, payload: bytes[split + 1..].to_vec() }));
        }
        Ok(None)
    }

    /// Remove a message after the broker acknowledged it.
    pub fn ack(&self, seq: u64) -> std::io::Result<()> {
        match fs::remove_file(self.dir.join(format!("{seq:020}{SUFFIX}"))) {
            Ok(()) => {
                sync_dir(&self.dir);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn len(&self) -> std::io::Result<usize> {
        Ok(self.entries()?.len())
    }

    pub fn is_empty(&self) -> std::io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Messages dropped for space so far (and reset the counter).
    pub fn take_dropped(&self) -> u64 {
        let counter = self.dir.join("dropped.count");
        let value = fs::read_to_string(&counter).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        if value > 0 {
            let _ = fs::remove_file(&counter);
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_ack_and_bound_drops_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let q = Outbox::open(dir.path(), 3, 1 << 20).unwrap();
        for i in 0..5 {
            q.push("errors", format!("report {i}").as_bytes()).unwrap();
        }
        assert_eq!(q.len().unwrap(), 3);
        assert_eq!(q.take_dropped(), 2);
        let first = q.peek().unwrap().unwrap();
        assert_eq!(first.payload, b"report 2");
        assert_eq!(first.leaf, "errors");
        q.ack(first.seq).unwrap();
        assert_eq!(q.peek().unwrap().unwrap().payload, b"report 3");
    }

    #[test]
    fn interrupted_append_leaves_no_message_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = Outbox::open(dir.path(), 10, 1 << 20).unwrap();
            q.push("errors", b"kept").unwrap();
        }
        // What a power cut in the middle of an append leaves: a temporary file.
        std::fs::write(dir.path().join(".00000000000000000002.msg.tmp.1"), b"err").unwrap();
        let q = Outbox::open(dir.path(), 10, 1 << 20).unwrap();
        assert_eq!(q.len().unwrap(), 1);
        assert_eq!(q.peek().unwrap().unwrap().payload, b"kept");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn byte_bound_is_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let q = Outbox::open(dir.path(), 100, 64).unwrap();
        for _ in 0..4 {
            q.push("errors", &[b'x'; 30]).unwrap();
        }
        assert_eq!(q.len().unwrap(), 1, "each message is 37 bytes; only one fits in 64");
    }
}
