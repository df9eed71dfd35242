//! Resumable, verified downloads straight into their destination (a slot or a file).
//!
//! - Streams: bytes go from the socket into [`SlotWriter`], which hashes them as it writes;
//!   memory is one buffer, whatever the image size.
//! - Bounded: the signed TUF length is the limit. A server announcing a different length, or
//!   sending one byte more, is rejected at once (endless-data attack); the hash is checked
//!   before anything may use the result (arbitrary-package attack).
//! - Resumable: every [`CHECKPOINT_BYTES`] the destination is synced and the offset recorded
//!   in a small state file replaced atomically (temp file, fsync, rename, fsync dir). After a
//!   network loss the next attempt asks for `Range: bytes=OFFSET-`; after a power cut the
//!   daemon finds the state file and does the same. The prefix already on disk is re-hashed
//!   rather than trusted, so a wrong offset can only fail verification, never pass it.
//! - Retries: transient failures (I/O, timeouts, 5xx) back off exponentially with jitter
//!   (`delay = min(max, base * 2^n)`, then a random point in `[delay/2, delay]`), so a fleet
//!   that lost its server at once does not return at once.
//! - Bandwidth: an optional bytes-per-second cap (metered links).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sphere_slots::{ExpectedImage, SlotWriter, Verified, WriteError};
use tokio::io::AsyncReadExt;
use url::Url;

use crate::http::{HttpClient, HttpError};

/// How often the destination is synced and the resume offset recorded.
pub const CHECKPOINT_BYTES: u64 = 4 << 20;
/// Read buffer: the only per-download memory.
const BUFFER_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DownloadOptions {
    /// Attempts per file before giving up (the next check starts again from the checkpoint).
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Bytes per second; 0 means unlimited.
    pub rate_limit: u64,
    /// Seconds a connection may stay silent before it counts as lost.
    pub stall_timeout_secs: u64,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            max_attempts: 8,
            backoff_base_ms: 1000,
            backoff_max_ms: 300_000,
            rate_limit: 0,
            stall_timeout_secs: 30,
        }
    }
}

impl DownloadOptions {
    /// Delay before retry `attempt` (1-based), with jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.backoff_base_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
        let delay = exp.min(self.backoff_max_ms);
        let jitter = random_u64() % (delay / 2 + 1);
        Duration::from_millis(delay - jitter)
    }
}

/// Jitter only needs to differ between devices and attempts, not to be secret.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(
        "{url}: server announces {announced} bytes from offset {offset}, the signed length is {signed} (endless-data or truncation attack)"
    )]
    LengthMismatch { url: String, announced: u64, offset: u64, signed: u64 },
    #[error("{url}: server answered range {got} to a request for {want}")]
    BadRange { url: String, got: u64, want: u64 },
    #[error("{0}")]
    Write(#[from] WriteError),
    #[error("{path}: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{url}: gave up after {attempts} attempts: {last}")]
    GaveUp { url: String, attempts: u32, last: String },
}

impl DownloadError {
    fn is_transient(&self) -> bool {
        match self {
            DownloadError::Http(e) => e.is_transient(),
            // A hash mismatch after a full, correctly sized transfer means the server sends
            // other bytes than were signed; retrying will not help.
            _ => false,
        }
    }
}

/// What a partial download was, persisted so a power cut can resume it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partial {
    pub target: String,
    pub sha256: String,
    pub length: u64,
    pub destination: PathBuf,
    pub offset: u64,
}

/// The state file holding the current [`Partial`] (one download at a time).
#[derive(Debug, Clone)]
pub struct PartialStore {
    pub path: PathBuf,
}

impl PartialStore {
    pub fn load(&self) -> Option<Partial> {
        let text = std::fs::read(&self.path).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn save(&self, partial: &Partial) -> Result<(), DownloadError> {
        let data = serde_json::to_vec(partial).unwrap_or_default();
        write_atomic(&self.path, &data).map_err(|source| DownloadError::State { path: self.path.clone(), source })
    }

    pub fn clear(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// Offset to resume `target` at: the recorded one if it is the same file into the same
    /// destination, else 0.
    pub fn resume_offset(&self, target: &str, expected: &ExpectedImage, destination: &Path) -> u64 {
        match self.load() {
            Some(p)
                if p.target == target
                    && p.sha256 == hex::encode(expected.sha256)
                    && p.length == expected.len
                    && p.destination == destination
                    && p.offset <= expected.len =>
            {
                p.offset
            }
            _ => 0,
        }
    }
}

/// Replace `path` with `data` so a power cut leaves the old or the new content.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("state")));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// One file to fetch and where it goes.
pub struct Job<'a> {
    pub url: Url,
    pub target: &'a str,
    pub expected: ExpectedImage,
    pub destination: PathBuf,
}

/// Downloads `job` into `writer` (already positioned at its resume offset), retrying and
/// resuming until it is complete and verified. `progress(done, total)` after each buffer.
pub async fn fetch(
    http: &HttpClient,
    options: &DownloadOptions,
    store: &PartialStore,
    job: &Job<'_>,
    mut writer: SlotWriter,
    mut progress: impl FnMut(u64, u64),
) -> Result<Verified, DownloadError> {
    let mut attempt = 0u32;
    loop {
        // Attempts count failures in a row without progress: a link that breaks every few
        // MiB still finishes, a dead one gives up.
        let before = writer.written();
        attempt += 1;
        let result = fetch_once(http, options, store, job, &mut writer, &mut progress).await;
        if writer.written() > before {
            attempt = 1;
        }
        match result {
            Ok(true) => {
                // Whatever the outcome, these bytes are done with: a verified file needs no
                // resume, and a file that failed verification must not be resumed from.
                let verified = writer.finish();
                store.clear();
                return Ok(verified?);
            }
            Ok(false) => {
                // The server ignored our Range and sent the whole file: start over at 0.
                writer = SlotWriter::resume(&job.destination, job.expected, 0)?;
            }
            Err(e) if e.is_transient() && attempt < options.max_attempts => {
                let delay = options.backoff(attempt);
                eprintln!(
                    "sphere-updated: {}: {e}; retrying from byte {} in {:.1} s (attempt {}/{})",
                    job.target,
                    writer.written(),
                    delay.as_secs_f64(),
                    attempt + 1,
                    options.max_attempts
                );
                tokio::time::sleep(delay).await;
            }
            Err(e) if e.is_transient() => {
                return Err(DownloadError::GaveUp { url: job.url.to_string(), attempts: attempt, last: e.to_string() });
            }
            Err(e) => return Err(e),
        }
    }
}

/// A `file://` target (local media: a USB stick, a mounted update partition), read like a
/// ranged response so the same length, hash and resume rules apply.
async fn open_local(url: &Url, offset: u64) -> Result<crate::http::Response, DownloadError> {
    use tokio::io::AsyncSeekExt;
    let text = url.to_string();
    let io = |what: &'static str| {
        let url = text.clone();
        move |source| DownloadError::Http(HttpError::Io { url, what, source })
    };
    let path = url.to_file_path().map_err(|_| HttpError::Unsupported { url: text.clone() })?;
    let mut file = tokio::fs::File::open(&path).await.map_err(io("opening"))?;
    let len = file.metadata().await.map_err(io("stat"))?.len();
    file.seek(std::io::SeekFrom::Start(offset.min(len))).await.map_err(io("seeking"))?;
    Ok(crate::http::Response {
        status: if offset > 0 { 206 } else { 200 },
        content_length: Some(len.saturating_sub(offset)),
        range_start: (offset > 0).then_some(offset),
        body: Box::new(tokio::io::BufReader::with_capacity(BUFFER_BYTES, file)),
    })
}

/// One request. `Ok(true)`: complete; `Ok(false)`: must restart from 0.
async fn fetch_once(
    http: &HttpClient,
    options: &DownloadOptions,
    store: &PartialStore,
    job: &Job<'_>,
    writer: &mut SlotWriter,
    progress: &mut impl FnMut(u64, u64),
) -> Result<bool, DownloadError> {
    let offset = writer.written();
    let total = job.expected.len;
    if offset == total {
        return Ok(true);
    }
    let url = job.url.to_string();
    let mut response = if job.url.scheme() == "file" {
        open_local(&job.url, offset).await?
    } else {
        http.get(&job.url, offset).await?
    };
    match (offset, response.status, response.range_start) {
        (0, _, None) => {}
        (_, 206, Some(start)) if start == offset => {}
        (_, 206, Some(start)) => return Err(DownloadError::BadRange { url, got: start, want: offset }),
        (_, 200, _) => return Ok(false),
        _ => return Err(DownloadError::BadRange { url, got: 0, want: offset }),
    }
    if let Some(announced) = response.content_length {
        if offset + announced != total {
            return Err(DownloadError::LengthMismatch { url, announced, offset, signed: total });
        }
    }
    let mut buf = vec![0u8; BUFFER_BYTES];
    let started = Instant::now();
    let mut since_start = 0u64;
    let mut last_checkpoint = offset;
    let checkpoint = |writer: &mut SlotWriter| -> Result<u64, DownloadError> {
        let at = writer.checkpoint()?;
        store.save(&Partial {
            target: job.target.to_string(),
            sha256: hex::encode(job.expected.sha256),
            length: total,
            destination: job.destination.clone(),
            offset: at,
        })?;
        Ok(at)
    };
    // Record the start at once, so a power cut before the first checkpoint resumes here too.
    checkpoint(writer)?;
    loop {
        // Never read past the signed length (+1 to detect an over-long body).
        let room = (total - writer.written() + 1).min(buf.len() as u64) as usize;
        let n = match response.body.read(&mut buf[..room]).await {
            Ok(n) => n,
            Err(source) => {
                checkpoint(writer)?;
                return Err(HttpError::Io { url, what: "reading body", source }.into());
            }
        };
        if n == 0 {
            checkpoint(writer)?;
            if writer.written() == total {
                return Ok(true);
            }
            return Err(HttpError::Io {
                url,
                what: "reading body",
                source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed early"),
            }
            .into());
        }
        writer.write_chunk(&buf[..n])?;
        progress(writer.written(), total);
        if writer.written() - last_checkpoint >= CHECKPOINT_BYTES {
            last_checkpoint = checkpoint(writer)?;
        }
        if options.rate_limit > 0 {
            since_start += n as u64;
            let due = Duration::from_secs_f64(since_start as f64 / options.rate_limit as f64);
            let elapsed = started.elapsed();
            if due > elapsed {
                tokio::time::sleep(due - elapsed).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let o = DownloadOptions { backoff_base_ms: 100, backoff_max_ms: 1000, ..Default::default() };
        for _ in 0..50 {
            let d1 = o.backoff(1).as_millis();
            assert!((50..=100).contains(&d1), "{d1}");
            let d3 = o.backoff(3).as_millis();
            assert!((200..=400).contains(&d3), "{d3}");
            let d30 = o.backoff(30).as_millis();
            assert!((500..=1000).contains(&d30), "{d30}");
        }
    }

    #[test]
    fn partial_state_resumes_only_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartialStore { path: dir.path().join("partial.json") };
        let expected = ExpectedImage { len: 100, sha256: [7; 32] };
        let dest = dir.path().join("slot");
        store
            .save(&Partial {
                target: "os.img".into(),
                sha256: hex::encode([7u8; 32]),
                length: 100,
                destination: dest.clone(),
                offset: 40,
            })
            .unwrap();
        assert_eq!(store.resume_offset("os.img", &expected, &dest), 40);
        assert_eq!(store.resume_offset("other.img", &expected, &dest), 0);
        let other = ExpectedImage { len: 100, sha256: [8; 32] };
        assert_eq!(store.resume_offset("os.img", &other, &dest), 0);
        store.clear();
        assert_eq!(store.resume_offset("os.img", &expected, &dest), 0);
    }
}
