//! `/etc/sphere/updated.json`: where the repository is, what board this is, where state lives.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::download::DownloadOptions;

pub const DEFAULT_CONFIG: &str = "/etc/sphere/updated.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Base URL of the TUF metadata (`.../metadata/`): https, or file for local media.
    pub metadata_url: String,
    /// Base URL of the targets (`.../targets/`).
    pub targets_url: String,
    /// The root of trust shipped in the image (`1.root.json` of the repository, or a later
    /// root). After the first check the newest verified root in `state_dir/tuf` is used.
    pub trusted_root: PathBuf,
    /// PEM CA certificates trusted for HTTPS.
    #[serde(default)]
    pub ca_certificates: Option<PathBuf>,
    /// Accept `http://` (TUF still verifies everything; TLS adds privacy).
    #[serde(default)]
    pub allow_plain_http: bool,
    /// This board's id, matched against each target's `hardware` list.
    pub hardware: String,
    /// Persistent update state: TUF metadata cache, partial downloads, installed versions.
    pub state_dir: PathBuf,
    /// The anti-rollback minimum version record (see sphere-slots' `rollback` module).
    #[serde(default = "default_min_version")]
    pub min_version: PathBuf,
    /// Where M4 firmware lives, per OS slot (`m4_dir/slot-a/firmware.bin`).
    pub m4_dir: PathBuf,
    /// The A/B layout; absent: discovered from GPT partition names.
    #[serde(default)]
    pub slots: Option<SlotsConfig>,
    /// The app manager's peer-to-peer D-Bus socket.
    #[serde(default = "default_appd_socket")]
    pub appd_socket: PathBuf,
    /// Our own D-Bus socket (peer-to-peer; no bus daemon on the device).
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    #[serde(default)]
    pub download: DownloadOptions,
}

/// Explicit slot devices or files (host tests, benchmarks, boards without GPT names).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotsConfig {
    pub bootenv: PathBuf,
    pub slot_a: PathBuf,
    pub slot_b: PathBuf,
    /// The running slot, when it cannot be found from the mounted root (file-backed slots).
    #[serde(default)]
    pub booted: Option<String>,
}

fn default_min_version() -> PathBuf {
    PathBuf::from(sphere_slots::rollback::DEFAULT_MIN_VERSION_PATH)
}
fn default_appd_socket() -> PathBuf {
    PathBuf::from(sphere_appd_api::P2P_SOCKET)
}
fn default_socket() -> PathBuf {
    PathBuf::from(crate::api::P2P_SOCKET)
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn tuf_dir(&self) -> PathBuf {
        self.state_dir.join("tuf")
    }
    pub fn partial_path(&self) -> PathBuf {
        self.state_dir.join("partial.json")
    }
    pub fn installed_path(&self) -> PathBuf {
        self.state_dir.join("installed.json")
    }
    pub fn downloads_dir(&self) -> PathBuf {
        self.state_dir.join("downloads")
    }
}
