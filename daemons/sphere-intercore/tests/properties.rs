//! Property tests: round trips, and that a stream with garbage, corruption, truncation or any
//! chunking yields exactly the frames that were sent and were not damaged, in order, and
//! never a frame that was not sent.

use proptest::prelude::*;
use sphere_intercore::{ComponentId, Decoder, Flags, Frame, Header, MAX_FRAME, MAX_PAYLOAD, encode};

type Sent = (Header, Vec<u8>);

fn full_header() -> impl Strategy<Value = Header> {
    (0u8..=Flags::ALL.0, any::<[u8; 16]>(), any::<[u8; 16]>(), any::<u16>(), any::<u16>(), any::<u16>()).prop_map(
        |(flags, src, dst, seq, ack, credit)| Header {
            flags: Flags(flags),
            src: ComponentId(src),
            dst: ComponentId(dst),
            seq,
            ack,
            credit,
            channel: 0,
        },
    )
}

/// A compact frame's header as it decodes (only what is on the wire).
fn compact_header() -> impl Strategy<Value = Header> {
    (0u8..=3, 1u8..=255, any::<u8>(), any::<u8>()).prop_map(|(flags, channel, seq, credit)| Header {
        flags: Flags(flags << 1),
        seq: u16::from(seq),
        credit: u16::from(credit),
        channel,
        ..Header::default()
    })
}

fn header() -> impl Strategy<Value = Header> {
    prop_oneof![full_header(), compact_header()]
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..64),
        1 => prop::collection::vec(any::<u8>(), 0..=MAX_PAYLOAD),
    ]
}

fn frame() -> impl Strategy<Value = Sent> {
    (header(), payload())
}

fn encoded(sent: &Sent) -> Vec<u8> {
    let mut buf = vec![0; MAX_FRAME];
    let n = encode(&sent.0, &sent.1, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// Feeds `stream` in chunks of the given sizes (cycled) and collects every frame.
fn decode(stream: &[u8], chunks: &[usize]) -> Vec<Sent> {
    let mut d: Decoder = Decoder::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < stream.len() {
        let want = chunks[i % chunks.len()].max(1).min(stream.len() - at);
        i += 1;
        let mut fed = 0;
        while fed < want {
            fed += d.feed(&stream[at + fed..at + want]);
            while let Some(f) = d.poll() {
                out.push((f.header, f.payload.to_vec()));
            }
        }
        at += want;
    }
    out
}

fn is_subsequence(found: &[Sent], sent: &[Sent]) -> bool {
    let mut it = sent.iter();
    found.iter().all(|f| it.any(|s| s == f))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn round_trip(sent in frame(), trailing in prop::collection::vec(any::<u8>(), 0..8)) {
        let mut bytes = encoded(&sent);
        let n = bytes.len();
        bytes.extend_from_slice(&trailing);
        let (f, used) = Frame::parse(&bytes).unwrap();
        prop_assert_eq!(used, n);
        prop_assert_eq!(f.header, sent.0);
        prop_assert_eq!(f.payload, &sent.1[..]);
    }

    #[test]
    fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..1200)) {
        let _ = Frame::parse(&bytes);
        prop_assert!(decode(&bytes, &[7]).is_empty() || bytes.windows(2).any(|w| w == [0xA5, 0x5A]));
    }

    #[test]
    fn garbage_before_between_and_after_is_skipped(
        items in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..80), frame()), 1..6),
        tail in prop::collection::vec(any::<u8>(), 0..80),
        chunks in prop::collection::vec(1usize..300, 1..5),
    ) {
        let mut stream = Vec::new();
        let mut sent = Vec::new();
        for (garbage, f) in &items {
            stream.extend_from_slice(garbage);
            stream.extend_from_slice(&encoded(f));
            sent.push(f.clone());
        }
        stream.extend_from_slice(&tail);
        prop_assert_eq!(decode(&stream, &chunks), sent);
    }

    #[test]
    fn corruption_never_yields_an_unsent_frame(
        frames in prop::collection::vec(frame(), 1..6),
        damage in prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 1..6),
        chunks in prop::collection::vec(1usize..300, 1..5),
    ) {
        let mut stream = Vec::new();
        let mut spans = Vec::new();
        for f in &frames {
            let start = stream.len();
            stream.extend_from_slice(&encoded(f));
            spans.push(start..stream.len());
        }
        // Damage: flip bits, overwrite, delete or insert a byte. Track which frames it touched.
        let mut touched = vec![false; frames.len()];
        for (index, kind, value) in &damage {
            let at = index.index(stream.len());
            for (i, span) in spans.iter().enumerate() {
                // Deleting or inserting shifts everything after `at`: frames after it move but stay intact.
                if span.contains(&at) || (*kind >= 2 && span.start == at) {
                    touched[i] = true;
                }
            }
            match kind {
                0 => stream[at] ^= value | 1,
                1 => stream[at] = if stream[at] == *value { !value } else { *value },
                2 => {
                    stream.remove(at);
                    for span in spans.iter_mut() {
                        if span.start > at { *span = span.start - 1..span.end - 1; }
                        else if span.end > at { *span = span.start..span.end - 1; }
                    }
                }
                _ => {
                    stream.insert(at, *value);
                    for span in spans.iter_mut() {
                        if span.start > at { *span = span.start + 1..span.end + 1; }
                        else if span.end > at { *span = span.start..span.end + 1; }
                    }
                }
            }
            if stream.is_empty() { break; }
        }
        let found = decode(&stream, &chunks);
        prop_assert!(is_subsequence(&found, &frames), "a frame that was not sent was decoded");
        let intact: Vec<Sent> = frames.iter().zip(&touched).filter(|(_, t)| !**t).map(|(f, _)| f.clone()).collect();
        prop_assert!(is_subsequence(&intact, &found), "an undamaged frame was lost");
    }
}
