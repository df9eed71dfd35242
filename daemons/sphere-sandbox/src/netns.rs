//! Each app's own network namespace, created once and pinned, then entered at every launch.
//!
//! Why not a fresh namespace per launch: creating a network namespace is the most expensive part
//! of starting a sandbox (1–2 ms here, more than everything else together), and the firewall
//! daemon attaches a veth and rules to an app's namespace, which must survive the app's restarts.
//! So the launcher creates the namespace on the app's first start (as root, so it is owned by
//! the initial user namespace: the app, even inside its own user namespace, has no
//! CAP_NET_ADMIN over it), brings up loopback, pins it with a bind mount at
//! `<runtime>/netns/<component-id>`, and on every start joins it with `setns` before cloning the
//! app. Different apps never share one. Removing an app calls [`remove`].

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

fn pin_path(runtime_dir: &Path, component_id: &str) -> PathBuf {
    runtime_dir.join("netns").join(component_id)
}

fn os_error(context: &str) -> io::Error {
    let error = io::Error::last_os_error();
    io::Error::new(error.kind(), format!("{context}: {error}"))
}

/// Move the calling (single-threaded launcher) process into the app's network namespace,
/// creating and pinning it first if needed. The app, cloned afterwards, inherits it.
pub fn enter(runtime_dir: &Path, component_id: &str) -> io::Result<()> {
    let pin = pin_path(runtime_dir, component_id);
    if crate::storage::is_mounted(&pin) {
        let namespace = File::open(&pin)?;
        // SAFETY: setns with a namespace fd we own.
        if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(os_error("setns into the app's network namespace"));
        }
        return Ok(());
    }
    create(&pin)
}

fn create(pin: &Path) -> io::Result<()> {
    if let Some(parent) = pin.parent() {
        fs::create_dir_all(parent)?;
    }
    File::create(pin)?; // The bind mount needs a file to cover.
    // SAFETY: unshare with a flag; the launcher is single-threaded (checked by spawn).
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(os_error("unshare(CLONE_NEWNET)"));
    }
    loopback_up()?;
    // Landlock decides which ports an app may bind (its AllowedTcpServerPorts, which may be
    // below 1024); the privileged-port rule would otherwise refuse those to an app without
    // capabilities. Per namespace, so the host keeps its own setting.
    let _ = fs::write("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0");
    nix::mount::mount(Some("/proc/self/ns/net"), pin, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)
        .map_err(|errno| io::Error::other(format!("pin network namespace at {}: {errno}", pin.display())))
}

fn loopback_up() -> io::Result<()> {
    // SAFETY: a socket used only for one ioctl on a zeroed, NUL-terminated ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(os_error("socket for loopback"));
        }
        let mut request: libc::ifreq = std::mem::zeroed();
        request.ifr_name[0] = b'l' as libc::c_char;
        request.ifr_name[1] = b'o' as libc::c_char;
        request.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        let result = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &request);
        libc::close(fd);
        if result != 0 {
            return Err(os_error("bring up lo"));
        }
    }
    Ok(())
}

/// Unpin (and so, once no process is in it, destroy) an app's network namespace: on uninstall.
pub fn remove(runtime_dir: &Path, component_id: &str) -> io::Result<()> {
    let pin = pin_path(runtime_dir, component_id);
    if crate::storage::is_mounted(&pin) {
        nix::mount::umount2(&pin, nix::mount::MntFlags::MNT_DETACH).map_err(io::Error::from)?;
    }
    match fs::remove_file(&pin) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}
