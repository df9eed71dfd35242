//! The network firewall daemon's D-Bus API, shared by `sphere-netd` (server), `sphere-appd`
//! (which asks for an app's compartment at start and stop) and `sphere` (`sphere net ...`).
//!
//! One crate holds the interface name, object path, wire types and proxy so the sides cannot
//! drift apart, as for `sphere-appd-api`. Transport: the system bus where a bus daemon runs,
//! otherwise a peer-to-peer D-Bus connection on [`P2P_SOCKET`] (root only, mode 0600).

use serde::{Deserialize, Serialize};
use zbus::zvariant::Type;

pub const BUS_NAME: &str = "org.opensphere.Network1";
pub const OBJECT_PATH: &str = "/org/opensphere/Network1";
pub const INTERFACE: &str = "org.opensphere.Network1";
/// Peer-to-peer socket used when no bus daemon runs.
pub const P2P_SOCKET: &str = "/run/sphere/netd.sock";

/// An app's network compartment as set up by the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct Compartment {
    pub component_id: String,
    /// Host side of the app's veth pair, e.g. `sph3`.
    pub host_interface: String,
    /// The app's own addresses (inside its network namespace, on `eth0`).
    pub address_v4: String,
    pub address_v6: String,
    /// The host side's addresses: the app's gateway and its DNS proxy.
    pub gateway_v4: String,
    pub gateway_v6: String,
    /// The resolv.conf the sandbox mounts at the app's `/etc/resolv.conf`.
    pub resolv_conf: String,
}

/// One name-derived address currently allowed for an app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct ResolvedAddress {
    pub name: String,
    pub address: String,
    /// Seconds until the address leaves the app's set (unless answered again).
    pub expires_in: u64,
}

/// The effective rules of one app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct AppRules {
    pub compartment: Compartment,
    /// `AllowedConnections` as written in the manifest.
    pub allowed_connections: Vec<String>,
    pub tcp_server_ports: Vec<u16>,
    pub udp_server_ports: Vec<u16>,
    /// Addresses the DNS proxy added from allowed names' answers.
    pub resolved: Vec<ResolvedAddress>,
    /// The app's chains in the `inet opensphere` table, in nft syntax.
    pub nft: Vec<String>,
}

/// Blocked attempts of one app to one destination, aggregated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct BlockedAttempt {
    pub component_id: String,
    /// `outbound` (app to a destination it may not reach), `inbound` (to a port it does not
    /// serve), `host` (to a host daemon), `dns` (a name it may not resolve) or `dns-rebind`
    /// (an allowed public name that answered with a private address).
    pub kind: String,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or the IP protocol number.
    pub protocol: String,
    /// An address, or a name for `dns` and `dns-rebind`.
    pub destination: String,
    pub port: u16,
    pub count: u64,
    /// Unix seconds.
    pub first_seen: u64,
    pub last_seen: u64,
}

/// Client side of `org.opensphere.Network1`.
#[zbus::proxy(
    interface = "org.opensphere.Network1",
    default_service = "org.opensphere.Network1",
    default_path = "/org/opensphere/Network1"
)]
pub trait Network {
    /// Set up (or refresh) the app's compartment: its network namespace at `netns_path`
    /// (created and pinned there if missing), its veth pair, addresses, DNS proxy and rules,
    /// from the installed manifest at `manifest_path`.
    fn setup_app(&self, component_id: &str, netns_path: &str, manifest_path: &str) -> zbus::Result<Compartment>;
    /// Remove the app's veth pair, rules and resolved addresses (the namespace stays pinned).
    fn teardown_app(&self, component_id: &str) -> zbus::Result<()>;
    fn apps(&self) -> zbus::Result<Vec<Compartment>>;
    fn rules(&self, component_id: &str) -> zbus::Result<AppRules>;
    /// Recent blocked attempts, all apps, newest first.
    fn blocked(&self) -> zbus::Result<Vec<BlockedAttempt>>;
}
