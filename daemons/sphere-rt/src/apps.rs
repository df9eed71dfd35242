//! The two real-time apps' logic. The firmware gives them time and the link; they decide.
//!
//! * [`Echo`]: echoes every message back to its peer; the message `stats` gets a telemetry
//!   line instead (uptime, link counters).
//! * [`Sampler`]: a periodic real-time job: every period it samples a value (a simulated
//!   sensor; on hardware, an ADC read) and filters it, with a deadline relative to the release;
//!   it counts deadline misses, answers `stats` with them, and pushes a report to its peer
//!   every `report_every` jobs when the peer has granted credit (otherwise the report is held
//!   back: backpressure, never blocking the real-time work).

use core::fmt::Write;

use sphere_intercore::ComponentId;

use crate::deadline::DeadlineMonitor;
use crate::link::{App, BufWriter, Connection, Context};
use crate::time::Instant;

/// The echo/telemetry app.
pub struct Echo {
    /// Its connection.
    pub conn: Connection,
    /// Messages echoed.
    pub echoed: u32,
}

impl Echo {
    /// The app with its id and allowed peer.
    pub const fn new(local: ComponentId, peer: ComponentId) -> Self {
        Self { conn: Connection::new(local, peer), echoed: 0 }
    }
}

impl App for Echo {
    fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    fn on_message(&mut self, payload: &[u8], ctx: &Context, reply: &mut [u8]) -> Option<usize> {
        if payload == b"stats" {
            let mut w = BufWriter::new(reply);
            let l = ctx.link;
            let _ = write!(
                w,
                "echo uptime_ms={} echoed={} delivered={} sent={} skipped_bytes={} bad_frames={} dropped={} not_allowed={} unknown_dst={}",
                ctx.now.0 / 1000,
                self.echoed,
                l.delivered,
                l.sent,
                l.skipped_bytes,
                l.bad_frames,
                l.dropped,
                l.not_allowed,
                l.unknown_dst
            );
            return Some(w.len());
        }
        let n = payload.len().min(reply.len());
        reply[..n].copy_from_slice(&payload[..n]);
        self.echoed = self.echoed.wrapping_add(1);
        Some(n)
    }
}

/// The periodic sampler.
pub struct Sampler {
    /// Its connection.
    pub conn: Connection,
    /// Period in microseconds.
    pub period_us: u32,
    /// Deadline accounting.
    pub monitor: DeadlineMonitor,
    /// Push a report every this many jobs (0: never).
    pub report_every: u32,
    /// The filtered value (fixed point, 1/16 units).
    pub filtered: i32,
    /// The last raw sample.
    pub last: i32,
    noise: u32,
}

impl Sampler {
    /// A sampler with its id, peer, period and relative deadline.
    pub const fn new(local: ComponentId, peer: ComponentId, period_us: u32, deadline_us: u32) -> Self {
        Self {
            conn: Connection::new(local, peer),
            period_us,
            monitor: DeadlineMonitor::new(deadline_us),
            report_every: 0,
            filtered: 0,
            last: 0,
            noise: 0x1234_5678,
        }
    }

    /// The simulated sensor: a 1 Hz triangle wave between -1000 and 1000 plus a little noise.
    pub fn read_sensor(&mut self, at: Instant) -> i32 {
        let phase = (at.0 / 1000 % 1000) as i32; // ms within the second
        let triangle = if phase < 500 { phase * 4 - 1000 } else { 3000 - phase * 4 };
        self.noise = self.noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        triangle + (self.noise >> 28) as i32 - 8
    }

    /// Runs one job released at `release`: `now` reads the clock (called at start and finish).
    /// Returns whether a report is due.
    pub fn run_job(&mut self, release: Instant, skipped: u32, now: &mut dyn FnMut() -> Instant) -> bool {
        let start = now();
        self.monitor.skipped(skipped);
        let raw = self.read_sensor(release);
        self.last = raw;
        // Exponential moving average, alpha 1/8, in 1/16 fixed point.
        self.filtered += (raw * 16 - self.filtered) / 8;
        self.monitor.record(release, start, now());
        self.report_every != 0 && self.monitor.jobs % self.report_every == 0
    }

    /// The report line.
    pub fn report(&self, out: &mut [u8]) -> usize {
        let m = &self.monitor;
        let mut w = BufWriter::new(out);
        let _ = write!(
            w,
            "sampler samples={} misses={} worst_response_us={} worst_latency_us={} deadline_us={} value={} held_back={}",
            m.jobs,
            m.misses,
            m.worst_response_us,
            m.worst_latency_us,
            m.deadline_us,
            self.filtered / 16,
            self.conn.held_back
        );
        w.len()
    }
}

impl App for Sampler {
    fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    fn on_message(&mut self, payload: &[u8], _ctx: &Context, reply: &mut [u8]) -> Option<usize> {
        (payload == b"stats").then(|| self.report(reply))
    }
}

/// The link's own control endpoint id (all zeros: never an app's ComponentId).
pub const LINK_CONTROL_ID: ComponentId = ComponentId([0; 16]);

/// A request to echo raw (unframed) bytes: the benchmark's baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawEcho {
    /// Bytes to echo in all.
    pub bytes: u32,
    /// 0: echo each byte as it arrives (a byte echo). Otherwise echo each `message` bytes once
    /// all have arrived, as a real-time app must wait for a whole message before it answers: the
    /// store-and-forward baseline a message protocol is measured against.
    pub message: u16,
}

/// The link control endpoint.
pub struct LinkControl {
    /// Its connection (to the app manager's control endpoint).
    pub conn: Connection,
    raw_echo: Option<RawEcho>,
}

impl Default for LinkControl {
    fn default() -> Self {
        Self::new()
    }
}

impl LinkControl {
    /// The endpoint.
    pub const fn new() -> Self {
        Self { conn: Connection::new(LINK_CONTROL_ID, LINK_CONTROL_ID), raw_echo: None }
    }

    /// A pending request to echo raw bytes (taken once).
    pub fn take_raw_echo(&mut self) -> Option<RawEcho> {
        self.raw_echo.take()
    }

    /// Parses `raw-echo BYTES` or `raw-echo BYTES per MESSAGE` (MESSAGE at most
    /// [`MAX_PAYLOAD`](sphere_intercore::MAX_PAYLOAD)).
    fn parse_raw_echo(text: &str) -> Option<RawEcho> {
        let mut words = text.strip_prefix("raw-echo ")?.split_whitespace();
        let bytes = words.next()?.parse::<u32>().ok()?;
        let message = match (words.next(), words.next(), words.next()) {
            (None, _, _) => 0,
            (Some("per"), Some(size), None) => {
                size.parse::<u16>().ok().filter(|m| *m > 0 && usize::from(*m) <= sphere_intercore::MAX_PAYLOAD)?
            }
            _ => return None,
        };
        Some(RawEcho { bytes, message })
    }
}

impl App for LinkControl {
    fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    fn on_message(&mut self, payload: &[u8], _ctx: &Context, reply: &mut [u8]) -> Option<usize> {
        let request = Self::parse_raw_echo(core::str::from_utf8(payload).ok()?)?;
        self.raw_echo = Some(request);
        let mut w = BufWriter::new(reply);
        let _ = write!(w, "raw-echo ready {}", request.bytes);
        Some(w.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_control_arms_a_raw_echo_once() {
        let mut control = LinkControl::new();
        let ctx = Context { now: Instant(0), link: Default::default() };
        let mut reply = [0u8; 64];
        assert_eq!(control.on_message(b"raw-echo x", &ctx, &mut reply), None);
        assert_eq!(control.take_raw_echo(), None);
        let n = control.on_message(b"raw-echo 6400", &ctx, &mut reply).unwrap();
        assert_eq!(&reply[..n], b"raw-echo ready 6400");
        assert_eq!(control.take_raw_echo(), Some(RawEcho { bytes: 6400, message: 0 }));
        assert_eq!(control.take_raw_echo(), None);
        let n = control.on_message(b"raw-echo 6400 per 64", &ctx, &mut reply).unwrap();
        assert_eq!(&reply[..n], b"raw-echo ready 6400");
        assert_eq!(control.take_raw_echo(), Some(RawEcho { bytes: 6400, message: 64 }));
        for bad in [
            &b"raw-echo 64 per 0"[..],
            b"raw-echo 64 per 1041",
            b"raw-echo 64 per",
            b"raw-echo 64 by 8",
            b"raw-echo 64 per 8 x",
        ] {
            assert_eq!(control.on_message(bad, &ctx, &mut reply), None, "{:?}", core::str::from_utf8(bad));
        }
    }
}
