//! The app's side of the network: its pinned namespace, a veth pair, addresses and routes, all
//! through rtnetlink (no `ip` binary on the device).
//!
//! Sockets belong to the namespace they are created in, so the app-side steps run on a short
//! thread that `setns`es into the app's namespace, opens its own rtnetlink socket and ends;
//! the daemon's other threads never change namespace.

use crate::netlink::{Message, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, Socket};
use crate::rules;
use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFLA_NET_NS_FD: u16 = 28;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_NODAD: u32 = 0x02;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const NSFS_MAGIC: i64 = 0x6e73_6673;
/// The app's interface name inside its namespace.
pub const APP_IFACE: &str = "eth0";

fn ifinfo(index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[4..8].copy_from_slice(&index.to_ne_bytes());
    bytes[8..12].copy_from_slice(&flags.to_ne_bytes());
    bytes[12..16].copy_from_slice(&change.to_ne_bytes());
    bytes
}

fn index_of(name: &str) -> io::Result<i32> {
    let cname = CString::new(name).map_err(|_| io::Error::other("interface name with NUL"))?;
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Err(io::Error::other(format!("no interface {name}")));
    }
    Ok(index as i32)
}

fn request(socket: &mut Socket, kind: u16, flags: u16, what: &str, build: impl FnOnce(&mut Message)) -> io::Result<()> {
    let seq = socket.next_seq();
    let mut message = Message::new(kind, NLM_F_REQUEST | NLM_F_ACK | flags, seq);
    build(&mut message);
    socket.transact(&message.finish(), &[seq], what).map(|_| ())
}

fn delete_link(socket: &mut Socket, name: &str) -> io::Result<()> {
    let result = request(socket, RTM_DELLINK, 0, &format!("delete {name}"), |m| {
        m.header(&ifinfo(0, 0, 0)).str(IFLA_IFNAME, name);
    });
    match result {
        Err(error) if error.raw_os_error().is_none() && error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) if error.to_string().contains("No such device") => Ok(()),
        other => other,
    }
}

fn link_up(socket: &mut Socket, index: i32) -> io::Result<()> {
    let up = libc::IFF_UP as u32;
    request(socket, RTM_NEWLINK, 0, "set link up", |m| {
        m.header(&ifinfo(index, up, up));
    })
}

fn add_address(socket: &mut Socket, index: i32, address: IpAddr, prefix: u8) -> io::Result<()> {
    let (family, bytes) = match address {
        IpAddr::V4(v4) => (libc::AF_INET as u8, v4.octets().to_vec()),
        IpAddr::V6(v6) => (libc::AF_INET6 as u8, v6.octets().to_vec()),
    };
    let mut header = [0u8; 8];
    header[0] = family;
    header[1] = prefix;
    header[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
    // Duplicate address detection would keep the address "tentative" (unbindable) for a second
    // or more; both ends of the pair are ours, so there is nothing to detect.
    request(socket, RTM_NEWADDR, NLM_F_CREATE | libc::NLM_F_REPLACE as u16, &format!("add address {address}"), |m| {
        m.header(&header).attr(IFA_LOCAL, &bytes).attr(IFA_ADDRESS, &bytes).u32(IFA_FLAGS, IFA_F_NODAD);
    })
}

fn default_route(socket: &mut Socket, index: i32, gateway: IpAddr) -> io::Result<()> {
    let (family, bytes) = match gateway {
        IpAddr::V4(v4) => (libc::AF_INET as u8, v4.octets().to_vec()),
        IpAddr::V6(v6) => (libc::AF_INET6 as u8, v6.octets().to_vec()),
    };
    // rtmsg: family, dst_len 0 (default), src_len, tos, table main, protocol boot, scope
    // universe, type unicast, flags.
    let header = [
        family,
        0,
        0,
        0,
        libc::RT_TABLE_MAIN,
        libc::RTPROT_BOOT,
        libc::RT_SCOPE_UNIVERSE,
        libc::RTN_UNICAST,
        0,
        0,
        0,
        0,
    ];
    request(
        socket,
        RTM_NEWROUTE,
        NLM_F_CREATE | libc::NLM_F_REPLACE as u16,
        &format!("default route via {gateway}"),
        |m| {
            m.header(&header).attr(RTA_GATEWAY, &bytes).u32(RTA_OIF, index as u32);
        },
    )
}

/// Is `path` a pinned network namespace (an nsfs bind mount)?
pub fn is_pinned(path: &Path) -> bool {
    let Ok(file) = File::open(path) else { return false };
    // SAFETY: fstatfs into a zeroed struct we own.
    unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        libc::fstatfs(file.as_raw_fd(), &mut stat) == 0 && stat.f_type as i64 == NSFS_MAGIC
    }
}

/// Run `job` on a thread inside the namespace at `netns` (or a new one when `create` is set).
fn in_namespace<T: Send + 'static>(
    netns: PathBuf,
    create: bool,
    job: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let handle = std::thread::spawn(move || -> io::Result<T> {
        // SAFETY: setns/unshare(CLONE_NEWNET) change only this thread's namespace; the thread
        // ends when the job is done.
        if create {
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
        } else {
            let file = File::open(&netns)?;
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        job()
    });
    handle.join().map_err(|_| io::Error::other("network namespace thread panicked"))?
}

/// Create and pin the app's namespace at `pin` if the sandbox has not yet (the same shape the
/// sandbox launcher makes: loopback up, unprivileged port floor 0, owned by the host's user
/// namespace). The launcher then joins this one.
pub fn ensure_namespace(pin: &Path) -> io::Result<()> {
    if is_pinned(pin) {
        return Ok(());
    }
    if let Some(parent) = pin.parent() {
        fs::create_dir_all(parent)?;
    }
    File::create(pin)?;
    let target = pin.to_path_buf();
    in_namespace(pin.to_path_buf(), true, move || {
        let mut socket = Socket::open(libc::NETLINK_ROUTE)?;
        link_up(&mut socket, index_of("lo")?)?;
        let _ = fs::write("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0");
        // /proc/self/ns/net is the process's (main thread's) namespace; this thread's is here.
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|errno| io::Error::other(format!("pin network namespace at {}: {errno}", target.display())))
    })
}

/// Turn on forwarding for the host (apps reach the uplink through it).
pub fn enable_forwarding() -> io::Result<()> {
    fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
    fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1")
}

/// Create the app's veth pair (host side `sph<slot>`, app side `eth0` in its namespace) with
/// its addresses and default routes. Any previous pair of this slot or this app is replaced.
pub fn setup(slot: u16, netns: &Path) -> io::Result<()> {
    let host = rules::interface(slot);
    let (gw4, app4, gw6, app6) = rules::addresses(slot);
    let mut socket = Socket::open(libc::NETLINK_ROUTE)?;
    delete_link(&mut socket, &host)?;
    // An eth0 left in the namespace by an earlier daemon run (another slot) would block the peer.
    in_namespace(netns.to_path_buf(), false, || {
        let mut socket = Socket::open(libc::NETLINK_ROUTE)?;
        delete_link(&mut socket, APP_IFACE)
    })?;
    let ns_file = File::open(netns)?;
    request(&mut socket, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &format!("create veth {host}"), |m| {
        m.header(&ifinfo(0, 0, 0)).str(IFLA_IFNAME, &host);
        m.begin(IFLA_LINKINFO).str(IFLA_INFO_KIND, "veth").begin(IFLA_INFO_DATA).begin(VETH_INFO_PEER);
        m.header(&ifinfo(0, 0, 0)).str(IFLA_IFNAME, APP_IFACE).u32(IFLA_NET_NS_FD, ns_file.as_raw_fd() as u32);
        m.end().end().end();
    })?;
    let index = index_of(&host)?;
    add_address(&mut socket, index, IpAddr::V4(gw4), 30)?;
    add_address(&mut socket, index, IpAddr::V6(gw6), 64)?;
    link_up(&mut socket, index)?;
    in_namespace(netns.to_path_buf(), false, move || {
        let mut socket = Socket::open(libc::NETLINK_ROUTE)?;
        let index = index_of(APP_IFACE)?;
        add_address(&mut socket, index, IpAddr::V4(app4), 30)?;
        add_address(&mut socket, index, IpAddr::V6(app6), 64)?;
        link_up(&mut socket, index)?;
        default_route(&mut socket, index, IpAddr::V4(gw4))?;
        default_route(&mut socket, index, IpAddr::V6(gw6))
    })
}

/// Remove the app's veth pair (both ends go together).
pub fn teardown(slot: u16) -> io::Result<()> {
    let mut socket = Socket::open(libc::NETLINK_ROUTE)?;
    delete_link(&mut socket, &rules::interface(slot))
}
