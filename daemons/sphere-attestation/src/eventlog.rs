//! The measured-boot event log, with TPM 2.0 PCR-extend semantics (SHA-256 bank).
//!
//! Each [`EventLogEntry`] records one measured thing: which PCR it was extended into, what
//! kind of thing it is ([`Stage`]), a stable name (`component`, e.g. `sphere-init` or an app
//! id) and the SHA-256 digest of its bytes. Replaying the log from all-zero PCRs
//! ([`EventLog::replay`]) must give exactly the PCR values the device reports in its evidence;
//! the verifier then judges each entry against reference values.
//!
//! PCR allocation (TPM PCRs 8–15 are for the OS; 0–7 belong to firmware and are left alone):
//!
//! | PCR | stages |
//! |-----|--------|
//! | 8   | [`Stage::BootRecord`] (initramfs / boot record) |
//! | 9   | [`Stage::RootSlot`] (the active root filesystem slot) |
//! | 10  | [`Stage::Init`], [`Stage::Daemon`] (sphere-init and the daemon binaries) |
//! | 11  | [`Stage::App`] (installed app packages) |
//! | 12  | [`Stage::SandboxPolicy`], [`Stage::FirewallPolicy`] (each app's effective policy) |
//!
//! [`Stage::pcr`] gives this mapping so both sides use the same index.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fmt;

/// A SHA-256 digest, serialised as lowercase hex in JSON.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Digest(#[serde(with = "hex::serde")] pub [u8; 32]);

impl Digest {
    /// SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(Digest(out))
    }

    /// Construct from a slice that must be exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(Digest(bytes.try_into().ok()?))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// What kind of thing an event log entry measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// The initramfs / boot record the kernel started from.
    BootRecord,
    /// The active root filesystem slot (e.g. its dm-verity root hash or image digest).
    RootSlot,
    /// The sphere-init binary.
    Init,
    /// A daemon binary (component = daemon name).
    Daemon,
    /// An installed app package (component = app id, digest = package digest).
    App,
    /// An app's effective sandbox policy (component = app id).
    SandboxPolicy,
    /// An app's effective firewall policy (component = app id).
    FirewallPolicy,
}

impl Stage {
    /// All stages, in boot order.
    pub const ALL: [Stage; 7] = [
        Stage::BootRecord,
        Stage::RootSlot,
        Stage::Init,
        Stage::Daemon,
        Stage::App,
        Stage::SandboxPolicy,
        Stage::FirewallPolicy,
    ];

    /// The PCR this stage is extended into (see the module table).
    pub fn pcr(self) -> u8 {
        match self {
            Stage::BootRecord => 8,
            Stage::RootSlot => 9,
            Stage::Init | Stage::Daemon => 10,
            Stage::App => 11,
            Stage::SandboxPolicy | Stage::FirewallPolicy => 12,
        }
    }

    /// The kebab-case name used in JSON, reference values and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::BootRecord => "boot-record",
            Stage::RootSlot => "root-slot",
            Stage::Init => "init",
            Stage::Daemon => "daemon",
            Stage::App => "app",
            Stage::SandboxPolicy => "sandbox-policy",
            Stage::FirewallPolicy => "firewall-policy",
        }
    }

    fn code(self) -> u8 {
        match self {
            Stage::BootRecord => 1,
            Stage::RootSlot => 2,
            Stage::Init => 3,
            Stage::Daemon => 4,
            Stage::App => 5,
            Stage::SandboxPolicy => 6,
            Stage::FirewallPolicy => 7,
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One measurement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventLogEntry {
    /// The PCR the digest was extended into. Must equal `stage.pcr()`; the verifier checks.
    pub pcr: u8,
    pub stage: Stage,
    /// Stable name of what was measured: daemon name, app id, or a fixed name for single
    /// stages (`initramfs`, `rootfs`, `sphere-init`).
    pub component: String,
    /// SHA-256 of the measured bytes.
    pub digest: Digest,
}

/// Longest component name accepted, so a hostile log cannot make the verifier hash megabytes.
pub const MAX_COMPONENT_LEN: usize = 256;
/// Most entries accepted in one log.
pub const MAX_ENTRIES: usize = 4096;

/// PCR values by index, as replayed from a log or reported by a device.
pub type PcrBank = BTreeMap<u8, Digest>;

/// The ordered event log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventLog {
    pub entries: Vec<EventLogEntry>,
}

impl EventLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append a measurement of `bytes` for `stage`/`component`, returning its digest (which the
    /// caller also extends into the real TPM PCR `stage.pcr()` where there is one).
    pub fn measure(&mut self, stage: Stage, component: &str, bytes: &[u8]) -> Digest {
        let digest = Digest::of(bytes);
        self.record(stage, component, digest);
        digest
    }

    /// Append an already-computed digest (e.g. a package digest the app manager verified).
    pub fn record(&mut self, stage: Stage, component: &str, digest: Digest) {
        self.entries.push(EventLogEntry { pcr: stage.pcr(), stage, component: component.to_owned(), digest });
    }

    /// TPM 2.0 extend: `SHA-256(old || digest)`.
    pub fn extend(old: &Digest, digest: &Digest) -> Digest {
        let mut hasher = Sha256::new();
        hasher.update(old.0);
        hasher.update(digest.0);
        Digest(hasher.finalize().into())
    }

    /// Replay the log from all-zero PCRs. Only PCRs that appear in the log are in the result.
    pub fn replay(&self) -> PcrBank {
        let mut bank = PcrBank::new();
        for entry in &self.entries {
            let pcr = bank.entry(entry.pcr).or_default();
            *pcr = Self::extend(pcr, &entry.digest);
        }
        bank
    }

    /// The digest that binds this exact log into the evidence: SHA-256 over a canonical,
    /// unambiguous encoding (per entry: PCR byte, stage code byte, component length as u16
    /// big-endian, component bytes, 32-byte digest). JSON is not hashed because two JSON
    /// encoders need not agree byte for byte.
    pub fn digest(&self) -> Digest {
        let mut hasher = Sha256::new();
        hasher.update(b"opensphere-eventlog-v1\0");
        for entry in &self.entries {
            hasher.update([entry.pcr, entry.stage.code()]);
            let name = entry.component.as_bytes();
            let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
            hasher.update(len.to_be_bytes());
            hasher.update(&name[..usize::from(len)]);
            hasher.update(entry.digest.0);
        }
        Digest(hasher.finalize().into())
    }

    /// Structural checks a verifier runs before anything else: bounded size, each entry in its
    /// stage's PCR, and component names that are short, non-empty and printable.
    pub fn check_well_formed(&self) -> Result<(), String> {
        if self.entries.len() > MAX_ENTRIES {
            return Err(format!("event log has {} entries, at most {MAX_ENTRIES} allowed", self.entries.len()));
        }
        for (index, entry) in self.entries.iter().enumerate() {
            if entry.pcr != entry.stage.pcr() {
                return Err(format!(
                    "entry {index} ({} {}) is in PCR {}, must be in PCR {}",
                    entry.stage,
                    entry.component,
                    entry.pcr,
                    entry.stage.pcr()
                ));
            }
            let name = &entry.component;
            if name.is_empty() || name.len() > MAX_COMPONENT_LEN || name.chars().any(|c| c.is_control()) {
                return Err(format!(
                    "entry {index}: component name must be 1..={MAX_COMPONENT_LEN} printable characters"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extend_matches_tpm_semantics() {
        // PCR starts at zero; one extend of digest d gives SHA-256(0^32 || d).
        let d = Digest::of(b"sphere-init");
        let mut log = EventLog::new();
        log.record(Stage::Init, "sphere-init", d);
        let mut concat = [0u8; 64];
        concat[32..].copy_from_slice(&d.0);
        assert_eq!(log.replay()[&10], Digest::of(&concat));
    }

    #[test]
    fn digest_changes_with_any_field() {
        let mut log = EventLog::new();
        log.measure(Stage::App, "app-a", b"a");
        let base = log.digest();
        let mut renamed = log.clone();
        renamed.entries[0].component = "app-b".into();
        assert_ne!(base, renamed.digest());
        let mut restaged = log.clone();
        restaged.entries[0].stage = Stage::Daemon;
        assert_ne!(base, restaged.digest());
    }

    #[test]
    fn wrong_pcr_is_rejected() {
        let mut log = EventLog::new();
        log.measure(Stage::App, "app", b"x");
        log.entries[0].pcr = 8;
        assert!(log.check_well_formed().is_err());
    }
}
