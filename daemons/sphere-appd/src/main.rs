//! sphere-appd: the app manager daemon, and offline store commands for image builds and tests.
//!
//! ```text
//! sphere-appd install --store DIR --trust KEY.pub... [--dev-trust KEY.pub... --development-mode]
//!                     [--board FILE [--board-dir DIR]...] [--storage-dir DIR] PACKAGE
//!     (--storage-dir also creates the app's MutableStorage image there: provisioning a data
//!     partition from a build host, which has mke2fs where a minimal device image may not)
//! sphere-appd serve   [--config FILE]      (default /etc/sphere/appd.json; the daemon)
//! sphere-appd list    --store DIR
//! sphere-appd remove  --store DIR COMPONENT_ID
//! ```
//!
//! Arguments are parsed by hand: this binary ships on a device with 16 MB of flash, and a full
//! CLI parser would cost more than the rest of the store code.

use sphere_app_format::HardwareDefinitionSet;
use sphere_appd::store::{AppStore, DeviceTrust};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: sphere-appd serve [--config FILE]\n       sphere-appd install --store DIR --trust KEY.pub... [--dev-trust KEY.pub... --development-mode] \
[--board FILE [--board-dir DIR]...] [--storage-dir DIR] PACKAGE\n       sphere-appd list --store DIR\n       sphere-appd remove --store DIR COMPONENT_ID";

#[derive(Default)]
struct Args {
    store: Option<PathBuf>,
    config: Option<PathBuf>,
    trust: Vec<PathBuf>,
    dev_trust: Vec<PathBuf>,
    development_mode: bool,
    board: Option<PathBuf>,
    board_dirs: Vec<PathBuf>,
    storage_dir: Option<PathBuf>,
    positional: Vec<String>,
}

fn parse(mut words: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args::default();
    while let Some(word) = words.next() {
        let mut value = || words.next().ok_or_else(|| format!("{word} needs a value"));
        match word.as_str() {
            "--store" => args.store = Some(value()?.into()),
            "--config" => args.config = Some(value()?.into()),
            "--trust" => args.trust.push(value()?.into()),
            "--dev-trust" => args.dev_trust.push(value()?.into()),
            "--development-mode" => args.development_mode = true,
            "--board" => args.board = Some(value()?.into()),
            "--board-dir" => args.board_dirs.push(value()?.into()),
            "--storage-dir" => args.storage_dir = Some(value()?.into()),
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            _ => args.positional.push(word),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let mut words = std::env::args().skip(1);
    let command = words.next().unwrap_or_default();
    let result = parse(words).and_then(|args| run(&command, &args));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sphere-appd: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: &str, args: &Args) -> Result<(), String> {
    if command == "serve" {
        return serve(args);
    }
    let store_dir = args.store.as_ref().ok_or_else(|| format!("--store is required\n{USAGE}"))?;
    let mut store = AppStore::open(store_dir).map_err(|e| e.to_string())?;
    match (command, args.positional.as_slice()) {
        ("install", [package]) => {
            let trust = load_trust(args)?;
            let board = match &args.board {
                Some(path) => Some(HardwareDefinitionSet::load(path, &args.board_dirs).map_err(|e| e.to_string())?),
                None => None,
            };
            let file = std::fs::File::open(package).map_err(|e| format!("cannot read {package}: {e}"))?;
            let app =
                store.install(std::io::BufReader::new(file), &trust, board.as_ref()).map_err(|e| e.to_string())?;
            println!(
                "installed {} {} (version {}, uid {})",
                app.name,
                app.component_id,
                &app.version_digest[..16],
                app.uid
            );
            match &args.storage_dir {
                Some(dir) => create_storage(&store, &app, dir),
                None => Ok(()),
            }
        }
        ("list", []) => {
            for app in store.list() {
                println!("{} {} {}", app.component_id, &app.version_digest[..16], app.name);
            }
            Ok(())
        }
        ("remove", [id]) => {
            let id = uuid::Uuid::try_parse(id).map_err(|_| format!("\"{id}\" is not a ComponentId"))?;
            let app = store.remove(id).map_err(|e| e.to_string())?;
            println!("removed {} {}", app.name, app.component_id);
            Ok(())
        }
        _ => Err(USAGE.to_owned()),
    }
}

fn load_trust(args: &Args) -> Result<DeviceTrust, String> {
    let mut trust = DeviceTrust { development_mode: args.development_mode, ..DeviceTrust::default() };
    for path in &args.trust {
        trust.release.add_pem_file(path).map_err(|e| e.to_string())?;
    }
    for path in &args.dev_trust {
        trust.development.add_pem_file(path).map_err(|e| e.to_string())?;
    }
    Ok(trust)
}

/// The daemon: install what waits in the inbox, start every app, serve D-Bus until SIGTERM.
fn serve(args: &Args) -> Result<(), String> {
    let path = args.config.clone().unwrap_or_else(|| PathBuf::from("/etc/sphere/appd.json"));
    let config = sphere_appd::config::Config::load(&path)?;
    // One thread: the daemon waits on children and sockets; it never computes for long.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let manager = sphere_appd::manager::Manager::open(config.clone())?;
        manager.install_inbox().await;
        manager.start_all();
        if let (Some(port), false) = (config.dev_port.clone(), config.system_bus) {
            tokio::spawn(sphere_appd::dev_port::serve(std::sync::Arc::clone(&manager), port, config.socket.clone()));
        }
        let server = {
            let manager = std::sync::Arc::clone(&manager);
            async move {
                if config.system_bus {
                    sphere_appd::dbus::serve_system_bus(manager).await.map_err(|e| e.to_string())?;
                    std::future::pending::<()>().await;
                    Ok(())
                } else {
                    sphere_appd::dbus::serve_p2p(manager, &config.socket).await.map_err(|e| e.to_string())
                }
            }
        };
        println!("sphere-appd: ready");
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
        tokio::select! {
            result = server => result,
            _ = terminate.recv() => {
                manager.stop_all().await;
                Ok(())
            }
        }
    })
}

/// Create the app's `MutableStorage` image (if its manifest asks for one) as the daemon would.
fn create_storage(
    store: &AppStore,
    app: &sphere_appd::store::InstalledApp,
    dir: &std::path::Path,
) -> Result<(), String> {
    let manifest = store.manifest(app).map_err(|e| e.to_string())?;
    let Some(storage) = manifest.capabilities.mutable_storage else { return Ok(()) };
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let image = dir.join(format!("{}.ext4", app.component_id));
    sphere_sandbox::storage::create_image(&image, u64::from(storage.size_kb) * 1024, app.uid, app.uid)
        .map_err(|e| format!("cannot create {}: {e}", image.display()))?;
    println!("created {} KB of mutable storage at {}", storage.size_kb, image.display());
    Ok(())
}
