//! The daemon end to end on the host: `sphere-appd serve`, driven over its D-Bus API exactly as
//! the `sphere` CLI drives it, running a real app in the real sandbox (`sphere-sandbox-exec`).
//! Needs root (namespaces, mounts, cgroups), as CI has.

use sphere_app_format::keys::SigningKeyPair;
use sphere_app_format::package::{Limits, build_package};
use sphere_appd_api::AppManagerProxy;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const APP_ID: &str = "3d1f7a52-0c4e-4b6a-8f2d-9e5b1c7a4d60";

/// A tiny static app (no dynamic loader exists in a sandbox): prints, then heartbeats, and
/// exits cleanly on SIGTERM as Azure Sphere apps must.
const APP_SOURCE: &str = r#"
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
static volatile sig_atomic_t stop;
static void on_term(int s) { (void)s; stop = 1; }
int main(void) {
    signal(SIGTERM, on_term);
    printf("test-app: started uid=%d\n", (int)getuid());
    fflush(stdout);
    for (int beat = 1; !stop; beat++) { printf("test-app: beat %d\n", beat); fflush(stdout); sleep(1); }
    printf("test-app: SIGTERM, exiting\n");
    return 0;
}
"#;

fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run the tests with `cargo test --workspace`", path.display());
    path
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn build_app(dir: &Path, key: &SigningKeyPair) -> PathBuf {
    let src = dir.join("app.c");
    std::fs::write(&src, APP_SOURCE).unwrap();
    let app = dir.join("app");
    std::fs::create_dir_all(app.join("bin")).unwrap();
    let status = Command::new("cc").args(["-static", "-O2", "-o"]).arg(app.join("bin/app")).arg(&src).status().unwrap();
    assert!(status.success(), "static C compile failed (build-essential and libc6-dev are needed)");
    std::fs::set_permissions(app.join("bin/app"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let manifest = format!(
        r#"{{"SchemaVersion":1,"Name":"test-app","ComponentId":"{APP_ID}","EntryPoint":"/bin/app","Capabilities":{{"MutableStorage":{{"SizeKB":256}}}}}}"#
    );
    std::fs::write(app.join("app_manifest.json"), manifest).unwrap();
    let package = dir.join("test-app.sphpkg");
    build_package(&app, key, &package, &Limits::default()).unwrap();
    package
}

async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn install_run_stop_and_remove_through_dbus() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root (namespaces, mounts, cgroups)");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let key = SigningKeyPair::generate();
    std::fs::create_dir_all(root.join("keys")).unwrap();
    std::fs::write(root.join("keys/release.pub"), key.public_pem().unwrap()).unwrap();
    let package = build_app(root, &key);
    let socket = root.join("run/appd.sock");
    let config = serde_json::json!({
        "store_dir": root.join("store"), "storage_dir": root.join("storage"),
        "trusted_keys_dir": root.join("keys"), "development_keys_dir": root.join("dev-keys"),
        "development_mode_flag": root.join("devmode"), "inbox_dir": root.join("inbox"),
        "runtime_dir": root.join("run"), "cgroup_parent": format!("/sys/fs/cgroup/sphere-appd-test-{}", std::process::id()),
        "launcher": workspace_bin("sphere-sandbox-exec"), "socket": socket,
    });
    std::fs::write(root.join("appd.json"), config.to_string()).unwrap();
    let daemon = Command::new(env!("CARGO_BIN_EXE_sphere-appd"))
        .arg("serve")
        .arg("--config")
        .arg(root.join("appd.json"))
        .spawn()
        .unwrap();
    let _daemon = Daemon(daemon);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        wait_for("the socket", || async { socket.exists() }).await;
        let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
        let connection = zbus::connection::Builder::unix_stream(stream).p2p().build().await.unwrap();
        let proxy = AppManagerProxy::new(&connection).await.unwrap();

        check_introspection_doc(&connection).await;

        let id = proxy.install(&package.to_string_lossy()).await.expect("install");
        assert_eq!(id, APP_ID);
        wait_for("the app's first line", || async {
            proxy.logs(APP_ID, 10).await.unwrap().iter().any(|l| l.contains("started"))
        })
        .await;
        let status = proxy.status(APP_ID).await.unwrap();
        assert_eq!(status.state, "running", "{status:?}");
        let started = proxy.logs(APP_ID, 50).await.unwrap();
        let uid_line = started.iter().find(|l| l.contains("uid=")).unwrap();
        assert!(!uid_line.contains("uid=0"), "the app must not run as root: {uid_line}");

        let first_pid = proxy.status(APP_ID).await.unwrap().pid;
        proxy.restart(APP_ID).await.unwrap();
        wait_for("the restarted app", || async { proxy.status(APP_ID).await.unwrap().state == "running" }).await;
        assert_ne!(proxy.status(APP_ID).await.unwrap().pid, first_pid, "restart runs a new process");

        assert!(!proxy.development_mode().await.unwrap(), "development mode is off by default");
        proxy.set_development_mode(true).await.unwrap();
        assert!(proxy.development_mode().await.unwrap());
        assert!(root.join("devmode").exists());
        proxy.set_development_mode(false).await.unwrap();
        assert!(!proxy.development_mode().await.unwrap());

        proxy.stop(APP_ID).await.unwrap();
        let stopped = proxy.status(APP_ID).await.unwrap();
        assert_eq!(stopped.state, "stopped");
        assert!(stopped.last_exit.contains("exit 0") || stopped.last_exit.contains("stopped"), "{stopped:?}");
        assert!(
            proxy.logs(APP_ID, 5).await.unwrap().iter().any(|l| l.contains("SIGTERM, exiting")),
            "the app got SIGTERM first"
        );

        let unknown = proxy.start("00000000-0000-0000-0000-00000000000a").await;
        assert!(unknown.is_err(), "starting an unknown app fails");

        let storage_mount = root.join("run/storage").join(APP_ID);
        assert!(sphere_sandbox::storage::is_mounted(&storage_mount), "the app's storage was mounted");
        proxy.remove(APP_ID).await.unwrap();
        assert!(proxy.list().await.unwrap().is_empty());
        assert!(!storage_mount.exists(), "removing the app unmounts and deletes its storage mount point");
        assert!(!root.join("storage").join(format!("{APP_ID}.ext4")).exists(), "and deletes its storage image");
    });
}

/// The checked-in introspection XML must be what the daemon really serves. Regenerate it with
/// `SPHERE_UPDATE_DBUS_DOCS=1 cargo test -p sphere-appd --test daemon`.
async fn check_introspection_doc(connection: &zbus::Connection) {
    let introspectable = zbus::fdo::IntrospectableProxy::builder(connection)
        .destination(sphere_appd_api::BUS_NAME)
        .unwrap()
        .path(sphere_appd_api::OBJECT_PATH)
        .unwrap()
        .build()
        .await
        .unwrap();
    let xml = introspectable.introspect().await.unwrap();
    let start = xml.find("<interface name=\"org.opensphere.AppManager1\">").expect("our interface is served");
    let end = start + xml[start..].find("</interface>").expect("interface end") + "</interface>".len();
    let served = format!(
        "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n \
         \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n<node name=\"{}\">\n  {}\n</node>\n",
        sphere_appd_api::OBJECT_PATH,
        &xml[start..end]
    );
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/dbus/org.opensphere.AppManager1.xml");
    if std::env::var_os("SPHERE_UPDATE_DBUS_DOCS").is_some() {
        std::fs::create_dir_all(doc.parent().unwrap()).unwrap();
        std::fs::write(&doc, &served).unwrap();
    }
    let checked_in = std::fs::read_to_string(&doc).unwrap_or_default();
    assert_eq!(checked_in, served, "{} is stale; regenerate it (see this test's doc comment)", doc.display());
}
