//! The wire format of one frame (all integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | sync `A5 5A` |
//! | 2 | 1 | version, [`VERSION`] |
//! | 3 | 1 | [`Flags`] (unknown bits must be 0) |
//! | 4 | 2 | payload length, at most [`MAX_PAYLOAD`] |
//! | 6 | 16 | source [`ComponentId`] |
//! | 22 | 16 | destination [`ComponentId`] |
//! | 38 | 2 | sequence number (data frames count up from 0, wrapping) |
//! | 40 | 2 | ack: the next sequence number the sender of this frame expects (valid with `ACK`) |
//! | 42 | 2 | credit limit: the peer may send data frames with sequence numbers below this (valid with `CREDIT`) |
//! | 44 | 2 | CRC-16/CCITT-FALSE of bytes 0..44 |
//! | 46 | len | payload |
//! | 46+len | 4 | CRC-32 (IEEE) of bytes 0..46+len |
//!
//! A **compact data frame** replaces the two component ids with a one-byte *channel* that the
//! opener of the connection assigned in its `RESET` frame, and carries the low bytes of the
//! sequence number and credit limit (the receiver's [`Flow`](crate::Flow) restores the rest):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | sync `A5 C3` |
//! | 2 | 1 | channel, 1..=255 |
//! | 3 | 2 | bits 0–10: payload length; bits 11–15: flags (only `CREDIT` and `DATA`) |
//! | 5 | 1 | sequence number, low byte |
//! | 6 | 1 | credit limit, low byte (valid with `CREDIT`) |
//! | 7 | 1 | CRC-8/SMBUS of bytes 0..7 |
//! | 8 | len | payload |
//! | 8+len | 4 | CRC-32 (IEEE) of bytes 0..8+len |
//!
//! 12 bytes of overhead instead of 50: on a byte-bound link (a UART) a 64-byte message's frame
//! goes from 114 to 76 bytes, and that is its latency.

use crate::ComponentId;
use crate::crc::{crc8, crc16, crc32};

/// The two sync bytes that start every frame.
pub const SYNC: [u8; 2] = [0xA5, 0x5A];
/// The sync bytes of a compact data frame (the same first byte: one scan finds both kinds).
pub const COMPACT_SYNC: [u8; 2] = [0xA5, 0xC3];
/// A compact frame's header length, including its CRC-8.
pub const COMPACT_HEADER_LEN: usize = 8;
/// The flags a compact frame can carry (it has no ack field, and a reset must name both apps).
pub const COMPACT_FLAGS: Flags = Flags(0x06);
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Header length, including its CRC-16.
pub const HEADER_LEN: usize = 46;
/// Trailer length (the CRC-32).
pub const CRC_LEN: usize = 4;
/// Largest payload: Azure Sphere's inter-core samples use 1040 bytes.
pub const MAX_PAYLOAD: usize = 1040;
/// Largest encoded frame.
pub const MAX_FRAME: usize = HEADER_LEN + MAX_PAYLOAD + CRC_LEN;

/// Frame flags.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Flags(pub u8);

impl Flags {
    /// The `ack` field is valid.
    pub const ACK: Flags = Flags(0x01);
    /// The `credit` field is valid.
    pub const CREDIT: Flags = Flags(0x02);
    /// The frame carries application data and consumes one credit (a frame without it is pure
    /// control and may always be sent).
    pub const DATA: Flags = Flags(0x04);
    /// The sender is resetting its sequence numbering (it restarted): the receiver resets its
    /// receive state to this frame's sequence number.
    pub const RESET: Flags = Flags(0x08);
    /// Every defined bit.
    pub const ALL: Flags = Flags(0x0F);

    /// No flags.
    pub const fn empty() -> Self {
        Flags(0)
    }
    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    /// Both sets of bits.
    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

impl core::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        self.union(rhs)
    }
}

/// A frame's header fields (everything but the payload and the checksums).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Header {
    /// Flags.
    pub flags: Flags,
    /// The sending app.
    pub src: ComponentId,
    /// The receiving app.
    pub dst: ComponentId,
    /// Sequence number.
    pub seq: u16,
    /// Cumulative ack (with [`Flags::ACK`]).
    pub ack: u16,
    /// Credit limit (with [`Flags::CREDIT`]).
    pub credit: u16,
    /// 0: a full frame, addressed by `src` and `dst`. 1..=255: a compact frame on this channel
    /// (`src` and `dst` are not on the wire and decode as zero; `seq` and `credit` carry only
    /// their low bytes until [`Flow::on_receive`](crate::Flow::on_receive) restores them).
    pub channel: u8,
}

/// A decoded frame, borrowing its payload from the buffer it was decoded from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Frame<'a> {
    /// The header.
    pub header: Header,
    /// The payload (at most [`MAX_PAYLOAD`] bytes).
    pub payload: &'a [u8],
}

/// Why bytes are not a frame.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FrameError {
    /// Fewer bytes than the frame needs; `needed` is the total length once known (or the header
    /// length).
    Incomplete {
        /// Total bytes needed.
        needed: usize,
    },
    /// The first bytes are not the sync bytes.
    BadSync,
    /// Unknown protocol version.
    BadVersion(u8),
    /// Unknown flag bits set.
    BadFlags(u8),
    /// Length above [`MAX_PAYLOAD`].
    TooLong(u16),
    /// The header's CRC-16 does not match.
    BadHeaderCrc,
    /// The frame's CRC-32 does not match.
    BadCrc,
    /// A compact frame on channel 0 (channels start at 1).
    BadChannel,
}

/// Why a frame could not be encoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EncodeError {
    /// The payload exceeds [`MAX_PAYLOAD`].
    PayloadTooLong,
    /// The output buffer is too small; `needed` bytes are required.
    BufferTooSmall {
        /// Bytes required.
        needed: usize,
    },
    /// The flags have unknown bits set.
    BadFlags,
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn id_at(bytes: &[u8], at: usize) -> ComponentId {
    let mut id = [0u8; 16];
    id.copy_from_slice(&bytes[at..at + 16]);
    ComponentId(id)
}

/// Checks the header at the start of `bytes` (either kind) and returns it with the payload
/// length and the header's own length.
pub(crate) fn parse_header(bytes: &[u8]) -> Result<(Header, usize, usize), FrameError> {
    match bytes {
        [first, ..] if *first != SYNC[0] => Err(FrameError::BadSync),
        [] | [_] => Err(FrameError::Incomplete { needed: COMPACT_HEADER_LEN }),
        [_, second, ..] if *second == SYNC[1] => parse_full_header(bytes),
        [_, second, ..] if *second == COMPACT_SYNC[1] => parse_compact_header(bytes),
        _ => Err(FrameError::BadSync),
    }
}

fn parse_full_header(bytes: &[u8]) -> Result<(Header, usize, usize), FrameError> {
    if bytes.len() < HEADER_LEN {
        return Err(FrameError::Incomplete { needed: HEADER_LEN });
    }
    if bytes[2] != VERSION {
        return Err(FrameError::BadVersion(bytes[2]));
    }
    if bytes[3] & !Flags::ALL.0 != 0 {
        return Err(FrameError::BadFlags(bytes[3]));
    }
    let len = u16_at(bytes, 4);
    if usize::from(len) > MAX_PAYLOAD {
        return Err(FrameError::TooLong(len));
    }
    if crc16(&bytes[..HEADER_LEN - 2]) != u16_at(bytes, HEADER_LEN - 2) {
        return Err(FrameError::BadHeaderCrc);
    }
    let header = Header {
        flags: Flags(bytes[3]),
        src: id_at(bytes, 6),
        dst: id_at(bytes, 22),
        seq: u16_at(bytes, 38),
        ack: u16_at(bytes, 40),
        credit: u16_at(bytes, 42),
        channel: 0,
    };
    Ok((header, usize::from(len), HEADER_LEN))
}

fn parse_compact_header(bytes: &[u8]) -> Result<(Header, usize, usize), FrameError> {
    if bytes.len() < COMPACT_HEADER_LEN {
        return Err(FrameError::Incomplete { needed: COMPACT_HEADER_LEN });
    }
    if bytes[2] == 0 {
        return Err(FrameError::BadChannel);
    }
    let word = u16_at(bytes, 3);
    let flags = (word >> 11) as u8;
    if flags & !COMPACT_FLAGS.0 != 0 {
        return Err(FrameError::BadFlags(flags));
    }
    let len = word & 0x07FF;
    if usize::from(len) > MAX_PAYLOAD {
        return Err(FrameError::TooLong(len));
    }
    if crc8(&bytes[..COMPACT_HEADER_LEN - 1]) != bytes[COMPACT_HEADER_LEN - 1] {
        return Err(FrameError::BadHeaderCrc);
    }
    let header = Header {
        flags: Flags(flags),
        seq: u16::from(bytes[5]),
        credit: u16::from(bytes[6]),
        channel: bytes[2],
        ..Header::default()
    };
    Ok((header, usize::from(len), COMPACT_HEADER_LEN))
}

impl<'a> Frame<'a> {
    /// Decodes the frame at the start of `bytes` without copying; returns it and its encoded
    /// length (bytes after it are left alone).
    pub fn parse(bytes: &'a [u8]) -> Result<(Frame<'a>, usize), FrameError> {
        let (header, len, header_len) = parse_header(bytes)?;
        let total = header_len + len + CRC_LEN;
        if bytes.len() < total {
            return Err(FrameError::Incomplete { needed: total });
        }
        let body = header_len + len;
        let stored = u32::from_le_bytes([bytes[body], bytes[body + 1], bytes[body + 2], bytes[body + 3]]);
        if crc32(&bytes[..body]) != stored {
            return Err(FrameError::BadCrc);
        }
        Ok((Frame { header, payload: &bytes[header_len..body] }, total))
    }

    /// The encoded length of this frame.
    pub fn encoded_len(&self) -> usize {
        let header_len = if self.header.channel == 0 { HEADER_LEN } else { COMPACT_HEADER_LEN };
        header_len + self.payload.len() + CRC_LEN
    }
}

/// Encodes a frame into `out`, returning its length: a compact frame when `header.channel` is
/// not 0 (its `src`, `dst` and `ack` are then not sent, and only the low bytes of `seq` and
/// `credit`; `RESET` needs a full frame and is refused).
pub fn encode(header: &Header, payload: &[u8], out: &mut [u8]) -> Result<usize, EncodeError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(EncodeError::PayloadTooLong);
    }
    if header.flags.0 & !Flags::ALL.0 != 0 {
        return Err(EncodeError::BadFlags);
    }
    let compact = header.channel != 0;
    if compact && header.flags.contains(Flags::RESET) {
        return Err(EncodeError::BadFlags);
    }
    let header_len = if compact { COMPACT_HEADER_LEN } else { HEADER_LEN };
    let total = header_len + payload.len() + CRC_LEN;
    if out.len() < total {
        return Err(EncodeError::BufferTooSmall { needed: total });
    }
    // Cannot truncate: payload.len() <= MAX_PAYLOAD < 2048.
    let len = payload.len() as u16;
    if compact {
        out[..2].copy_from_slice(&COMPACT_SYNC);
        out[2] = header.channel;
        let flags = u16::from(header.flags.0 & COMPACT_FLAGS.0);
        out[3..5].copy_from_slice(&(len | flags << 11).to_le_bytes());
        out[5] = header.seq as u8;
        out[6] = header.credit as u8;
        out[7] = crc8(&out[..7]);
    } else {
        out[..2].copy_from_slice(&SYNC);
        out[2] = VERSION;
        out[3] = header.flags.0;
        out[4..6].copy_from_slice(&len.to_le_bytes());
        out[6..22].copy_from_slice(&header.src.0);
        out[22..38].copy_from_slice(&header.dst.0);
        out[38..40].copy_from_slice(&header.seq.to_le_bytes());
        out[40..42].copy_from_slice(&header.ack.to_le_bytes());
        out[42..44].copy_from_slice(&header.credit.to_le_bytes());
        let hcrc = crc16(&out[..HEADER_LEN - 2]);
        out[44..46].copy_from_slice(&hcrc.to_le_bytes());
    }
    let body = header_len + payload.len();
    out[header_len..body].copy_from_slice(payload);
    let crc = crc32(&out[..body]);
    out[body..total].copy_from_slice(&crc.to_le_bytes());
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            flags: Flags::DATA | Flags::ACK,
            src: ComponentId([1; 16]),
            dst: ComponentId([2; 16]),
            seq: 7,
            ack: 3,
            credit: 0,
            channel: 0,
        }
    }

    #[test]
    fn round_trip() {
        let mut buf = [0u8; MAX_FRAME];
        let n = encode(&header(), b"hello", &mut buf).unwrap();
        assert_eq!(n, HEADER_LEN + 5 + CRC_LEN);
        let (frame, used) = Frame::parse(&buf[..n + 3]).unwrap();
        assert_eq!(used, n);
        assert_eq!(frame.header, header());
        assert_eq!(frame.payload, b"hello");
    }

    #[test]
    fn limits() {
        let mut buf = [0u8; MAX_FRAME + 1];
        assert_eq!(encode(&header(), &[0; MAX_PAYLOAD + 1], &mut buf), Err(EncodeError::PayloadTooLong));
        assert_eq!(encode(&header(), &[0; MAX_PAYLOAD], &mut buf), Ok(MAX_FRAME));
        assert_eq!(
            encode(&header(), b"x", &mut buf[..10]),
            Err(EncodeError::BufferTooSmall { needed: HEADER_LEN + 1 + CRC_LEN })
        );
        let mut h = header();
        h.flags = Flags(0x80);
        assert_eq!(encode(&h, b"", &mut buf), Err(EncodeError::BadFlags));
    }

    #[test]
    fn rejections() {
        let mut buf = [0u8; 64];
        let n = encode(&header(), b"abc", &mut buf).unwrap();
        assert_eq!(Frame::parse(&buf[..n - 1]), Err(FrameError::Incomplete { needed: n }));
        assert_eq!(Frame::parse(&buf[..10]), Err(FrameError::Incomplete { needed: HEADER_LEN }));
        let mut bad = buf;
        bad[0] = 0;
        assert_eq!(Frame::parse(&bad[..n]), Err(FrameError::BadSync));
        let mut bad = buf;
        bad[2] = 2;
        assert_eq!(Frame::parse(&bad[..n]), Err(FrameError::BadVersion(2)));
        let mut bad = buf;
        bad[3] |= 0x40;
        assert_eq!(Frame::parse(&bad[..n]), Err(FrameError::BadFlags(bad[3])));
        let mut bad = buf;
        bad[4..6].copy_from_slice(&1041u16.to_le_bytes());
        assert_eq!(Frame::parse(&bad[..n]), Err(FrameError::TooLong(1041)));
        let mut bad = buf;
        bad[30] ^= 1;
        assert_eq!(Frame::parse(&bad[..n]), Err(FrameError::BadHeaderCrc));
        let mut bad = buf;
        bad[HEADER_LEN + 1] ^= 0x10;
        assert_eq!(Frame::parse(&bad[..n]), Err(FrameError::BadCrc));
    }

    #[test]
    fn matches_the_python_tool() {
        // scripts/intercore.py's encode(bytes(range(16)), bytes(range(16, 32)), b"hello",
        // DATA | ACK | CREDIT, seq=1, ack=2, credit=6), which tests/m4-test.sh speaks.
        const PYTHON: &str = "a55a01070500000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f01000200060044eb68656c6c6f12e1107b";
        let h = Header {
            flags: Flags::DATA | Flags::ACK | Flags::CREDIT,
            src: ComponentId(core::array::from_fn(|i| i as u8)),
            dst: ComponentId(core::array::from_fn(|i| i as u8 + 16)),
            seq: 1,
            ack: 2,
            credit: 6,
            channel: 0,
        };
        let mut buf = [0u8; 64];
        let n = encode(&h, b"hello", &mut buf).unwrap();
        assert_eq!(n * 2, PYTHON.len());
        for (i, b) in buf[..n].iter().enumerate() {
            assert_eq!(u8::from_str_radix(&PYTHON[2 * i..2 * i + 2], 16), Ok(*b), "byte {i}");
        }
    }

    #[test]
    fn compact_round_trip_and_rejections() {
        let h = Header { flags: Flags::DATA | Flags::CREDIT, seq: 0x1234, credit: 0x0567, channel: 9, ..header() };
        let mut buf = [0u8; 64];
        let n = encode(&h, b"hi", &mut buf).unwrap();
        assert_eq!(n, COMPACT_HEADER_LEN + 2 + CRC_LEN);
        assert_eq!(&buf[..3], &[0xA5, 0xC3, 9]);
        let (f, used) = Frame::parse(&buf[..n + 5]).unwrap();
        assert_eq!(used, n);
        assert_eq!(f.encoded_len(), n);
        // Not on the wire: the ids, the ack and the high bytes.
        let expect =
            Header { flags: Flags::DATA | Flags::CREDIT, seq: 0x34, credit: 0x67, channel: 9, ..Header::default() };
        assert_eq!(f.header, expect);
        assert_eq!(f.payload, b"hi");
        assert_eq!(Frame::parse(&buf[..5]), Err(FrameError::Incomplete { needed: COMPACT_HEADER_LEN }));
        let mut bad = buf;
        bad[2] = 0;
        assert_eq!(Frame::parse(&bad[..n]), Err(FrameError::BadChannel));
        let mut bad = buf;
        bad[6] ^= 1;
        assert_eq!(Frame::parse(&bad[..n]), Err(FrameError::BadHeaderCrc));
        let mut bad = buf;
        bad[4] |= 0x40; // RESET is not allowed in a compact frame
        assert_eq!(Frame::parse(&bad[..n]), Err(FrameError::BadFlags(0x0E)));
        let mut bad = buf;
        bad[n - 5] ^= 0x40;
        assert_eq!(Frame::parse(&bad[..n]), Err(FrameError::BadCrc));
        let reset = Header { flags: Flags::RESET, channel: 3, ..Header::default() };
        assert_eq!(encode(&reset, b"", &mut buf), Err(EncodeError::BadFlags));
    }

    #[test]
    fn compact_matches_the_python_tool() {
        // scripts/intercore.py's encode_compact(9, b"hello", DATA | CREDIT, 0x1234, 0x567).
        const PYTHON: &str = "a5c309053034672b68656c6c6f022fef47";
        let h = Header { flags: Flags::DATA | Flags::CREDIT, seq: 0x1234, credit: 0x567, channel: 9, ..header() };
        let mut buf = [0u8; 64];
        let n = encode(&h, b"hello", &mut buf).unwrap();
        assert_eq!(n * 2, PYTHON.len());
        for (i, b) in buf[..n].iter().enumerate() {
            assert_eq!(u8::from_str_radix(&PYTHON[2 * i..2 * i + 2], 16), Ok(*b), "byte {i}");
        }
    }

    #[test]
    fn known_encoding() {
        // Pins the format that docs/intercore-protocol.md describes.
        let mut buf = [0u8; 64];
        let n = encode(&Header::default(), b"", &mut buf).unwrap();
        assert_eq!(n, 50);
        assert_eq!(&buf[..6], &[0xA5, 0x5A, 1, 0, 0, 0]);
        assert_eq!(u16::from_le_bytes([buf[44], buf[45]]), crate::crc::crc16(&buf[..44]));
    }
}
