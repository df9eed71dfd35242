//! Measured boot: hash each stage into sphere-attestation's event log and extend the same
//! digest into the TPM PCR the stage belongs to (PCRs 8-12, see `sphere_attestation::eventlog`).
//!
//! What is measured, in order:
//! 1. `boot-record` / `kernel-cmdline`: the kernel command line (`/proc/cmdline`), which names
//!    the root slot and the boot options. (The initramfs itself is gone once sphere-init has
//!    switched root; a measuring boot loader would measure it before the kernel runs.)
//! 2. `root-slot` / `rootfs`: every byte of the active root block device (`sphere.root=` on the
//!    command line: `serial:NAME` or a /dev path). The root is read-only (EROFS), so this digest
//!    equals the SHA-256 of the image file the release shipped.
//! 3. `init` / `sphere-init`: `/sbin/init`.
//! 4. `daemon` / NAME: each daemon binary listed in the configuration.
//! 5. per installed app (the app manager's registry): `app` / ID = the package listing digest,
//!    `sandbox-policy` / ID and `firewall-policy` / ID = the digests of the inputs the app
//!    manager derives the effective policies from (see [`sandbox_policy_digest`]).
//!
//! Trust boundary: sphere-attestd runs after the kernel and sphere-init, so it measures them
//! after the fact; a TPM quote proves the log was not edited afterwards, and that the PCRs hold
//! exactly these digests, but a kernel that lies to user space could still lie here. A board
//! with a measuring boot loader extends PCRs 0-7 before the kernel; we leave those to it.
//!
//! Restarts: PCRs only reset with the TPM (at boot), so the log is kept in /run (tmpfs, also
//! reset at boot). A restarted daemon reloads it instead of measuring twice, then measures only
//! what is new (apps installed since).

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sphere_attestation::{Digest, EventLog, Stage};

use crate::keystore::IdentityKey;

/// Where the things to measure are (all configurable so host tests can point at a fake root).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeasureConfig {
    pub cmdline: PathBuf,
    /// Where block devices' serial numbers are (`/sys/block`).
    pub sys_block: PathBuf,
    pub dev_dir: PathBuf,
    /// Where the root mount is looked up (None: use `sphere.root=` only).
    pub mountinfo: Option<PathBuf>,
    /// `/sys/dev/block`, to turn a major:minor into a device name.
    pub sys_dev_block: PathBuf,
    /// Used when the command line names no `sphere.root=`.
    pub default_root: String,
    pub init: PathBuf,
    /// Daemon name → binary path.
    pub daemons: Vec<(String, PathBuf)>,
    /// The app manager's store (`registry.json` and `apps/ID/DIGEST/`).
    pub app_store: PathBuf,
    /// The board's hardware definition the app manager resolves manifests against.
    pub board: Option<PathBuf>,
}

impl Default for MeasureConfig {
    fn default() -> Self {
        MeasureConfig {
            cmdline: "/proc/cmdline".into(),
            sys_block: "/sys/block".into(),
            dev_dir: "/dev".into(),
            mountinfo: Some("/proc/self/mountinfo".into()),
            sys_dev_block: "/sys/dev/block".into(),
            default_root: "serial:sphere-root".into(),
            init: "/sbin/init".into(),
            daemons: vec![
                ("sphere-appd".into(), "/usr/bin/sphere-appd".into()),
                ("sphere-sandbox-exec".into(), "/usr/bin/sphere-sandbox-exec".into()),
                ("sphere-attestd".into(), "/usr/bin/sphere-attestd".into()),
            ],
            app_store: "/data/sphere/apps".into(),
            board: Some("/etc/sphere/hardware-definitions/opensphere_qemu_virt_a7.json".into()),
        }
    }
}

/// The event log and what sphere-attestd knows about it, persisted in /run across restarts.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MeasuredState {
    pub log: EventLog,
    /// Whether the digests were also extended into TPM PCRs.
    pub in_tpm: bool,
    pub os_version: String,
    pub apps: Vec<sphere_attestation::AppVersion>,
    pub policies: Vec<sphere_attestation::PolicyHashes>,
}

#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    #[error("measuring {what}: {path}: {source}")]
    Read { what: String, path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Key(#[from] crate::keystore::KeyError),
}

fn read_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> MeasureError {
    let what = what.to_owned();
    let path = path.to_owned();
    move |source| MeasureError::Read { what, path, source }
}

/// SHA-256 of a file (or block device), streamed.
pub fn hash_file(what: &str, path: &Path) -> Result<Digest, MeasureError> {
    let mut file = fs::File::open(path).map_err(read_err(what, path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(read_err(what, path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Digest(hasher.finalize().into()))
}

/// The kernel command line as measured: trailing whitespace trimmed.
pub fn cmdline_bytes(text: &str) -> Vec<u8> {
    text.trim_end().as_bytes().to_vec()
}

fn cmdline_get<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline.split_whitespace().find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}

/// The block device holding the root filesystem. First choice: whatever is mounted at `/`
/// (from mountinfo's major:minor), which covers plain disks, A/B partitions and dm-verity
/// alike; else `sphere.root=` as `serial:NAME` (virtio-blk serial) or a /dev path.
fn root_device(config: &MeasureConfig, spec: &str) -> Result<PathBuf, MeasureError> {
    if let Some(device) = mounted_root(config) {
        return Ok(device);
    }
    let Some(serial) = spec.strip_prefix("serial:") else {
        return Ok(PathBuf::from(spec));
    };
    let entries = fs::read_dir(&config.sys_block).map_err(read_err("block devices", &config.sys_block))?;
    for entry in entries.flatten() {
        let found = fs::read_to_string(entry.path().join("serial")).unwrap_or_default();
        if found.trim() == serial {
            return Ok(config.dev_dir.join(entry.file_name()));
        }
    }
    Err(MeasureError::Invalid(format!("no block device with serial {serial} for the root slot")))
}

fn mounted_root(config: &MeasureConfig) -> Option<PathBuf> {
    let mountinfo = fs::read_to_string(config.mountinfo.as_ref()?).ok()?;
    // Fields: id parent major:minor root mountpoint ...; the last "/" mount wins (switch_root).
    let dev = mountinfo.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(4) == Some(&"/")).then(|| fields.get(2).map(|d| d.to_string())).flatten()
    })?;
    if dev.starts_with("0:") {
        return None; // tmpfs/rootfs (the initramfs): no block device
    }
    let uevent = fs::read_to_string(config.sys_dev_block.join(&dev).join("uevent")).ok()?;
    let name = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME="))?;
    Some(config.dev_dir.join(name))
}

/// The inputs of an app's effective sandbox policy: its manifest (capabilities, storage,
/// devices) resolved against the board's hardware definition. The app manager derives the
/// sandbox from exactly these bytes, so the same inputs give the same sandbox.
pub fn sandbox_policy_digest(manifest: &[u8], board: &[u8]) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update(b"opensphere-sandbox-policy-v1\0");
    hasher.update((manifest.len() as u64).to_be_bytes());
    hasher.update(manifest);
    hasher.update(board);
    Digest(hasher.finalize().into())
}

/// The inputs of an app's effective firewall policy: the manifest's network capabilities
/// (`AllowedConnections`, `AllowedTcpServerPorts`, `AllowedUdpServerPorts`), in canonical JSON
/// (serde_json's maps are sorted), so formatting changes do not change the digest.
pub fn firewall_policy_digest(manifest: &serde_json::Value) -> Digest {
    let capabilities = manifest.get("Capabilities").cloned().unwrap_or_default();
    let pick = |name: &str| capabilities.get(name).cloned().unwrap_or(serde_json::Value::Null);
    let network = serde_json::json!({
        "AllowedConnections": pick("AllowedConnections"),
        "AllowedTcpServerPorts": pick("AllowedTcpServerPorts"),
        "AllowedUdpServerPorts": pick("AllowedUdpServerPorts"),
    });
    let mut hasher = Sha256::new();
    hasher.update(b"opensphere-firewall-policy-v1\0");
    hasher.update(network.to_string().as_bytes());
    Digest(hasher.finalize().into())
}

/// One installed app, read from the app manager's registry (loosely: only the fields we need,
/// so the app manager may add fields without breaking attestation).
#[derive(Deserialize)]
struct RegistryApp {
    component_id: String,
    version_digest: String,
}

#[derive(Deserialize)]
struct Registry {
    #[serde(default)]
    apps: std::collections::BTreeMap<String, RegistryApp>,
}

struct AppMeasurement {
    id: String,
    package: Digest,
    sandbox: Digest,
    firewall: Digest,
}

fn installed_apps(config: &MeasureConfig) -> Result<Vec<AppMeasurement>, MeasureError> {
    let registry_path = config.app_store.join("registry.json");
    let registry: Registry = match fs::read(&registry_path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| MeasureError::Invalid(format!("{}: {e}", registry_path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_err("the app registry", &registry_path)(e)),
    };
    let board = match &config.board {
        Some(path) => fs::read(path).map_err(read_err("the board hardware definition", path))?,
        None => Vec::new(),
    };
    let mut out = Vec::new();
    for app in registry.apps.values() {
        let package = Digest::from_hex(&app.version_digest)
            .ok_or_else(|| MeasureError::Invalid(format!("app {}: version digest is not hex", app.component_id)))?;
        // The directory names come from the registry; refuse anything that could walk out.
        if app.component_id.contains('/') || app.component_id.contains("..") {
            return Err(MeasureError::Invalid(format!("app id {:?} is not a plain name", app.component_id)));
        }
        let manifest_path =
            config.app_store.join("apps").join(&app.component_id).join(package.to_hex()).join("app_manifest.json");
        let manifest = fs::read(&manifest_path).map_err(read_err("an app manifest", &manifest_path))?;
        let parsed: serde_json::Value = serde_json::from_slice(&manifest)
            .map_err(|e| MeasureError::Invalid(format!("{}: {e}", manifest_path.display())))?;
        out.push(AppMeasurement {
            id: app.component_id.clone(),
            package,
            sandbox: sandbox_policy_digest(&manifest, &board),
            firewall: firewall_policy_digest(&parsed),
        });
    }
    Ok(out)
}

/// The OS version: `VERSION_ID` of os-release, else "unknown".
pub fn os_version(os_release: &Path) -> String {
    fs::read_to_string(os_release)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| line.strip_prefix("VERSION_ID=").map(|v| v.trim_matches('"').to_owned()))
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

impl MeasuredState {
    /// Append one measurement and extend it into the TPM (when there is one).
    fn record(
        &mut self,
        key: Option<&IdentityKey>,
        stage: Stage,
        component: &str,
        digest: Digest,
    ) -> Result<(), MeasureError> {
        if let Some(key) = key {
            key.pcr_extend(u32::from(stage.pcr()), &digest.0)?;
        }
        self.log.record(stage, component, digest);
        Ok(())
    }

    /// Measure the boot stages (once per boot).
    pub fn measure_boot(
        config: &MeasureConfig,
        key: Option<&IdentityKey>,
        os_version: String,
    ) -> Result<MeasuredState, MeasureError> {
        let mut state = MeasuredState {
            in_tpm: key.is_some_and(|k| matches!(k.backend(), crate::keystore::Backend::Tpm(_))),
            os_version,
            ..Default::default()
        };
        let key = key.filter(|_| state.in_tpm);
        let cmdline =
            fs::read_to_string(&config.cmdline).map_err(read_err("the kernel command line", &config.cmdline))?;
        state.record(key, Stage::BootRecord, "kernel-cmdline", Digest::of(&cmdline_bytes(&cmdline)))?;
        let root_spec = cmdline_get(&cmdline, "sphere.root").unwrap_or(&config.default_root).to_owned();
        let root = root_device(config, &root_spec)?;
        state.record(key, Stage::RootSlot, "rootfs", hash_file("the root slot", &root)?)?;
        state.record(key, Stage::Init, "sphere-init", hash_file("sphere-init", &config.init)?)?;
        for (name, path) in &config.daemons {
            if path.exists() {
                state.record(key, Stage::Daemon, name, hash_file(name, path)?)?;
            }
        }
        state.measure_apps(config, key)?;
        Ok(state)
    }

    /// Measure apps not yet in the log (new installs and updates: the component is the app id,
    /// the digest the package, so an update appends a new entry; PCRs only ever extend).
    pub fn measure_apps(&mut self, config: &MeasureConfig, key: Option<&IdentityKey>) -> Result<usize, MeasureError> {
        let key = key.filter(|_| self.in_tpm);
        let known: BTreeSet<(String, Digest)> = self
            .log
            .entries
            .iter()
            .filter(|e| e.stage == Stage::App)
            .map(|e| (e.component.clone(), e.digest))
            .collect();
        let mut added = 0;
        for app in installed_apps(config)? {
            if known.contains(&(app.id.clone(), app.package)) {
                continue;
            }
            self.record(key, Stage::App, &app.id, app.package)?;
            self.record(key, Stage::SandboxPolicy, &app.id, app.sandbox)?;
            self.record(key, Stage::FirewallPolicy, &app.id, app.firewall)?;
            self.apps.retain(|a| a.app_id != app.id);
            self.policies.retain(|p| p.app_id != app.id);
            self.apps.push(sphere_attestation::AppVersion {
                app_id: app.id.clone(),
                version: app.package.to_hex()[..16].to_owned(),
                package_digest: app.package,
            });
            self.policies.push(sphere_attestation::PolicyHashes {
                app_id: app.id,
                sandbox: app.sandbox,
                firewall: app.firewall,
            });
            added += 1;
        }
        Ok(added)
    }

    /// Load the state a previous run of this boot left in `path`, if any.
    pub fn load(path: &Path) -> Result<Option<MeasuredState>, MeasureError> {
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| MeasureError::Invalid(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(read_err("the saved event log", path)(e)),
        }
    }

    /// Save atomically (temporary file, rename).
    pub fn save(&self, path: &Path) -> Result<(), MeasureError> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| MeasureError::Invalid(e.to_string()))?;
        crate::fsutil::write_atomic(path, &json, 0o644).map_err(read_err("saving the event log", path))
    }

    /// Check that replaying the log gives the TPM's PCR values (after a restart: someone else
    /// extending our PCRs would make every later quote fail, better to know now).
    pub fn check_against_tpm(&self, key: &IdentityKey) -> Result<(), MeasureError> {
        let replayed = self.log.replay();
        let pcrs: Vec<u32> = replayed.keys().map(|p| u32::from(*p)).collect();
        let Some(values) = key.pcr_read(&pcrs)? else { return Ok(()) };
        for (pcr, value) in values {
            let expected = u8::try_from(pcr).ok().and_then(|p| replayed.get(&p));
            if expected.map(|d| d.0) != Some(value) {
                return Err(MeasureError::Invalid(format!(
                    "PCR {pcr} holds {} but the event log replays to {}: something else extended it",
                    hex::encode(value),
                    expected.map(|d| d.to_hex()).unwrap_or_default()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_values_are_found_by_exact_key() {
        let line = "console=ttyAMA0 sphere.rootfstype=erofs sphere.root=serial:sphere-root\n";
        assert_eq!(cmdline_get(line, "sphere.root"), Some("serial:sphere-root"));
        assert_eq!(cmdline_get(line, "sphere.rootfs"), None);
    }

    #[test]
    fn firewall_digest_ignores_formatting_and_other_capabilities() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"Capabilities":{"AllowedConnections":["a.example"],"Gpio":[1]}}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str("{ \"Capabilities\" : { \"Gpio\":[2], \"AllowedConnections\" : [ \"a.example\" ] } }")
                .unwrap();
        let c: serde_json::Value =
            serde_json::from_str(r#"{"Capabilities":{"AllowedConnections":["b.example"]}}"#).unwrap();
        assert_eq!(firewall_policy_digest(&a), firewall_policy_digest(&b));
        assert_ne!(firewall_policy_digest(&a), firewall_policy_digest(&c));
    }
}
