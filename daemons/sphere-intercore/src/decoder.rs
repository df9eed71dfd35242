//! Finding frames in a byte stream.
//!
//! [`Decoder`] accumulates bytes in a fixed buffer (no allocation; `N` defaults to one maximum
//! frame) and hands out frames that borrow from it. It resynchronises by construction: when the
//! bytes at the front are not a valid frame it drops one byte (or, while no sync bytes are in
//! sight, all of them) and looks again, so garbage before, between or after frames, a truncated
//! frame, or a corrupted one costs at most the frames it overlaps.
//!
//! A candidate header is checked by its own CRC (CRC-16, or CRC-8 for a compact frame) before
//! the decoder waits for the rest of the frame, so a corrupted length field cannot stall the
//! stream waiting for bytes that belong to the next frame.

use crate::frame::{COMPACT_SYNC, CRC_LEN, Frame, FrameError, MAX_FRAME, SYNC, parse_header};

/// Counters for diagnostics (they wrap).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames returned.
    pub frames: u32,
    /// Bytes dropped while resynchronising.
    pub skipped: u32,
    /// Candidate headers rejected (version, flags, length or CRC-16).
    pub bad_headers: u32,
    /// Frames whose CRC-32 did not match.
    pub bad_crcs: u32,
}

/// An incremental frame decoder with an `N`-byte buffer (`N` ≥ [`MAX_FRAME`], checked at
/// compile time).
pub struct Decoder<const N: usize = MAX_FRAME> {
    buf: [u8; N],
    start: usize,
    end: usize,
    /// Length of the frame last returned by `poll`, dropped on the next call.
    pending: usize,
    stats: Stats,
}

impl<const N: usize> Default for Decoder<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Decoder<N> {
    const BIG_ENOUGH: () = assert!(N >= MAX_FRAME, "a decoder must hold a maximum frame");

    /// An empty decoder.
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::BIG_ENOUGH;
        Self {
            buf: [0; N],
            start: 0,
            end: 0,
            pending: 0,
            stats: Stats { frames: 0, skipped: 0, bad_headers: 0, bad_crcs: 0 },
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Bytes buffered and not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.end - self.start - self.pending
    }

    /// Drops everything buffered (e.g. when the link is reopened).
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
        self.pending = 0;
    }

    fn release(&mut self) {
        self.start += self.pending;
        self.pending = 0;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    fn skip(&mut self, n: usize) {
        self.start += n;
        self.stats.skipped = self.stats.skipped.wrapping_add(n as u32);
    }

    /// Copies as much of `data` as fits and returns how many bytes were taken. Call [`poll`]
    /// until it returns `None` before feeding more: a full buffer always yields a frame or drops
    /// bytes when polled, so feeding the rest then succeeds.
    ///
    /// [`poll`]: Decoder::poll
    pub fn feed(&mut self, data: &[u8]) -> usize {
        self.release();
        if N - self.end < data.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = data.len().min(N - self.end);
        self.buf[self.end..self.end + n].copy_from_slice(&data[..n]);
        self.end += n;
        n
    }

    /// Returns the next complete, checked frame, or `None` when more bytes are needed. The frame
    /// borrows the decoder's buffer and is dropped from it on the next call to `poll` or `feed`.
    pub fn poll(&mut self) -> Option<Frame<'_>> {
        self.release();
        loop {
            let data = &self.buf[self.start..self.end];
            // Skip to the next possible sync of either kind (a lone 0xA5 at the end may start one).
            let at = data
                .windows(2)
                .position(|w| w == SYNC || w == COMPACT_SYNC)
                .unwrap_or(if data.last() == Some(&SYNC[0]) { data.len() - 1 } else { data.len() });
            if at > 0 {
                self.skip(at);
                continue;
            }
            let (header, len, header_len) = match parse_header(data) {
                Ok(ok) => ok,
                Err(FrameError::Incomplete { .. }) => return None,
                Err(_) => {
                    self.stats.bad_headers = self.stats.bad_headers.wrapping_add(1);
                    self.skip(1);
                    continue;
                }
            };
            let total = header_len + len + CRC_LEN;
            if data.len() < total {
                return None;
            }
            match Frame::parse(data) {
                Ok(_) => {
                    self.pending = total;
                    self.stats.frames = self.stats.frames.wrapping_add(1);
                    let payload = &self.buf[self.start + header_len..self.start + header_len + len];
                    return Some(Frame { header, payload });
                }
                Err(_) => {
                    self.stats.bad_crcs = self.stats.bad_crcs.wrapping_add(1);
                    self.skip(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ComponentId, Flags, Header, encode};

    fn frame_bytes(seq: u16, payload: &[u8], out: &mut [u8]) -> usize {
        let h = Header {
            flags: Flags::DATA,
            src: ComponentId([0x11; 16]),
            dst: ComponentId([0x22; 16]),
            seq,
            ..Header::default()
        };
        encode(&h, payload, out).unwrap()
    }

    #[test]
    fn byte_at_a_time_with_garbage() {
        let mut stream = [0u8; 400];
        let mut n = 0;
        for g in [&b"\x00\xA5\xA5\x5A\x01junk"[..], b""] {
            stream[n..n + g.len()].copy_from_slice(g);
            n += g.len();
            n += frame_bytes(1, b"one", &mut stream[n..]);
        }
        stream[n..n + 3].copy_from_slice(b"\xA5\x5Az");
        n += 3;
        let mut d: Decoder = Decoder::new();
        let mut seqs = [0u16; 4];
        let mut got = 0;
        for &b in &stream[..n] {
            assert_eq!(d.feed(&[b]), 1);
            while let Some(f) = d.poll() {
                assert_eq!(f.payload, b"one");
                seqs[got] = f.header.seq;
                got += 1;
            }
        }
        assert_eq!(got, 2);
        assert_eq!(d.stats().frames, 2);
        assert!(d.stats().skipped >= 9);
    }

    #[test]
    fn corrupted_length_does_not_stall_the_next_frame() {
        let mut stream = [0u8; 200];
        let a = frame_bytes(1, b"first", &mut stream);
        let b = frame_bytes(2, b"second", &mut stream[a..]);
        stream[4] = 0xFF; // length 1023+: header CRC catches it
        stream[5] = 0x03;
        let mut d: Decoder = Decoder::new();
        d.feed(&stream[..a + b]);
        let f = d.poll().unwrap();
        assert_eq!(f.header.seq, 2);
        assert!(d.poll().is_none());
        assert_eq!(d.stats().bad_headers, 1);
    }

    #[test]
    fn full_buffer_makes_progress() {
        let mut d: Decoder = Decoder::new();
        let garbage = [0xA5u8; MAX_FRAME + 100];
        let mut fed = 0;
        while fed < garbage.len() {
            fed += d.feed(&garbage[fed..]);
            assert!(d.poll().is_none());
        }
        let mut frame = [0u8; 64];
        let n = frame_bytes(9, b"after", &mut frame);
        assert_eq!(d.feed(&frame[..n]), n);
        assert_eq!(d.poll().unwrap().header.seq, 9);
    }
}
