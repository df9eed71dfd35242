//! A fixed-size byte ring (FIFO). The firmware keeps one per UART direction inside a
//! critical-section mutex: the receive interrupt pushes, the main loop pops; the main loop
//! pushes, the transmit path pops. A full ring drops new bytes and counts them (an interrupt
//! handler must never wait).

/// A byte FIFO of `N` bytes.
pub struct ByteRing<const N: usize> {
    buf: [u8; N],
    head: usize,
    len: usize,
    dropped: u32,
}

impl<const N: usize> Default for ByteRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> ByteRing<N> {
    /// An empty ring.
    pub const fn new() -> Self {
        Self { buf: [0; N], head: 0, len: 0, dropped: 0 }
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Free space.
    pub fn free(&self) -> usize {
        N - self.len
    }

    /// Bytes dropped because the ring was full.
    pub fn dropped(&self) -> u32 {
        self.dropped
    }

    /// Queues one byte; returns false (and counts it) when full.
    pub fn push(&mut self, byte: u8) -> bool {
        if self.len == N {
            self.dropped = self.dropped.wrapping_add(1);
            return false;
        }
        self.buf[(self.head + self.len) % N] = byte;
        self.len += 1;
        true
    }

    /// Queues all of `bytes` or nothing; returns whether they fit.
    pub fn push_all(&mut self, bytes: &[u8]) -> bool {
        if bytes.len() > self.free() {
            self.dropped = self.dropped.wrapping_add(bytes.len() as u32);
            return false;
        }
        for &b in bytes {
            self.push(b);
        }
        true
    }

    /// Takes the oldest byte.
    pub fn pop(&mut self) -> Option<u8> {
        if self.len == 0 {
            return None;
        }
        let b = self.buf[self.head];
        self.head = (self.head + 1) % N;
        self.len -= 1;
        Some(b)
    }

    /// Moves up to `out.len()` bytes into `out`; returns how many.
    pub fn pop_into(&mut self, out: &mut [u8]) -> usize {
        let mut n = 0;
        while n < out.len() {
            match self.pop() {
                Some(b) => {
                    out[n] = b;
                    n += 1;
                }
                None => break,
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_wraps_and_counts_drops() {
        let mut r: ByteRing<4> = ByteRing::new();
        assert!(r.push_all(b"abc"));
        assert_eq!(r.pop(), Some(b'a'));
        assert!(r.push_all(b"de"));
        assert!(!r.push(b'f'));
        assert!(!r.push_all(b"gh"));
        assert_eq!(r.dropped(), 3);
        let mut out = [0u8; 8];
        assert_eq!(r.pop_into(&mut out), 4);
        assert_eq!(&out[..4], b"bcde");
        assert!(r.is_empty());
        assert_eq!(r.pop(), None);
    }
}
