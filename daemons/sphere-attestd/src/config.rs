//! Configuration: the image's `/etc/sphere/attestd.json`, overlaid by the provisioned
//! `/data/sphere/attestd/config.json` (JSON objects merged key by key), overlaid by the kernel
//! command line (`sphere.cloud=URL`, `sphere.mqtt=HOST:PORT`), which is how a development
//! board or a QEMU run points a stock image at a particular cloud.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::keystore::Backend;
use crate::measure::MeasureConfig;
use crate::tpm::TpmPath;

pub const DEFAULT_CONFIG: &str = "/etc/sphere/attestd.json";
pub const DEFAULT_CMDLINE: &str = "/proc/cmdline";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `auto` (the TPM at /dev/tpmrm0 if present, else the file key), `tpm:PATH`, `unix:PATH`
    /// (a swtpm socket) or `file:PATH`.
    pub key: String,
    /// Persistent state on the data partition: file key, certificates, outbox.
    pub state_dir: PathBuf,
    /// Per-boot state (tmpfs): the event log, which must reset exactly when the PCRs do.
    pub run_dir: PathBuf,
    pub os_release: PathBuf,
    pub cloud: CloudConfig,
    pub mqtt: MqttConfig,
    pub telemetry_interval_s: u64,
    /// Renew the certificate once this fraction of its lifetime has passed.
    pub renew_fraction: f64,
    /// Wait between failed attempts (doubles up to 16x).
    pub retry_s: u64,
    pub queue_max_messages: usize,
    pub queue_max_bytes: u64,
    /// The app manager's peer-to-peer D-Bus socket, polled for crash and violation counts.
    pub appd_socket: PathBuf,
    pub violation_poll_s: u64,
    pub measure: MeasureConfig,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudConfig {
    /// Base URL of sphere-cloud's device API, e.g. `http://10.0.2.100:8480`. Empty: offline.
    pub url: String,
    /// CA certificate(s) for an https URL.
    pub ca_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Broker host (an IP literal on the device). Empty: no MQTT link.
    pub host: String,
    pub port: u16,
    /// CA for the broker's server certificate; default: the device CA the cloud returned.
    pub ca_file: Option<PathBuf>,
    /// The name the broker's certificate must carry; default: `host`.
    pub server_name: Option<String>,
    pub keep_alive_s: u64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig { host: String::new(), port: 8883, ca_file: None, server_name: None, keep_alive_s: 30 }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            key: "auto".into(),
            state_dir: "/data/sphere/attestd".into(),
            run_dir: "/run/sphere/attestd".into(),
            os_release: "/etc/os-release".into(),
            cloud: CloudConfig::default(),
            mqtt: MqttConfig::default(),
            telemetry_interval_s: 60,
            renew_fraction: 0.66,
            retry_s: 5,
            queue_max_messages: 1000,
            queue_max_bytes: 1 << 20,
            appd_socket: sphere_appd_api::P2P_SOCKET.into(),
            violation_poll_s: 30,
            measure: MeasureConfig::default(),
        }
    }
}

fn merge(base: &mut serde_json::Value, overlay: serde_json::Value) {
    match (base, overlay) {
        (serde_json::Value::Object(base), serde_json::Value::Object(overlay)) => {
            for (key, value) in overlay {
                merge(base.entry(key).or_insert(serde_json::Value::Null), value);
            }
        }
        (base, overlay) => *base = overlay,
    }
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, String> {
    match std::fs::read(path) {
        // An empty file (or /dev/null) means "no settings here".
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(None),
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

impl Config {
    /// Load `path` (may be absent: defaults), the provisioned overlay in its state_dir, then
    /// the kernel command line at `cmdline` (may be absent).
    pub fn load(path: &Path, cmdline: &Path) -> Result<Config, String> {
        let mut value = serde_json::to_value(Config::default()).map_err(|e| e.to_string())?;
        if let Some(image) = read_json(path)? {
            merge(&mut value, image);
        }
        let state_dir: Config =
            serde_json::from_value(value.clone()).map_err(|e| format!("{}: {e}", path.display()))?;
        let overlay_path = state_dir.state_dir.join("config.json");
        if let Some(overlay) = read_json(&overlay_path)? {
            merge(&mut value, overlay);
        }
        let mut config: Config =
            serde_json::from_value(value).map_err(|e| format!("{}: {e}", overlay_path.display()))?;
        if let Ok(text) = std::fs::read_to_string(cmdline) {
            config.apply_cmdline(&text)?;
        }
        Ok(config)
    }

    pub fn apply_cmdline(&mut self, cmdline: &str) -> Result<(), String> {
        for word in cmdline.split_whitespace() {
            if let Some(url) = word.strip_prefix("sphere.cloud=") {
                self.cloud.url = url.to_owned();
            } else if let Some(broker) = word.strip_prefix("sphere.mqtt=") {
                let (host, port) =
                    broker.rsplit_once(':').ok_or_else(|| format!("sphere.mqtt={broker}: want HOST:PORT"))?;
                self.mqtt.host = host.to_owned();
                self.mqtt.port = port.parse().map_err(|_| format!("sphere.mqtt={broker}: bad port"))?;
            }
        }
        Ok(())
    }

    /// Which keystore to use. `auto` prefers the TPM resource manager.
    pub fn backend(&self) -> Backend {
        let file = || Backend::File(self.state_dir.join("identity.key"));
        match self.key.as_str() {
            "auto" => {
                let rm = Path::new("/dev/tpmrm0");
                if rm.exists() { Backend::Tpm(TpmPath::Device(rm.to_owned())) } else { file() }
            }
            "file" => file(),
            other => {
                if let Some(path) = other.strip_prefix("file:") {
                    Backend::File(path.into())
                } else if let Some(path) = other.strip_prefix("tpm:") {
                    Backend::Tpm(TpmPath::Device(path.into()))
                } else {
                    Backend::Tpm(TpmPath::parse(other))
                }
            }
        }
    }

    pub fn outbox_dir(&self) -> PathBuf {
        self.state_dir.join("outbox")
    }
    pub fn eventlog_path(&self) -> PathBuf {
        self.run_dir.join("eventlog.json")
    }
    pub fn cert_path(&self) -> PathBuf {
        self.state_dir.join("device.crt")
    }
    pub fn ca_path(&self) -> PathBuf {
        self.state_dir.join("device-ca.crt")
    }
    pub fn cert_info_path(&self) -> PathBuf {
        self.state_dir.join("certificate.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_and_cmdline_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let image = dir.path().join("attestd.json");
        std::fs::write(
            &image,
            serde_json::json!({"state_dir": state, "cloud": {"url": "http://192.0.2.1:1"}, "telemetry_interval_s": 5})
                .to_string(),
        )
        .unwrap();
        std::fs::write(state.join("config.json"), r#"{"mqtt": {"port": 1883}}"#).unwrap();
        let cmdline = dir.path().join("cmdline");
        std::fs::write(&cmdline, "console=ttyAMA0 sphere.cloud=http://10.0.2.100:8480 sphere.mqtt=10.0.2.100:8883\n")
            .unwrap();
        let config = Config::load(&image, &cmdline).unwrap();
        assert_eq!(config.cloud.url, "http://10.0.2.100:8480");
        assert_eq!((config.mqtt.host.as_str(), config.mqtt.port), ("10.0.2.100", 8883));
        assert_eq!(config.telemetry_interval_s, 5);
        std::fs::write(&cmdline, "sphere.mqtt=nohostport\n").unwrap();
        assert!(Config::load(&image, &cmdline).is_err());
        std::fs::write(&image, r#"{"unknown_key": 1}"#).unwrap();
        assert!(Config::load(&image, &cmdline).is_err(), "typos in the config are errors");
    }
}
