//! The development port: the D-Bus API relayed to a host over a virtio-serial port.
//!
//! In development mode only (the flag file exists), bytes from the port named
//! [`sphere_appd_api::DEV_PORT_NAME`] are relayed to a fresh connection on the daemon's own
//! root-only socket, so a host's `sphere app ... --socket HOST_END` talks to the same API with
//! the same checks, without any network listener on the device. Each host connection is a new
//! D-Bus session: the relay ends when the host side closes.

use crate::manager::Manager;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const POLL: Duration = Duration::from_millis(300);

/// Find `/dev/vportNpM` whose name (in sysfs) is `name`; devtmpfs has no by-name links.
fn find_port(name: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir("/sys/class/virtio-ports").ok()?;
    entries.filter_map(Result::ok).find_map(|entry| {
        let port_name = std::fs::read_to_string(entry.path().join("name")).ok()?;
        (port_name.trim() == name).then(|| Path::new("/dev").join(entry.file_name()))
    })
}

/// Relay sessions forever (returns only if the port does not exist).
pub async fn serve(manager: Arc<Manager>, port_name: String, socket: PathBuf) {
    let Some(port) = find_port(&port_name) else { return };
    loop {
        if !manager.development_mode() {
            tokio::time::sleep(POLL * 10).await;
            continue;
        }
        match relay_one_session(&port, &socket).await {
            Ok(true) => {}
            Ok(false) => tokio::time::sleep(POLL).await,
            Err(error) => {
                eprintln!("sphere-appd: development port {}: {error}", port.display());
                tokio::time::sleep(POLL * 10).await;
            }
        }
    }
}

/// One host session. `Ok(false)` when no host is connected (the port reads end-of-file).
async fn relay_one_session(port: &Path, socket: &Path) -> std::io::Result<bool> {
    let file = std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open(port)?;
    // Separate handles for the two directions: a tokio File runs one operation at a time, and a
    // read waiting for the host must not hold up a reply being written to it.
    let mut from_host = tokio::fs::File::from_std(file.try_clone()?);
    let mut to_host = tokio::fs::File::from_std(file);
    let mut first = [0u8; 4096];
    let read = from_host.read(&mut first).await?;
    if read == 0 {
        return Ok(false);
    }
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (mut from_daemon, mut to_daemon) = stream.into_split();
    to_daemon.write_all(&first[..read]).await?;
    let upstream = async {
        let copied = tokio::io::copy(&mut from_host, &mut to_daemon).await;
        let _ = to_daemon.shutdown().await;
        copied
    };
    let downstream = async {
        let copied = tokio::io::copy(&mut from_daemon, &mut to_host).await;
        let _ = to_host.flush().await;
        copied
    };
    // The host closing ends the session; the daemon side then sees end-of-file too.
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
    Ok(true)
}
