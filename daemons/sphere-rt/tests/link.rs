//! The M4 runtime's link and apps, driven from the host: frames in (with garbage), replies out,
//! backpressure honoured, deadline accounting.

use sphere_intercore::{ComponentId, Decoder, Flags, Flow, Header, MAX_FRAME, encode};
use sphere_rt::apps::{Echo, Sampler};
use sphere_rt::link::{App, Link};
use sphere_rt::time::Instant;

const A7: ComponentId = ComponentId([0xA7; 16]);
const ECHO: ComponentId = ComponentId([0xE0; 16]);
const SAMPLER: ComponentId = ComponentId([0x5A; 16]);
const STRANGER: ComponentId = ComponentId([0x66; 16]);

fn frame(flow: &mut Flow, src: ComponentId, dst: ComponentId, payload: &[u8]) -> Vec<u8> {
    let h = flow.next_data(src, dst).expect("credit");
    let mut buf = vec![0; MAX_FRAME];
    let n = encode(&h, payload, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn decode_all(bytes: &[u8]) -> Vec<(Header, Vec<u8>)> {
    let mut d: Decoder = Decoder::new();
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        at += d.feed(&bytes[at..]);
        while let Some(f) = d.poll() {
            out.push((f.header, f.payload.to_vec()));
        }
    }
    out
}

struct Rig {
    link: Link,
    echo: Echo,
    sampler: Sampler,
    wire: Vec<u8>,
}

impl Rig {
    fn new() -> Self {
        Self {
            link: Link::new(),
            echo: Echo::new(ECHO, A7),
            sampler: Sampler::new(SAMPLER, A7, 10_000, 2_000),
            wire: Vec::new(),
        }
    }

    fn deliver(&mut self, bytes: &[u8]) -> Vec<(Header, Vec<u8>)> {
        let mut at = 0;
        let mut out = Vec::new();
        while at < bytes.len() {
            at += self.link.feed(&bytes[at..]);
            let mut apps: [&mut dyn App; 2] = [&mut self.echo, &mut self.sampler];
            self.link.poll(&mut apps, Instant(5_000_000), &mut |b: &[u8]| {
                out.extend_from_slice(b);
                true
            });
        }
        self.wire.extend_from_slice(&out);
        decode_all(&out)
    }
}

#[test]
fn echo_round_trip_through_garbage() {
    let mut rig = Rig::new();
    let mut a7 = Flow::new(4);
    let mut bytes = b"\x00\xA5garbage".to_vec();
    bytes.extend(frame(&mut a7, A7, ECHO, b"hello, M4"));
    bytes.extend(b"\xA5\x5A\x01more");
    let replies = rig.deliver(&bytes);
    assert_eq!(replies.len(), 1);
    let (h, payload) = &replies[0];
    assert_eq!((h.src, h.dst), (ECHO, A7));
    assert!(h.flags.contains(Flags::DATA));
    assert_eq!(payload, b"hello, M4");
    assert_eq!(a7.on_receive(h), sphere_intercore::RxVerdict::Deliver);
    let stats = rig.link.stats();
    assert_eq!(stats.delivered, 1);
    assert!(stats.skipped_bytes >= 9);
}

#[test]
fn strangers_and_unknown_destinations_are_dropped() {
    let mut rig = Rig::new();
    let mut f = Flow::new(4);
    let mut bytes = frame(&mut f, STRANGER, ECHO, b"let me in");
    bytes.extend(frame(&mut Flow::new(4), A7, STRANGER, b"anyone?"));
    assert!(rig.deliver(&bytes).is_empty());
    let s = rig.link.stats();
    assert_eq!((s.not_allowed, s.unknown_dst, s.delivered), (1, 1, 0));
}

#[test]
fn replies_wait_for_credit() {
    let mut rig = Rig::new();
    // The A7 side sends 6 messages in two windows but never grants the M4 more than 4 replies.
    let mut a7 = Flow::new(4);
    let mut replies = Vec::new();
    for i in 0..4 {
        replies.extend(rig.deliver(&frame(&mut a7, A7, ECHO, format!("m{i}").as_bytes())));
    }
    // A7 hears the M4's credit (piggybacked on replies) and may send more; it releases nothing.
    for (h, _) in &replies {
        a7.on_receive(h);
    }
    assert_eq!(replies.len(), 4);
    let more = rig.deliver(&frame(&mut a7, A7, ECHO, b"m4"));
    // No credit left for a data reply, and the A7 still has 3 of its 4 credits: the M4's credit
    // update waits to ride on a later frame instead of costing one of its own.
    assert!(more.is_empty());
    assert_eq!(rig.echo.conn.held_back, 1);
    // The A7 app consumes the replies and grants credit: the next reply flows again.
    for _ in 0..4 {
        a7.release();
    }
    let grant = a7.control(A7, ECHO);
    let mut bytes = vec![0; MAX_FRAME];
    let n = encode(&grant, &[], &mut bytes).unwrap();
    rig.deliver(&bytes[..n]);
    let after = rig.deliver(&frame(&mut a7, A7, ECHO, b"m5"));
    assert_eq!(after[0].1, b"m5");
}

fn reset_with_channel(flow: &mut Flow, src: ComponentId, dst: ComponentId, channel: u8) -> Vec<u8> {
    let h = flow.reset(src, dst);
    let mut buf = vec![0; MAX_FRAME];
    let n = encode(&h, &[channel], &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn compact_frame(flow: &mut Flow, channel: u8, payload: &[u8]) -> Vec<u8> {
    let h = Header { channel, ..flow.next_data(A7, ECHO).expect("credit") };
    let mut buf = vec![0; MAX_FRAME];
    let n = encode(&h, payload, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn compact_frames_on_the_channel_a_reset_assigned() {
    let mut rig = Rig::new();
    let mut a7 = Flow::new(4);
    // Before any channel is assigned, a compact frame reaches nobody.
    assert!(rig.deliver(&compact_frame(&mut Flow::new(4), 5, b"early")).is_empty());
    assert_eq!(rig.link.stats().unknown_dst, 1);
    assert!(rig.deliver(&reset_with_channel(&mut a7, A7, ECHO, 5)).is_empty());
    for i in 0..300u32 {
        let message = format!("compact {i}");
        let replies = rig.deliver(&compact_frame(&mut a7, 5, message.as_bytes()));
        assert_eq!(replies.len(), 1, "message {i}");
        let (h, payload) = &replies[0];
        assert_eq!(h.channel, 5, "the reply is compact too");
        assert_eq!(payload, message.as_bytes());
        assert_eq!(a7.on_receive(h), sphere_intercore::RxVerdict::Deliver, "message {i}");
        a7.release();
    }
    // A stranger's RESET cannot take the channel over.
    assert!(rig.deliver(&reset_with_channel(&mut Flow::new(4), STRANGER, SAMPLER, 5)).is_empty());
    assert_eq!(rig.echo.conn.channel, 5);
    // The A7 gives channel 5 to the sampler's connection: the echo app goes back to full frames.
    rig.deliver(&reset_with_channel(&mut Flow::new(4), A7, SAMPLER, 5));
    assert_eq!((rig.echo.conn.channel, rig.sampler.conn.channel), (0, 5));
    let mut a7 = Flow::new(4);
    rig.deliver(&reset_with_channel(&mut a7, A7, ECHO, 0));
    let replies = rig.deliver(&frame(&mut a7, A7, ECHO, b"full again"));
    assert_eq!((replies[0].0.channel, replies[0].0.src), (0, ECHO));
}

#[test]
fn stats_messages_report_telemetry_and_deadlines() {
    let mut rig = Rig::new();
    for k in 0..100u32 {
        let release = Instant(k * 10_000);
        let mut clock = release.add_us(30);
        let mut now = || {
            clock = clock.add_us(7);
            clock
        };
        rig.sampler.run_job(release, 0, &mut now);
    }
    // One late job, and two releases skipped.
    let release = Instant(1_000_000);
    let mut late = [release.add_us(1_500), release.add_us(2_500)].into_iter();
    rig.sampler.run_job(release, 2, &mut || late.next().unwrap());
    let mut a7 = Flow::new(4);
    let mut bytes = frame(&mut a7, A7, SAMPLER, b"stats");
    bytes.extend(frame(&mut a7, A7, ECHO, b"stats"));
    let replies = rig.deliver(&bytes);
    let text = String::from_utf8(replies[0].1.clone()).unwrap();
    assert!(text.starts_with("sampler samples=101 misses=3 worst_response_us=2500 worst_latency_us=1500"), "{text}");
    let text = String::from_utf8(replies[1].1.clone()).unwrap();
    assert!(text.starts_with("echo uptime_ms=5000 echoed=0 delivered=1"), "{text}");
}

#[test]
fn sampler_filters_the_signal() {
    let mut s = Sampler::new(SAMPLER, A7, 10_000, 2_000);
    let mut t = Instant(0);
    for k in 0..200u32 {
        s.run_job(Instant(k * 10_000), 0, &mut || t);
        t = t.add_us(10_000);
    }
    assert_eq!(s.monitor.misses, 0);
    assert!((-1000..=1000).contains(&(s.filtered / 16)));
}
