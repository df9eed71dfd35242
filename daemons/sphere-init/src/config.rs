//! /etc/sphere/init.json: what init mounts, configures and supervises.
//!
//! Every field but `services[].name` and `services[].path` has a default, unknown fields are
//! rejected (a typo must not silently drop a setting), and `validate` reports every problem at
//! once with its JSON location. Example:
//!
//! ```json
//! {
//!   "hostname": "opensphere",
//!   "data": { "device": "serial:sphere-data", "fstype": "ext4", "mountpoint": "/data",
//!             "dirs": ["apps", "log"] },
//!   "network": [ { "name": "eth0", "address": "10.0.2.15/24", "gateway": "10.0.2.2" } ],
//!   "log": { "path": "/run/log/sphere-init.log", "max_bytes": 262144 },
//!   "stop_timeout_ms": 5000,
//!   "services": [
//!     { "name": "diag", "path": "/sbin/init", "args": ["--diag-service"],
//!       "env": { "RUST_LOG": "info" }, "restart": "always", "ready_line": "READY=1",
//!       "only_if_cmdline": "sphere.selftest" }
//!   ]
//! }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Deserialize;

pub const DEFAULT_PATH: &str = "/etc/sphere/init.json";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_hostname")]
    pub hostname: String,
    #[serde(default)]
    pub data: Option<DataConfig>,
    #[serde(default)]
    pub network: Vec<Interface>,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub control: ControlConfig,
    /// How long services get between SIGTERM and SIGKILL at shutdown.
    #[serde(default = "default_stop_timeout_ms")]
    pub stop_timeout_ms: u64,
    /// After this long, boot is declared complete even if some service is not ready yet.
    #[serde(default = "default_boot_timeout_ms")]
    pub boot_timeout_ms: u64,
    #[serde(default)]
    pub services: Vec<Service>,
    /// The A/B health check that commits a trial slot (see `slots`).
    #[serde(default)]
    pub health: HealthConfig,
}

/// What must hold, besides every enabled service having been ready, before a trial slot is
/// committed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// `IP:PORT` that must accept a TCP connection (the cloud is reachable). An IP literal:
    /// init does no name resolution.
    #[serde(default)]
    pub reachable: Option<std::net::SocketAddr>,
    /// Connection timeout for `reachable`, per attempt (three attempts, one second apart).
    #[serde(default = "default_health_timeout_ms")]
    pub timeout_ms: u64,
    /// The anti-rollback minimum version record (sphere-slots' `FileMinVersion`; the same file
    /// as sphere-updated's `min_version`). Committing a trial slot raises it to that slot's
    /// version. On the data partition, mounted before boot completes.
    #[serde(default = "default_min_version")]
    pub min_version: String,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig { reachable: None, timeout_ms: default_health_timeout_ms(), min_version: default_min_version() }
    }
}

fn default_health_timeout_ms() -> u64 {
    3000
}

fn default_min_version() -> String {
    sphere_slots::rollback::DEFAULT_MIN_VERSION_PATH.to_string()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `/dev/vdb`, `serial:NAME` (the virtio-blk disk whose serial is NAME), `partname:NAME`
    /// (the GPT partition named NAME); alternatives joined by `|` are tried in order.
    pub device: String,
    #[serde(default = "default_data_fstype")]
    pub fstype: String,
    #[serde(default = "default_data_mountpoint")]
    pub mountpoint: String,
    /// Directories (relative to the mount point) created after mounting.
    #[serde(default)]
    pub dirs: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    pub name: String,
    /// IPv4 address with prefix length, e.g. `10.0.2.15/24`.
    pub address: String,
    #[serde(default)]
    pub gateway: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default = "default_log_path")]
    pub path: String,
    #[serde(default = "default_log_max_bytes")]
    pub max_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Unix datagram socket accepting `poweroff` / `reboot` (root only, mode 0600).
    #[serde(default = "default_control_socket")]
    pub socket: String,
    /// Name of a virtio-serial port accepting the same commands from the host, if present.
    #[serde(default = "default_virtio_port")]
    pub virtio_port: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Restart whenever the service exits.
    Always,
    /// Restart only after a non-zero exit status or a signal.
    OnFailure,
    Never,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    pub path: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "default_restart")]
    pub restart: RestartPolicy,
    /// Ready when the service prints exactly this line on stdout. Without it, a service is ready
    /// once it has stayed alive for `ready_grace_ms`.
    #[serde(default)]
    pub ready_line: Option<String>,
    #[serde(default = "default_ready_grace_ms")]
    pub ready_grace_ms: u64,
    /// Start the service only when this kernel command-line flag is set (e.g. `sphere.selftest`).
    #[serde(default)]
    pub only_if_cmdline: Option<String>,
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// A run at least this long resets the backoff.
    #[serde(default = "default_backoff_reset_ms")]
    pub backoff_reset_ms: u64,
}

fn default_hostname() -> String {
    "opensphere".to_string()
}
fn default_stop_timeout_ms() -> u64 {
    5000
}
fn default_boot_timeout_ms() -> u64 {
    30_000
}
fn default_data_fstype() -> String {
    "ext4".to_string()
}
fn default_data_mountpoint() -> String {
    "/data".to_string()
}
fn default_log_path() -> String {
    "/run/log/sphere-init.log".to_string()
}
fn default_log_max_bytes() -> usize {
    256 * 1024
}
fn default_control_socket() -> String {
    "/run/sphere-init.sock".to_string()
}
fn default_virtio_port() -> Option<String> {
    Some("sphere.ctl".to_string())
}
fn default_restart() -> RestartPolicy {
    RestartPolicy::Always
}
fn default_ready_grace_ms() -> u64 {
    300
}
fn default_backoff_initial_ms() -> u64 {
    200
}
fn default_backoff_max_ms() -> u64 {
    30_000
}
fn default_backoff_reset_ms() -> u64 {
    10_000
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { path: default_log_path(), max_bytes: default_log_max_bytes() }
    }
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig { socket: default_control_socket(), virtio_port: default_virtio_port() }
    }
}

impl Default for Config {
    /// What init runs with when init.json is missing or invalid: mounts and shutdown handling,
    /// no network, no services.
    fn default() -> Self {
        Config {
            hostname: default_hostname(),
            data: None,
            network: Vec::new(),
            log: LogConfig::default(),
            control: ControlConfig::default(),
            stop_timeout_ms: default_stop_timeout_ms(),
            boot_timeout_ms: default_boot_timeout_ms(),
            services: Vec::new(),
            health: HealthConfig::default(),
        }
    }
}

impl Service {
    pub fn ready_grace(&self) -> Duration {
        Duration::from_millis(self.ready_grace_ms)
    }
}

#[derive(Debug)]
pub enum ConfigError {
    Read(String, std::io::Error),
    Parse(String, serde_json::Error),
    Invalid(String, Vec<String>),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read(origin, err) => write!(f, "{origin}: cannot read: {err}"),
            ConfigError::Parse(origin, err) => write!(f, "{origin}: {err}"),
            ConfigError::Invalid(origin, problems) => {
                write!(f, "{origin}: {} problem(s): {}", problems.len(), problems.join("; "))
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses an IPv4 `a.b.c.d/prefix` into the address and its prefix length.
pub fn parse_cidr(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, prefix) = text.split_once('/').ok_or_else(|| format!("'{text}' is not ADDRESS/PREFIX"))?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| format!("'{addr}' is not an IPv4 address"))?;
    let prefix: u8 =
        prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(|| format!("'{prefix}' is not a prefix length 0..=32"))?;
    Ok((addr, prefix))
}

/// The netmask of a prefix length: 24 → 255.255.255.0.
pub fn netmask(prefix: u8) -> Ipv4Addr {
    let bits = match prefix {
        0 => 0,
        p if p >= 32 => u32::MAX,
        p => u32::MAX << (32 - u32::from(p)),
    };
    Ipv4Addr::from(bits)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

impl Config {
    /// Parses and validates; `origin` names the source in error messages.
    pub fn from_json(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = serde_json::from_str(text).map_err(|err| ConfigError::Parse(origin.to_string(), err))?;
        let problems = config.problems();
        if problems.is_empty() { Ok(config) } else { Err(ConfigError::Invalid(origin.to_string(), problems)) }
    }

    pub fn load(path: &str) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Read(path.to_string(), err))?;
        Config::from_json(&text, path)
    }

    /// Every semantic problem, each prefixed with its JSON location.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !valid_hostname(&self.hostname) {
            problems
                .push(format!("hostname: '{}' is not a valid host name (letters, digits, '-', ≤ 63)", self.hostname));
        }
        if let Some(data) = &self.data {
            if !crate::mounts::valid_device_spec(&data.device) {
                problems.push(format!(
                    "data.device: '{}' must be /dev/..., serial:NAME or partname:NAME (alternatives joined by '|')",
                    data.device
                ));
            }
            if !data.mountpoint.starts_with('/') || data.mountpoint == "/" {
                problems.push(format!("data.mountpoint: '{}' must be an absolute path other than /", data.mountpoint));
            }
            for (i, dir) in data.dirs.iter().enumerate() {
                if dir.is_empty() || dir.starts_with('/') || dir.split('/').any(|c| c == "..") {
                    problems.push(format!("data.dirs[{i}]: '{dir}' must be a relative path without '..'"));
                }
            }
        }
        let mut interfaces = BTreeSet::new();
        for (i, iface) in self.network.iter().enumerate() {
            let at = format!("network[{i}]");
            if iface.name.is_empty() || iface.name.len() >= 16 {
                problems.push(format!("{at}.name: '{}' must be 1..=15 bytes", iface.name));
            }
            if !interfaces.insert(iface.name.as_str()) {
                problems.push(format!("{at}.name: '{}' is configured twice", iface.name));
            }
            if let Err(err) = parse_cidr(&iface.address) {
                problems.push(format!("{at}.address: {err}"));
            }
            if let Some(gw) = &iface.gateway {
                if gw.parse::<Ipv4Addr>().is_err() {
                    problems.push(format!("{at}.gateway: '{gw}' is not an IPv4 address"));
                }
            }
        }
        if !self.log.path.starts_with('/') {
            problems.push(format!("log.path: '{}' must be absolute", self.log.path));
        }
        if self.log.max_bytes < 4096 {
            problems.push(format!("log.max_bytes: {} is below 4096", self.log.max_bytes));
        }
        if !self.control.socket.starts_with('/') {
            problems.push(format!("control.socket: '{}' must be absolute", self.control.socket));
        }
        let mut names = BTreeSet::new();
        for (i, svc) in self.services.iter().enumerate() {
            let at = format!("services[{i}] ({})", svc.name);
            if !valid_name(&svc.name) {
                problems.push(format!("{at}.name: must be 1..=32 of [A-Za-z0-9._-]"));
            }
            if !names.insert(svc.name.as_str()) {
                problems.push(format!("{at}.name: duplicate service name"));
            }
            if !svc.path.starts_with('/') {
                problems.push(format!("{at}.path: '{}' must be absolute", svc.path));
            }
            for key in svc.env.keys() {
                if key.is_empty() || key.contains('=') || key.contains('\0') {
                    problems.push(format!("{at}.env: invalid variable name '{key}'"));
                }
            }
            if svc.args.iter().any(|a| a.contains('\0')) || svc.env.values().any(|v| v.contains('\0')) {
                problems.push(format!("{at}: arguments and env values cannot contain NUL"));
            }
            if svc.backoff_initial_ms == 0 {
                problems.push(format!("{at}.backoff_initial_ms: must be > 0"));
            }
            if svc.ready_line.as_deref() == Some("") {
                problems.push(format!("{at}.ready_line: must not be empty"));
            }
        }
        problems
    }

    /// The services enabled for this boot (those gated by an unset cmdline flag are dropped).
    pub fn enabled_services(&self, cmdline: &crate::cmdline::Cmdline) -> Vec<Service> {
        self.services.iter().filter(|s| s.only_if_cmdline.as_deref().is_none_or(|f| cmdline.flag(f))).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::Cmdline;

    const FULL: &str = r#"{
        "hostname": "sphere-qemu",
        "data": { "device": "serial:sphere-data", "dirs": ["apps", "log/old"] },
        "network": [ { "name": "eth0", "address": "10.0.2.15/24", "gateway": "10.0.2.2" } ],
        "log": { "max_bytes": 65536 },
        "stop_timeout_ms": 2000,
        "services": [
            { "name": "diag", "path": "/sbin/init", "args": ["--diag-service"],
              "env": { "A": "1" }, "ready_line": "READY=1", "only_if_cmdline": "sphere.selftest" },
            { "name": "appmgr", "path": "/usr/bin/appmgr", "restart": "on-failure" }
        ]
    }"#;

    #[test]
    fn full_example_parses_with_defaults() {
        let c = Config::from_json(FULL, "test").expect("valid");
        assert_eq!(c.hostname, "sphere-qemu");
        let data = c.data.as_ref().expect("data");
        assert_eq!(data.fstype, "ext4");
        assert_eq!(data.mountpoint, "/data");
        assert_eq!(c.log.path, "/run/log/sphere-init.log");
        assert_eq!(c.log.max_bytes, 65536);
        assert_eq!(c.control.virtio_port.as_deref(), Some("sphere.ctl"));
        assert_eq!(c.services[0].restart, RestartPolicy::Always);
        assert_eq!(c.services[1].restart, RestartPolicy::OnFailure);
        assert_eq!(c.services[1].ready_grace(), Duration::from_millis(300));
        assert_eq!(c.services[1].backoff_initial_ms, 200);
    }

    #[test]
    fn empty_object_is_a_valid_config() {
        let c = Config::from_json("{}", "test").expect("valid");
        assert!(c.services.is_empty());
        assert!(c.data.is_none());
    }

    #[test]
    fn unknown_fields_are_rejected_with_location() {
        let err = Config::from_json(
            "{\n  \"services\": [ { \"name\": \"a\", \"path\": \"/a\", \"restrat\": \"never\" } ]\n}",
            "init.json",
        )
        .expect_err("typo");
        let text = err.to_string();
        assert!(text.starts_with("init.json: unknown field `restrat`"), "{text}");
        assert!(text.contains("line 2"), "{text}");
    }

    #[test]
    fn bad_restart_policy_names_the_choices() {
        let err = Config::from_json(r#"{"services":[{"name":"a","path":"/a","restart":"sometimes"}]}"#, "x")
            .expect_err("bad policy");
        let text = err.to_string();
        assert!(text.contains("unknown variant `sometimes`"), "{text}");
        assert!(text.contains("on-failure"), "{text}");
    }

    #[test]
    fn semantic_problems_are_all_reported() {
        let err = Config::from_json(
            r#"{
              "hostname": "bad host",
              "data": { "device": "vdb", "mountpoint": "/", "dirs": ["../x"] },
              "network": [ { "name": "eth0", "address": "10.0.2.15", "gateway": "x" } ],
              "services": [
                { "name": "a", "path": "relative" },
                { "name": "a", "path": "/ok", "env": { "B=C": "1" } },
                { "name": "", "path": "/ok", "ready_line": "" }
              ]
            }"#,
            "init.json",
        )
        .expect_err("invalid");
        let ConfigError::Invalid(_, problems) = &err else {
            panic!("expected Invalid, got {err}");
        };
        let all = problems.join("\n");
        for needle in [
            "hostname:",
            "data.device:",
            "data.mountpoint:",
            "data.dirs[0]:",
            "network[0].address:",
            "network[0].gateway:",
            "services[0] (a).path:",
            "services[1] (a).name: duplicate",
            "services[1] (a).env:",
            "services[2] ().name:",
            "services[2] ().ready_line:",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(problems.len(), 11, "{all}");
    }

    #[test]
    fn cidr_and_netmask() {
        assert_eq!(parse_cidr("10.0.2.15/24"), Ok((Ipv4Addr::new(10, 0, 2, 15), 24)));
        assert!(parse_cidr("10.0.2.15/33").is_err());
        assert!(parse_cidr("10.0.2/24").is_err());
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(netmask(32), Ipv4Addr::new(255, 255, 255, 255));
        assert_eq!(netmask(20), Ipv4Addr::new(255, 255, 240, 0));
    }

    #[test]
    fn cmdline_gated_services() {
        let c = Config::from_json(FULL, "test").expect("valid");
        let plain = c.enabled_services(&Cmdline::parse("console=ttyAMA0"));
        assert_eq!(plain.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["appmgr"]);
        let test = c.enabled_services(&Cmdline::parse("sphere.selftest=1"));
        assert_eq!(test.len(), 2);
    }
}
