//! `org.opensphere.Update1`: the update daemon's D-Bus API, shared by `sphere-updated` and the
//! `sphere` CLI (introspection: `docs/dbus/org.opensphere.Update1.xml`).
//!
//! Transport as for the app manager: a peer-to-peer D-Bus connection on [`P2P_SOCKET`]
//! (root-only, mode 0600) when no bus daemon runs.

use serde::{Deserialize, Serialize};
use zbus::zvariant::Type;

pub const BUS_NAME: &str = "org.opensphere.Update1";
pub const OBJECT_PATH: &str = "/org/opensphere/Update1";
pub const INTERFACE: &str = "org.opensphere.Update1";
pub const P2P_SOCKET: &str = "/run/sphere/updated.sock";

/// What the daemon is doing (also the `Progress` signal's body).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct UpdateStatus {
    /// `idle`, `checking`, `available`, `pending` (told apps; waiting out deferrals),
    /// `downloading`, `installed` (reboot to try it), `failed`.
    pub state: String,
    /// OS version of the running slot and the slot name.
    pub os_version: String,
    pub booted_slot: String,
    /// The boot-state record: `committed`, or `trial` (a new slot boots next / is on trial).
    pub boot_state: String,
    pub m4_version: String,
    /// Release being handled (or last offered), target being downloaded.
    pub release: String,
    pub target: String,
    pub done_bytes: u64,
    pub total_bytes: u64,
    /// Unix seconds until which the update is deferred by apps (0: not deferred).
    pub deferred_until: u64,
    /// Last error, for `failed`.
    pub message: String,
}

/// Client side of `org.opensphere.Update1`.
#[zbus::proxy(
    interface = "org.opensphere.Update1",
    default_service = "org.opensphere.Update1",
    default_path = "/org/opensphere/Update1"
)]
pub trait Update {
    fn status(&self) -> zbus::Result<UpdateStatus>;
    /// Refresh TUF metadata; returns the newest release for this board newer than what is
    /// installed, or "" when up to date.
    fn check(&self) -> zbus::Result<String>;
    /// Start installing `release` ("" = newest). Returns at once; follow `Progress`.
    fn install(&self, release: &str) -> zbus::Result<()>;
    /// Put the other slot on trial for the next boot (manual rollback).
    fn rollback(&self) -> zbus::Result<String>;
    /// Root (the device's admin) defers the pending update by `seconds` under the name
    /// `component_id`; bounded like apps' deferrals (OS: 24 h from the first announcement).
    /// Returns the Unix time the update is deferred until. Apps defer through the app manager
    /// (applibs `sysevent::defer_event`), which checks their capabilities.
    fn defer(&self, component_id: &str, seconds: u64) -> zbus::Result<u64>;
    /// Withdraws a deferral made with `Defer`; returns what the update still waits until.
    fn resume(&self, component_id: &str) -> zbus::Result<u64>;
    /// Emitted as an update advances (about every MiB while downloading).
    #[zbus(signal)]
    fn progress(&self, status: UpdateStatus) -> zbus::Result<()>;
    /// Emitted to apps with SystemEventNotifications when an update is about to be installed:
    /// `kind` is `os` or `app`, `max_defer_seconds` what may still be deferred.
    #[zbus(signal)]
    fn update_pending(&self, release: &str, kind: &str, max_defer_seconds: u64) -> zbus::Result<()>;
}
