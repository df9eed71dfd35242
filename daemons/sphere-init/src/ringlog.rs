//! The bounded log: the most recent lines in memory, mirrored to a file that never exceeds its
//! size limit.
//!
//! The file is appended to line by line. When the next line would push it past `max_bytes`, it
//! is rewritten (temp + rename) from the in-memory ring, which holds the newest `max_bytes / 2`
//! bytes. So the file always holds between half and all of its budget of the newest lines, a
//! plain-text reader needs no special format, and rewriting costs O(max_bytes) once per
//! `max_bytes / 2` bytes logged.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The newest lines whose total size (each counted with its newline) fits in `cap` bytes.
#[derive(Debug)]
pub struct LineRing {
    lines: VecDeque<String>,
    bytes: usize,
    cap: usize,
}

impl LineRing {
    pub fn new(cap: usize) -> Self {
        LineRing { lines: VecDeque::new(), bytes: 0, cap: cap.max(1) }
    }

    pub fn push(&mut self, line: &str) {
        let mut line = line.to_string();
        if line.len() + 1 > self.cap {
            let mut cut = self.cap - 1;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.bytes > self.cap {
            match self.lines.pop_front() {
                Some(old) => self.bytes -= old.len() + 1,
                None => break,
            }
        }
    }

    /// Bytes held, counting one newline per line.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(String::as_str)
    }

    /// The lines joined with newlines, as the file holds them.
    pub fn contents(&self) -> String {
        let mut text = String::with_capacity(self.bytes);
        for line in &self.lines {
            text.push_str(line);
            text.push('\n');
        }
        text
    }
}

struct LogFile {
    path: PathBuf,
    file: File,
    len: usize,
}

/// The ring plus its file. File errors never propagate: the log degrades to memory only and
/// reports the error once through `take_error`.
pub struct RingLog {
    ring: LineRing,
    max_bytes: usize,
    file: Option<LogFile>,
    error: Option<String>,
}

impl RingLog {
    pub fn new(max_bytes: usize) -> Self {
        let max_bytes = max_bytes.max(2);
        RingLog { ring: LineRing::new(max_bytes / 2), max_bytes, file: None, error: None }
    }

    /// Starts mirroring to `path`; the lines logged so far are written first.
    pub fn attach(&mut self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log = rewrite(path, &self.ring)?;
        self.file = Some(log);
        Ok(())
    }

    pub fn push(&mut self, line: &str) {
        self.ring.push(line);
        let Some(log) = self.file.as_mut() else {
            return;
        };
        let need = line.len() + 1;
        let result = if log.len + need > self.max_bytes {
            rewrite(&log.path, &self.ring).map(|fresh| *log = fresh)
        } else {
            let mut bytes = Vec::with_capacity(need);
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
            log.file.write_all(&bytes).map(|()| log.len += need)
        };
        if let Err(err) = result {
            self.error = Some(format!("log file {}: {err}", log.path.display()));
            self.file = None;
        }
    }

    /// A file error that happened since the last call (the file is then no longer written).
    pub fn take_error(&mut self) -> Option<String> {
        self.error.take()
    }

    pub fn ring(&self) -> &LineRing {
        &self.ring
    }

    pub fn sync(&mut self) {
        if let Some(log) = self.file.as_mut() {
            let _ = log.file.sync_all();
        }
    }
}

fn rewrite(path: &Path, ring: &LineRing) -> std::io::Result<LogFile> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    std::fs::write(&tmp, ring.contents())?;
    std::fs::rename(&tmp, path)?;
    let file = OpenOptions::new().append(true).open(path)?;
    Ok(LogFile { path: path.to_path_buf(), file, len: ring.bytes() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_newest_lines_within_cap() {
        let mut ring = LineRing::new(12);
        for line in ["aaa", "bbb", "ccc", "ddd"] {
            ring.push(line);
        }
        assert_eq!(ring.iter().collect::<Vec<_>>(), vec!["bbb", "ccc", "ddd"]);
        assert_eq!(ring.bytes(), 12);
        assert_eq!(ring.contents(), "bbb\nccc\nddd\n");
    }

    #[test]
    fn ring_truncates_a_line_larger_than_cap_on_a_char_boundary() {
        let mut ring = LineRing::new(5);
        ring.push("éééé");
        let kept: Vec<_> = ring.iter().collect();
        assert_eq!(kept, vec!["éé"]);
        assert!(ring.bytes() <= 5);
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sphere-init-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn file_never_exceeds_budget_and_keeps_the_newest_line() {
        let dir = temp_dir("ringlog");
        let path = dir.join("log/init.log");
        let mut log = RingLog::new(200);
        log.push("before-attach");
        log.attach(&path).expect("attach");
        for i in 0..500 {
            log.push(&format!("line {i:04}"));
            let size = std::fs::metadata(&path).expect("metadata").len();
            assert!(size <= 200, "file grew to {size}");
        }
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.ends_with("line 0499\n"), "{text}");
        assert!(!text.contains("before-attach"));
        assert!(text.lines().count() >= 9, "{text}");
        assert!(log.take_error().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn attach_writes_earlier_lines() {
        let dir = temp_dir("attach");
        let path = dir.join("init.log");
        let mut log = RingLog::new(1024);
        log.push("early one");
        log.push("early two");
        log.attach(&path).expect("attach");
        log.push("late");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, "early one\nearly two\nlate\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn file_errors_degrade_to_memory() {
        let dir = temp_dir("degrade");
        let path = dir.join("init.log");
        let mut log = RingLog::new(64);
        log.attach(&path).expect("attach");
        std::fs::remove_dir_all(&dir).expect("remove");
        for i in 0..20 {
            log.push(&format!("line {i}"));
        }
        assert!(log.take_error().is_some());
        assert!(log.take_error().is_none());
        assert!(log.ring().iter().any(|l| l == "line 19"));
    }
}
