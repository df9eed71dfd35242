//! App compartments: set up and torn down on sphere-appd's request, and the D-Bus interface.

use crate::firewall::{self, App, Firewall};
use crate::link;
use crate::proxy::{self, Shared};
use crate::rules;
use sphere_netd_api::{AppRules, BlockedAttempt, Compartment, OBJECT_PATH};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zbus::fdo;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Firewall> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One compartment change at a time. A slot is only taken when the app is recorded at the end
/// of a setup, and a setup first deletes its slot's old veth: two apps started together (the
/// app manager starts them concurrently at boot) were both given slot 0, and one's setup
/// deleted the other's link. The QEMU suite caught it; setups are rare, so a queue costs nothing.
static COMPARTMENT_CHANGES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Set up (or refresh) one app's compartment.
pub async fn setup_app(
    shared: &Shared,
    component_id: &str,
    netns: &Path,
    manifest_path: &Path,
) -> Result<Compartment, String> {
    let _queue = COMPARTMENT_CHANGES.lock().await;
    setup_app_queued(shared, component_id, netns, manifest_path).await
}

async fn setup_app_queued(
    shared: &Shared,
    component_id: &str,
    netns: &Path,
    manifest_path: &Path,
) -> Result<Compartment, String> {
    if component_id.is_empty() || !component_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(format!("\"{component_id}\" is not a ComponentId"));
    }
    let bytes = std::fs::read(manifest_path).map_err(|e| format!("read {}: {e}", manifest_path.display()))?;
    let manifest = sphere_app_format::manifest::parse_manifest(&bytes)
        .map_err(|e| format!("{}: {e}", manifest_path.display()))?
        .manifest;
    let slot = lock(shared).free_slot(component_id).ok_or("no free network slot")?;
    // Stop the old proxies first: their sockets hold the gateway addresses.
    if let Some(app) = lock(shared).apps.get_mut(component_id) {
        app.proxies.drain(..).for_each(|p| p.abort());
    }
    let netns_owned = netns.to_path_buf();
    tokio::task::spawn_blocking(move || {
        link::ensure_namespace(&netns_owned)?;
        link::setup(slot, &netns_owned)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("network compartment: {e}"))?;

    let (policy, names) = firewall::policy(slot, component_id, &manifest.capabilities);
    let (gw4, _, gw6, _) = rules::addresses(slot);
    let mut proxies = Vec::new();
    let mut sockets = Vec::new();
    for gateway in [IpAddr::V4(gw4), IpAddr::V6(gw6)] {
        let socket = tokio::net::UdpSocket::bind(SocketAddr::new(gateway, 53))
            .await
            .map_err(|e| format!("DNS proxy on {gateway}: {e}"))?;
        sockets.push(socket);
    }
    let runtime_dir = lock(shared).config.runtime_dir.clone();
    write_resolv_conf(&runtime_dir, component_id, gw4.into(), gw6.into()).map_err(|e| format!("resolv.conf: {e}"))?;
    for socket in sockets {
        let task = tokio::spawn(proxy::serve(Arc::clone(shared), component_id.to_owned(), socket));
        proxies.push(task.abort_handle());
    }
    let mut fw = lock(shared);
    let previous = fw.apps.remove(component_id);
    let app = App {
        policy,
        names,
        allowed: manifest.capabilities.allowed_connections.clone(),
        netns: netns.to_path_buf(),
        // Addresses answered before a refresh stay until their TTL runs out.
        dynamic: previous.as_ref().map(|p| p.dynamic.clone()).unwrap_or_default(),
        learned: previous.map(|p| p.learned).unwrap_or_default(),
        proxies,
    };
    fw.apps.insert(component_id.to_owned(), app);
    if let Err(error) = fw.apply() {
        if let Some(app) = fw.apps.remove(component_id) {
            app.proxies.iter().for_each(|p| p.abort());
        }
        return Err(format!("firewall rules: {error}"));
    }
    let config = fw.config.clone();
    fw.apps.get(component_id).map(|a| a.compartment(&config)).ok_or_else(|| "app vanished".to_owned())
}

fn write_resolv_conf(runtime_dir: &Path, component_id: &str, gw4: IpAddr, gw6: IpAddr) -> std::io::Result<()> {
    let path = firewall::resolv_conf_path(runtime_dir, component_id);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // The proxy is the only resolver: no search domains, so a short name is never sent out
    // with a suffix the app did not write.
    let text = format!(
        "# sphere-netd: this app's DNS proxy\nnameserver {gw4}\nnameserver {gw6}\noptions timeout:2 attempts:2\n"
    );
    sphere_app_format::fs_atomic::write_bytes(&path, 0o644, text.as_bytes()).map(|_| ())
}

pub async fn teardown_app(shared: &Shared, component_id: &str) -> Result<(), String> {
    let _queue = COMPARTMENT_CHANGES.lock().await;
    let app = {
        let mut fw = lock(shared);
        let Some(app) = fw.apps.remove(component_id) else { return Ok(()) };
        fw.apply().map_err(|e| format!("firewall rules: {e}"))?;
        app
    };
    app.proxies.iter().for_each(|p| p.abort());
    let slot = app.policy.slot;
    tokio::task::spawn_blocking(move || link::teardown(slot))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let runtime_dir = lock(shared).config.runtime_dir.clone();
    let _ = std::fs::remove_file(firewall::resolv_conf_path(&runtime_dir, component_id));
    Ok(())
}

pub struct NetworkService {
    pub shared: Shared,
}

#[zbus::interface(name = "org.opensphere.Network1")]
impl NetworkService {
    async fn setup_app(&self, component_id: &str, netns_path: &str, manifest_path: &str) -> fdo::Result<Compartment> {
        setup_app(&self.shared, component_id, &PathBuf::from(netns_path), &PathBuf::from(manifest_path))
            .await
            .map_err(fdo::Error::Failed)
    }

    async fn teardown_app(&self, component_id: &str) -> fdo::Result<()> {
        teardown_app(&self.shared, component_id).await.map_err(fdo::Error::Failed)
    }

    async fn apps(&self) -> Vec<Compartment> {
        let fw = lock(&self.shared);
        fw.apps.values().map(|a| a.compartment(&fw.config)).collect()
    }

    async fn rules(&self, component_id: &str) -> fdo::Result<AppRules> {
        lock(&self.shared)
            .rules_of(component_id)
            .ok_or_else(|| fdo::Error::InvalidArgs(format!("no compartment for app {component_id}")))
    }

    async fn blocked(&self) -> Vec<BlockedAttempt> {
        lock(&self.shared).telemetry.list()
    }
}

/// Serve peer-to-peer D-Bus on a Unix socket only root can open.
pub async fn serve_p2p(shared: Shared, socket: &Path) -> std::io::Result<()> {
    let listener = sphere_dbus_p2p::bind_private_socket(socket)?;
    // sphere-init's readiness line (stdout): the API is reachable from here on.
    println!("sphere-netd: ready");
    loop {
        let (stream, _) = listener.accept().await?;
        let service = NetworkService { shared: Arc::clone(&shared) };
        let built = sphere_dbus_p2p::serve_peer(stream, OBJECT_PATH, service);
        match built.await {
            // The connection serves on its own tasks; keep it alive until the peer leaves.
            Ok(connection) => {
                tokio::spawn(async move {
                    // The stream ends when the peer closes the socket; then the connection goes.
                    let mut messages = zbus::MessageStream::from(&connection);
                    while futures_util::StreamExt::next(&mut messages).await.is_some() {}
                });
            }
            Err(error) => eprintln!("sphere-netd: a D-Bus client failed to connect: {error}"),
        }
    }
}

/// Serve on the system bus under the well-known name.
pub async fn serve_system_bus(shared: Shared) -> zbus::Result<()> {
    let _connection = zbus::connection::Builder::system()?
        .name(sphere_netd_api::BUS_NAME)?
        .serve_at(OBJECT_PATH, NetworkService { shared })?
        .build()
        .await?;
    println!("sphere-netd: ready");
    std::future::pending::<()>().await;
    Ok(())
}
