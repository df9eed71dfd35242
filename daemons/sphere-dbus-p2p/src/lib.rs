//! Serve a D-Bus object on a peer-to-peer Unix socket that only root can open.
//!
//! The device runs no D-Bus bus daemon: one process less to harden and a broker less between
//! a client and the daemon it asks. Each OpenSphere daemon (app manager, firewall, updater)
//! instead listens on its own socket under `/run/sphere` and speaks D-Bus directly with every
//! client that connects. Access control is the socket's file mode (0600, root), so the socket
//! is created here, mode set before the first client can be served.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tokio::net::{UnixListener, UnixStream};

/// Bind `socket` (creating its directory, replacing a stale socket left by a previous run)
/// and make it root-only.
pub fn bind_private_socket(socket: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket file outlives its process; binding over it would fail with EADDRINUSE.
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Speak D-Bus as the server with one connected client, serving `interface` at `object_path`.
/// The returned connection serves on its own tasks for as long as it is kept.
pub async fn serve_peer<I>(
    stream: UnixStream,
    object_path: &'static str,
    interface: I,
) -> zbus::Result<zbus::Connection>
where
    I: zbus::object_server::Interface,
{
    zbus::connection::Builder::unix_stream(stream)
        .server(zbus::Guid::generate())?
        .p2p()
        .serve_at(object_path, interface)?
        .build()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;

    #[zbus::interface(name = "org.opensphere.Test1")]
    impl Echo {
        fn echo(&self, text: String) -> String {
            text
        }
    }

    #[tokio::test]
    async fn a_client_calls_the_served_object_over_a_root_only_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("run/sphere/test.sock");
        // A stale socket from an earlier run must not stop the bind.
        std::fs::create_dir_all(socket.parent().expect("parent")).expect("mkdir");
        std::fs::write(&socket, b"stale").expect("stale file");
        let listener = bind_private_socket(&socket).expect("bind");
        let mode = std::fs::metadata(&socket).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            serve_peer(stream, "/org/opensphere/Test", Echo).await.expect("serve")
        });
        let client_stream = UnixStream::connect(&socket).await.expect("connect");
        let client = zbus::connection::Builder::unix_stream(client_stream).p2p().build().await.expect("client");
        let _server_connection = server.await.expect("server task");
        let reply = client
            .call_method(None::<&str>, "/org/opensphere/Test", Some("org.opensphere.Test1"), "Echo", &("hi",))
            .await
            .expect("call");
        let text: String = reply.body().deserialize().expect("body");
        assert_eq!(text, "hi");
    }
}
