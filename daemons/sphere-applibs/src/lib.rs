//! sphere-applibs: the calls a sandboxed high-level app makes to the OpenSphere system, in the
//! spirit of Azure Sphere's applibs.
//!
//! Today: [`application_connect`], Azure Sphere's `Application_Connect(componentId)`: a
//! socket-like handle to one real-time app on the M4 core. The app manager (`sphere-appd`)
//! brokers every message between that socket and the inter-core link, and only connects two apps
//! whose manifests BOTH list each other in `AllowedApplicationConnections`.
//!
//! How it works (see `docs/intercore-apps.md`): the app manager gives each app a private
//! `SOCK_SEQPACKET` socket on fd [`APP_API_FD`] (its number is in the environment variable
//! [`APP_API_FD_ENV`]). `application_connect` sends one request on it, [`wire::connect_request`],
//! and gets back either `ok` with a new connected `SOCK_SEQPACKET` socket (passed with
//! `SCM_RIGHTS`) or a refusal. Each `send` on that socket is one message to the real-time app
//! (at most [`MAX_MESSAGE`] bytes); each `recv` is one message from it. No paths, no network:
//! the sandbox cannot reach the app manager any other way.
//!
//! [`sysevent`]: Azure Sphere's `sysevent.h`: register for system events (an update ready to
//! install, no update available), defer a pending update and resume it, over the same API
//! socket (see `docs/update-deferral.md`).
//!
//! Standard library plus `libc` only, so it costs little in a 16 MB-flash image.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;

/// The fd number of the app's API socket inside the sandbox (sphere-sandbox's `APP_API_FD`).
pub const APP_API_FD: RawFd = 4;
/// Environment variable naming that fd (absent: the app was started without the API).
pub const APP_API_FD_ENV: &str = "SPHERE_APP_API_FD";
/// Largest message payload, the inter-core protocol's (Azure Sphere's sample limit, 1040 bytes).
pub const MAX_MESSAGE: usize = 1040;

/// The request and reply texts on the API socket, shared by the app and the app manager.
pub mod wire {
    /// Reply: connected; the message carries the connection's socket.
    pub const OK: &str = "ok";
    /// Reply prefix: both manifests do not list each other (the app manager records a
    /// violation); the rest of the reply says why.
    pub const REFUSED: &str = "refused ";
    /// Reply prefix: the request could not be served (bad request, no inter-core link).
    pub const ERROR: &str = "error ";
    /// Request prefix.
    pub const CONNECT: &str = "connect ";
    /// Largest request or reply.
    pub const MAX_LEN: usize = 512;

    /// The request for a connection to `component_id`.
    pub fn connect_request(component_id: &str) -> String {
        format!("{CONNECT}{component_id}")
    }

    /// Request prefix: `sysevent-register <mask>`; answered `ok` with the event socket.
    pub const SYSEVENT_REGISTER: &str = "sysevent-register ";
    /// Request prefix: `sysevent-defer <event> <seconds>`; answered `ok <until>`.
    pub const SYSEVENT_DEFER: &str = "sysevent-defer ";
    /// Request prefix: `sysevent-resume <event>`; answered `ok`.
    pub const SYSEVENT_RESUME: &str = "sysevent-resume ";
}

/// The API socket this app was given, if any.
fn api_fd() -> io::Result<RawFd> {
    match std::env::var(APP_API_FD_ENV) {
        Ok(text) => {
            text.trim().parse::<RawFd>().map_err(|_| io::Error::other(format!("{APP_API_FD_ENV}={text} is not an fd")))
        }
        Err(_) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no app manager API in this process (not started by sphere-appd)",
        )),
    }
}

/// Sends one request on the API socket and returns the reply text and the fd it carried.
fn call(request: &str) -> io::Result<(String, Option<OwnedFd>)> {
    let api = api_fd()?;
    // SAFETY: send on an fd number; a wrong number fails with EBADF/ENOTSOCK, nothing else.
    let sent = unsafe { libc::send(api, request.as_ptr().cast(), request.len(), libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut reply = [0u8; wire::MAX_LEN];
    let (len, fd) = recv_with_fd(api, &mut reply)?;
    Ok((String::from_utf8_lossy(&reply[..len]).into_owned(), fd))
}

/// The reply's text after `ok` (`ok` alone: empty), or the refusal / error as an `io::Error`.
fn ok_reply(text: &str) -> io::Result<&str> {
    if text == wire::OK {
        return Ok("");
    }
    if let Some(rest) = text.strip_prefix(wire::OK).and_then(|r| r.strip_prefix(' ')) {
        return Ok(rest);
    }
    if let Some(why) = text.strip_prefix(wire::REFUSED) {
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, why.to_owned()));
    }
    if let Some(why) = text.strip_prefix(wire::ERROR) {
        return Err(io::Error::other(why.to_owned()));
    }
    Err(io::Error::other(format!("unexpected reply from the app manager: {text:?}")))
}

/// Azure Sphere's `Application_Connect`: a connected, message-preserving socket to the
/// real-time app `component_id` (a GUID, as in its manifest).
///
/// Errors: `PermissionDenied` when the two manifests do not both list each other in
/// `AllowedApplicationConnections` (the app manager records an `intercore-refused` violation);
/// `NotFound` when the app was started without the API; other errors for a bad id or a device
/// without an inter-core link. The returned socket is a `SOCK_SEQPACKET` socket driven through
/// std's `UnixDatagram` (same calls: `send`, `recv`, timeouts, non-blocking mode): every `send`
/// is one message of at most [`MAX_MESSAGE`] bytes (longer ones are dropped by the broker), every
/// `recv` returns one message. A `send` blocks (or fails with `WouldBlock`) while the real-time
/// app grants no credit: that is the link's backpressure.
pub fn application_connect(component_id: &str) -> io::Result<UnixDatagram> {
    let api = api_fd()?;
    let request = wire::connect_request(component_id);
    // SAFETY: send on an fd number; a wrong number fails with EBADF/ENOTSOCK, nothing else.
    let sent = unsafe { libc::send(api, request.as_ptr().cast(), request.len(), libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut reply = [0u8; wire::MAX_LEN];
    let (len, fd) = recv_with_fd(api, &mut reply)?;
    let text = String::from_utf8_lossy(&reply[..len]).into_owned();
    match (text.as_str(), fd) {
        (wire::OK, Some(fd)) => Ok(UnixDatagram::from(fd)),
        (refused, _) if refused.starts_with(wire::REFUSED) => {
            Err(io::Error::new(io::ErrorKind::PermissionDenied, refused[wire::REFUSED.len()..].to_owned()))
        }
        (error, _) if error.starts_with(wire::ERROR) => Err(io::Error::other(error[wire::ERROR.len()..].to_owned())),
        (other, _) => Err(io::Error::other(format!("unexpected reply from the app manager: {other:?}"))),
    }
}

pub mod sysevent;

/// Sends one message with an fd attached (`SCM_RIGHTS`). Used by the app manager.
pub fn send_with_fd(socket: RawFd, message: &[u8], fd: RawFd) -> io::Result<()> {
    let mut iov = libc::iovec { iov_base: message.as_ptr() as *mut libc::c_void, iov_len: message.len() };
    // Room for one fd, aligned as cmsghdr wants.
    let mut control = [0u64; 4];
    // SAFETY: a zeroed msghdr is a valid empty header; every pointer set below outlives the call.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    header.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as _;
    // SAFETY: the control buffer is large enough for one cmsghdr carrying one fd (checked by
    // CMSG_SPACE above), so CMSG_FIRSTHDR is non-null and CMSG_DATA points inside it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&header);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
    }
    // SAFETY: a valid msghdr as built above.
    if unsafe { libc::sendmsg(socket, &header, libc::MSG_NOSIGNAL) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one message and the fd attached to it, if any (close-on-exec). A message longer
/// than `buf` is an error (`InvalidData`), not silently cut.
pub fn recv_with_fd(socket: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut control = [0u64; 8];
    // SAFETY: as in send_with_fd.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    header.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: a valid msghdr whose buffers outlive the call.
    let len = unsafe { libc::recvmsg(socket, &mut header, libc::MSG_CMSG_CLOEXEC) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fd = None;
    // SAFETY: walking the control messages the kernel wrote, within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let received = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
                // Only the first fd is kept; any other is closed when its OwnedFd drops.
                let owned = OwnedFd::from_raw_fd(received);
                if fd.is_none() {
                    fd = Some(owned);
                }
            }
            cmsg = libc::CMSG_NXTHDR(&header, cmsg);
        }
    }
    if header.msg_flags & libc::MSG_TRUNC != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "message longer than the buffer"));
    }
    Ok((len as usize, fd))
}

/// A connected pair of `SOCK_SEQPACKET` sockets (close-on-exec).
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair writes two fds into the array on success.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Whether `fd` is open (for checks, not for security).
pub fn is_open(fd: &impl AsRawFd) -> bool {
    // SAFETY: F_GETFD only reads the fd's flags.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) >= 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_fd_crosses_a_seqpacket_pair_with_its_message() {
        let (a, b) = seqpacket_pair().unwrap();
        let (c, d) = seqpacket_pair().unwrap();
        send_with_fd(a.as_raw_fd(), b"ok", c.as_raw_fd()).unwrap();
        let mut buf = [0u8; 16];
        let (len, fd) = recv_with_fd(b.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..len], b"ok");
        let passed = UnixDatagram::from(fd.unwrap());
        // Message boundaries survive: two sends are two receives.
        let d = UnixDatagram::from(d);
        d.send(b"one").unwrap();
        d.send(b"two").unwrap();
        assert_eq!(passed.recv(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"one");
        assert_eq!(passed.recv(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"two");
    }

    #[test]
    fn an_oversized_message_is_an_error_not_a_cut() {
        let (a, b) = seqpacket_pair().unwrap();
        UnixDatagram::from(a).send(&[7u8; 64]).unwrap();
        let mut small = [0u8; 16];
        let error = recv_with_fd(b.as_raw_fd(), &mut small).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn without_the_api_connect_says_so() {
        // The test process has no SPHERE_APP_API_FD.
        if std::env::var(APP_API_FD_ENV).is_err() {
            assert_eq!(
                application_connect("6a1f0e2c-3b4d-4e5f-8a9b-0c1d2e3f4a51").unwrap_err().kind(),
                io::ErrorKind::NotFound
            );
        }
    }
}
