//! The inter-core broker: the A7 end of the link to the real-time core, shared by every
//! high-level app through the app manager.
//!
//! Azure Sphere's `Application_Connect(componentId)` gives a high-level app a socket to one
//! real-time app, and only when both manifests list each other in
//! `AllowedApplicationConnections`. Here the app manager owns the link (a serial device: on the
//! QEMU board a virtio-serial port whose host end is wired to the M4 machine's UART1) and:
//!
//! * serves each sandboxed app's connect requests on its private API socket
//!   ([`serve_app_api`]); the policy check is the manager's ([`crate::manager::Manager`]'s
//!   `intercore_policy`), which records refusals as `intercore-refused` violations;
//! * gives the app one end of a fresh `SOCK_SEQPACKET` pair per connection (message boundaries
//!   kept, at most [`MAX_PAYLOAD`] bytes a message) and keeps the other;
//! * turns each message from the app into one `sphere-intercore` data frame (source: the app's
//!   ComponentId, destination: the real-time app's), sent only when the real-time app has
//!   granted credit: while it has not, the broker stops reading that app's socket, so the app's
//!   `send` blocks (backpressure reaches the app, nothing is dropped on the A7);
//! * finds frames in the bytes from the link (resynchronising after garbage), hands each data
//!   frame's payload to the connection it names, and grants credit back.
//!
//! Plain threads, not tokio tasks: every operation is a blocking read or write on a device or a
//! socket, a handful of connections exist at a time, and the daemon's runtime is single-threaded.

use sphere_intercore::flow::DEFAULT_WINDOW;
use sphere_intercore::{ComponentId, Decoder, Flow, Header, MAX_FRAME, MAX_PAYLOAD, RxVerdict};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use uuid::Uuid;

/// Counters for diagnostics (logged by the daemon).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Data frames sent to the link.
    pub frames_out: u64,
    /// Data frames delivered to apps.
    pub frames_in: u64,
    /// Frames for no open connection (the app is gone, or never connected).
    pub unrouted: u64,
    /// Messages from apps longer than [`MAX_PAYLOAD`] (dropped).
    pub oversize: u64,
    /// Data frames dropped because the app's socket was full (it does not read).
    pub app_full: u64,
    /// Duplicate or overrunning frames from the real-time core.
    pub dropped: u64,
}

struct Conn {
    flow: Flow,
    /// The broker's end of the app's connection socket.
    socket: Arc<OwnedFd>,
    /// Distinguishes a reopened connection from the one an old thread served.
    generation: u64,
    /// The compact-frame channel assigned in our RESET (0: none free; full frames only).
    channel: u8,
    /// Whether the real-time side has sent on `channel`, so it surely knows it: only then do
    /// our frames go compact (a lost RESET must not make them unroutable).
    compact: bool,
}

impl Conn {
    /// The channel our frames carry: compact once the peer has shown it knows the channel.
    fn send_channel(&self) -> u8 {
        if self.compact { self.channel } else { 0 }
    }
}

#[derive(Default)]
struct State {
    /// Keyed by (high-level app, real-time app).
    conns: HashMap<(Uuid, Uuid), Conn>,
    generation: u64,
    /// Where the search for a free channel starts: channels go round the 255 values, so a
    /// closed connection's number is reused as late as possible (frames the real-time side
    /// sent on it before it heard of the reuse are long gone by then).
    last_channel: u8,
    stats: BrokerStats,
}

impl State {
    /// A channel no other open connection uses (0 when all 255 are taken).
    fn free_channel(&mut self, replacing: (Uuid, Uuid)) -> u8 {
        for step in 1..=255u16 {
            let candidate = ((u16::from(self.last_channel) + step - 1) % 255 + 1) as u8;
            if !self.conns.iter().any(|(key, c)| *key != replacing && c.channel == candidate) {
                self.last_channel = candidate;
                return candidate;
            }
        }
        0
    }
}

/// The connection a frame from the real-time core is for: by channel when compact (which also
/// proves the peer knows the channel), else by the two component ids.
fn route<'a>(conns: &'a mut HashMap<(Uuid, Uuid), Conn>, header: &Header) -> Option<((Uuid, Uuid), &'a mut Conn)> {
    if header.channel == 0 {
        let key = (Uuid::from_bytes(header.dst.0), Uuid::from_bytes(header.src.0));
        return conns.get_mut(&key).map(|conn| (key, conn));
    }
    let (key, conn) = conns.iter_mut().find(|(_, c)| c.channel == header.channel)?;
    conn.compact = true;
    Some((*key, conn))
}

/// The A7 end of the inter-core link.
pub struct Broker {
    link: Mutex<File>,
    state: Mutex<State>,
    /// Signalled when credit may have arrived or a connection closed.
    credit: Condvar,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn cid(id: Uuid) -> ComponentId {
    ComponentId(*id.as_bytes())
}

/// Find `/dev/vportNpM` whose name (in sysfs) is `name`; devtmpfs has no by-name links.
pub fn find_virtio_port(name: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir("/sys/class/virtio-ports").ok()?;
    entries.filter_map(Result::ok).find_map(|entry| {
        let port_name = std::fs::read_to_string(entry.path().join("name")).ok()?;
        (port_name.trim() == name).then(|| Path::new("/dev").join(entry.file_name()))
    })
}

impl Broker {
    /// Opens the link device and starts reading it. The link is any byte stream: a UART tty, a
    /// virtio-serial port, or (in tests) a Unix socket's file.
    pub fn open(device: &Path) -> std::io::Result<Arc<Broker>> {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(device)?;
        Self::start(file)
    }

    /// Starts a broker on an open link.
    pub fn start(link: File) -> std::io::Result<Arc<Broker>> {
        let reader = link.try_clone()?;
        let broker = Arc::new(Broker { link: Mutex::new(link), state: Mutex::default(), credit: Condvar::new() });
        let weak = Arc::downgrade(&broker);
        std::thread::Builder::new().name("intercore-rx".into()).spawn(move || {
            let mut reader = reader;
            let mut decoder: Decoder<MAX_FRAME> = Decoder::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = match reader.read(&mut chunk) {
                    // A virtio port reads end-of-file while the host side is not connected.
                    Ok(0) => {
                        std::thread::sleep(std::time::Duration::from_millis(100));
                        continue;
                    }
                    Ok(n) => n,
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(error) => {
                        eprintln!("sphere-appd: inter-core link read failed: {error}; link closed");
                        return;
                    }
                };
                let Some(broker) = weak.upgrade() else { return };
                let mut fed = 0;
                while fed < n {
                    fed += decoder.feed(&chunk[fed..n]);
                    while let Some(frame) = decoder.poll() {
                        broker.on_frame(&frame.header, frame.payload);
                    }
                }
            }
        })?;
        Ok(broker)
    }

    /// Counters so far.
    pub fn stats(&self) -> BrokerStats {
        lock(&self.state).stats
    }

    fn write_frame(&self, header: &Header, payload: &[u8]) -> std::io::Result<()> {
        let mut buf = [0u8; MAX_FRAME];
        let n = sphere_intercore::encode(header, payload, &mut buf)
            .map_err(|e| std::io::Error::other(format!("cannot encode a frame: {e:?}")))?;
        // One write under the lock: frames from different connections never interleave.
        lock(&self.link).write_all(&buf[..n])
    }

    /// A frame from the real-time core.
    fn on_frame(&self, header: &Header, payload: &[u8]) {
        let mut state = lock(&self.state);
        let state = &mut *state;
        let Some((key, conn)) = route(&mut state.conns, header) else {
            state.stats.unrouted += 1;
            return;
        };
        match conn.flow.on_receive(header) {
            RxVerdict::Control => {}
            RxVerdict::Deliver | RxVerdict::DeliverAfterGap { .. } => {
                // SAFETY: send on the connection socket we own; the buffer outlives the call.
                let sent = unsafe {
                    libc::send(
                        conn.socket.as_raw_fd(),
                        payload.as_ptr().cast(),
                        payload.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                };
                if sent < 0 {
                    state.stats.app_full += 1;
                } else {
                    state.stats.frames_in += 1;
                }
                // The socket buffer is the app's receive window: the slot is free once queued.
                conn.flow.release();
            }
            RxVerdict::Duplicate | RxVerdict::Overrun => state.stats.dropped += 1,
        }
        // Credit that is not due yet rides on the app's next message (see Flow::credit_due).
        let control = conn
            .flow
            .credit_due()
            .then(|| Header { channel: conn.send_channel(), ..conn.flow.control(key.0.into_cid(), key.1.into_cid()) });
        self.credit.notify_all();
        if let Some(header) = control {
            // Written under the state lock so credit frames stay in order with the state.
            if let Err(error) = self.write_frame(&header, &[]) {
                eprintln!("sphere-appd: inter-core link write failed: {error}");
            }
        }
    }

    /// Opens a connection from high-level app `app` to real-time app `rt` (the policy was
    /// checked by the caller) and returns the app's end of it. A connection the same pair had
    /// before is replaced (the app restarted, or connected again).
    pub fn connect(self: &Arc<Self>, app: Uuid, rt: Uuid) -> std::io::Result<OwnedFd> {
        let (ours, theirs) = sphere_applibs::seqpacket_pair()?;
        let ours = Arc::new(ours);
        let generation = {
            let mut state = lock(&self.state);
            state.generation += 1;
            let generation = state.generation;
            let mut flow = Flow::new(DEFAULT_WINDOW);
            // RESET: the real-time app starts its side of the connection over too, and learns
            // the channel for compact frames from the payload.
            let reset = flow.reset(cid(app), cid(rt));
            let channel = if flow.compact_ok() { state.free_channel((app, rt)) } else { 0 };
            let conn = Conn { flow, socket: Arc::clone(&ours), generation, channel, compact: false };
            state.conns.insert((app, rt), conn);
            let assignment = [channel];
            self.write_frame(&reset, if channel == 0 { &[] } else { &assignment })?;
            generation
        };
        self.credit.notify_all();
        let broker = Arc::clone(self);
        std::thread::Builder::new()
            .name("intercore-tx".into())
            .spawn(move || broker.uplink(app, rt, &ours, generation))?;
        Ok(theirs)
    }

    /// Messages from the app's socket to the link, one frame each, under credit.
    fn uplink(&self, app: Uuid, rt: Uuid, socket: &OwnedFd, generation: u64) {
        let mut buf = [0u8; MAX_PAYLOAD];
        loop {
            // SAFETY: recv into our buffer; MSG_TRUNC makes it return the message's real length.
            let n = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_TRUNC) };
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // End of file (the app closed its end or exited), or an error: the connection ends.
            if n <= 0 {
                break;
            }
            let n = n as usize;
            let mut state = lock(&self.state);
            if n > MAX_PAYLOAD {
                state.stats.oversize += 1;
                continue;
            }
            // Backpressure: wait for credit, and do not read the app's next message meanwhile.
            let header = loop {
                let Some(conn) = state.conns.get_mut(&(app, rt)).filter(|c| c.generation == generation) else {
                    return;
                };
                if let Some(header) = conn.flow.next_data(cid(app), cid(rt)) {
                    break Header { channel: conn.send_channel(), ..header };
                }
                state = self.credit.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
            };
            state.stats.frames_out += 1;
            drop(state);
            if let Err(error) = self.write_frame(&header, &buf[..n]) {
                eprintln!("sphere-appd: inter-core link write failed: {error}");
                break;
            }
        }
        let mut state = lock(&self.state);
        if state.conns.get(&(app, rt)).is_some_and(|c| c.generation == generation) {
            state.conns.remove(&(app, rt));
        }
    }

    /// Open connections, as (high-level app, real-time app).
    pub fn connections(&self) -> Vec<(Uuid, Uuid)> {
        lock(&self.state).conns.keys().copied().collect()
    }
}

/// The link's own control endpoint (the firmware's `LinkControl`): all-zero component ids.
const LINK_CONTROL: ComponentId = ComponentId([0; 16]);

fn wait_readable(fd: &File, deadline: std::time::Instant) -> std::io::Result<()> {
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    let mut pollfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: poll on one valid pollfd.
    let ready = unsafe { libc::poll(&mut pollfd, 1, left.as_millis().min(60_000) as libc::c_int) };
    match ready {
        r if r < 0 => Err(std::io::Error::last_os_error()),
        0 => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer from the real-time core")),
        _ => Ok(()),
    }
}

/// The benchmark's baselines (scripts/bench-intercore.sh): `count` round trips of `size` raw
/// bytes over the same link, no framing, no broker, no app socket. The firmware's link control
/// endpoint is asked (in a frame) to echo the next `count * size` bytes unframed, each byte as
/// it arrives or (`per_message`) each `size` bytes once all have arrived; it answers
/// `raw-echo ready N` and the raw round trips follow. Runs before the broker starts.
pub fn raw_echo_bench(
    link: &mut File,
    count: usize,
    size: usize,
    per_message: bool,
) -> std::io::Result<Vec<std::time::Duration>> {
    let mut flow = Flow::new(DEFAULT_WINDOW);
    let mut frame = [0u8; MAX_FRAME];
    let reset = flow.reset(LINK_CONTROL, LINK_CONTROL);
    let request = if per_message {
        format!("raw-echo {} per {size}", count * size)
    } else {
        format!("raw-echo {}", count * size)
    };
    let header = flow.next_data(LINK_CONTROL, LINK_CONTROL).ok_or_else(|| std::io::Error::other("no credit"))?;
    for (h, payload) in [(&reset, &b""[..]), (&header, request.as_bytes())] {
        let n =
            sphere_intercore::encode(h, payload, &mut frame).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        link.write_all(&frame[..n])?;
    }
    let mut decoder: Decoder<MAX_FRAME> = Decoder::new();
    let mut chunk = [0u8; 4096];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    'ready: loop {
        wait_readable(link, deadline)?;
        let n = link.read(&mut chunk)?;
        let mut fed = 0;
        while fed < n {
            fed += decoder.feed(&chunk[fed..n]);
            while let Some(f) = decoder.poll() {
                if f.header.src == LINK_CONTROL && f.payload.starts_with(b"raw-echo ready") {
                    break 'ready;
                }
            }
        }
    }
    let message: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = std::time::Instant::now();
        link.write_all(&message)?;
        let mut got = 0;
        let deadline = started + std::time::Duration::from_secs(5);
        while got < size {
            wait_readable(link, deadline)?;
            got += link.read(&mut chunk[..size - got])?;
        }
        times.push(started.elapsed());
    }
    Ok(times)
}

trait IntoCid {
    fn into_cid(self) -> ComponentId;
}

impl IntoCid for Uuid {
    fn into_cid(self) -> ComponentId {
        cid(self)
    }
}

/// What the policy said about one connect request.
pub type Verdict = Result<(), String>;

/// Serves one app's API socket until the app closes it: `connect <ComponentId>` requests,
/// answered `ok` (with the connection's socket) or `refused <why>` or `error <why>`. `policy`
/// checks both manifests (and records refusals); `broker` is `None` on a device without a link.
/// Every other request goes to `other` (the system-event requests, see [`crate::sysevent`]),
/// whose reply text and optional fd are sent back.
pub fn serve_app_api(
    socket: OwnedFd,
    app: Uuid,
    broker: Option<Arc<Broker>>,
    policy: impl Fn(Uuid, Uuid) -> Verdict,
    other: impl Fn(&str) -> (String, Option<OwnedFd>),
) {
    use sphere_applibs::wire;
    let mut request = [0u8; wire::MAX_LEN];
    loop {
        let len = match sphere_applibs::recv_with_fd(socket.as_raw_fd(), &mut request) {
            Ok((0, _)) => return,
            Ok((len, _)) => len,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) if error.kind() == std::io::ErrorKind::InvalidData => {
                reply(&socket, &format!("{}request too long", wire::ERROR), None);
                continue;
            }
            Err(_) => return,
        };
        let text = String::from_utf8_lossy(&request[..len]);
        let Some(target) = text.strip_prefix(wire::CONNECT) else {
            let (answer, fd) = other(&text);
            reply(&socket, &answer, fd.as_ref());
            continue;
        };
        let Ok(rt) = Uuid::try_parse(target.trim()) else {
            reply(&socket, &format!("{}\"{}\" is not a ComponentId", wire::ERROR, target.trim()), None);
            continue;
        };
        if let Err(why) = policy(app, rt) {
            reply(&socket, &format!("{}{why}", wire::REFUSED), None);
            continue;
        }
        let Some(broker) = &broker else {
            reply(&socket, &format!("{}this device has no inter-core link", wire::ERROR), None);
            continue;
        };
        match broker.connect(app, rt) {
            Ok(fd) => reply(&socket, wire::OK, Some(&fd)),
            Err(error) => reply(&socket, &format!("{}cannot open the connection: {error}", wire::ERROR), None),
        }
    }
}

fn reply(socket: &OwnedFd, text: &str, fd: Option<&OwnedFd>) {
    let result = match fd {
        Some(fd) => sphere_applibs::send_with_fd(socket.as_raw_fd(), text.as_bytes(), fd.as_raw_fd()),
        None => {
            // SAFETY: send on our socket; the buffer outlives the call.
            let sent = unsafe {
                libc::send(
                    socket.as_raw_fd(),
                    text.as_ptr().cast(),
                    text.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            if sent < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
        }
    };
    if let Err(error) = result {
        eprintln!("sphere-appd: cannot answer an app's API request: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixDatagram, UnixStream};
    use std::time::Duration;

    const APP: Uuid = Uuid::from_u128(0x7f0c2e5a_61d4_4b8e_9a3f_2c51d7e80b14);
    const RT: Uuid = Uuid::from_u128(0x6a1f0e2c_3b4d_4e5f_8a9b_0c1d2e3f4a51);

    /// A fake real-time core on the other end of a socket: a decoder and its own flow.
    struct Core {
        link: UnixStream,
        decoder: Decoder<MAX_FRAME>,
    }

    impl Core {
        fn next_frame(&mut self) -> (Header, Vec<u8>) {
            let mut chunk = [0u8; 2048];
            loop {
                if let Some(frame) = self.decoder.poll() {
                    return (frame.header, frame.payload.to_vec());
                }
                let n = self.link.read(&mut chunk).expect("core read");
                assert!(n > 0, "link closed");
                self.decoder.feed(&chunk[..n]);
            }
        }
        fn send(&mut self, header: &Header, payload: &[u8]) {
            let mut buf = [0u8; MAX_FRAME];
            let n = sphere_intercore::encode(header, payload, &mut buf).expect("encode");
            self.link.write_all(&buf[..n]).expect("core write");
        }
    }

    fn setup() -> (Arc<Broker>, Core) {
        let (a, b) = UnixStream::pair().expect("pair");
        b.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let broker = Broker::start(File::from(OwnedFd::from(a))).expect("broker");
        (broker, Core { link: b, decoder: Decoder::new() })
    }

    /// Connects APP to RT and reads the broker's RESET: the app's socket, the real-time side's
    /// flow (started over by the RESET) and the RESET's payload (the channel assignment).
    fn open(broker: &Arc<Broker>, core: &mut Core) -> (UnixDatagram, Flow, Vec<u8>) {
        let app = UnixDatagram::from(broker.connect(APP, RT).expect("connect"));
        app.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let (reset, assignment) = core.next_frame();
        assert!(reset.flags.contains(sphere_intercore::Flags::RESET));
        let mut rt_flow = Flow::new(DEFAULT_WINDOW);
        rt_flow.on_receive(&reset);
        (app, rt_flow, assignment)
    }

    #[test]
    fn messages_round_trip_with_boundaries_and_credit() {
        let (broker, mut core) = setup();
        let (app, mut rt_flow, _) = open(&broker, &mut core);
        // Six messages: the window is four, so the broker waits for credit after four.
        for i in 0..6u8 {
            app.send(&[i; 3]).expect("send");
        }
        let mut got = Vec::new();
        for _ in 0..4 {
            let (h, payload) = core.next_frame();
            assert_eq!((h.src, h.dst), (cid(APP), cid(RT)));
            assert_eq!(rt_flow.on_receive(&h), RxVerdict::Deliver);
            got.push(payload);
        }
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(broker.stats().frames_out, 4, "no credit, no fifth frame");
        // The core consumes them and grants credit; it also answers one.
        for _ in 0..4 {
            rt_flow.release();
        }
        let reply = rt_flow.next_data(cid(RT), cid(APP)).expect("credit");
        core.send(&reply, b"pong");
        for _ in 0..2 {
            let (h, payload) = core.next_frame();
            if h.flags.contains(sphere_intercore::Flags::DATA) {
                rt_flow.on_receive(&h);
                got.push(payload);
            } else {
                rt_flow.on_receive(&h);
                let (h, payload) = core.next_frame();
                rt_flow.on_receive(&h);
                got.push(payload);
            }
        }
        assert_eq!(got, (0..6u8).map(|i| vec![i; 3]).collect::<Vec<_>>());
        let mut buf = [0u8; 64];
        let n = app.recv(&mut buf).expect("reply");
        assert_eq!(&buf[..n], b"pong");
    }

    #[test]
    fn ping_pong_goes_compact_with_credit_riding_on_data() {
        let (broker, mut core) = setup();
        let (app, mut rt_flow, assignment) = open(&broker, &mut core);
        let [channel] = assignment[..] else { panic!("the RESET assigns a channel: {assignment:?}") };
        assert_ne!(channel, 0);
        let mut buf = [0u8; 64];
        for i in 0..40u8 {
            app.send(&[i; 8]).expect("send");
            // Every frame on the wire is the app's message: no credit frame of its own.
            let (h, payload) = core.next_frame();
            assert!(h.flags.contains(sphere_intercore::Flags::DATA), "message {i}: {h:?}");
            // Full until the core has used the channel once, compact from then on.
            assert_eq!(h.channel, if i == 0 { 0 } else { channel }, "message {i}");
            assert_eq!(rt_flow.on_receive(&h), RxVerdict::Deliver, "message {i}");
            assert_eq!(payload, [i; 8]);
            rt_flow.release();
            let reply = Header { channel, ..rt_flow.next_data(cid(RT), cid(APP)).expect("credit") };
            core.send(&reply, &[i ^ 0xFF; 8]);
            let n = app.recv(&mut buf).expect("reply");
            assert_eq!(&buf[..n], &[i ^ 0xFF; 8]);
        }
        assert_eq!(broker.stats().frames_in, 40);
    }

    #[test]
    fn garbage_on_the_link_is_skipped_and_strangers_are_not_routed() {
        let (broker, mut core) = setup();
        let app = UnixDatagram::from(broker.connect(APP, RT).expect("connect"));
        app.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let _ = core.next_frame();
        let mut rt_flow = Flow::new(DEFAULT_WINDOW);
        core.link.write_all(b"\xa5\x5a\x01garbage\x00\xa5").expect("garbage");
        let stranger = Uuid::from_u128(0xbad);
        let h = Flow::new(DEFAULT_WINDOW).next_data(cid(stranger), cid(APP)).expect("credit");
        core.send(&h, b"not for you");
        let h = rt_flow.next_data(cid(RT), cid(APP)).expect("credit");
        core.send(&h, b"for you");
        let mut buf = [0u8; 64];
        let n = app.recv(&mut buf).expect("reply");
        assert_eq!(&buf[..n], b"for you");
        assert_eq!(broker.stats().unrouted, 1);
    }

    #[test]
    fn the_api_refuses_what_the_policy_refuses() {
        let (broker, _core) = setup();
        let (app_end, ours) = sphere_applibs::seqpacket_pair().expect("pair");
        let server = std::thread::spawn(move || {
            serve_app_api(
                ours,
                APP,
                Some(broker),
                |_, rt| if rt == RT { Ok(()) } else { Err("not listed".into()) },
                |_| (format!("{}unknown request", sphere_applibs::wire::ERROR), None),
            )
        });
        let app = UnixDatagram::from(app_end);
        app.send(format!("connect {}", Uuid::from_u128(1)).as_bytes()).expect("send");
        let mut buf = [0u8; 128];
        let (n, fd) = sphere_applibs::recv_with_fd(app.as_raw_fd(), &mut buf).expect("reply");
        assert_eq!(&buf[..n], b"refused not listed");
        assert!(fd.is_none());
        app.send(format!("connect {RT}").as_bytes()).expect("send");
        let (n, fd) = sphere_applibs::recv_with_fd(app.as_raw_fd(), &mut buf).expect("reply");
        assert_eq!(&buf[..n], b"ok");
        assert!(fd.is_some());
        drop(app);
        server.join().expect("server ends when the app closes its end");
    }
}
