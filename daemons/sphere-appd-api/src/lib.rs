//! The app manager's D-Bus API, shared by `sphere-appd` (server) and `sphere` (client).
//!
//! One crate holds the interface name, object path, wire types and proxy so the two sides cannot
//! drift apart (Bottlerocket's `update_metadata` pattern). The XML introspection is checked into
//! `docs/dbus/org.opensphere.AppManager1.xml`.
//!
//! Transport: the system bus where a bus daemon runs; otherwise (the minimal device image has
//! none) a peer-to-peer D-Bus connection on [`P2P_SOCKET`], owned by root and mode 0600, so only
//! root on the device can manage apps.

use serde::{Deserialize, Serialize};
use zbus::zvariant::Type;

pub const BUS_NAME: &str = "org.opensphere.AppManager1";
pub const OBJECT_PATH: &str = "/org/opensphere/AppManager1";
pub const INTERFACE: &str = "org.opensphere.AppManager1";
/// Peer-to-peer socket used when no bus daemon runs.
pub const P2P_SOCKET: &str = "/run/sphere/appd.sock";
/// Largest package accepted as bytes over D-Bus (the bus limit is 128 MiB; apps are far smaller).
pub const MAX_PACKAGE_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Name of the virtio-serial port that carries the API to a host in development mode.
pub const DEV_PORT_NAME: &str = "sphere.appd";
/// Name of the virtio-serial port that carries the inter-core link (QEMU board: wired to the
/// M4 machine's UART1).
pub const INTERCORE_PORT_NAME: &str = "sphere.intercore";

/// One app as the manager sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct AppStatus {
    pub component_id: String,
    pub name: String,
    /// First 16 hex digits of the installed package's listing digest.
    pub version: String,
    /// `stopped`, `starting`, `running`, `backoff` (waiting to restart after a crash) or `failed`;
    /// real-time apps: `deployed` (their firmware handed to the real-time core's loader).
    pub state: String,
    /// 0 when not running.
    pub pid: u32,
    pub restarts: u32,
    /// Installed with a development key.
    pub development: bool,
    /// How the last run ended: `exit 0`, `signal 9`, `seccomp kill`, `oom kill`, or empty.
    pub last_exit: String,
}

/// A count of one kind of denial observed for an app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct Violation {
    /// `seccomp-kill`, `landlock-denied`, `oom-kill`, `crash`, `intercore-refused` (an
    /// `Application_Connect` to an app the two manifests do not both allow).
    pub kind: String,
    pub count: u64,
    /// Unix seconds of the first and last occurrence.
    pub first_seen: u64,
    pub last_seen: u64,
    /// The most recent detail (the denied path, the signal, ...).
    pub detail: String,
}

/// One app's request to defer the pending update (`AnnounceUpdate`'s reply).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct UpdateDeferral {
    pub component_id: String,
    /// Unix seconds the app asked to defer the update until (already clamped to the bound the
    /// update daemon announced; the update daemon clamps again).
    pub until: u64,
}

/// Client side of `org.opensphere.AppManager1`.
#[zbus::proxy(
    interface = "org.opensphere.AppManager1",
    default_service = "org.opensphere.AppManager1",
    default_path = "/org/opensphere/AppManager1"
)]
pub trait AppManager {
    /// Verify and install the package at `package_path` (a path the daemon can read); starts it.
    /// Returns the ComponentId.
    fn install(&self, package_path: &str) -> zbus::Result<String>;
    /// Verify and install a package sent as bytes (for clients on another machine, such as the
    /// `sphere` CLI talking to a QEMU guest over its development port); starts it.
    fn install_package(&self, package: &[u8]) -> zbus::Result<String>;
    /// Stop and remove an app and its storage.
    fn remove(&self, component_id: &str) -> zbus::Result<()>;
    fn list(&self) -> zbus::Result<Vec<AppStatus>>;
    fn start(&self, component_id: &str) -> zbus::Result<()>;
    /// SIGTERM, then SIGKILL after the grace period, as on Azure Sphere.
    fn stop(&self, component_id: &str) -> zbus::Result<()>;
    /// Stop (SIGTERM, grace, SIGKILL) and start again.
    fn restart(&self, component_id: &str) -> zbus::Result<()>;
    fn status(&self, component_id: &str) -> zbus::Result<AppStatus>;
    /// Development mode: packages signed by development keys install only while it is on. A
    /// local admin action (the API is reachable only by root on the device); off by default.
    fn set_development_mode(&self, enabled: bool) -> zbus::Result<()>;
    fn development_mode(&self) -> zbus::Result<bool>;
    /// The last `max_lines` lines the app wrote to stdout and stderr.
    fn logs(&self, component_id: &str, max_lines: u32) -> zbus::Result<Vec<String>>;
    fn violations(&self, component_id: &str) -> zbus::Result<Vec<Violation>>;
    /// The update daemon tells the app manager about a system event (Azure Sphere's
    /// `SysEvent_Events`): `event` is `update-ready-for-install` or `no-update-available`;
    /// `status` is `pending`, `deferred`, `final` (no more deferral: installing now) or
    /// `complete`; `kind` is `os` or `app`; `deferred_until` the Unix time the update waits
    /// until (0: not deferred) and `deadline` the latest time anyone may defer it to. The app
    /// manager forwards it to every app registered for the event (which requires
    /// `SystemEventNotifications`) when it differs from the last one, and replies with the apps'
    /// current deferral requests (only apps with `SoftwareUpdateDeferral` can make one). The
    /// update daemon repeats the call while it waits, so an app manager that restarted, or an
    /// app that registered late, catches up.
    fn announce_update(
        &self,
        event: &str,
        status: &str,
        release: &str,
        kind: &str,
        deferred_until: u64,
        deadline: u64,
    ) -> zbus::Result<Vec<UpdateDeferral>>;
    /// Emitted whenever an app changes state.
    #[zbus(signal)]
    fn state_changed(&self, component_id: &str, state: &str) -> zbus::Result<()>;
}
