//! The D-Bus server for `org.opensphere.Update1`, and the announcement of updates to apps.
//!
//! Deferral (as on Azure Sphere, policy and record in [`crate::deferral`]): before installing,
//! the daemon announces the update to the app manager (`AnnounceUpdate` on
//! `org.opensphere.AppManager1`), which relays it to apps registered for system events and
//! answers with their deferral requests. The daemon repeats the announcement every
//! [`ANNOUNCE_INTERVAL`] while it waits, persists each change of the record, and installs once
//! no deferral is active (after at least [`ANSWER_WINDOW`]) or the bound is reached, telling
//! apps `final` before and `complete` after. Root may also defer through `Defer` / `Resume`
//! on this API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::api::UpdateStatus;
pub use crate::deferral::{MAX_APP_DEFERRAL, MAX_OS_DEFERRAL, now};
use crate::deferral::{PendingUpdate, UpdateKind};
use crate::updater::{UpdateError, Updater, chain};

/// How often a pending update is re-announced and the apps' deferrals collected. Also bounds
/// how late the install starts after the last app resumes.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(1);
/// How long apps have to answer the first announcement before the install may start.
pub const ANSWER_WINDOW: Duration = Duration::from_secs(2);

/// The record of the update being announced: `state_dir/deferral.json`.
pub fn deferral_path(updater: &Updater) -> std::path::PathBuf {
    updater.config.state_dir.join("deferral.json")
}

/// A kept peer-to-peer connection to the app manager, reopened after a failure (the app
/// manager may start after us, or restart).
struct AppManagerLink {
    socket: std::path::PathBuf,
    conn: Option<zbus::Connection>,
    warned: bool,
}

impl AppManagerLink {
    /// Announces one event; returns the apps' deferral requests as (ComponentId, until).
    async fn announce(
        &mut self,
        event: &str,
        status: &str,
        pending: &PendingUpdate,
        deferred_until: u64,
    ) -> Vec<(String, u64)> {
        match self.try_announce(event, status, pending, deferred_until).await {
            Ok(list) => {
                self.warned = false;
                list
            }
            Err(e) => {
                self.conn = None;
                // No app manager: no app can defer. Said once per outage, not every second.
                if !self.warned {
                    eprintln!("sphere-updated: cannot tell the app manager ({}): {e}", self.socket.display());
                    self.warned = true;
                }
                Vec::new()
            }
        }
    }

    async fn try_announce(
        &mut self,
        event: &str,
        status: &str,
        pending: &PendingUpdate,
        deferred_until: u64,
    ) -> Result<Vec<(String, u64)>, String> {
        if self.conn.is_none() {
            let stream = tokio::net::UnixStream::connect(&self.socket).await.map_err(|e| e.to_string())?;
            let conn = zbus::connection::Builder::unix_stream(stream).p2p().build().await.map_err(|e| e.to_string())?;
            self.conn = Some(conn);
        }
        let Some(conn) = &self.conn else { return Ok(Vec::new()) };
        let proxy = sphere_appd_api::AppManagerProxy::new(conn).await.map_err(|e| e.to_string())?;
        let list = tokio::time::timeout(
            Duration::from_secs(5),
            proxy.announce_update(
                event,
                status,
                &pending.release,
                pending.kind.as_str(),
                deferred_until,
                pending.deadline,
            ),
        )
        .await
        .map_err(|_| "no answer within 5 s".to_string())?
        .map_err(|e| e.to_string())?;
        Ok(list.into_iter().map(|d| (d.component_id, d.until)).collect())
    }
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
    /// The update being announced to apps, if any (mirrors `state_dir/deferral.json`).
    pending: Arc<Mutex<Option<PendingUpdate>>>,
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
        s.deferred_until = self.pending.lock().await.as_ref().map_or(0, |p| p.deferred_until(now()));
        Ok(s)
    }

    async fn check(&self) -> zbus::fdo::Result<String> {
        let check = self.updater.check().await.map_err(|e| zbus::fdo::Error::Failed(chain(&e)))?;
        if check.available.is_none() {
            // Azure Sphere's SysEvent_Events_NoUpdateAvailable, for apps registered for it.
            let mut link =
                AppManagerLink { socket: self.updater.config.appd_socket.clone(), conn: None, warned: false };
            let none = PendingUpdate {
                release: String::new(),
                kind: UpdateKind::App,
                announced_at: 0,
                deadline: 0,
                deferrals: Default::default(),
            };
            link.announce("no-update-available", "complete", &none, 0).await;
        }
        Ok(check.available.map(|r| r.name).unwrap_or_default())
    }

    async fn install(&self, release: &str) -> zbus::fdo::Result<()> {
        {
            let current = self.current.lock().await;
            if matches!(current.state.as_str(), "downloading" | "pending" | "deferred") {
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
        // Tell apps and honour their deferrals before touching anything. The record of the
        // first announcement is kept across restarts, so the bound cannot be reset.
        let kind = if has_os { UpdateKind::Os } else { UpdateKind::App };
        let record = deferral_path(&self.updater);
        let announced = PendingUpdate::resume_or_new(PendingUpdate::load(&record), &name, kind, now());
        if let Err(e) = announced.save(&record) {
            eprintln!("sphere-updated: cannot record the announcement in {}: {e}", record.display());
        }
        let max = announced.deadline.saturating_sub(now());
        *self.pending.lock().await = Some(announced);
        *self.current.lock().await =
            UpdateStatus { state: "pending".into(), release: name.clone(), ..Default::default() };
        let connections = self.connections.clone();
        broadcast(&connections, Signal::Pending { release: name.clone(), kind: kind.as_str(), max }).await;
        let updater = self.updater.clone();
        let current = self.current.clone();
        let pending = self.pending.clone();
        tokio::spawn(async move {
            let mut link = AppManagerLink { socket: updater.config.appd_socket.clone(), conn: None, warned: false };
            let started = Instant::now();
            let mut last_until = 0;
            loop {
                let t = now();
                let Some(snapshot) = pending.lock().await.clone() else { return };
                let until = snapshot.deferred_until(t);
                let status = if until > 0 { "deferred" } else { "pending" };
                current.lock().await.state = status.into();
                let apps = link.announce("update-ready-for-install", status, &snapshot, until).await;
                let mut guard = pending.lock().await;
                let Some(p) = guard.as_mut() else { return };
                if p.merge_app_deferrals(&apps, t) {
                    if let Err(e) = p.save(&record) {
                        eprintln!("sphere-updated: cannot record deferrals in {}: {e}", record.display());
                    }
                }
                let until = p.deferred_until(t);
                if until != last_until {
                    eprintln!("sphere-updated: release {} deferred until {until} (deadline {})", p.release, p.deadline);
                    // Status shows the new state at once, not only at the next announcement.
                    current.lock().await.state = if until > 0 { "deferred" } else { "pending" }.into();
                }
                if started.elapsed() >= ANSWER_WINDOW && p.may_proceed(now()) {
                    // A deferral that was active until the deadline: the bound, not a resume, ends it.
                    if last_until >= p.deadline {
                        eprintln!("sphere-updated: deferral bound reached for release {}: installing", p.release);
                    }
                    break;
                }
                last_until = until;
                drop(guard);
                tokio::time::sleep(ANNOUNCE_INTERVAL).await;
            }
            let Some(snapshot) = pending.lock().await.clone() else { return };
            link.announce("update-ready-for-install", "final", &snapshot, 0).await;
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
            if result.is_ok() {
                // Done: apps hear `complete`, and the record goes (a later release starts its own clock).
                link.announce("update-ready-for-install", "complete", &snapshot, 0).await;
                if let Err(e) = PendingUpdate::clear(&record) {
                    eprintln!("sphere-updated: cannot remove {}: {e}", record.display());
                }
                *pending.lock().await = None;
            }
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

    /// Root's own deferral (the device's admin, the CLI); apps defer through the app manager.
    async fn defer(&self, component_id: &str, seconds: u64) -> zbus::fdo::Result<u64> {
        if component_id.is_empty() {
            return Err(zbus::fdo::Error::InvalidArgs("requester name is empty".into()));
        }
        let mut guard = self.pending.lock().await;
        let Some(p) = guard.as_mut() else { return Err(zbus::fdo::Error::Failed("no update is pending".into())) };
        let until = p.defer(&format!("admin:{component_id}"), seconds, now());
        if let Err(e) = p.save(&deferral_path(&self.updater)) {
            eprintln!("sphere-updated: cannot record the deferral: {e}");
        }
        eprintln!("sphere-updated: {component_id} defers release {} until {until}", p.release);
        Ok(until)
    }

    /// Withdraws a deferral made with `Defer`.
    async fn resume(&self, component_id: &str) -> zbus::fdo::Result<u64> {
        let mut guard = self.pending.lock().await;
        let Some(p) = guard.as_mut() else { return Err(zbus::fdo::Error::Failed("no update is pending".into())) };
        let until = p.resume(&format!("admin:{component_id}"), now());
        if let Err(e) = p.save(&deferral_path(&self.updater)) {
            eprintln!("sphere-updated: cannot record the resume: {e}");
        }
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
    let pending = Arc::new(Mutex::new(None));
    let connections: Connections = Arc::default();
    loop {
        let (stream, _) = listener.accept().await.map_err(io)?;
        let service = Service {
            updater: updater.clone(),
            current: current.clone(),
            pending: pending.clone(),
            connections: connections.clone(),
        };
        let built = sphere_dbus_p2p::serve_peer(stream, crate::api::OBJECT_PATH, service);
        match built.await {
            Ok(conn) => connections.lock().await.push(conn),
            Err(e) => eprintln!("sphere-updated: a D-Bus client failed to connect: {e}"),
        }
    }
}
