//! sphere-appd: OpenSphere's app manager.
//!
//! - [`manager`]: starts each installed app in its sandbox (through `sphere-sandbox-exec`),
//!   restarts it with backoff, keeps its output and counts its violations.
//! - [`dbus`]: the `org.opensphere.AppManager1` D-Bus API (see `sphere-appd-api`).
//! - [`intercore`]: the broker between high-level apps and real-time apps on the other core
//!   (`Application_Connect`), over the inter-core link the manager owns.
//! - [`sysevent`]: system events for apps (an update ready to install) and their deferral
//!   requests, relayed between the update daemon and the apps' API sockets.
//! - [`store`]: the on-device app store. Installs are atomic: a crash or power cut at any point
//!   leaves each app fully at its old version or fully at its new one, never a mix, and the
//!   store repairs itself when it is next opened.
//!
//! Apps are identified by their manifest's ComponentId, as on Azure Sphere.

pub mod config;
pub mod dbus;
pub mod dev_port;
pub mod intercore;
pub mod manager;
pub mod network;
pub mod store;
pub mod sysevent;
