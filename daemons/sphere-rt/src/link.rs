//! The M4's end of the inter-core link: frames in from the link's byte stream, routed to the
//! app whose component id they name, from the one peer each app's manifest allows
//! (`AllowedApplicationConnections`); replies and pushed messages out under credit-based
//! backpressure.

use core::fmt;

use sphere_intercore::flow::DEFAULT_WINDOW;
use sphere_intercore::{ComponentId, Decoder, Flags, Flow, Header, MAX_FRAME, MAX_PAYLOAD, RxVerdict};

use crate::time::Instant;

/// One app's connection to its peer on the other core.
#[derive(Clone, Copy, Debug)]
pub struct Connection {
    /// This app's component id.
    pub local: ComponentId,
    /// The one high-level app allowed to talk to it.
    pub peer: ComponentId,
    /// Flow control.
    pub flow: Flow,
    /// Messages this app could not send for lack of credit or room.
    pub held_back: u32,
    /// The compact-frame channel the peer assigned in its last `RESET` (0: none yet, or the
    /// peer does not use compact frames; frames then name both apps).
    pub channel: u8,
}

impl Connection {
    /// A connection between `local` and `peer`.
    pub const fn new(local: ComponentId, peer: ComponentId) -> Self {
        Self { local, peer, flow: Flow::new(DEFAULT_WINDOW), held_back: 0, channel: 0 }
    }

    /// Whether a received frame is for this connection: by channel for a compact frame, else by
    /// destination.
    fn addressed_by(&self, header: &Header) -> bool {
        if header.channel != 0 { self.channel == header.channel } else { self.local == header.dst }
    }
}

/// Link-wide counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Data frames delivered to apps.
    pub delivered: u32,
    /// Frames sent.
    pub sent: u32,
    /// Frames for a component id no app here has.
    pub unknown_dst: u32,
    /// Frames from a sender the destination app does not allow.
    pub not_allowed: u32,
    /// Duplicate or overrunning data frames dropped.
    pub dropped: u32,
    /// Bytes skipped while resynchronising.
    pub skipped_bytes: u32,
    /// Frames rejected by a checksum.
    pub bad_frames: u32,
}

/// What an app sees when a message arrives.
#[derive(Clone, Copy, Debug)]
pub struct Context {
    /// Now.
    pub now: Instant,
    /// Link counters.
    pub link: LinkStats,
}

/// A real-time app reachable over the link.
pub trait App {
    /// Its connection.
    fn connection(&mut self) -> &mut Connection;
    /// A message arrived; write a reply into `reply` and return its length, or `None`.
    fn on_message(&mut self, payload: &[u8], ctx: &Context, reply: &mut [u8]) -> Option<usize>;
}

/// Where encoded frames go: queues all of `bytes` (returning true) or none (false).
pub type Sink<'a> = dyn FnMut(&[u8]) -> bool + 'a;

/// The link endpoint: a decoder and an encoding buffer (about 2.2 KiB of RAM).
pub struct Link {
    decoder: Decoder<MAX_FRAME>,
    scratch: [u8; MAX_FRAME],
    reply: [u8; MAX_PAYLOAD],
    stats: LinkStats,
}

impl Default for Link {
    fn default() -> Self {
        Self::new()
    }
}

fn emit(stats: &mut LinkStats, scratch: &mut [u8], header: &Header, payload: &[u8], sink: &mut Sink<'_>) -> bool {
    match sphere_intercore::encode(header, payload, scratch) {
        Ok(n) if sink(&scratch[..n]) => {
            stats.sent = stats.sent.wrapping_add(1);
            true
        }
        _ => false,
    }
}

impl Link {
    /// A fresh endpoint.
    pub const fn new() -> Self {
        Self {
            decoder: Decoder::new(),
            scratch: [0; MAX_FRAME],
            reply: [0; MAX_PAYLOAD],
            stats: LinkStats {
                delivered: 0,
                sent: 0,
                unknown_dst: 0,
                not_allowed: 0,
                dropped: 0,
                skipped_bytes: 0,
                bad_frames: 0,
            },
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> LinkStats {
        let d = self.decoder.stats();
        LinkStats { skipped_bytes: d.skipped, bad_frames: d.bad_headers.wrapping_add(d.bad_crcs), ..self.stats }
    }

    /// Takes bytes from the link (as many as fit; call [`Link::poll`] and feed the rest).
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        self.decoder.feed(bytes)
    }

    /// Handles every complete frame buffered: delivers data to apps, sends their replies and
    /// any credit updates to `sink`. Returns the number of frames handled.
    pub fn poll(&mut self, apps: &mut [&mut dyn App], now: Instant, sink: &mut Sink<'_>) -> usize {
        let mut handled = 0;
        loop {
            let stats = self.stats();
            let Some(frame) = self.decoder.poll() else {
                return handled;
            };
            handled += 1;
            let Some(index) = apps.iter_mut().position(|a| a.connection().addressed_by(&frame.header)) else {
                self.stats.unknown_dst = self.stats.unknown_dst.wrapping_add(1);
                continue;
            };
            let app = &mut apps[index];
            // A compact frame's channel was assigned by the allowed peer in its RESET.
            if frame.header.channel == 0 && app.connection().peer != frame.header.src {
                self.stats.not_allowed = self.stats.not_allowed.wrapping_add(1);
                continue;
            }
            let verdict = app.connection().flow.on_receive(&frame.header);
            if frame.header.flags.contains(Flags::RESET) {
                let conn = app.connection();
                // A RESET's one-byte payload assigns the channel for compact frames.
                conn.channel = match frame.payload {
                    [channel] if conn.flow.compact_ok() => *channel,
                    _ => 0,
                };
                let channel = conn.channel;
                // The peer reassigns a closed connection's channel: whoever had it goes back to
                // full frames, so its messages cannot arrive as the new owner's.
                for (i, other) in apps.iter_mut().enumerate() {
                    if i != index && channel != 0 && other.connection().channel == channel {
                        other.connection().channel = 0;
                    }
                }
            }
            let app = &mut apps[index];
            let mut reply_len = None;
            match verdict {
                RxVerdict::Control => {}
                RxVerdict::Deliver | RxVerdict::DeliverAfterGap { .. } => {
                    self.stats.delivered = self.stats.delivered.wrapping_add(1);
                    let ctx = Context { now, link: stats };
                    reply_len = app.on_message(frame.payload, &ctx, &mut self.reply);
                    app.connection().flow.release();
                }
                RxVerdict::Duplicate | RxVerdict::Overrun => {
                    self.stats.dropped = self.stats.dropped.wrapping_add(1);
                }
            }
            let conn = app.connection();
            let mut sent = false;
            if let Some(n) = reply_len {
                let n = n.min(MAX_PAYLOAD);
                sent = send_on(&mut self.stats, &mut self.scratch, conn, &self.reply[..n], sink);
            }
            if !sent && conn.flow.credit_due() {
                let mut header = conn.flow.control(conn.local, conn.peer);
                header.channel = conn.channel;
                emit(&mut self.stats, &mut self.scratch, &header, &[], sink);
            }
        }
    }

    /// Sends a message from an app to its peer: `false` under backpressure (no credit, or no
    /// room in the sink), counted in the connection's `held_back`.
    pub fn send(&mut self, conn: &mut Connection, payload: &[u8], sink: &mut Sink<'_>) -> bool {
        send_on(&mut self.stats, &mut self.scratch, conn, payload, sink)
    }
}

fn send_on(
    stats: &mut LinkStats,
    scratch: &mut [u8],
    conn: &mut Connection,
    payload: &[u8],
    sink: &mut Sink<'_>,
) -> bool {
    if !conn.flow.can_send() {
        conn.held_back = conn.held_back.wrapping_add(1);
        return false;
    }
    // Encode with a copy of the flow state so a full sink does not consume a credit.
    let mut flow = conn.flow;
    let Some(mut header) = flow.next_data(conn.local, conn.peer) else {
        return false;
    };
    header.channel = conn.channel;
    if emit(stats, scratch, &header, payload, sink) {
        conn.flow = flow;
        true
    } else {
        conn.held_back = conn.held_back.wrapping_add(1);
        false
    }
}

/// `core::fmt::Write` into a byte buffer (text replies without allocation); output beyond the
/// buffer is cut off.
pub struct BufWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> BufWriter<'a> {
    /// Writes into `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, len: 0 }
    }
    /// Bytes written.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Write for BufWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if n < s.len() { Err(fmt::Error) } else { Ok(()) }
    }
}
