//! Init's output: every line goes to the console (init's stdout, /dev/console) and to the
//! bounded ring log on /run.

use std::fmt::Display;
use std::path::Path;

use crate::milestone::{self, PREFIX};
use crate::ringlog::RingLog;

pub struct Log {
    ring: RingLog,
}

/// Writes all of `bytes` to fd 1, giving up silently on errors (a missing console must never
/// stop init).
fn console_write(bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: writes from a valid slice to fd 1; no memory is handed to the kernel to keep.
        let n = unsafe { libc::write(1, rest.as_ptr().cast(), rest.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        let n = usize::try_from(n).unwrap_or(0);
        if n == 0 {
            return;
        }
        rest = &rest[n.min(rest.len())..];
    }
}

impl Log {
    pub fn new() -> Self {
        Log { ring: RingLog::new(crate::config::LogConfig::default().max_bytes) }
    }

    pub fn line(&mut self, text: &str) {
        let mut bytes = Vec::with_capacity(text.len() + 1);
        bytes.extend_from_slice(text.as_bytes());
        bytes.push(b'\n');
        console_write(&bytes);
        self.ring.push(text);
        if let Some(err) = self.ring.take_error() {
            console_write(format!("{PREFIX} warning: {err}; logging to console only\n").as_bytes());
        }
    }

    pub fn info(&mut self, message: impl Display) {
        self.line(&format!("{PREFIX} {message}"));
    }

    pub fn warn(&mut self, message: impl Display) {
        self.line(&format!("{PREFIX} warning: {message}"));
    }

    pub fn milestone(&mut self, name: &str, fields: &[(&str, &str)]) {
        self.line(&milestone::format_milestone(name, fields, milestone::now()));
    }

    pub fn fact(&mut self, key: &str, value: &str) {
        self.line(&milestone::format_fact(key, value));
    }

    /// Starts mirroring to `path` with a new size budget; lines logged so far are kept.
    pub fn attach(&mut self, path: &Path, max_bytes: usize) {
        let mut ring = RingLog::new(max_bytes);
        for line in self.ring.ring().iter() {
            ring.push(line);
        }
        match ring.attach(path) {
            Ok(()) => {
                self.ring = ring;
                self.info(format!("logging to {} (bounded to {max_bytes} bytes)", path.display()));
            }
            Err(err) => self.warn(format!("cannot open log file {}: {err}", path.display())),
        }
    }

    pub fn sync(&mut self) {
        self.ring.sync();
    }
}
