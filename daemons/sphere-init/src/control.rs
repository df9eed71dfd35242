//! Shutdown requests from inside (a root-only datagram socket) and from the host (a
//! virtio-serial port), in addition to the signals handled by the supervisor:
//! SIGUSR1/SIGUSR2 = poweroff, SIGTERM/SIGINT (Ctrl-Alt-Del) = reboot.
//!
//! Both channels take one command per datagram / line: `poweroff` or `reboot`.
//! The host side of the port is scripts/run-qemu.sh's `--ctl-socket`.

use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use crate::linebuf::LineSplitter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Poweroff,
    Reboot,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Poweroff => "poweroff",
            Action::Reboot => "reboot",
        }
    }
}

/// Parses one command (surrounding whitespace ignored).
pub fn parse_command(text: &str) -> Option<Action> {
    match text.trim() {
        "poweroff" | "halt" => Some(Action::Poweroff),
        "reboot" => Some(Action::Reboot),
        _ => None,
    }
}

pub struct ControlSocket {
    socket: UnixDatagram,
}

impl ControlSocket {
    pub fn bind(path: &str) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(path);
        if let Some(dir) = Path::new(path).parent() {
            std::fs::create_dir_all(dir)?;
        }
        let socket = UnixDatagram::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        socket.set_nonblocking(true)?;
        Ok(ControlSocket { socket })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// Drains pending datagrams; returns the texts received.
    pub fn receive(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = self.socket.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }
}

/// The virtio-serial port named `name` (found through /sys/class/virtio-ports; there is no
/// udev to make /dev/virtio-ports/NAME links).
pub struct VirtioPort {
    fd: OwnedFd,
    pub path: PathBuf,
    lines: LineSplitter,
}

impl VirtioPort {
    pub fn open(name: &str) -> Option<Self> {
        let entries = std::fs::read_dir("/sys/class/virtio-ports").ok()?;
        for entry in entries.flatten() {
            let matches = std::fs::read_to_string(entry.path().join("name")).map(|n| n.trim() == name).unwrap_or(false);
            if !matches {
                continue;
            }
            let path = Path::new("/dev").join(entry.file_name());
            let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
            // SAFETY: opening a NUL-terminated path; the result is checked.
            let fd = unsafe {
                libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
            };
            if fd < 0 {
                return None;
            }
            // SAFETY: fd is a fresh descriptor we own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            return Some(VirtioPort { fd, path, lines: LineSplitter::new(256) });
        }
        None
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Reads what is available; returns complete lines. `None` means the host end is not
    /// connected (read returned EOF): the caller stops polling for a while.
    pub fn read_lines(&mut self) -> Option<Vec<String>> {
        let mut buf = [0u8; 256];
        let mut lines = Vec::new();
        loop {
            match nix::unistd::read(&self.fd, &mut buf) {
                Ok(0) => return if lines.is_empty() { None } else { Some(lines) },
                Ok(n) => lines.extend(self.lines.feed(&buf[..n])),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return Some(lines),
            }
        }
    }

    pub fn reply(&self, text: &str) {
        let _ = nix::unistd::write(&self.fd, format!("{text}\n").as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(parse_command("poweroff\n"), Some(Action::Poweroff));
        assert_eq!(parse_command(" reboot "), Some(Action::Reboot));
        assert_eq!(parse_command("halt"), Some(Action::Poweroff));
        assert_eq!(parse_command("rm -rf /"), None);
        assert_eq!(Action::Poweroff.name(), "poweroff");
    }

    #[test]
    fn socket_receives_datagrams() {
        let path = std::env::temp_dir().join(format!("sphere-init-ctl-{}", std::process::id()));
        let path_str = path.to_string_lossy().into_owned();
        let ctl = ControlSocket::bind(&path_str).expect("bind");
        let client = UnixDatagram::unbound().expect("client");
        client.send_to(b"reboot", &path).expect("send");
        assert_eq!(ctl.receive(), vec!["reboot".to_string()]);
        let _ = std::fs::remove_file(&path);
    }
}
