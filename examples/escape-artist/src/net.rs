//! Network escapes: the per-app firewall (sphere-netd) seen from inside a hostile app.
//!
//! `net-attack` tries every way around the app's `AllowedConnections` that the device image can
//! offer and reports each one like the sandbox attempts (`ATTEMPT ... result=blocked`), plus
//! `CONTROL` lines for what the manifest allows, so "no network at all" cannot pass for
//! "firewall works". Every attempt sends a unique token; the test's hosts log what reaches them,
//! so the suite also checks the far side (tests/netd-qemu-test.sh).
//!
//! `net-peer` is the second app: it uses its own allowed name, then listens on its granted TCP
//! server port, so the attacker has another app's host and another app's server to try.
//!
//! The addresses are the test network's (documentation ranges), fixed in tests/netd-qemu-test.sh:
//! allowed.example.com 192.0.2.10, the literal 192.0.2.11, blocked.example.net 192.0.2.12,
//! x.cdn.example.org 192.0.2.30, b.example.com 198.51.100.10 (the peer's), a rogue DNS server
//! 198.51.100.54, the device's real upstream 10.0.2.3, rebind.example.com answering 10.0.0.5.
//! Names are resolved with a small DNS client of our own: the app is a static binary, and the
//! point is what the app can ask, not what a libc resolver would.

use super::{Blocked, Escaped, Runner, Verdict, errno_name, say};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::RawFd;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const DNS_TIMEOUT: Duration = Duration::from_secs(3);
/// Longer than sphere-netd's minimum TTL (30 s by default): an answered address must be gone
/// from the app's set by then.
const TTL_WAIT: Duration = Duration::from_secs(45);
/// The app compartments' addresses (sphere-netd hands out 10.213.0.0/16).
const COMPARTMENT_PREFIX: [u8; 3] = [10, 213, 0];

/// `net-peer`: use the allowed name once, then serve the granted TCP port until stopped.
pub fn peer() -> i32 {
    let mut run = Runner { attempts: 0, escaped: 0, errors: 0 };
    let resolved = resolve("b.example.com");
    run.control("peer_resolve_allowed", resolved.clone().map(|a| format!("{a:?}")));
    let reached = resolved.and_then(|_| send_token(addr([198, 51, 100, 10], 80), "allowed-peer"));
    run.control("peer_reach_allowed", reached);
    let listener = match TcpListener::bind("0.0.0.0:8080") {
        Ok(listener) => listener,
        Err(error) => {
            say(&format!("NETPEER cannot listen on 8080: {error}"));
            return 1;
        }
    };
    say("NETPEER listening port=8080");
    for connection in listener.incoming().flatten() {
        // Anyone reaching this is another app or a host: the attacker's attempt reports it too.
        say(&format!("NETPEER accepted from {:?}", connection.peer_addr().ok()));
        drop(connection);
    }
    0
}

/// `net-attack`: the controls, then every bypass attempt; exit 0 only if all were blocked.
pub fn attack() -> i32 {
    let mut run = Runner { attempts: 0, escaped: 0, errors: 0 };
    net_controls(&mut run);
    let quick = CONNECT_TIMEOUT + Duration::from_secs(5);

    run.attempt("net_disallowed_literal", quick, || tcp_token(addr([192, 0, 2, 12], 80), "t-literal"));
    run.attempt("net_disallowed_name", quick, || name_answered("blocked.example.net"));
    run.attempt("net_ipv6_path", quick, || {
        tcp_token(SocketAddr::new("2001:db8::12".parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), 80), "t-v6")
    });
    run.attempt("net_metadata_address", quick, || tcp_token(addr([169, 254, 169, 254], 80), "t-meta"));
    run.attempt("net_dns_rebinding", quick, || name_answered("rebind.example.com"));
    run.attempt("net_rebinding_target", quick, || tcp_token(addr([10, 0, 0, 5], 80), "t-rebind-ip"));
    run.attempt("net_rogue_dns_server", quick, || dns_answered([198, 51, 100, 54], "t-rogue.example.com"));
    run.attempt("net_upstream_dns_direct", quick, || dns_answered([10, 0, 2, 3], "t-upstream.example.com"));
    run.attempt("net_udp_disallowed", quick, || udp_token(addr([192, 0, 2, 12], 9), "t-udp"));
    run.attempt("net_raw_socket", quick, || socket_verdict(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_UDP));
    run.attempt("net_packet_socket", quick, || {
        socket_verdict(libc::AF_PACKET, libc::SOCK_RAW, i32::from((libc::ETH_P_ALL as u16).to_be()))
    });
    // The peer has resolved its own name by now (it starts with us; the attempts above took
    // seconds): its address is in its set, never in ours.
    run.attempt("net_other_apps_host", quick, || tcp_token(addr([198, 51, 100, 10], 80), "t-otherhost"));
    run.attempt("net_app_to_app", Duration::from_secs(15), || scan_compartments(8080));
    run.attempt("net_device_services", Duration::from_secs(15), scan_device_ports);
    run.attempt("net_other_apps_dns_proxy", Duration::from_secs(30), other_dns_proxies);
    ttl_expiry(&mut run, quick);

    say(&format!("SUMMARY attempts={} escaped={} errors={}", run.attempts, run.escaped, run.errors));
    if run.escaped == 0 && run.errors == 0 { 0 } else { 1 }
}

fn net_controls(run: &mut Runner) {
    let resolved = resolve("allowed.example.com");
    run.control("net_resolve_allowed", expect_answer(&resolved, [192, 0, 2, 10]));
    run.control("net_reach_allowed_name", send_token(addr([192, 0, 2, 10], 80), "allowed-v4"));
    run.control("net_reach_allowed_literal", send_token(addr([192, 0, 2, 11], 80), "allowed-literal"));
    let wildcard = resolve("x.cdn.example.org");
    run.control("net_resolve_wildcard", expect_answer(&wildcard, [192, 0, 2, 30]));
    run.control("net_reach_wildcard", send_token(addr([192, 0, 2, 30], 80), "allowed-wildcard"));
}

/// An answered address leaves the app's set when its TTL runs out; a fresh answer brings the
/// new one. The suite changes the name's address when it sees the NETTTL line.
fn ttl_expiry(run: &mut Runner, quick: Duration) {
    let first = resolve("ttl.example.com");
    run.control("net_ttl_resolve", expect_answer(&first, [192, 0, 2, 20]));
    run.control("net_ttl_reach", send_token(addr([192, 0, 2, 20], 80), "allowed-ttl"));
    say(&format!("NETTTL answered; waiting {} s for the TTL to run out", TTL_WAIT.as_secs()));
    std::thread::sleep(TTL_WAIT);
    run.attempt("net_ttl_expired_address", quick, || tcp_token(addr([192, 0, 2, 20], 80), "t-expired"));
    let fresh = resolve("ttl.example.com");
    run.control("net_ttl_fresh_answer", expect_answer(&fresh, [192, 0, 2, 21]));
    run.control("net_ttl_reach_fresh", send_token(addr([192, 0, 2, 21], 80), "allowed-fresh"));
}

/// Another app's DNS proxy (on its gateway, `.1` of each slot's /30) must not answer us.
fn other_dns_proxies() -> Verdict {
    let own = nameserver();
    let answered: Vec<String> = (0..4u8)
        .map(|slot| Ipv4Addr::new(COMPARTMENT_PREFIX[0], COMPARTMENT_PREFIX[1], COMPARTMENT_PREFIX[2], slot * 4 + 1))
        .filter(|proxy| Some(*proxy) != own)
        .filter(|proxy| query(*proxy, "b.example.com").is_ok())
        .map(|proxy| proxy.to_string())
        .collect();
    if answered.is_empty() {
        Blocked("no_other_proxy_answered".into())
    } else {
        Escaped(format!("answered by {answered:?}"))
    }
}

fn addr(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

fn expect_answer(resolved: &Result<Vec<Ipv4Addr>, String>, want: [u8; 4]) -> Result<String, String> {
    match resolved {
        Ok(addresses) if addresses.contains(&Ipv4Addr::from(want)) => Ok(format!("{addresses:?}")),
        Ok(addresses) => Err(format!("answer {addresses:?} lacks {}", Ipv4Addr::from(want))),
        Err(error) => Err(error.clone()),
    }
}

/// TCP: connect, send the token, wait for the host's "ok". Err says where it stopped.
fn send_token(to: SocketAddr, token: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&to, CONNECT_TIMEOUT).map_err(|e| format!("connect {to}: {e}"))?;
    stream.set_read_timeout(Some(CONNECT_TIMEOUT)).map_err(|e| e.to_string())?;
    stream.write_all(format!("{token}\n").as_bytes()).map_err(|e| format!("send: {e}"))?;
    let mut reply = [0u8; 8];
    let n = stream.read(&mut reply).map_err(|e| format!("reply: {e}"))?;
    if reply[..n].starts_with(b"ok") { Ok(format!("{to} answered")) } else { Err(format!("{to}: no ok")) }
}

fn tcp_token(to: SocketAddr, token: &str) -> Verdict {
    match TcpStream::connect_timeout(&to, CONNECT_TIMEOUT) {
        Ok(mut stream) => {
            let _ = stream.write_all(format!("{token}\n").as_bytes());
            Escaped(format!("connected to {to}"))
        }
        Err(error) => Blocked(io_reason(&error)),
    }
}

fn udp_token(to: SocketAddr, token: &str) -> Verdict {
    // UDP has no answer to wait for: a send the kernel accepts proves nothing either way, so
    // this is "blocked" here and the suite checks the hosts' log for the token.
    let socket = match UdpSocket::bind("0.0.0.0:0") {
        Ok(socket) => socket,
        Err(error) => return Blocked(io_reason(&error)),
    };
    match socket.send_to(token.as_bytes(), to) {
        Ok(_) => Blocked("sent;_the_suite_checks_the_far_side".into()),
        Err(error) => Blocked(io_reason(&error)),
    }
}

fn socket_verdict(domain: i32, kind: i32, protocol: i32) -> Verdict {
    // SAFETY: plain socket creation; the fd is closed when the forked attempt exits.
    let fd = unsafe { libc::socket(domain, kind, protocol) };
    if fd < 0 {
        Blocked(errno_name(last_errno()))
    } else {
        Escaped(format!("socket({domain}, {kind}) opened: the app could forge packets"))
    }
}

/// Another app's server port: try every compartment address at once.
fn scan_compartments(port: u16) -> Verdict {
    let targets: Vec<SocketAddr> = (1..=40u8)
        .map(|host| addr([COMPARTMENT_PREFIX[0], COMPARTMENT_PREFIX[1], COMPARTMENT_PREFIX[2], host], port))
        .collect();
    first_connect(&targets)
}

/// The device's own daemons: whatever listens on the uplink address or the gateway.
fn scan_device_ports() -> Verdict {
    let gateway = nameserver().unwrap_or(Ipv4Addr::new(10, 213, 0, 1)).octets();
    let mut targets = Vec::new();
    for host in [gateway, [10, 0, 2, 15], [127, 0, 0, 1]] {
        for port in [22, 53, 80, 443, 1883, 8000, 8883] {
            // The proxy's own port 53 on the gateway is the one thing the app may reach.
            if host == gateway && port == 53 {
                continue;
            }
            targets.push(addr(host, port));
        }
    }
    first_connect(&targets)
}

/// Connect to every target at once with non-blocking sockets and one poll: threads would run
/// into the sandbox's pids limit (a hostile app has few tasks to spend).
fn first_connect(targets: &[SocketAddr]) -> Verdict {
    let mut pending = Vec::new();
    for to in targets {
        let SocketAddr::V4(v4) = to else { continue };
        if let Ok(fd) = nonblocking_connect(v4) {
            pending.push((fd, *to));
        }
    }
    let mut polls: Vec<libc::pollfd> =
        pending.iter().map(|(fd, _)| libc::pollfd { fd: *fd, events: libc::POLLOUT, revents: 0 }).collect();
    let deadline = std::time::Instant::now() + CONNECT_TIMEOUT;
    let mut reached = Vec::new();
    while !polls.is_empty() {
        let left = deadline.saturating_duration_since(std::time::Instant::now()).as_millis() as i32;
        // SAFETY: polls is a valid array of pollfd of the given length.
        let ready = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, left) };
        if ready <= 0 {
            break;
        }
        polls.retain(|p| {
            if p.revents == 0 {
                return true;
            }
            if socket_error(p.fd) == 0 {
                if let Some((_, to)) = pending.iter().find(|(fd, _)| *fd == p.fd) {
                    reached.push(to.to_string());
                }
            }
            false
        });
    }
    for (fd, _) in &pending {
        // SAFETY: closing fds we opened.
        unsafe { libc::close(*fd) };
    }
    if reached.is_empty() {
        Blocked(format!("none_of_{}_reachable", targets.len()))
    } else {
        Escaped(format!("reached {}", reached.join(",")))
    }
}

/// A non-blocking TCP connect: the fd while in progress (or already connected), else the errno.
fn nonblocking_connect(to: &std::net::SocketAddrV4) -> Result<RawFd, i32> {
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last_errno());
    }
    let sockaddr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: to.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(to.ip().octets()) },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr is a valid sockaddr_in of the size given.
    let result = unsafe {
        libc::connect(
            fd,
            (&sockaddr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    let code = last_errno();
    if result == 0 || code == libc::EINPROGRESS {
        Ok(fd)
    } else {
        // SAFETY: closing the fd we opened.
        unsafe { libc::close(fd) };
        Err(code)
    }
}

fn socket_error(fd: RawFd) -> i32 {
    let mut error: libc::c_int = 0;
    let mut size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: SO_ERROR writes one c_int into `error`.
    let result = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, (&mut error as *mut libc::c_int).cast(), &mut size)
    };
    if result == 0 { error } else { last_errno() }
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn name_answered(name: &str) -> Verdict {
    match resolve(name) {
        Ok(addresses) if !addresses.is_empty() => Escaped(format!("{name} -> {addresses:?}")),
        Ok(_) => Blocked("no_address".into()),
        Err(reason) => Blocked(reason),
    }
}

fn dns_answered(server: [u8; 4], name: &str) -> Verdict {
    match query(Ipv4Addr::from(server), name) {
        Ok(_) => Escaped(format!("{} answered", Ipv4Addr::from(server))),
        Err(reason) => Blocked(reason),
    }
}

fn io_reason(error: &std::io::Error) -> String {
    match error.raw_os_error() {
        Some(code) => errno_name(code),
        None => error.kind().to_string().replace(' ', "_"),
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal DNS client: one A query over UDP, to the resolv.conf server or a chosen one.

fn nameserver() -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines().find_map(|line| line.strip_prefix("nameserver")?.trim().parse().ok())
}

fn resolve(name: &str) -> Result<Vec<Ipv4Addr>, String> {
    let server = nameserver().ok_or("no_nameserver_in_/etc/resolv.conf")?;
    query(server, name)
}

fn query(server: Ipv4Addr, name: &str) -> Result<Vec<Ipv4Addr>, String> {
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| io_reason(&e))?;
    socket.set_read_timeout(Some(DNS_TIMEOUT)).map_err(|e| io_reason(&e))?;
    let id = (std::process::id() & 0xffff) as u16;
    socket.send_to(&encode_query(id, name), (server, 53)).map_err(|e| io_reason(&e))?;
    let mut reply = [0u8; 1500];
    let n = socket.recv(&mut reply).map_err(|e| io_reason(&e))?;
    decode_answer(id, &reply[..n])
}

fn encode_query(id: u16, name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + name.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len().min(63) as u8);
        out.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    out.extend_from_slice(&[0, 0, 1, 0, 1]);
    out
}

/// The A records of a reply; an error for a wrong id, a non-zero rcode or a malformed message.
fn decode_answer(id: u16, message: &[u8]) -> Result<Vec<Ipv4Addr>, String> {
    let header = message.get(..12).ok_or("short_reply")?;
    if u16::from_be_bytes([header[0], header[1]]) != id {
        return Err("reply_id_mismatch".into());
    }
    let rcode = header[3] & 0x0f;
    if rcode != 0 {
        return Err(if rcode == 3 { "NXDOMAIN".into() } else { format!("rcode{rcode}") });
    }
    let answers = u16::from_be_bytes([header[6], header[7]]);
    let mut at = skip_name(message, 12)? + 4;
    let mut addresses = Vec::new();
    for _ in 0..answers {
        at = skip_name(message, at)?;
        let fixed = message.get(at..at + 10).ok_or("truncated_record")?;
        let kind = u16::from_be_bytes([fixed[0], fixed[1]]);
        let length = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let data = message.get(at + 10..at + 10 + length).ok_or("truncated_rdata")?;
        if kind == 1 && length == 4 {
            addresses.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + length;
    }
    Ok(addresses)
}

fn skip_name(message: &[u8], mut at: usize) -> Result<usize, String> {
    loop {
        let length = *message.get(at).ok_or("truncated_name")?;
        match length {
            0 => return Ok(at + 1),
            l if l & 0xc0 == 0xc0 => return Ok(at + 2),
            l => at += 1 + usize::from(l),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_round_trips_through_the_decoder() {
        let mut reply = encode_query(7, "allowed.example.com");
        reply[2] = 0x81;
        reply[3] = 0x80;
        reply[7] = 1;
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 10]);
        assert_eq!(decode_answer(7, &reply), Ok(vec![Ipv4Addr::new(192, 0, 2, 10)]));
    }

    #[test]
    fn the_connect_scan_finds_a_listener_and_only_it() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
        let open = listener.local_addr().expect("address");
        let closed = TcpListener::bind("127.0.0.1:0").expect("listen").local_addr().expect("address");
        match first_connect(&[closed, open]) {
            Escaped(detail) => assert_eq!(detail, format!("reached {open}")),
            Blocked(detail) => panic!("the listener was not found: {detail}"),
        }
        assert!(matches!(first_connect(&[closed]), Blocked(_)));
    }

    #[test]
    fn nxdomain_wrong_ids_and_truncation_are_errors() {
        let mut reply = encode_query(7, "blocked.example.net");
        reply[3] = 0x83;
        assert_eq!(decode_answer(7, &reply), Err("NXDOMAIN".into()));
        assert_eq!(decode_answer(8, &reply), Err("reply_id_mismatch".into()));
        let mut truncated = encode_query(7, "x.example");
        truncated[7] = 1;
        assert!(decode_answer(7, &truncated).is_err());
        assert!(decode_answer(7, &[0; 5]).is_err());
    }
}
