//! The inter-core decoder must never panic, and must never produce a frame that was not sent.
//!
//! The first byte picks a mode:
//! * raw: the input is the byte stream, fed in chunks whose sizes come from the input; every
//!   frame returned must be exactly what `encode` makes of its header and payload, and
//!   `Frame::parse` must accept the same bytes;
//! * sent: the input describes frames and the garbage between them; the decoder must return
//!   exactly the frames, in order;
//! * damaged: as `sent`, then up to three bit flips anywhere (CRC-16 over the header and CRC-32
//!   over the frame both have Hamming distance 4 at these lengths, so three flips are always
//!   detected): every frame returned must be one that was sent, in order.
//!
//! In `sent` and `damaged`, every byte the fuzzer chooses (garbage, header fields, payload) is
//! masked with 0x5A, so it is at least 4 bit flips away from the sync byte 0xA5 and from the
//! version byte 0x01: garbage cannot itself spell a frame, and a payload cannot carry an
//! encoded frame that surfaces when its outer frame is damaged (a nested frame is a frame that
//! was sent, as far as a byte stream can tell; the protocol document says so).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sphere_intercore::frame::COMPACT_FLAGS;
use sphere_intercore::{ComponentId, Decoder, Flags, Frame, Header, MAX_FRAME, encode};

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
}

fn shape(b: u8) -> u8 {
    b & 0x5A
}

fn decode_all(stream: &[u8], chunk: usize, mut each: impl FnMut(Frame<'_>)) {
    let mut d: Decoder = Decoder::new();
    for piece in stream.chunks(chunk.max(1)) {
        let mut fed = 0;
        while fed < piece.len() {
            fed += d.feed(&piece[fed..]);
            while let Some(f) = d.poll() {
                each(f);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(mode) = input.byte() else { return };
    let chunk = usize::from(input.byte().unwrap_or(1)) * 5 + 1;
    match mode % 3 {
        0 => {
            let stream = input.0;
            decode_all(stream, chunk, |f| {
                let mut again = [0u8; MAX_FRAME];
                let n = encode(&f.header, f.payload, &mut again).expect("a decoded frame re-encodes");
                let (g, used) = Frame::parse(&again[..n]).expect("its encoding parses");
                assert_eq!(used, n);
                assert_eq!(g, f);
            });
        }
        m => {
            // Build up to 8 frames from the input.
            let mut stream = Vec::new();
            let mut sent: Vec<(Header, Vec<u8>)> = Vec::new();
            while sent.len() < 8 {
                let Some(garbage_len) = input.byte() else { break };
                stream.extend(input.take(usize::from(garbage_len % 64)).iter().map(|&b| shape(b)));
                let Some(len) = input.byte() else { break };
                let fields: Vec<u8> = input.take(39).iter().map(|&b| shape(b)).collect();
                if fields.len() < 39 {
                    break;
                }
                let id = |at: usize| {
                    let mut id = [0u8; 16];
                    id.copy_from_slice(&fields[at..at + 16]);
                    ComponentId(id)
                };
                let u16_at = |at: usize| u16::from_le_bytes([fields[at], fields[at + 1]]);
                // Half the frames compact: as decoded, only what is on the wire.
                let header = if fields[0] & 0x80 != 0 {
                    Header {
                        flags: Flags(fields[0] & COMPACT_FLAGS.0),
                        seq: u16::from(fields[33]),
                        credit: u16::from(fields[37]),
                        channel: fields[1].max(1),
                        ..Header::default()
                    }
                } else {
                    Header {
                        flags: Flags(fields[0] & Flags::ALL.0),
                        src: id(1),
                        dst: id(17),
                        seq: u16_at(33),
                        ack: u16_at(35),
                        credit: u16_at(37),
                        channel: 0,
                    }
                };
                let payload: Vec<u8> = input.take(usize::from(len) * 4).iter().map(|&b| shape(b)).collect();
                let mut buf = [0u8; MAX_FRAME];
                let n = encode(&header, &payload, &mut buf).expect("valid frame encodes");
                stream.extend_from_slice(&buf[..n]);
                sent.push((header, payload));
            }
            let flips = if m == 2 {
                let mut flips = Vec::new();
                while flips.len() < 3 {
                    let (Some(a), Some(b), Some(bit)) = (input.byte(), input.byte(), input.byte()) else {
                        break;
                    };
                    if !stream.is_empty() {
                        let at = usize::from(u16::from_le_bytes([a, b])) % stream.len();
                        stream[at] ^= 1 << (bit % 8);
                        flips.push(at);
                    }
                }
                flips.len()
            } else {
                0
            };
            let mut found = Vec::new();
            decode_all(&stream, chunk, |f| found.push((f.header, f.payload.to_vec())));
            if flips == 0 {
                assert_eq!(found, sent, "every frame sent is decoded, nothing else");
            } else {
                let mut rest = sent.iter();
                for f in &found {
                    assert!(rest.any(|s| s == f), "decoded a frame that was not sent: {f:?}");
                }
            }
        }
    }
});
