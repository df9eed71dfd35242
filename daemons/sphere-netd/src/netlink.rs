//! A small netlink message writer and request/acknowledge loop.
//!
//! Why our own instead of a netlink crate: the daemon needs a handful of rtnetlink messages
//! (veth, addresses, routes) and nf_tables batches, all of which are flat TLV encodings; the
//! pure-Rust nf_tables crates either pull in libnftnl/libmnl (C libraries the image does not
//! ship) or need a newer compiler than the device toolchain (1.85). A ~200-line writer that we
//! test against the running kernel is less to trust than either.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
pub const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// One netlink message being written: header, fixed family header, attributes.
pub struct Message {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Message {
    pub fn new(kind: u16, flags: u16, seq: u32) -> Message {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in finish()
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
        Message { buf, nests: Vec::new() }
    }

    /// Raw bytes of the family header (nfgenmsg, ifinfomsg, ...), already padded by the caller.
    pub fn header(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self.pad();
        self
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    pub fn attr(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = 4 + value.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.pad();
        self
    }

    /// A NUL-terminated string attribute.
    pub fn str(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut bytes = Vec::with_capacity(value.len() + 1);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
        self.attr(kind, &bytes)
    }

    pub fn be32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.attr(kind, &value.to_be_bytes())
    }

    pub fn be64(&mut self, kind: u16, value: u64) -> &mut Self {
        self.attr(kind, &value.to_be_bytes())
    }

    pub fn u32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.attr(kind, &value.to_ne_bytes())
    }

    pub fn begin(&mut self, kind: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    pub fn end(&mut self) -> &mut Self {
        if let Some(start) = self.nests.pop() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        debug_assert!(self.nests.is_empty(), "unclosed nested attribute");
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// A netlink socket of one protocol, bound in the network namespace it was created in.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

fn os_error(context: &str) -> io::Error {
    let error = io::Error::last_os_error();
    io::Error::new(error.kind(), format!("{context}: {error}"))
}

impl Socket {
    pub fn open(protocol: i32) -> io::Result<Socket> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
        if fd < 0 {
            return Err(os_error("netlink socket"));
        }
        // SAFETY: fd is a fresh, valid descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Large batches (100 apps) are one sendmsg; give the kernel room for their acks.
        let size: libc::c_int = 4 << 20;
        // SAFETY: setsockopt with a pointer to a live c_int.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            );
        }
        Ok(Socket { fd, seq: 1 })
    }

    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    pub fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    pub fn send(&self, bytes: &[u8]) -> io::Result<()> {
        // A batch is one datagram: the send buffer must hold all of it (100 apps is ~1 MB).
        if bytes.len() > 200_000 {
            let size = (bytes.len() * 2).min(i32::MAX as usize) as libc::c_int;
            // SAFETY: setsockopt with a pointer to a live c_int. FORCE needs CAP_NET_ADMIN,
            // which the daemon has; the plain option is the fallback (capped by wmem_max).
            unsafe {
                let ptr = (&size as *const libc::c_int).cast();
                let len = std::mem::size_of::<libc::c_int>() as u32;
                if libc::setsockopt(self.fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, ptr, len) != 0 {
                    libc::setsockopt(self.fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, ptr, len);
                }
            }
        }
        // SAFETY: sending a buffer we own to the kernel (address 0 = the kernel).
        let sent = unsafe {
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as u16;
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            return Err(os_error("netlink send"));
        }
        Ok(())
    }

    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: receiving into a buffer we own.
        let got = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if got < 0 {
            // The bare OS error: callers tell ENOBUFS (log messages dropped) from real failures.
            return Err(io::Error::last_os_error());
        }
        Ok(got as usize)
    }

    /// Send `bytes` (one message or a batch) and wait for an acknowledgement of every sequence
    /// number in `acks`; the first error reported by the kernel is returned.
    pub fn transact(&self, bytes: &[u8], acks: &[u32], what: &str) -> io::Result<Vec<Vec<u8>>> {
        self.send(bytes)?;
        let mut pending: Vec<u32> = acks.to_vec();
        let mut replies = Vec::new();
        let mut first_error: Option<io::Error> = None;
        let mut buf = vec![0u8; 1 << 16];
        while !pending.is_empty() {
            let got = self.recv(&mut buf)?;
            for (kind, seq, payload) in messages(&buf[..got]) {
                match kind {
                    NLMSG_ERROR => {
                        let code = payload.get(0..4).map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        pending.retain(|s| *s != seq);
                        if code != 0 && first_error.is_none() {
                            let error = io::Error::from_raw_os_error(-code);
                            first_error = Some(io::Error::new(error.kind(), format!("{what}: {error}")));
                        }
                    }
                    NLMSG_DONE => pending.retain(|s| *s != seq),
                    _ => replies.push(payload.to_vec()),
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(replies),
        }
    }
}

/// Split a receive buffer into (type, sequence, payload) messages; stops at the first malformed one.
pub fn messages(buf: &[u8]) -> Vec<(u16, u32, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        if len < 16 || at + len > buf.len() {
            break;
        }
        let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
        let seq = u32::from_ne_bytes([buf[at + 8], buf[at + 9], buf[at + 10], buf[at + 11]]);
        out.push((kind, seq, &buf[at + 16..at + len]));
        at += (len + 3) & !3;
    }
    out
}

/// Attributes of a flat TLV area: (type without flags, value).
pub fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((kind, &buf[4..len]));
        let next = (len + 3) & !3;
        buf = buf.get(next..).unwrap_or(&[]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_are_sized_and_padded() {
        let mut message = Message::new(16, NLM_F_REQUEST, 7);
        message.header(&[1, 0, 0, 0]);
        message.begin(4).str(1, "abc").end();
        let bytes = message.finish();
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize, bytes.len());
        let parsed = messages(&bytes);
        assert_eq!(parsed.len(), 1);
        let (kind, seq, payload) = parsed[0];
        assert_eq!((kind, seq), (16, 7));
        let outer = attrs(&payload[4..]);
        assert_eq!(outer.len(), 1);
        assert_eq!(outer[0].0, 4);
        assert_eq!(attrs(outer[0].1), vec![(1, &b"abc\0"[..])]);
    }
}
