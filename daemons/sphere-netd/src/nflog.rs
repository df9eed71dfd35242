//! Blocked packets from NFLOG (the `log group N` of the table's chains) into [`Telemetry`].
//!
//! The log prefix names the chain kind and the app's slot (`osn:out:3`); the first bytes of the
//! packet give the protocol, addresses and port.

use crate::netlink::{Message, NLM_F_ACK, NLM_F_REQUEST, Socket, attrs, messages};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;

/// One blocked packet as the log saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    /// `out`, `in` or `host`.
    pub kind: String,
    pub slot: u16,
    pub protocol: String,
    /// The remote side: the destination for `out`/`host`, the source for `in`.
    pub peer: IpAddr,
    pub port: u16,
}

pub struct LogReader {
    socket: Socket,
}

impl LogReader {
    pub fn bind(group: u16) -> io::Result<LogReader> {
        let mut socket = Socket::open(NETLINK_NETFILTER)?;
        let group_be = group.to_be_bytes();
        for config in [0u8, 1] {
            let seq = socket.next_seq();
            let mut m = Message::new((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq);
            m.header(&[libc::AF_UNSPEC as u8, 0, group_be[0], group_be[1]]);
            if config == 0 {
                m.attr(NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]);
            } else {
                let mut mode = [0u8; 6];
                mode[0..4].copy_from_slice(&96u32.to_be_bytes());
                mode[4] = NFULNL_COPY_PACKET;
                m.attr(NFULA_CFG_MODE, &mode);
            }
            socket.transact(&m.finish(), &[seq], "bind NFLOG group")?;
        }
        Ok(LogReader { socket })
    }

    /// Block until packets arrive; returns those that parsed.
    pub fn read(&self) -> io::Result<Vec<Blocked>> {
        let mut buf = vec![0u8; 1 << 16];
        let got = self.socket.recv(&mut buf)?;
        let mut out = Vec::new();
        for (kind, _, payload) in messages(&buf[..got]) {
            if kind != ((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET) || payload.len() < 4 {
                continue;
            }
            let mut prefix = None;
            let mut packet = None;
            for (attr, value) in attrs(&payload[4..]) {
                match attr {
                    NFULA_PREFIX => prefix = Some(String::from_utf8_lossy(value).trim_end_matches('\0').to_owned()),
                    NFULA_PAYLOAD => packet = Some(value),
                    _ => {}
                }
            }
            if let (Some(prefix), Some(packet)) = (prefix, packet) {
                if let Some(blocked) = parse(&prefix, packet) {
                    out.push(blocked);
                }
            }
        }
        Ok(out)
    }
}

fn protocol_name(proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        other => other.to_string(),
    }
}

/// Parse a log prefix and the start of an IP packet.
pub fn parse(prefix: &str, packet: &[u8]) -> Option<Blocked> {
    let mut parts = prefix.split(':');
    if parts.next()? != "osn" {
        return None;
    }
    let kind = parts.next()?.to_owned();
    let slot: u16 = parts.next()?.parse().ok()?;
    let (proto, src, dst, l4) = match packet.first()? >> 4 {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let src = Ipv4Addr::new(*packet.get(12)?, packet[13], packet[14], packet[15]);
            let dst = Ipv4Addr::new(*packet.get(16)?, packet[17], packet[18], packet[19]);
            (*packet.get(9)?, IpAddr::V4(src), IpAddr::V4(dst), packet.get(ihl..).unwrap_or(&[]))
        }
        6 => {
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(packet.get(8..24)?);
            d.copy_from_slice(packet.get(24..40)?);
            (
                *packet.get(6)?,
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                packet.get(40..).unwrap_or(&[]),
            )
        }
        _ => return None,
    };
    let port = match proto {
        6 | 17 => l4.get(2..4).map_or(0, |p| u16::from_be_bytes([p[0], p[1]])),
        _ => 0,
    };
    let peer = if kind == "in" { src } else { dst };
    Some(Blocked { kind, slot, protocol: protocol_name(proto), peer, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ipv4_tcp() {
        let mut packet = vec![0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 213, 0, 6, 192, 0, 2, 12];
        packet.extend_from_slice(&[0xc0, 0x00, 0x00, 0x50]);
        let b = parse("osn:out:1", &packet).unwrap();
        assert_eq!((b.kind.as_str(), b.slot, b.protocol.as_str(), b.port), ("out", 1, "tcp", 80));
        assert_eq!(b.peer.to_string(), "192.0.2.12");
        assert_eq!(parse("other:out:1", &packet), None);
        assert_eq!(parse("osn:out:1", &packet[..10]), None);
    }
}
