//! The firewall hook: before an app's first launch the app manager asks sphere-netd for the
//! app's network compartment (veth, addresses, DNS proxy, rules from the installed manifest),
//! and after the app stopped it asks for the compartment to go.
//!
//! Failing open is impossible here: without a compartment the app's namespace has loopback
//! only, so a firewall daemon that is down or refuses leaves the app *without* network, never
//! with unfiltered network. Hence a failure is logged and the app still starts.

use std::path::{Path, PathBuf};
use std::time::Duration;
use uuid::Uuid;

const TIMEOUT: Duration = Duration::from_secs(10);

/// sphere-netd's socket (`SPHERE_NETD_SOCKET` overrides it, for tests).
fn socket() -> PathBuf {
    std::env::var_os("SPHERE_NETD_SOCKET").map_or_else(|| sphere_netd_api::P2P_SOCKET.into(), PathBuf::from)
}

async fn proxy() -> Result<(zbus::Connection, PathBuf), String> {
    let socket = socket();
    let stream = tokio::net::UnixStream::connect(&socket).await.map_err(|e| format!("{}: {e}", socket.display()))?;
    let connection = zbus::connection::Builder::unix_stream(stream).p2p().build().await.map_err(|e| e.to_string())?;
    Ok((connection, socket))
}

/// The resolv.conf sphere-netd wrote for the app (its DNS proxy), if it set the app up.
pub fn resolv_conf(id: Uuid) -> Option<PathBuf> {
    let dir = std::env::var_os("SPHERE_NETD_RUNTIME").map_or_else(|| PathBuf::from("/run/sphere/net"), PathBuf::from);
    let path = dir.join(id.to_string()).join("resolv.conf");
    path.is_file().then_some(path)
}

/// The app's pinned network namespace, where the sandbox launcher keeps it.
pub fn netns_path(sandbox_runtime_dir: &Path, id: Uuid) -> PathBuf {
    sandbox_runtime_dir.join("netns").join(id.to_string())
}

pub async fn app_starting(sandbox_runtime_dir: &Path, id: Uuid, manifest: Option<PathBuf>) {
    let Some(manifest) = manifest else { return };
    let netns = netns_path(sandbox_runtime_dir, id);
    let request = async {
        let (connection, _) = proxy().await?;
        let netd = sphere_netd_api::NetworkProxy::new(&connection).await.map_err(|e| e.to_string())?;
        let id = id.to_string();
        netd.setup_app(&id, &netns.to_string_lossy(), &manifest.to_string_lossy()).await.map_err(|e| e.to_string())
    };
    match tokio::time::timeout(TIMEOUT, request).await {
        Ok(Ok(compartment)) => {
            eprintln!(
                "sphere-appd: {id}: network compartment {} ({})",
                compartment.host_interface, compartment.address_v4
            )
        }
        Ok(Err(error)) => eprintln!("sphere-appd: {id}: no network compartment, the app has no network: {error}"),
        Err(_) => eprintln!("sphere-appd: {id}: sphere-netd did not answer, the app has no network"),
    }
}

pub async fn app_stopped(id: Uuid) {
    let request = async {
        let (connection, _) = proxy().await?;
        let netd = sphere_netd_api::NetworkProxy::new(&connection).await.map_err(|e| e.to_string())?;
        netd.teardown_app(&id.to_string()).await.map_err(|e| e.to_string())
    };
    if let Ok(Err(error)) = tokio::time::timeout(TIMEOUT, request).await {
        // Expected when no firewall daemon runs (the host test suites).
        if !error.contains("No such file") {
            eprintln!("sphere-appd: {id}: network compartment not removed: {error}");
        }
    }
}
