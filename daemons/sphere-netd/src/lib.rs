//! sphere-netd: OpenSphere's per-app network firewall (see `docs/network-firewall.md`).
//!
//! Threat model: apps are hostile. An app may send anything from inside its network namespace
//! (forged sources, raw IP through the forwarding path, DNS to any server, rebinding answers
//! from a name it controls) and may look up any name. Only what its manifest's
//! `AllowedConnections` names gets out; only its `AllowedTcpServerPorts` /
//! `AllowedUdpServerPorts` get in; it never reaches other apps or host daemons other than its
//! own DNS proxy. Without `AllowedConnections` it has no outbound network at all.
//!
//! - [`rules`]: the `inet opensphere` table as data (unit-tested, rendered for `sphere net rules`);
//! - [`nft`] and [`netlink`]: the table as one atomic nf_tables netlink batch, set elements;
//! - [`link`]: the app's pinned namespace, veth pair, addresses and routes over rtnetlink;
//! - [`dns`], [`names`], [`proxy`]: the DNS allow-list proxy;
//! - [`nflog`], [`telemetry`]: blocked attempts, rate-limited, aggregated and kept on disk;
//! - [`service`]: set-up and tear-down for sphere-appd, and the D-Bus interface.

pub mod dns;
pub mod firewall;
pub mod link;
pub mod names;
pub mod netlink;
pub mod nflog;
pub mod nft;
pub mod proxy;
pub mod rules;
pub mod service;
pub mod telemetry;
