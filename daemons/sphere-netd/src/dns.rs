//! Just enough DNS (RFC 1035) for the proxy: the question of a query, and the answer records of
//! a response, with the byte offset of each TTL so the proxy can cap it in place.
//!
//! Both apps and the upstream are untrusted input: every read is bounds-checked, compression
//! pointers must point backwards (no loops), names are at most 255 bytes, and a label holding a
//! dot or a byte outside printable ASCII is refused rather than escaped, so the name the proxy
//! matches against the allow-list is exactly the name the upstream resolves.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const CLASS_IN: u16 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_REFUSED: u8 = 5;
pub const RCODE_FORMERR: u8 = 1;
const HEADER: usize = 12;
const MAX_NAME: usize = 255;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    Truncated,
    BadName,
    NotOneQuestion,
    NotAQuery,
    NotAResponse,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Error::Truncated => "message is truncated",
            Error::BadName => "malformed name",
            Error::NotOneQuestion => "not exactly one question",
            Error::NotAQuery => "not a standard query",
            Error::NotAResponse => "not a response",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    /// Lower case, without the final dot; empty for the root.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// Offset just past the question (header + question is a valid error reply's body).
    pub end: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
    /// SRV target host.
    Srv(String),
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub rtype: u16,
    pub ttl: u32,
    pub ttl_offset: usize,
    pub data: RData,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub id: u16,
    pub rcode: u8,
    pub question: Question,
    pub answers: Vec<Record>,
}

fn u16_at(buf: &[u8], at: usize) -> Result<u16, Error> {
    buf.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or(Error::Truncated)
}

fn u32_at(buf: &[u8], at: usize) -> Result<u32, Error> {
    buf.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).ok_or(Error::Truncated)
}

/// Read a (possibly compressed) name at `at`; returns it and the offset after it in place.
pub fn read_name(buf: &[u8], mut at: usize) -> Result<(String, usize), Error> {
    let mut name = String::new();
    let mut end = None;
    let mut wire_len = 0usize;
    loop {
        let len = *buf.get(at).ok_or(Error::Truncated)? as usize;
        match len & 0xc0 {
            0x00 if len == 0 => {
                let after = end.unwrap_or(at + 1);
                return Ok((name, after));
            }
            0x00 => {
                let label = buf.get(at + 1..at + 1 + len).ok_or(Error::Truncated)?;
                wire_len += len + 1;
                if wire_len + 1 > MAX_NAME {
                    return Err(Error::BadName);
                }
                if label.iter().any(|&b| b == b'.' || !(0x21..0x7f).contains(&b)) {
                    return Err(Error::BadName);
                }
                if !name.is_empty() {
                    name.push('.');
                }
                name.extend(label.iter().map(|b| b.to_ascii_lowercase() as char));
                at += 1 + len;
            }
            0xc0 => {
                let target = (u16_at(buf, at)? & 0x3fff) as usize;
                // Only backwards (every jump strictly decreases the offset, so no loops), and
                // never into the header, which holds no names (and which replies rewrite).
                if target >= at || target < HEADER {
                    return Err(Error::BadName);
                }
                end.get_or_insert(at + 2);
                at = target;
            }
            _ => return Err(Error::BadName),
        }
    }
}

fn question(buf: &[u8]) -> Result<Question, Error> {
    if u16_at(buf, 4)? != 1 {
        return Err(Error::NotOneQuestion);
    }
    let (name, at) = read_name(buf, HEADER)?;
    Ok(Question { name, qtype: u16_at(buf, at)?, qclass: u16_at(buf, at + 2)?, end: at + 4 })
}

/// The question of a standard query (QR 0, opcode 0, one question).
pub fn parse_query(buf: &[u8]) -> Result<Question, Error> {
    let flags = u16_at(buf, 2)?;
    if flags & 0x8000 != 0 || (flags >> 11) & 0xf != 0 {
        return Err(Error::NotAQuery);
    }
    question(buf)
}

/// A response's question and answer records (authority and additional sections are ignored:
/// their addresses are never added to an app's set).
pub fn parse_response(buf: &[u8]) -> Result<Response, Error> {
    let flags = u16_at(buf, 2)?;
    if flags & 0x8000 == 0 {
        return Err(Error::NotAResponse);
    }
    let question = question(buf)?;
    let count = u16_at(buf, 6)?;
    let mut at = question.end;
    let mut answers = Vec::new();
    for _ in 0..count {
        let (name, after) = read_name(buf, at)?;
        let rtype = u16_at(buf, after)?;
        let ttl_offset = after + 4;
        let ttl = u32_at(buf, ttl_offset)?;
        let len = u16_at(buf, after + 8)? as usize;
        let start = after + 10;
        let rdata = buf.get(start..start + len).ok_or(Error::Truncated)?;
        let data = match (rtype, len) {
            (TYPE_A, 4) => RData::A(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3])),
            (TYPE_AAAA, 16) => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(rdata);
                RData::Aaaa(Ipv6Addr::from(octets))
            }
            (TYPE_A | TYPE_AAAA, _) => return Err(Error::Truncated),
            (TYPE_CNAME, _) => RData::Cname(read_name(buf, start)?.0),
            (TYPE_SRV, _) if len >= 7 => RData::Srv(read_name(buf, start + 6)?.0),
            _ => RData::Other,
        };
        answers.push(Record { name, rtype, ttl, ttl_offset, data });
        at = start + len;
    }
    Ok(Response { id: u16_at(buf, 0)?, rcode: (flags & 0xf) as u8, question, answers })
}

/// A reply to `query` with no records and `rcode` (header and question of the query).
pub fn error_reply(query: &[u8], question_end: usize, rcode: u8) -> Vec<u8> {
    let end = question_end.min(query.len());
    let mut reply = query[..end].to_vec();
    if reply.len() < HEADER {
        reply.resize(HEADER, 0);
    }
    // QR=1, keep opcode and RD, RA=1, rcode; one question (or none if it did not parse).
    let rd = reply[2] & 0x01;
    reply[2] = 0x80 | (reply[2] & 0x78) | rd;
    reply[3] = 0x80 | (rcode & 0xf);
    let qd: u16 = if end > HEADER { 1 } else { 0 };
    reply[4..6].copy_from_slice(&qd.to_be_bytes());
    reply[6..12].fill(0);
    reply
}

/// Overwrite the TTL at `offset` (from [`Record::ttl_offset`]).
pub fn set_ttl(buf: &mut [u8], offset: usize, ttl: u32) {
    if let Some(slot) = buf.get_mut(offset..offset + 4) {
        slot.copy_from_slice(&ttl.to_be_bytes());
    }
}

/// Build a query (used by the tests and the benchmark's client).
pub fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + name.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len().min(63) as u8);
        out.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(query: &[u8], records: &[(u16, u32, &[u8])]) -> Vec<u8> {
        let mut out = query.to_vec();
        out[2] = 0x81;
        out[3] = 0x80;
        out[6..8].copy_from_slice(&(records.len() as u16).to_be_bytes());
        for (rtype, ttl, data) in records {
            out.extend_from_slice(&[0xc0, 12]);
            out.extend_from_slice(&rtype.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&ttl.to_be_bytes());
            out.extend_from_slice(&(data.len() as u16).to_be_bytes());
            out.extend_from_slice(data);
        }
        out
    }

    #[test]
    fn query_round_trip_lower_cases() {
        let query = build_query(7, "Allowed.Example.COM", TYPE_A);
        let q = parse_query(&query).unwrap();
        assert_eq!(q.name, "allowed.example.com");
        assert_eq!((q.qtype, q.qclass, q.end), (TYPE_A, CLASS_IN, query.len()));
    }

    #[test]
    fn answers_and_ttl_offsets() {
        let query = build_query(9, "a.example.com", TYPE_A);
        let mut reply = response(
            &query,
            &[
                (TYPE_A, 300, &[192, 0, 2, 10]),
                (TYPE_AAAA, 60, &[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10]),
            ],
        );
        let parsed = parse_response(&reply).unwrap();
        assert_eq!(parsed.id, 9);
        assert_eq!(parsed.answers[0].data, RData::A(Ipv4Addr::new(192, 0, 2, 10)));
        assert_eq!(parsed.answers[0].name, "a.example.com");
        assert_eq!(parsed.answers[1].data, RData::Aaaa("2001:db8::10".parse().unwrap()));
        set_ttl(&mut reply, parsed.answers[0].ttl_offset, 30);
        assert_eq!(parse_response(&reply).unwrap().answers[0].ttl, 30);
    }

    #[test]
    fn hostile_names_are_refused() {
        // A pointer to itself (a loop) and a forward pointer.
        let mut looped = build_query(1, "x", TYPE_A);
        looped.truncate(12);
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(parse_query(&looped), Err(Error::BadName));
        // A label with a dot inside would match "allowed.example.com" as text.
        let mut dotted = build_query(1, "x", TYPE_A);
        dotted.truncate(12);
        dotted
            .extend_from_slice(&[11, b'a', b'l', b'l', b'o', b'w', b'e', b'd', b'.', b'c', b'o', b'm', 0, 0, 1, 0, 1]);
        assert_eq!(parse_query(&dotted), Err(Error::BadName));
        // Too long: 5 labels of 63.
        let long = build_query(1, &vec!["a".repeat(63); 5].join("."), TYPE_A);
        assert_eq!(parse_query(&long), Err(Error::BadName));
        assert_eq!(parse_query(&[0; 5]), Err(Error::Truncated));
    }

    #[test]
    fn error_replies_keep_id_and_question() {
        let query = build_query(0x4242, "blocked.example.net", TYPE_A);
        let q = parse_query(&query).unwrap();
        let reply = error_reply(&query, q.end, RCODE_NXDOMAIN);
        let parsed = parse_response(&reply).unwrap();
        assert_eq!((parsed.id, parsed.rcode), (0x4242, RCODE_NXDOMAIN));
        assert_eq!(parsed.question.name, "blocked.example.net");
        assert!(parsed.answers.is_empty());
    }
}
