//! Splits a byte stream (a child's stdout or stderr) into lines for the log.

/// Accumulates bytes and hands back complete lines. Over-long lines are cut at `max_line` bytes
/// so one chatty child cannot make init allocate without bound.
#[derive(Debug)]
pub struct LineSplitter {
    pending: Vec<u8>,
    max_line: usize,
}

impl LineSplitter {
    pub fn new(max_line: usize) -> Self {
        LineSplitter { pending: Vec::new(), max_line: max_line.max(1) }
    }

    /// Feeds bytes; returns every line completed by them (without the newline, `\r` trimmed,
    /// invalid UTF-8 replaced).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &byte in bytes {
            if byte == b'\n' {
                lines.push(self.take());
            } else {
                self.pending.push(byte);
                if self.pending.len() >= self.max_line {
                    lines.push(self.take());
                }
            }
        }
        lines
    }

    /// Returns a trailing partial line, if any (call at end of stream).
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() { None } else { Some(self.take()) }
    }

    fn take(&mut self) -> String {
        let mut line = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        if line.ends_with('\r') {
            line.pop();
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_across_reads() {
        let mut s = LineSplitter::new(100);
        assert_eq!(s.feed(b"hel"), Vec::<String>::new());
        assert_eq!(s.feed(b"lo\nwor"), vec!["hello"]);
        assert_eq!(s.feed(b"ld\r\n\n"), vec!["world", ""]);
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn cuts_long_lines() {
        let mut s = LineSplitter::new(4);
        assert_eq!(s.feed(b"abcdefghij\n"), vec!["abcd", "efgh", "ij"]);
    }

    #[test]
    fn finish_returns_partial_line_and_bad_utf8_is_replaced() {
        let mut s = LineSplitter::new(100);
        assert!(s.feed(b"tail\xff").is_empty());
        assert_eq!(s.finish().as_deref(), Some("tail\u{fffd}"));
        assert_eq!(s.finish(), None);
    }
}
