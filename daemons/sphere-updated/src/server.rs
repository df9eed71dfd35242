//! The D-Bus server for `org.opensphere.Update1` and update deferral.
//!
//! Deferral (as on Azure Sphere): before installing, the daemon emits `UpdatePending`; apps
//! whose manifest grants both `SoftwareUpdateDeferral` and `SystemEventNotifications` may call
//! `Defer`. The total deferral of one OS update is bounded by [`MAX_OS_DEFERRAL`] (24 h) and
//! of an app update by [`MAX_APP_DEFERRAL`], counted from when the update was first pending,
//! so no app can hold a security fix back for longer.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Mutex;

use crate::api::UpdateStatus;
use crate::updater::{UpdateError, Updater, chain};

pub const MAX_OS_DEFERRAL: Duration = Duration::from_secs(24 * 3600);
pub const MAX_APP_DEFERRAL: Duration = Duration::from_secs(167 * 3600);

/// Deferral bookkeeping for one pending update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deferral {
    /// Unix seconds when the update first became pending.
    pub pending_since: u64,
    /// Unix seconds until which it is deferred.
    pub until: u64,
}

impl Deferral {
    /// Applies a request to defer by `seconds` at time `now`; returns the new deadline.
    /// Never beyond `pending_since + max`.
    pub fn defer(&mut self, now: u64, seconds: u64, max: Duration) -> u64 {
        let cap = self.pending_since.saturating_add(max.as_secs());
        self.until = self.until.max(now.saturating_add(seconds).min(cap));
        self.until
    }
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Snapshot of the device's update state (also `sphere-updated status`).
pub fn status(updater: &Updater) -> Result<UpdateStatus, UpdateError> {
    let slots = updater.slots()?;
    let booted = updater.booted_slot(&slots)?;
    let (_, state) = slots.record().load().map_err(sphere_slots::SlotsError::from)?;
    let installed = updater.installed();
    Ok(UpdateStatus {
        state: "idle".into(),
        os_version: updater.os_version(&slots, booted)?.to_string(),
        booted_slot: booted.to_string(),
        boot_state: if state.committed() { "committed".into() } else { format!("trial of slot {}", state.slot) },
        m4_version: installed.m4.get(booted.as_str()).map(|v| v.to_string()).unwrap_or_else(|| "none".into()),
        ..Default::default()
    })
}

type Connections = Arc<Mutex<Vec<zbus::Connection>>>;

struct Service {
    updater: Arc<Updater>,
    current: Arc<Mutex<UpdateStatus>>,
    deferral: Arc<Mutex<Deferral>>,
    connections: Connections,
}

/// Peer-to-peer D-Bus has no bus to fan signals out: send them on every live client
/// connection, forgetting the ones that went away.
async fn broadcast(connections: &Connections, signal: Signal) {
    let mut live = connections.lock().await;
    let mut still_open = Vec::with_capacity(live.len());
    for conn in live.drain(..) {
        let Ok(emitter) = zbus::object_server::SignalEmitter::new(&conn, crate::api::OBJECT_PATH) else { continue };
        let sent = match &signal {
            Signal::Progress(status) => Service::progress(&emitter, status.clone()).await,
            Signal::Pending { release, kind, max } => Service::update_pending(&emitter, release, kind, *max).await,
        };
        if sent.is_ok() {
            still_open.push(conn);
        }
    }
    *live = still_open;
}

enum Signal {
    Progress(UpdateStatus),
    Pending { release: String, kind: &'static str, max: u64 },
}

#[zbus::interface(name = "org.opensphere.Update1")]
impl Service {
    async fn status(&self) -> zbus::fdo::Result<UpdateStatus> {
        let mut s = status(&self.updater).map_err(|e| zbus::fdo::Error::Failed(chain(&e)))?;
        let current = self.current.lock().await.clone();
        if !current.state.is_empty() {
            s.state = current.state;
            s.release = current.release;
            s.target = current.target;
            s.done_bytes = current.done_bytes;
            s.total_bytes = current.total_bytes;
            s.message = current.message;
        }
        s.deferred_until = self.deferral.lock().await.until;
        Ok(s)
    }

    async fn check(&self) -> zbus::fdo::Result<String> {
        let check = self.updater.check().await.map_err(|e| zbus::fdo::Error::Failed(chain(&e)))?;
        Ok(check.available.map(|r| r.name).unwrap_or_default())
    }

    async fn install(&self, release: &str) -> zbus::fdo::Result<()> {
        {
            let current = self.current.lock().await;
            if current.state == "downloading" || current.state == "pending" {
                return Err(zbus::fdo::Error::Failed("an update is already in progress".into()));
            }
        }
        let check = self.updater.check().await.map_err(|e| zbus::fdo::Error::Failed(chain(&e)))?;
        let name = if release.is_empty() {
            check.available.as_ref().map(|r| r.name.clone()).unwrap_or_default()
        } else {
            release.to_string()
        };
        if name.is_empty() {
            return Ok(());
        }
        let has_os = check
            .releases
            .iter()
            .find(|r| r.name == name)
            .is_some_and(|r| r.target(sphere_update_format::Kind::OsImage).is_some());
        // Tell apps and honour their deferrals before touching anything.
        let max = if has_os { MAX_OS_DEFERRAL } else { MAX_APP_DEFERRAL };
        {
            let mut d = self.deferral.lock().await;
            *d = Deferral { pending_since: now(), until: 0 };
        }
        *self.current.lock().await =
            UpdateStatus { state: "pending".into(), release: name.clone(), ..Default::default() };
        let connections = self.connections.clone();
        broadcast(
            &connections,
            Signal::Pending { release: name.clone(), kind: if has_os { "os" } else { "app" }, max: max.as_secs() },
        )
        .await;
        let updater = self.updater.clone();
        let current = self.current.clone();
        let deferral = self.deferral.clone();
        tokio::spawn(async move {
            // Short window for apps to answer, then wait out any deferral.
            tokio::time::sleep(Duration::from_secs(2)).await;
            loop {
                let until = deferral.lock().await.until;
                let t = now();
                if until <= t {
                    break;
                }
                let mut c = current.lock().await;
                c.state = "deferred".into();
                drop(c);
                tokio::time::sleep(Duration::from_secs((until - t).min(60))).await;
            }
            let mut last_emit = 0u64;
            let result = {
                let current2 = current.clone();
                let connections2 = connections.clone();
                updater
                    .install(Some(&name), move |target, done, total| {
                        if let Ok(mut c) = current2.try_lock() {
                            c.state = "downloading".into();
                            c.target = target.to_string();
                            c.done_bytes = done;
                            c.total_bytes = total;
                            if done - last_emit.min(done) >= 1 << 20 || done == total {
                                last_emit = done;
                                let status = c.clone();
                                let c2 = connections2.clone();
                                tokio::spawn(async move { broadcast(&c2, Signal::Progress(status)).await });
                            }
                        }
                    })
                    .await
            };
            let mut c = current.lock().await;
            match result {
                Ok(r) => {
                    c.state = if r.reboot_required { "installed".into() } else { "idle".into() };
                    c.message = format!("installed {}", r.installed.join(", "));
                }
                Err(e) => {
                    c.state = "failed".into();
                    c.message = chain(&e);
                }
            }
            let status = c.clone();
            drop(c);
            broadcast(&connections, Signal::Progress(status)).await;
        });
        Ok(())
    }

    async fn rollback(&self) -> zbus::fdo::Result<String> {
        self.updater.rollback().map_err(|e| zbus::fdo::Error::Failed(chain(&e)))
    }

    async fn defer(&self, component_id: &str, seconds: u64) -> zbus::fdo::Result<u64> {
        let current = self.current.lock().await.clone();
        if current.state != "pending" && current.state != "deferred" {
            return Err(zbus::fdo::Error::Failed("no update is pending".into()));
        }
        if component_id.is_empty() {
            return Err(zbus::fdo::Error::InvalidArgs("component id is empty".into()));
        }
        let mut d = self.deferral.lock().await;
        let until = d.defer(now(), seconds, MAX_OS_DEFERRAL);
        eprintln!("sphere-updated: app {component_id} defers release {} until {until}", current.release);
        Ok(until)
    }

    #[zbus(signal)]
    async fn progress(emitter: &zbus::object_server::SignalEmitter<'_>, status: UpdateStatus) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn update_pending(
        emitter: &zbus::object_server::SignalEmitter<'_>,
        release: &str,
        kind: &str,
        max_defer_seconds: u64,
    ) -> zbus::Result<()>;
}

/// Serves the API on the peer-to-peer socket, one connection per client.
pub async fn serve(updater: Updater) -> Result<(), UpdateError> {
    // A committed boot is the moment to raise the anti-rollback floor.
    if let Err(e) = updater.raise_min_version_if_committed() {
        eprintln!("sphere-updated: anti-rollback: {}", chain(&e));
    }
    let socket = updater.config.socket.clone();
    let io = |source| UpdateError::Io { path: socket.clone(), source };
    let listener = sphere_dbus_p2p::bind_private_socket(&socket).map_err(io)?;
    eprintln!("sphere-updated: serving {} on {}", crate::api::INTERFACE, socket.display());
    let updater = Arc::new(updater);
    let current = Arc::new(Mutex::new(UpdateStatus::default()));
    let deferral = Arc::new(Mutex::new(Deferral::default()));
    let connections: Connections = Arc::default();
    loop {
        let (stream, _) = listener.accept().await.map_err(io)?;
        let service = Service {
            updater: updater.clone(),
            current: current.clone(),
            deferral: deferral.clone(),
            connections: connections.clone(),
        };
        let built = sphere_dbus_p2p::serve_peer(stream, crate::api::OBJECT_PATH, service);
        match built.await {
            Ok(conn) => connections.lock().await.push(conn),
            Err(e) => eprintln!("sphere-updated: a D-Bus client failed to connect: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deferral_is_bounded_from_first_pending() {
        let mut d = Deferral { pending_since: 1000, until: 0 };
        assert_eq!(d.defer(1000, 3600, MAX_OS_DEFERRAL), 4600);
        // Asking again later cannot extend past 24 h from the first notice.
        assert_eq!(d.defer(80_000, 86_400, MAX_OS_DEFERRAL), 1000 + 86_400);
        // A shorter request does not shorten an earlier, longer one.
        assert_eq!(d.defer(2000, 10, MAX_OS_DEFERRAL), 1000 + 86_400);
    }
}
