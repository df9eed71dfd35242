//! `org.opensphere.AppManager1` on D-Bus: the system bus where one runs, otherwise peer-to-peer
//! connections on a root-only Unix socket (the minimal image has no bus daemon).

use crate::manager::Manager;
use sphere_appd_api::{AppStatus, OBJECT_PATH, UpdateDeferral, Violation};
use std::path::Path;
use std::sync::Arc;
use uuid::Uuid;
use zbus::fdo;
use zbus::object_server::SignalEmitter;

pub struct AppManagerService {
    manager: Arc<Manager>,
}

fn component_id(text: &str) -> fdo::Result<Uuid> {
    Uuid::try_parse(text).map_err(|_| fdo::Error::InvalidArgs(format!("\"{text}\" is not a ComponentId")))
}

fn failed(message: String) -> fdo::Error {
    fdo::Error::Failed(message)
}

#[zbus::interface(name = "org.opensphere.AppManager1")]
impl AppManagerService {
    async fn install(&self, package_path: &str) -> fdo::Result<String> {
        let app = self.manager.install(package_path.into()).await.map_err(failed)?;
        Ok(app.component_id.to_string())
    }

    async fn install_package(&self, package: Vec<u8>) -> fdo::Result<String> {
        if package.len() > sphere_appd_api::MAX_PACKAGE_MESSAGE_BYTES {
            return Err(fdo::Error::InvalidArgs("package too large to send over D-Bus".to_owned()));
        }
        let app = self.manager.install_bytes(package).await.map_err(failed)?;
        Ok(app.component_id.to_string())
    }

    async fn remove(&self, component_id: &str) -> fdo::Result<()> {
        self.manager.remove(self::component_id(component_id)?).await.map_err(failed)
    }

    async fn list(&self) -> Vec<AppStatus> {
        self.manager.list()
    }

    async fn start(&self, component_id: &str) -> fdo::Result<()> {
        self.manager.start(self::component_id(component_id)?).map_err(failed)
    }

    async fn stop(&self, component_id: &str) -> fdo::Result<()> {
        let id = self::component_id(component_id)?;
        self.manager.status(id).map_err(failed)?;
        self.manager.stop(id).await;
        Ok(())
    }

    async fn restart(&self, component_id: &str) -> fdo::Result<()> {
        let id = self::component_id(component_id)?;
        self.manager.status(id).map_err(failed)?;
        self.manager.stop(id).await;
        self.manager.start(id).map_err(failed)
    }

    async fn set_development_mode(&self, enabled: bool) -> fdo::Result<()> {
        self.manager.set_development_mode(enabled).map_err(failed)
    }

    async fn development_mode(&self) -> bool {
        self.manager.development_mode()
    }

    async fn status(&self, component_id: &str) -> fdo::Result<AppStatus> {
        self.manager.status(self::component_id(component_id)?).map_err(failed)
    }

    async fn logs(&self, component_id: &str, max_lines: u32) -> fdo::Result<Vec<String>> {
        Ok(self.manager.logs(self::component_id(component_id)?, max_lines as usize))
    }

    async fn violations(&self, component_id: &str) -> fdo::Result<Vec<Violation>> {
        Ok(self.manager.violations(self::component_id(component_id)?))
    }

    async fn announce_update(
        &self,
        event: &str,
        status: &str,
        release: &str,
        kind: &str,
        deferred_until: u64,
        deadline: u64,
    ) -> fdo::Result<Vec<UpdateDeferral>> {
        use sphere_applibs::sysevent::{Event, EventInfo, Status, UpdateType};
        let bad = |what: &str, value: &str| fdo::Error::InvalidArgs(format!("unknown {what} \"{value}\""));
        let info = EventInfo {
            event: Event::parse(event).ok_or_else(|| bad("event", event))?,
            status: Status::parse(status).ok_or_else(|| bad("status", status))?,
            update_type: match kind {
                "" | "-" => None,
                other => Some(UpdateType::parse(other).ok_or_else(|| bad("kind", other))?),
            },
            release: release.to_owned(),
            deferred_until,
            deadline,
        };
        if info.release.chars().any(char::is_control) || info.release.len() > 200 {
            return Err(fdo::Error::InvalidArgs("release name too long or with control characters".to_owned()));
        }
        Ok(self
            .manager
            .announce_system_event(info)
            .into_iter()
            .map(|(id, until)| UpdateDeferral { component_id: id.to_string(), until })
            .collect())
    }

    #[zbus(signal)]
    async fn state_changed(emitter: &SignalEmitter<'_>, component_id: &str, state: &str) -> zbus::Result<()>;
}

/// Serve on the system bus under the well-known name.
pub async fn serve_system_bus(manager: Arc<Manager>) -> zbus::Result<()> {
    let service = AppManagerService { manager: Arc::clone(&manager) };
    let connection = zbus::connection::Builder::system()?
        .name(sphere_appd_api::BUS_NAME)?
        .serve_at(OBJECT_PATH, service)?
        .build()
        .await?;
    forward_signals(manager, vec![connection]).await;
    Ok(())
}

/// Serve peer-to-peer D-Bus on a Unix socket only root can open.
pub async fn serve_p2p(manager: Arc<Manager>, socket: &Path) -> std::io::Result<()> {
    let listener = sphere_dbus_p2p::bind_private_socket(socket)?;
    let connections: Arc<tokio::sync::Mutex<Vec<zbus::Connection>>> = Arc::default();
    let signals = Arc::clone(&connections);
    let signal_manager = Arc::clone(&manager);
    tokio::spawn(async move { forward_p2p_signals(signal_manager, signals).await });
    loop {
        let (stream, _) = listener.accept().await?;
        let service = AppManagerService { manager: Arc::clone(&manager) };
        let built = sphere_dbus_p2p::serve_peer(stream, OBJECT_PATH, service);
        match built.await {
            Ok(connection) => connections.lock().await.push(connection),
            Err(error) => eprintln!("sphere-appd: a D-Bus client failed to connect: {error}"),
        }
    }
}

async fn forward_signals(manager: Arc<Manager>, connections: Vec<zbus::Connection>) {
    let mut events = manager.subscribe();
    while let Ok((id, state)) = events.recv().await {
        for connection in &connections {
            let _ = emit(connection, &id, &state).await;
        }
    }
}

async fn forward_p2p_signals(manager: Arc<Manager>, connections: Arc<tokio::sync::Mutex<Vec<zbus::Connection>>>) {
    let mut events = manager.subscribe();
    while let Ok((id, state)) = events.recv().await {
        let mut live = connections.lock().await;
        let mut still_open = Vec::with_capacity(live.len());
        for connection in live.drain(..) {
            // A client that went away fails the send; forget its connection.
            if emit(&connection, &id, &state).await {
                still_open.push(connection);
            }
        }
        *live = still_open;
    }
}

async fn emit(connection: &zbus::Connection, id: &str, state: &str) -> bool {
    match SignalEmitter::new(connection, OBJECT_PATH) {
        Ok(emitter) => AppManagerService::state_changed(&emitter, id, state).await.is_ok(),
        Err(_) => false,
    }
}
