//! The per-app DNS proxy.
//!
//! Each app gets its own UDP sockets on its own gateway addresses (the only DNS server in its
//! resolv.conf, and the only one its firewall chain lets it reach), so the socket a query
//! arrives on says which app asked: no lookup by source address that a forged packet could
//! fool. A query for a name the app may not use is answered NXDOMAIN here and never leaves the
//! device. Allowed queries go to the upstream from a fresh socket with a fresh random id; the
//! answer's A/AAAA addresses enter the app's nftables set (TTL bounded to [min, max]) *before*
//! the answer is released, so the app's first connect already passes. A public name answered
//! with a private, loopback or link-local address (DNS rebinding) is refused whole.

use crate::dns::{self, RData};
use crate::firewall::Firewall;
use crate::names;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;

pub type Shared = Arc<Mutex<Firewall>>;

const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_MESSAGE: usize = 4096;
/// Queries of one app socket in flight at once; more are dropped (the resolver retries), so a
/// flooding app cannot exhaust the daemon's sockets or memory.
const MAX_IN_FLIGHT: usize = 64;

/// Serve one app's queries on `socket` until aborted.
pub async fn serve(shared: Shared, component_id: String, socket: UdpSocket) {
    let socket = Arc::new(socket);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else { continue };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else { continue };
        let query = buf[..len].to_vec();
        let (shared, id, socket) = (Arc::clone(&shared), component_id.clone(), Arc::clone(&socket));
        tokio::spawn(async move {
            if let Some(reply) = answer(&shared, &id, &query).await {
                let _ = socket.send_to(&reply, peer).await;
            }
            drop(slot);
        });
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Firewall> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The reply to one query of one app (None: drop it, as for garbage).
pub async fn answer(shared: &Shared, component_id: &str, query: &[u8]) -> Option<Vec<u8>> {
    let question = match dns::parse_query(query) {
        Ok(q) => q,
        Err(_) if query.len() >= 12 => return Some(dns::error_reply(query, 12, dns::RCODE_FORMERR)),
        Err(_) => return None,
    };
    let (upstreams, ttl_min, ttl_max, allowed, local_ok) = {
        let fw = lock(shared);
        let (allowed, local_ok) = fw.name_allowed(component_id, &question.name)?;
        (fw.config.upstreams.clone(), fw.config.ttl_min, fw.config.ttl_max, allowed, local_ok)
    };
    if !allowed || question.qclass != dns::CLASS_IN {
        lock(shared).telemetry.record(component_id, "dns", "udp", &question.name, 53);
        return Some(dns::error_reply(query, question.end, dns::RCODE_NXDOMAIN));
    }
    let mut reply = match forward(&upstreams, query, &question).await {
        Some(reply) => reply,
        None => return Some(dns::error_reply(query, question.end, dns::RCODE_SERVFAIL)),
    };
    let Ok(response) = dns::parse_response(&reply) else {
        return Some(dns::error_reply(query, question.end, dns::RCODE_SERVFAIL));
    };
    let mut addresses: Vec<(IpAddr, u32)> = Vec::new();
    let mut srv_targets = Vec::new();
    for record in &response.answers {
        let bounded = record.ttl.clamp(ttl_min, ttl_max);
        // The app may cache no longer than its set keeps the address.
        if record.ttl > ttl_max {
            dns::set_ttl(&mut reply, record.ttl_offset, ttl_max);
        }
        match &record.data {
            RData::A(v4) => addresses.push((IpAddr::V4(*v4), bounded)),
            RData::Aaaa(v6) => addresses.push((IpAddr::V6(*v6), bounded)),
            RData::Srv(target) => srv_targets.push((target.clone(), bounded)),
            RData::Cname(_) | RData::Other => {}
        }
    }
    if !local_ok {
        if let Some((private, _)) = addresses.iter().find(|(ip, _)| names::is_private(*ip)) {
            let mut fw = lock(shared);
            fw.telemetry.record(component_id, "dns-rebind", "udp", &format!("{} -> {private}", question.name), 53);
            return Some(dns::error_reply(query, question.end, dns::RCODE_REFUSED));
        }
    }
    if !addresses.is_empty() || !srv_targets.is_empty() {
        let mut fw = lock(shared);
        if let Err(error) = fw.admit(component_id, &question.name, &addresses, &srv_targets) {
            eprintln!("sphere-netd: {component_id}: could not allow {}: {error}", question.name);
            return Some(dns::error_reply(query, question.end, dns::RCODE_SERVFAIL));
        }
    }
    // The app's own id back in place of ours.
    reply[0..2].copy_from_slice(&query[0..2]);
    Some(reply)
}

fn random_id() -> u16 {
    let mut bytes = [0u8; 2];
    if getrandom::getrandom(&mut bytes).is_err() {
        // No entropy source: the fresh source port still changes per query.
        return std::process::id() as u16;
    }
    u16::from_be_bytes(bytes)
}

/// Ask the upstreams in turn; accept only a reply with our id and the same question.
async fn forward(upstreams: &[SocketAddr], query: &[u8], question: &dns::Question) -> Option<Vec<u8>> {
    for upstream in upstreams {
        let bind: SocketAddr = if upstream.is_ipv6() { "[::]:0".parse().ok()? } else { "0.0.0.0:0".parse().ok()? };
        let Ok(socket) = UdpSocket::bind(bind).await else { continue };
        if socket.connect(upstream).await.is_err() {
            continue;
        }
        let id = random_id();
        let mut outgoing = query.to_vec();
        outgoing[0..2].copy_from_slice(&id.to_be_bytes());
        if socket.send(&outgoing).await.is_err() {
            continue;
        }
        let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
        let mut buf = vec![0u8; MAX_MESSAGE];
        while let Ok(Ok(len)) = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            let reply = &buf[..len];
            if reply.len() >= 2 && reply[0..2] == id.to_be_bytes() {
                if let Ok(parsed) = dns::parse_response(reply) {
                    if parsed.question.name == question.name && parsed.question.qtype == question.qtype {
                        return Some(reply.to_vec());
                    }
                }
            }
        }
    }
    None
}
