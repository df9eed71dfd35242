//! Static IPv4 configuration with the classic ioctls (SIOCSIFADDR, SIOCSIFNETMASK,
//! SIOCSIFFLAGS, SIOCADDRT): a few hundred bytes of code instead of a netlink library.
//!
//! The QEMU image uses user-mode networking, whose fixed plan is guest 10.0.2.15/24 and
//! gateway 10.0.2.2, so a static configuration in init.json is all it needs (no DHCP client).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::config::{Interface, netmask, parse_cidr};
use crate::log::Log;

/// `struct rtentry` from <net/route.h> (glibc does not get one from the libc crate).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

fn sockaddr_v4(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(addr).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16 bytes and plain data.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= req.ifr_name.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

fn ioctl<T>(sock: &OwnedFd, request: libc::c_ulong, arg: &mut T) -> io::Result<()> {
    // SAFETY: every request used here takes a pointer to the struct type we pass.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request as _, arg as *mut T) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked before being wrapped.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_up(sock: &OwnedFd, name: &str) -> io::Result<()> {
    let mut req = ifreq(name)?;
    ioctl(sock, libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    ioctl(sock, libc::SIOCSIFFLAGS, &mut req)
}

fn set_address(sock: &OwnedFd, name: &str, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_addr = sockaddr_v4(addr);
    ioctl(sock, libc::SIOCSIFADDR, &mut req)?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_netmask = sockaddr_v4(netmask(prefix));
    ioctl(sock, libc::SIOCSIFNETMASK, &mut req)
}

fn add_default_route(sock: &OwnedFd, gateway: Ipv4Addr) -> io::Result<()> {
    let mut route = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr_v4(Ipv4Addr::UNSPECIFIED),
        rt_gateway: sockaddr_v4(gateway),
        rt_genmask: sockaddr_v4(Ipv4Addr::UNSPECIFIED),
        rt_flags: libc::RTF_UP | libc::RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: std::ptr::null_mut(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    match ioctl(sock, libc::SIOCADDRT, &mut route) {
        Err(err) if err.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

fn interface_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// Brings up loopback and each configured interface. Returns how many came up fully.
pub fn configure(log: &mut Log, interfaces: &[Interface]) -> usize {
    let sock = match socket() {
        Ok(sock) => sock,
        Err(err) => {
            log.warn(format!("network: no AF_INET socket: {err}"));
            return 0;
        }
    };
    if let Err(err) = set_address(&sock, "lo", Ipv4Addr::LOCALHOST, 8).and_then(|()| set_up(&sock, "lo")) {
        log.warn(format!("network: lo: {err}"));
    }
    let mut up = 0;
    for iface in interfaces {
        let Ok((addr, prefix)) = parse_cidr(&iface.address) else {
            continue; // rejected by config validation already
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while !interface_exists(&iface.name) && Instant::now() < deadline {
            crate::milestone::sleep(Duration::from_millis(20));
        }
        let result =
            set_address(&sock, &iface.name, addr, prefix).and_then(|()| set_up(&sock, &iface.name)).and_then(|()| {
                match iface.gateway.as_deref().map(str::parse::<Ipv4Addr>) {
                    Some(Ok(gw)) => add_default_route(&sock, gw),
                    _ => Ok(()),
                }
            });
        match result {
            Ok(()) => {
                up += 1;
                log.info(format!(
                    "network: {} {}{}",
                    iface.name,
                    iface.address,
                    iface.gateway.as_deref().map(|g| format!(" via {g}")).unwrap_or_default()
                ));
            }
            Err(err) => log.warn(format!("network: {}: {err}", iface.name)),
        }
    }
    up
}
