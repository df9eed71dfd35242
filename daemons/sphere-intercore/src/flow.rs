//! Credit-based backpressure, per connection (one pair of component ids).
//!
//! Each side grants its peer a window of data frames it can buffer. The grant travels as a
//! *credit limit*: "you may send data frames whose sequence number is below L" (wrapping `u16`
//! arithmetic). Limits only move forward and are cumulative, so a lost, duplicated or reordered
//! credit frame is harmless and the next one repairs it. A receiver's limit advances when its
//! app releases a frame ([`Flow::release`]), and also over frames the link lost (a gap in the
//! sequence numbers), so losses never shrink the window.
//!
//! Both sides start with sequence number 0 and a limit of the initial window (a constant both
//! sides agree on; [`DEFAULT_WINDOW`]). A side that (re)opens a connection sends one frame with
//! [`Flags::RESET`]; its peer then starts over as well. Data frames are never retransmitted:
//! a real-time consumer wants the newest sample, not an old one (reliable delivery, if an app
//! needs it, belongs in the layer above).

use crate::{ComponentId, Flags, Header};

/// The initial window in frames.
pub const DEFAULT_WINDOW: u16 = 4;

/// What to do with a received frame.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RxVerdict {
    /// A control frame (no payload for the app); any ack/credit it carried has been applied.
    Control,
    /// The next data frame: deliver it, then [`Flow::release`] once it is consumed.
    Deliver,
    /// A data frame after `lost` frames that never arrived: deliver it, then release it.
    DeliverAfterGap {
        /// Frames lost before it.
        lost: u16,
    },
    /// A data frame already seen: drop it.
    Duplicate,
    /// A data frame beyond the credit limit we granted: the peer ignored backpressure; drop it.
    Overrun,
}

/// Sequence-number order with wrapping (`a` before `b`).
pub const fn seq_before(a: u16, b: u16) -> bool {
    (b.wrapping_sub(a) as i16) > 0
}

/// One connection's flow-control state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    window: u16,
    // Sending.
    next_seq: u16,
    limit: u16,
    // Receiving.
    expected: u16,
    outstanding: u16,
    advertised: u16,
    /// Counters: frames lost, duplicates and overruns seen.
    pub lost: u32,
    /// Duplicates dropped.
    pub duplicates: u32,
    /// Overruns dropped.
    pub overruns: u32,
}

impl Flow {
    /// A fresh connection granting (and assuming) a window of `window` frames (1..=32767).
    pub const fn new(window: u16) -> Self {
        let window = if window == 0 {
            1
        } else if window > 0x7FFF {
            0x7FFF
        } else {
            window
        };
        Self {
            window,
            next_seq: 0,
            limit: window,
            expected: 0,
            outstanding: 0,
            advertised: window,
            lost: 0,
            duplicates: 0,
            overruns: 0,
        }
    }

    fn granted(&self) -> u16 {
        self.expected.wrapping_add(self.window).wrapping_sub(self.outstanding)
    }

    /// Data frames we may send now.
    pub fn credits(&self) -> u16 {
        if seq_before(self.next_seq, self.limit) { self.limit.wrapping_sub(self.next_seq) } else { 0 }
    }

    /// Whether a data frame may be sent now.
    pub fn can_send(&self) -> bool {
        self.credits() > 0
    }

    /// Frames delivered to the app and not yet released.
    pub fn outstanding(&self) -> u16 {
        self.outstanding
    }

    /// The header for the next data frame, consuming a credit; `None` (backpressure) when the
    /// peer has granted no room. It piggybacks our ack and credit limit.
    pub fn next_data(&mut self, src: ComponentId, dst: ComponentId) -> Option<Header> {
        if !self.can_send() {
            return None;
        }
        let mut h = self.control(src, dst);
        h.flags = h.flags | Flags::DATA;
        self.next_seq = self.next_seq.wrapping_add(1);
        Some(h)
    }

    /// A control frame's header carrying our ack and credit limit (never blocked).
    pub fn control(&mut self, src: ComponentId, dst: ComponentId) -> Header {
        self.advertised = self.granted();
        Header {
            flags: Flags::ACK | Flags::CREDIT,
            src,
            dst,
            seq: self.next_seq,
            ack: self.expected,
            credit: self.advertised,
            channel: 0,
        }
    }

    /// Starts over and returns a control header with [`Flags::RESET`] to tell the peer.
    pub fn reset(&mut self, src: ComponentId, dst: ComponentId) -> Header {
        *self = Self::new(self.window);
        let mut h = self.control(src, dst);
        h.flags = h.flags | Flags::RESET;
        h
    }

    /// Whether our credit limit moved since we last told the peer (send a [`control`] frame,
    /// or piggyback it on data).
    ///
    /// [`control`]: Flow::control
    pub fn credit_pending(&self) -> bool {
        self.granted() != self.advertised
    }

    /// Data frames the peer may still send under the limit we last told it (before it blocks).
    /// A receiver can hold a credit update back while this is comfortable and let it ride on
    /// its next data frame instead of spending a control frame.
    pub fn peer_credit(&self) -> u16 {
        let left = self.advertised.wrapping_sub(self.expected);
        if left > 0x7FFF { 0 } else { left }
    }

    /// Whether a credit update should go out now in a control frame of its own: it moved, and
    /// the peer is down to half its window or less. Otherwise it waits to ride on our next data
    /// frame: on a byte-bound link a standalone credit frame sent after every delivery sits in
    /// front of the next request and costs its bytes in latency. Never a deadlock: a peer that
    /// keeps sending runs its credit down to half the window, and each release from then on
    /// makes this true.
    pub fn credit_due(&self) -> bool {
        self.credit_pending() && self.peer_credit() <= self.window / 2
    }

    /// Whether compact frames (one-byte sequence numbers and credit limits) can carry this
    /// connection: every number in flight is then within ±127 of the one it is restored from.
    pub fn compact_ok(&self) -> bool {
        self.window <= 127
    }

    /// Restores a compact frame's full sequence number and credit limit from their low bytes:
    /// a fresh data frame's number lies in `[expected, expected + window)` and a duplicate's
    /// just before it; a credit limit lies within a window of our own next number.
    fn widen(&self, h: &Header) -> Header {
        if h.channel == 0 {
            return *h;
        }
        let near = |base: u16, low: u16| base.wrapping_add(((low as u8).wrapping_sub(base as u8) as i8) as u16);
        Header { seq: near(self.expected, h.seq), credit: near(self.next_seq, h.credit), ..*h }
    }

    /// The window this connection was opened with.
    pub fn window(&self) -> u16 {
        self.window
    }

    /// Applies a received frame's flow fields and says what to do with it.
    pub fn on_receive(&mut self, h: &Header) -> RxVerdict {
        if h.flags.contains(Flags::RESET) {
            *self = Self::new(self.window);
        }
        let h = &self.widen(h);
        if h.flags.contains(Flags::CREDIT)
            && seq_before(self.limit, h.credit)
            && h.credit.wrapping_sub(self.next_seq) <= 0x7FFF
        {
            self.limit = h.credit;
        }
        if !h.flags.contains(Flags::DATA) {
            return RxVerdict::Control;
        }
        if !seq_before(h.seq, self.granted()) {
            self.overruns = self.overruns.wrapping_add(1);
            return RxVerdict::Overrun;
        }
        let ahead = h.seq.wrapping_sub(self.expected) as i16;
        if ahead < 0 {
            self.duplicates = self.duplicates.wrapping_add(1);
            return RxVerdict::Duplicate;
        }
        self.expected = h.seq.wrapping_add(1);
        self.outstanding += 1;
        if ahead == 0 {
            RxVerdict::Deliver
        } else {
            self.lost = self.lost.wrapping_add(ahead as u32);
            RxVerdict::DeliverAfterGap { lost: ahead as u16 }
        }
    }

    /// The app consumed one delivered frame: its slot is free again.
    pub fn release(&mut self) {
        self.outstanding = self.outstanding.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ComponentId = ComponentId([0xA; 16]);
    const B: ComponentId = ComponentId([0xB; 16]);

    #[test]
    fn window_blocks_then_credit_unblocks() {
        let mut tx = Flow::new(2);
        let mut rx = Flow::new(2);
        let h1 = tx.next_data(A, B).unwrap();
        let h2 = tx.next_data(A, B).unwrap();
        assert!(tx.next_data(A, B).is_none(), "window of 2 exhausted");
        assert_eq!(rx.on_receive(&h1), RxVerdict::Deliver);
        assert_eq!(rx.on_receive(&h2), RxVerdict::Deliver);
        assert!(!rx.credit_pending());
        assert_eq!(rx.peer_credit(), 0, "both granted frames arrived");
        rx.release();
        assert!(rx.credit_pending());
        let c = rx.control(B, A);
        assert!(!rx.credit_pending());
        assert_eq!(tx.on_receive(&c), RxVerdict::Control);
        assert_eq!(tx.credits(), 1);
        // A stale (older) credit frame never takes credit away.
        let stale = Header { credit: 1, ..c };
        tx.on_receive(&stale);
        assert_eq!(tx.credits(), 1);
    }

    #[test]
    fn overrun_duplicate_and_gap() {
        let mut tx = Flow::new(8);
        let mut rx = Flow::new(2);
        let hs: [Header; 4] = core::array::from_fn(|_| tx.next_data(A, B).unwrap());
        assert_eq!(rx.on_receive(&hs[1]), RxVerdict::DeliverAfterGap { lost: 1 });
        assert_eq!(rx.on_receive(&hs[0]), RxVerdict::Duplicate);
        assert_eq!(rx.on_receive(&hs[3]), RxVerdict::Overrun);
        rx.release();
        // Lost frame 0 returned its credit: limit = 2 + 2 - 0 = 4, so seq 3 now fits.
        assert_eq!(rx.on_receive(&hs[3]), RxVerdict::DeliverAfterGap { lost: 1 });
        assert_eq!((rx.lost, rx.duplicates, rx.overruns), (2, 1, 1));
    }

    #[test]
    fn wraps_around_u16() {
        let mut tx = Flow::new(3);
        let mut rx = Flow::new(3);
        for i in 0..70_000u32 {
            let h = tx.next_data(A, B).unwrap();
            assert_eq!(h.seq, i as u16);
            assert_eq!(rx.on_receive(&h), RxVerdict::Deliver);
            rx.release();
            tx.on_receive(&rx.control(B, A));
        }
    }

    /// What a compact frame keeps of a header: the low bytes.
    fn compact(h: Header, channel: u8) -> Header {
        Header {
            seq: h.seq & 0xFF,
            credit: h.credit & 0xFF,
            ack: 0,
            src: ComponentId::default(),
            dst: ComponentId::default(),
            channel,
            ..h
        }
    }

    #[test]
    fn compact_frames_wrap_like_full_ones() {
        let mut tx = Flow::new(4);
        let mut rx = Flow::new(4);
        for i in 0..70_000u32 {
            let h = tx.next_data(A, B).unwrap();
            assert_eq!(rx.on_receive(&compact(h, 7)), RxVerdict::Deliver, "frame {i}");
            rx.release();
            assert_eq!(tx.on_receive(&compact(rx.control(B, A), 7)), RxVerdict::Control);
            assert_eq!(tx.credits(), 4, "frame {i}");
        }
        // Duplicates, gaps and overruns are still told apart from the low bytes alone.
        let old = compact(tx.next_data(A, B).unwrap(), 7);
        assert_eq!(rx.on_receive(&old), RxVerdict::Deliver);
        rx.release();
        assert_eq!(rx.on_receive(&old), RxVerdict::Duplicate);
        let _lost = tx.next_data(A, B).unwrap();
        let after = compact(tx.next_data(A, B).unwrap(), 7);
        assert_eq!(rx.on_receive(&after), RxVerdict::DeliverAfterGap { lost: 1 });
        let beyond = Header { seq: after.seq.wrapping_add(9) & 0xFF, ..after };
        assert_eq!(rx.on_receive(&beyond), RxVerdict::Overrun);
    }

    #[test]
    fn credit_rides_on_data_until_half_the_window_is_used() {
        let mut tx = Flow::new(4);
        let mut rx = Flow::new(4);
        rx.on_receive(&tx.next_data(A, B).unwrap());
        rx.release();
        assert!(rx.credit_pending() && !rx.credit_due(), "3 of 4 left: wait for a data frame");
        rx.on_receive(&tx.next_data(A, B).unwrap());
        rx.release();
        assert!(rx.credit_due(), "2 of 4 left: send it now");
        // Piggybacked on data, it stops being pending.
        let _ = rx.next_data(B, A).unwrap();
        assert!(!rx.credit_pending());
        let mut big = Flow::new(128);
        assert!(!big.compact_ok());
        big = Flow::new(127);
        assert!(big.compact_ok());
    }

    #[test]
    fn reset_starts_both_sides_over() {
        let mut a = Flow::new(4);
        let mut b = Flow::new(4);
        for _ in 0..3 {
            let h = a.next_data(A, B).unwrap();
            b.on_receive(&h);
            b.release();
        }
        let _ = b.next_data(B, A).unwrap();
        // A restarts.
        let mut a = Flow::new(4);
        let r = a.reset(A, B);
        assert_eq!(b.on_receive(&r), RxVerdict::Control);
        let h = a.next_data(A, B).unwrap();
        assert_eq!(b.on_receive(&h), RxVerdict::Deliver);
        let back = b.next_data(B, A).unwrap();
        assert_eq!(back.seq, 0);
        assert_eq!(a.on_receive(&back), RxVerdict::Deliver);
    }
}
