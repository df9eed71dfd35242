//! What one sandboxed app process gets: the [`SandboxSpec`], and how a manifest becomes one.
//!
//! The spec is plain data (serializable) so the app manager can build it in its multi-threaded
//! process and hand it to the single-threaded launcher (`sphere-sandbox-exec`) as JSON. Every
//! grant in a spec comes from the manifest: nothing is added here that the manifest did not ask
//! for, apart from the fixed sandbox furniture every app gets (`/dev/null`, a private `/tmp`,
//! `/proc` of its own pid namespace).

use serde::{Deserialize, Serialize};
use sphere_app_format::manifest::ApplicationType;
use sphere_app_format::{AppManifest, ResolvedPeripheral};
use std::path::{Component, Path, PathBuf};

/// Where an app's `MutableStorage` appears inside its sandbox (Azure Sphere's path).
pub const STORAGE_MOUNT: &str = "/mnt/config";
/// Where the app's read-only package files appear inside its sandbox.
pub const APP_MOUNT: &str = "/app";
/// Default runtime directory of the launcher (per-app device directories, root staging).
pub const DEFAULT_RUNTIME_DIR: &str = "/run/sphere-sandbox";
/// The fd number an app finds its telemetry pipe on (when enabled); see [`SandboxSpec::telemetry`].
pub const TELEMETRY_FD: i32 = 3;
/// The fd number an app finds its app manager API socket on (when given); see
/// [`SandboxSpec::app_api_fd`].
pub const APP_API_FD: i32 = 4;

/// Everything the launcher needs to start one app process in its sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSpec {
    /// The app's ComponentId (names its cgroup and device directory).
    pub component_id: String,
    /// The app's own host uid and gid (also its ids inside: the user namespace maps them 1:1).
    pub uid: u32,
    pub gid: u32,
    /// The app's unpacked, verified package: mounted read-only at [`APP_MOUNT`].
    pub app_root: PathBuf,
    /// Absolute path inside the package, e.g. `/bin/app`.
    pub entry_point: String,
    pub args: Vec<String>,
    /// The whole environment of the app; nothing is inherited from the launcher.
    pub env: Vec<(String, String)>,
    pub storage: Option<StorageSpec>,
    pub devices: Vec<DeviceGrant>,
    pub network: NetworkSpec,
    pub limits: CgroupLimits,
    /// The cgroup (v2 path under `/sys/fs/cgroup`) the app's own cgroup is created in; it must
    /// have `memory pids cpu` in its `cgroup.subtree_control` (the launcher enables them if it can).
    pub cgroup_parent: PathBuf,
    pub runtime_dir: PathBuf,
    pub stdout: LogTarget,
    pub stderr: LogTarget,
    /// Time between SIGTERM and SIGKILL when the app is stopped.
    pub stop_grace_ms: u64,
    /// Give the app a pipe on fd [`TELEMETRY_FD`] (env `SPHERE_TELEMETRY_FD`) on which its
    /// applibs wrapper reports denials the kernel does not tell the launcher about (Landlock
    /// EACCES), one `landlock-denied <what>` line each.
    pub telemetry: bool,
    /// A socket the launcher inherited (not close-on-exec) from the app manager, given to the
    /// app on fd [`APP_API_FD`] (env `SPHERE_APP_API_FD`): the app's private line to the app
    /// manager's per-app API (inter-core `Application_Connect`). It is the only way in: the
    /// sandbox has no path to any socket of the manager.
    #[serde(default)]
    pub app_api_fd: Option<i32>,
    /// The app's resolv.conf, written by the firewall daemon (sphere-netd) and naming only the
    /// app's own DNS proxy; bind-mounted read-only at `/etc/resolv.conf`. None: no /etc.
    #[serde(default)]
    pub resolv_conf: Option<PathBuf>,
}

/// `MutableStorage`: an ext4 image file with a hard size, see [`crate::storage`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSpec {
    /// The persistent image file (created at install with [`crate::storage::create_image`]).
    pub image: PathBuf,
    /// Where the launcher keeps the image mounted on the host between launches.
    pub host_mount: PathBuf,
    /// The manifest's `SizeKB` in bytes: usable space of the file system.
    pub quota_bytes: u64,
}

/// A device node the app may open (read, write, ioctl), and the GPIO line it stands for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceGrant {
    /// Host path of the node, e.g. `/dev/gpiochip0`; the sandbox sees it at the same path.
    pub path: PathBuf,
    /// For a GPIO peripheral: the line on the chip. Today the whole chip node is granted; see
    /// `docs/sandbox.md` ("Peripherals") for line-level isolation.
    pub gpio_line: Option<u32>,
    /// The manifest entry that asked for it (for reports), e.g. `Gpio $SAMPLE_LED`.
    pub granted_by: String,
}

/// The app's network: its own empty network namespace (loopback only), plus Landlock TCP rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// `AllowedTcpServerPorts`: the only ports `bind` succeeds on (Landlock ABI ≥ 4).
    pub tcp_bind_ports: Vec<u16>,
    /// `false` when the manifest lists no `AllowedConnections`: every TCP connect is refused
    /// (Landlock ABI ≥ 4). Destinations of allowed connections are the firewall's job, since
    /// Landlock rules are per port and Azure Sphere allows any port to an allowed host.
    pub tcp_connect: bool,
}

/// Where an app's stdout or stderr goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogTarget {
    /// The launcher's own fd of the same number.
    #[default]
    Inherit,
    /// A fd the launcher inherited (not close-on-exec) from the app manager.
    Fd(i32),
    Null,
}

/// cgroup v2 limits for one app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupLimits {
    /// `memory.max` (swap is always off: `memory.swap.max` 0).
    pub memory_max_bytes: u64,
    /// `pids.max`: processes and threads together.
    pub pids_max: u32,
    /// `cpu.weight` (1–10000, 100 is the kernel's default share).
    pub cpu_weight: u32,
}

impl Default for CgroupLimits {
    /// Sized for a small device (a 256 MiB Cortex-A7 board running a handful of apps): an app
    /// that needs more is a product decision, made by lowering nothing and raising the device
    /// policy, never by the app itself.
    fn default() -> Self {
        CgroupLimits { memory_max_bytes: 32 * 1024 * 1024, pids_max: 32, cpu_weight: 100 }
    }
}

impl CgroupLimits {
    /// Each limit of `self` lowered to `requested`'s where that is lower (a request can only
    /// tighten). Zero values in `requested` are ignored (they would make the app unstartable).
    pub fn tightened_by(self, requested: &CgroupLimits) -> CgroupLimits {
        let lower = |ours: u64, theirs: u64| if theirs == 0 { ours } else { ours.min(theirs) };
        CgroupLimits {
            memory_max_bytes: lower(self.memory_max_bytes, requested.memory_max_bytes),
            pids_max: lower(self.pids_max.into(), requested.pids_max.into()) as u32,
            cpu_weight: lower(self.cpu_weight.into(), requested.cpu_weight.into()) as u32,
        }
    }
}

/// The device side of a launch: decided by the app manager, not by the app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchContext {
    /// The verified, unpacked package.
    pub app_root: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// The app's storage image (used only if the manifest asks for `MutableStorage`).
    pub storage_image: PathBuf,
    /// Where that image is mounted on the host between launches.
    pub storage_host_mount: PathBuf,
    /// Device ceiling for every app's cgroup limits.
    pub limits: CgroupLimits,
    /// Per-app tightening (e.g. from a product's app policy); can only lower `limits`.
    pub requested_limits: Option<CgroupLimits>,
    pub cgroup_parent: PathBuf,
    pub runtime_dir: PathBuf,
}

/// Why a manifest cannot become a sandbox.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("{0:?} apps run on a real-time core, not in a Linux sandbox")]
    NotAHighLevelApp(ApplicationType),
    #[error("peripheral {kind} {entry} has no LinuxDevice in the board's hardware definition; it cannot be granted")]
    NoLinuxDevice { kind: String, entry: String },
    #[error("device path {0:?} must be an absolute, normalised path under /dev")]
    BadDevicePath(String),
    #[error("entry point {0:?} must be an absolute, normalised path inside the package")]
    BadEntryPoint(String),
    #[error("{field} is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// Build the sandbox of one app from its (validated) manifest and its resolved peripherals.
///
/// `peripherals` is what `HardwareDefinitionSet::resolve_manifest` returned for this manifest.
pub fn spec_from_manifest(
    manifest: &AppManifest,
    peripherals: &[ResolvedPeripheral],
    context: &LaunchContext,
) -> Result<SandboxSpec, SpecError> {
    if manifest.application_type != ApplicationType::Default {
        return Err(SpecError::NotAHighLevelApp(manifest.application_type));
    }
    let capabilities = &manifest.capabilities;
    let mut devices: Vec<DeviceGrant> = Vec::new();
    for peripheral in peripherals {
        let granted_by = format!("{} {}", peripheral.kind, peripheral.manifest_entry);
        let Some(device) = &peripheral.linux_device else {
            return Err(SpecError::NoLinuxDevice {
                kind: peripheral.kind.to_string(),
                entry: peripheral.manifest_entry.clone(),
            });
        };
        let path = PathBuf::from(&device.path);
        check_device_path(&path)?;
        // Two GPIO lines on one chip are one node: grant it once, keep the first reason.
        if !devices.iter().any(|existing| existing.path == path) {
            devices.push(DeviceGrant { path, gpio_line: device.line, granted_by });
        }
    }
    let storage = capabilities.mutable_storage.map(|storage| StorageSpec {
        image: context.storage_image.clone(),
        host_mount: context.storage_host_mount.clone(),
        quota_bytes: u64::from(storage.size_kb) * 1024,
    });
    let limits = match &context.requested_limits {
        Some(requested) => context.limits.tightened_by(requested),
        None => context.limits,
    };
    let spec = SandboxSpec {
        component_id: manifest.component_id.to_string(),
        uid: context.uid,
        gid: context.gid,
        app_root: context.app_root.clone(),
        entry_point: manifest.entry_point.clone(),
        args: manifest.cmd_args.clone(),
        env: vec![("PATH".to_owned(), format!("{APP_MOUNT}/bin"))],
        storage,
        devices,
        network: NetworkSpec {
            tcp_bind_ports: capabilities.allowed_tcp_server_ports.clone(),
            tcp_connect: !capabilities.allowed_connections.is_empty(),
        },
        limits,
        cgroup_parent: context.cgroup_parent.clone(),
        runtime_dir: context.runtime_dir.clone(),
        stdout: LogTarget::Inherit,
        stderr: LogTarget::Inherit,
        stop_grace_ms: 5_000,
        telemetry: true,
        app_api_fd: None,
        resolv_conf: None,
    };
    spec.validate()?;
    Ok(spec)
}

impl SandboxSpec {
    /// Checks the launcher repeats on a spec it read (the spec crosses a process boundary).
    pub fn validate(&self) -> Result<(), SpecError> {
        let invalid = |field: &'static str, reason: &str| SpecError::Invalid { field, reason: reason.to_owned() };
        if uuid_like(&self.component_id).is_none() {
            return Err(invalid("component_id", "not a GUID"));
        }
        // uid 0 would be root on the host; ids below 1000 belong to the system.
        if self.uid < 1000 || self.gid < 1000 || self.uid == u32::MAX || self.gid == u32::MAX {
            return Err(invalid("uid/gid", "must be between 1000 and 2^32-2"));
        }
        if !is_clean_absolute(Path::new(&self.entry_point)) || self.entry_point == "/" {
            return Err(SpecError::BadEntryPoint(self.entry_point.clone()));
        }
        for path in [&self.app_root, &self.cgroup_parent, &self.runtime_dir] {
            if !is_clean_absolute(path) {
                return Err(invalid("paths", &format!("{} is not an absolute, normalised path", path.display())));
            }
        }
        for grant in &self.devices {
            check_device_path(&grant.path)?;
        }
        if let Some(storage) = &self.storage {
            if !is_clean_absolute(&storage.image) || !is_clean_absolute(&storage.host_mount) {
                return Err(invalid("storage", "paths must be absolute and normalised"));
            }
            if storage.quota_bytes == 0 {
                return Err(invalid("storage", "quota is zero"));
            }
        }
        let no_nul = |text: &str| !text.contains('\0');
        if !self.args.iter().all(|arg| no_nul(arg))
            || !self
                .env
                .iter()
                .all(|(key, value)| no_nul(key) && no_nul(value) && !key.contains('=') && !key.is_empty())
        {
            return Err(invalid("args/env", "NUL byte, empty name or '=' in a name"));
        }
        if self.limits.pids_max == 0 || self.limits.memory_max_bytes < 1024 * 1024 {
            return Err(invalid("limits", "pids_max must be ≥ 1 and memory_max_bytes ≥ 1 MiB"));
        }
        if !(1..=10_000).contains(&self.limits.cpu_weight) {
            return Err(invalid("limits", "cpu_weight must be 1..=10000"));
        }
        Ok(())
    }

    /// The entry point's path inside the sandbox (under [`APP_MOUNT`]).
    pub fn sandbox_entry_point(&self) -> String {
        format!("{APP_MOUNT}{}", self.entry_point)
    }
}

fn check_device_path(path: &Path) -> Result<(), SpecError> {
    let bad = || SpecError::BadDevicePath(path.display().to_string());
    if !is_clean_absolute(path) || !path.starts_with("/dev") || path == Path::new("/dev") {
        return Err(bad());
    }
    Ok(())
}

/// Absolute, and no `.`/`..` components: such a path means one thing before and after mounts.
fn is_clean_absolute(path: &Path) -> bool {
    path.is_absolute()
        && path.components().all(|component| matches!(component, Component::RootDir | Component::Normal(_)))
        && !path.as_os_str().as_encoded_bytes().contains(&0)
}

fn uuid_like(text: &str) -> Option<()> {
    let bytes = text.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    for (index, byte) in bytes.iter().enumerate() {
        let ok = match index {
            8 | 13 | 18 | 23 => *byte == b'-',
            _ => byte.is_ascii_hexdigit(),
        };
        if !ok {
            return None;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sphere_app_format::hardware_definition::LinuxDevice;
    use sphere_app_format::manifest::{PeripheralKind, parse_manifest};

    fn manifest(capabilities: &str) -> AppManifest {
        let text = format!(
            r#"{{"SchemaVersion":1,"Name":"t","ComponentId":"11111111-2222-3333-4444-555555555555",
               "EntryPoint":"/bin/app","CmdArgs":["--x"],"Capabilities":{capabilities}}}"#
        );
        match parse_manifest(text.as_bytes()) {
            Ok(loaded) => loaded.manifest,
            Err(error) => panic!("test manifest invalid: {error}"),
        }
    }

    fn context() -> LaunchContext {
        LaunchContext {
            app_root: "/var/apps/x".into(),
            uid: 10_001,
            gid: 10_001,
            storage_image: "/var/storage/x.img".into(),
            storage_host_mount: "/run/sphere-storage/x".into(),
            limits: CgroupLimits::default(),
            requested_limits: None,
            cgroup_parent: "/sys/fs/cgroup/apps".into(),
            runtime_dir: DEFAULT_RUNTIME_DIR.into(),
        }
    }

    fn gpio(entry: &str, path: &str, line: Option<u32>) -> ResolvedPeripheral {
        ResolvedPeripheral {
            kind: PeripheralKind::Gpio,
            manifest_entry: entry.to_owned(),
            mapping_chain: vec![],
            app_manifest_value: sphere_app_format::hardware_definition::AppManifestValue::Number(0),
            linux_device: Some(LinuxDevice { path: path.to_owned(), line }),
        }
    }

    #[test]
    fn nothing_granted_unless_listed() {
        let spec = spec_from_manifest(&manifest("{}"), &[], &context()).expect("spec");
        assert!(spec.storage.is_none());
        assert!(spec.devices.is_empty());
        assert!(spec.network.tcp_bind_ports.is_empty());
        assert!(!spec.network.tcp_connect);
        assert_eq!(spec.args, vec!["--x"]);
        assert_eq!(spec.sandbox_entry_point(), "/app/bin/app");
    }

    #[test]
    fn storage_network_and_devices_follow_the_manifest() {
        let m = manifest(
            r#"{"MutableStorage":{"SizeKB":64},"AllowedTcpServerPorts":[8080],
                "AllowedConnections":["example.com"],"Gpio":["$LED","$BUTTON"],"Uart":["$UART"]}"#,
        );
        let peripherals = [
            gpio("$LED", "/dev/gpiochip0", Some(4)),
            gpio("$BUTTON", "/dev/gpiochip0", Some(5)),
            gpio("$UART", "/dev/ttyAMA1", None),
        ];
        let spec = spec_from_manifest(&m, &peripherals, &context()).expect("spec");
        assert_eq!(spec.storage.as_ref().map(|s| s.quota_bytes), Some(64 * 1024));
        assert_eq!(spec.network.tcp_bind_ports, vec![8080]);
        assert!(spec.network.tcp_connect);
        let paths: Vec<_> = spec.devices.iter().map(|d| d.path.display().to_string()).collect();
        assert_eq!(paths, vec!["/dev/gpiochip0", "/dev/ttyAMA1"], "one grant per node");
        assert_eq!(spec.devices[0].gpio_line, Some(4));
    }

    #[test]
    fn peripheral_without_linux_device_is_refused() {
        let mut p = gpio("$LED", "/dev/gpiochip0", None);
        p.linux_device = None;
        let error = spec_from_manifest(&manifest(r#"{"Gpio":["$LED"]}"#), &[p], &context()).expect_err("refused");
        assert!(matches!(error, SpecError::NoLinuxDevice { .. }));
    }

    #[test]
    fn device_paths_must_stay_in_dev() {
        for bad in ["/etc/shadow", "/dev/../etc/shadow", "dev/gpiochip0", "/dev"] {
            let p = gpio("$LED", bad, None);
            let error = spec_from_manifest(&manifest(r#"{"Gpio":["$LED"]}"#), &[p], &context()).expect_err(bad);
            assert!(matches!(error, SpecError::BadDevicePath(_)), "{bad}: {error}");
        }
    }

    #[test]
    fn limits_can_only_be_lowered() {
        let mut ctx = context();
        ctx.requested_limits = Some(CgroupLimits { memory_max_bytes: 1 << 40, pids_max: 8, cpu_weight: 0 });
        let spec = spec_from_manifest(&manifest("{}"), &[], &ctx).expect("spec");
        assert_eq!(spec.limits.memory_max_bytes, CgroupLimits::default().memory_max_bytes);
        assert_eq!(spec.limits.pids_max, 8);
        assert_eq!(spec.limits.cpu_weight, 100);
    }

    #[test]
    fn validate_refuses_root_and_odd_paths() {
        let mut spec = spec_from_manifest(&manifest("{}"), &[], &context()).expect("spec");
        spec.uid = 0;
        assert!(spec.validate().is_err());
        spec.uid = 10_001;
        spec.app_root = "/var/apps/../../etc".into();
        assert!(spec.validate().is_err());
        spec.app_root = "/var/apps/x".into();
        spec.env.push(("A=B".into(), "c".into()));
        assert!(spec.validate().is_err());
    }

    #[test]
    fn spec_round_trips_as_json() {
        let spec = spec_from_manifest(&manifest(r#"{"MutableStorage":{"SizeKB":8}}"#), &[], &context()).expect("spec");
        let json = serde_json::to_string(&spec).expect("serialize");
        let back: SandboxSpec = serde_json::from_str(&json).expect("parse");
        assert_eq!(spec, back);
    }

    #[test]
    fn real_time_apps_are_not_sandboxed_here() {
        let text = r#"{"SchemaVersion":1,"Name":"rt","ComponentId":"11111111-2222-3333-4444-555555555555",
            "EntryPoint":"/bin/app","ApplicationType":"RealTimeCapable"}"#;
        let m = parse_manifest(text.as_bytes()).expect("manifest").manifest;
        assert!(matches!(spec_from_manifest(&m, &[], &context()), Err(SpecError::NotAHighLevelApp(_))));
    }
}
