//! Messages to and from the real-time apps on the M4 core.

use crate::say;
use sphere_applibs::{MAX_MESSAGE, application_connect};
use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// The real-time echo app (daemons/sphere-rt-m4/apps/echo).
pub const ECHO: &str = "6a1f0e2c-3b4d-4e5f-8a9b-0c1d2e3f4a51";
/// The real-time sampler app (daemons/sphere-rt-m4/apps/sampler).
pub const SAMPLER: &str = "6a1f0e2c-3b4d-4e5f-8a9b-0c1d2e3f4a52";

/// One message to the echo app and its reply, described in a line.
pub fn hello() -> String {
    let socket = match application_connect(ECHO) {
        Ok(socket) => socket,
        Err(error) => return format!("connect refused ({error})"),
    };
    let _ = socket.set_read_timeout(Some(Duration::from_secs(5)));
    let message = b"hello from the A7";
    let started = Instant::now();
    if let Err(error) = socket.send(message) {
        return format!("send failed ({error})");
    }
    let mut reply = [0u8; MAX_MESSAGE];
    match socket.recv(&mut reply) {
        Ok(n) => format!(
            "sent \"{}\", reply \"{}\" in {} us",
            String::from_utf8_lossy(message),
            String::from_utf8_lossy(&reply[..n]),
            started.elapsed().as_micros()
        ),
        Err(error) => format!("no reply ({error})"),
    }
}

/// Sends `message` and waits for its echo (skipping stale replies); the round trip time.
fn round_trip(socket: &UnixDatagram, message: &[u8], timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    socket.send(message).ok()?;
    let mut reply = [0u8; MAX_MESSAGE];
    while started.elapsed() < timeout {
        let _ = socket.set_read_timeout(Some(timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1))));
        match socket.recv(&mut reply) {
            Ok(n) if &reply[..n] == message => return Some(started.elapsed()),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

fn percentile(sorted: &[Duration], p: usize) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)].as_micros()
}

/// Latency figures of `count` sequential round trips of `size`-byte messages.
fn latency(socket: &UnixDatagram, tag: &str, count: usize, size: usize) -> usize {
    let mut times = Vec::with_capacity(count);
    for i in 0..count {
        let mut message = format!("{tag} {i} ").into_bytes();
        message.resize(size.max(message.len()), b'.');
        if let Some(t) = round_trip(socket, &message, Duration::from_secs(2)) {
            times.push(t);
        }
    }
    times.sort();
    say(&format!(
        "intercore-test: {tag} ok={}/{count} size={size} median_us={} p99_us={}",
        times.len(),
        percentile(&times, 50),
        percentile(&times, 99)
    ));
    times.len()
}

/// The exercise the QEMU test and the benchmark read (one `intercore-test: ...` line a step).
pub fn exercise() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: u64| args.get(i).and_then(|a| a.parse::<u64>().ok()).unwrap_or(default);
    let (count, size, flood_s) = (arg(2, 50) as usize, arg(3, 64) as usize, arg(4, 5));
    say("intercore-test: start");
    match application_connect(SAMPLER) {
        Ok(_) => say("intercore-test: connect sampler: ok"),
        Err(error) => say(&format!("intercore-test: connect sampler: refused ({error})")),
    }
    let socket = match application_connect(ECHO) {
        Ok(socket) => socket,
        Err(error) => {
            say(&format!("intercore-test: connect echo: refused ({error})"));
            idle();
        }
    };
    say("intercore-test: connect echo: ok");
    latency(&socket, "round-trips", count, size);

    // The test corrupts the link (between the QEMU machines) while this runs: messages may be
    // lost then (no retransmission), but the link must come back.
    say("intercore-test: resync phase start");
    let (mut ok, mut lost) = (0, 0);
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(10) {
        i += 1;
        match round_trip(&socket, format!("resync {i}").as_bytes(), Duration::from_millis(500)) {
            Some(_) => ok += 1,
            None => lost += 1,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    say(&format!("intercore-test: resync phase ok={ok} lost={lost}"));
    latency(&socket, "after-resync", 20, size);

    flood(&socket, flood_s);
    latency(&socket, "after-flood", 20, size);
    let _ = socket.set_read_timeout(Some(Duration::from_secs(3)));
    let mut reply = [0u8; MAX_MESSAGE];
    if socket.send(b"stats").is_ok() {
        while let Ok(n) = socket.recv(&mut reply) {
            if reply[..n].starts_with(b"echo ") {
                say(&format!("intercore-test: echo stats: {}", String::from_utf8_lossy(&reply[..n])));
                break;
            }
        }
    }
    say("intercore-test: done");
    idle();
}

/// Flood: 1 KiB messages as fast as credit allows for `seconds`, replies drained as they come;
/// prints the throughput of echoed bytes.
fn flood(socket: &UnixDatagram, seconds: u64) {
    let flood_s = seconds;
    let _ = socket.set_nonblocking(true);
    let payload = vec![b'f'; 1024];
    let (mut sent, mut echoed, mut bytes, mut blocked) = (0u64, 0u64, 0u64, 0u64);
    let mut reply = [0u8; MAX_MESSAGE];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(flood_s) {
        match socket.send(&payload) {
            Ok(_) => sent += 1,
            Err(error) if error.kind() == ErrorKind::WouldBlock => blocked += 1,
            Err(_) => break,
        }
        while let Ok(n) = socket.recv(&mut reply) {
            echoed += 1;
            bytes += n as u64;
        }
        if blocked % 64 == 63 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let _ = socket.set_nonblocking(false);
    // Let the queue drain so the next steps see only their own replies.
    let _ = socket.set_read_timeout(Some(Duration::from_millis(1500)));
    while let Ok(n) = socket.recv(&mut reply) {
        if n == payload.len() {
            echoed += 1;
            bytes += n as u64;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    say(&format!(
        "intercore-test: flood sent={sent} echoed={echoed} seconds={secs:.1} throughput_Bps={:.0} backpressure_waits={blocked}",
        bytes as f64 / secs
    ));
}

/// scripts/bench-intercore.sh: `hello-sphere intercore-bench COUNT SIZE SECONDS`.
pub fn bench() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: u64| args.get(i).and_then(|a| a.parse::<u64>().ok()).unwrap_or(default);
    let (count, size, seconds) = (arg(2, 200) as usize, arg(3, 64) as usize, arg(4, 5));
    match application_connect(ECHO) {
        Ok(socket) => {
            // Warm up (first-use costs on both cores), then measure.
            latency(&socket, "warm-up", 10, size);
            latency(&socket, "framed-echo", count, size);
            flood(&socket, seconds);
        }
        Err(error) => say(&format!("intercore-test: connect echo: refused ({error})")),
    }
    say("intercore-test: done");
    idle();
}

/// Stay up (an app that exits is restarted by the app manager).
fn idle() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
