//! The daemon's configuration: where things live on the device. Every field has the default of
//! the OpenSphere image, so an empty `{}` (or no file) is a working configuration.

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The app store (on the data partition).
    pub store_dir: PathBuf,
    /// Per-app `MutableStorage` images (on the data partition).
    pub storage_dir: PathBuf,
    /// Release signing keys (`*.pub` or `*.pem`, SPKI PEM): always trusted.
    pub trusted_keys_dir: PathBuf,
    /// Development signing keys: trusted only while development mode is on.
    pub development_keys_dir: PathBuf,
    /// Development mode is on while this file exists (a local admin action creates it).
    pub development_mode_flag: PathBuf,
    /// The board's hardware definition; peripherals cannot be granted without one.
    pub board: Option<PathBuf>,
    pub board_search_dirs: Vec<PathBuf>,
    /// Packages dropped here (e.g. by the QEMU runner) are installed at start and deleted.
    pub inbox_dir: PathBuf,
    pub runtime_dir: PathBuf,
    /// cgroup v2 directory under which every app gets its own cgroup.
    pub cgroup_parent: PathBuf,
    /// The single-threaded sandbox launcher (`sphere-sandbox-exec`).
    pub launcher: PathBuf,
    /// Peer-to-peer D-Bus socket (used when `system_bus` is false).
    pub socket: PathBuf,
    /// Serve on the system bus instead of the peer-to-peer socket.
    pub system_bus: bool,
    /// Lines of each app's output kept in memory for `Logs`.
    pub log_lines: usize,
    /// Virtio-serial port over which a host reaches the API, in development mode only.
    pub dev_port: Option<String>,
    /// The inter-core link to the real-time core: a device path (a UART tty, ...) ...
    pub intercore_device: Option<PathBuf>,
    /// ... or the name of a virtio-serial port (the QEMU board's link), used when no device is
    /// given. Neither present: high-level apps' connect requests are answered "no link".
    pub intercore_port: Option<String>,
    /// Where real-time apps' firmware images are deployed for the real-time core's loader
    /// (`<ComponentId>.elf`, and `deployed.json` listing them).
    pub rt_firmware_dir: PathBuf,
    /// scripts/bench-intercore.sh writes "COUNT SIZE" here (development mode only) to have the
    /// daemon measure a raw byte echo over the link before it starts brokering.
    pub intercore_bench_flag: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            store_dir: "/data/sphere/apps".into(),
            storage_dir: "/data/sphere/storage".into(),
            trusted_keys_dir: "/etc/sphere/keys".into(),
            development_keys_dir: "/etc/sphere/dev-keys".into(),
            development_mode_flag: "/data/sphere/development-mode".into(),
            board: None,
            board_search_dirs: Vec::new(),
            inbox_dir: "/data/sphere/inbox".into(),
            runtime_dir: "/run/sphere".into(),
            cgroup_parent: "/sys/fs/cgroup/sphere-apps".into(),
            launcher: "/usr/bin/sphere-sandbox-exec".into(),
            socket: sphere_appd_api::P2P_SOCKET.into(),
            system_bus: false,
            log_lines: 200,
            dev_port: Some(sphere_appd_api::DEV_PORT_NAME.to_owned()),
            intercore_device: None,
            intercore_port: Some(sphere_appd_api::INTERCORE_PORT_NAME.to_owned()),
            rt_firmware_dir: "/run/sphere/rt".into(),
            intercore_bench_flag: "/data/sphere/intercore-raw-bench".into(),
        }
    }
}

impl Config {
    /// Read a JSON config; a missing file means all defaults.
    pub fn load(path: &Path) -> Result<Config, String> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(error) => Err(format!("cannot read {}: {error}", path.display())),
        }
    }
}

/// Every `*.pub` or `*.pem` public key file in `dir` (a missing directory is no keys).
pub fn key_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pub" || x == "pem"))
        .collect();
    files.sort();
    files
}
