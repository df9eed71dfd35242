//! OpenSphere's update metadata: the one place that says what a TUF target means.
//!
//! The update repository is plain [TUF](https://theupdateframework.io/) (root, targets, snapshot,
//! timestamp). TUF proves *which bytes* the repository owner published; it does not say what
//! those bytes are for. That is the `custom` object of each target in `targets.json`, which
//! this crate defines, and which both the repository tooling (`sphere update repo`) and the
//! device (`sphere-updated`) use (Bottlerocket's `update_metadata` pattern: one types crate for
//! producer and consumer).
//!
//! ```json
//! "custom": { "opensphere": {
//!     "kind": "os-image",            // os-image | app-package | m4-firmware | reference-values
//!     "version": 7,                  // monotonic integer: ordering and anti-rollback
//!     "version_name": "2026.11.1",   // for people
//!     "hardware": ["qemu-a7"],       // board ids this target may be installed on
//!     "release": "2026.11.1",        // targets sharing a release are installed together
//!     "component_id": "..."          // app packages: the app's component id
//! } }
//! ```
//!
//! Everything here is signed (it sits inside the targets role's signed body), so a
//! mix-and-match attacker cannot change an image's board or version without the targets key.

use serde::{Deserialize, Serialize};

/// Key of our object inside a TUF target's `custom` map (other tools may add their own keys).
pub const CUSTOM_KEY: &str = "opensphere";

/// What a target is, which decides how the device installs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A root filesystem image for the A7's inactive slot (`sphere-slots`).
    OsImage,
    /// A signed `.sphpkg`, handed to the app manager.
    AppPackage,
    /// Firmware for the real-time M4 core.
    M4Firmware,
    /// The release's attestation reference values (sphere-attestation's reference-values
    /// JSON), read by the cloud's verifier. Never installed: [`releases_for`] drops it, so a
    /// device does not see it as part of a release.
    ReferenceValues,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::OsImage => "os-image",
            Kind::AppPackage => "app-package",
            Kind::M4Firmware => "m4-firmware",
            Kind::ReferenceValues => "reference-values",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        match text {
            "os-image" => Some(Kind::OsImage),
            "app-package" => Some(Kind::AppPackage),
            "m4-firmware" => Some(Kind::M4Firmware),
            "reference-values" => Some(Kind::ReferenceValues),
            _ => None,
        }
    }
}

impl Kind {
    /// Whether a device installs targets of this kind (reference values are for the cloud).
    pub fn installable(self) -> bool {
        !matches!(self, Kind::ReferenceValues)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Our part of a target's `custom` metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetInfo {
    pub kind: Kind,
    /// Monotonic version. For OS images it is also the anti-rollback ("security") version.
    pub version: u64,
    /// Human-readable version; defaults to the number.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version_name: String,
    /// Board ids (the device's `hardware` setting) this target is built for. Never empty:
    /// a target that runs "anywhere" must say so with `"*"`, so forgetting the field cannot
    /// make an image installable on the wrong board.
    pub hardware: Vec<String>,
    /// Release this target belongs to; every target of one release is installed together.
    pub release: String,
    /// App packages: the app's component id (what the app manager calls it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub component_id: String,
}

/// Why a target's metadata cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("target has no custom.{CUSTOM_KEY} object")]
    Missing,
    #[error("target's custom.{CUSTOM_KEY} is malformed: {0}")]
    Malformed(String),
    #[error("target lists no compatible hardware")]
    NoHardware,
    #[error("release name is empty")]
    NoRelease,
    #[error("app package target has no component_id")]
    NoComponentId,
}

impl TargetInfo {
    /// Reads and checks our object from a target's whole `custom` map.
    pub fn from_custom(custom: &serde_json::Map<String, serde_json::Value>) -> Result<Self, FormatError> {
        Self::from_entry(custom.get(CUSTOM_KEY))
    }

    /// Reads and checks our object given the value under [`CUSTOM_KEY`] (any map type).
    pub fn from_entry(value: Option<&serde_json::Value>) -> Result<Self, FormatError> {
        let value = value.ok_or(FormatError::Missing)?;
        let info: TargetInfo =
            serde_json::from_value(value.clone()).map_err(|e| FormatError::Malformed(e.to_string()))?;
        info.validate()?;
        Ok(info)
    }

    /// The `custom` map to put into a target (what the repository tooling writes).
    pub fn to_custom(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut map = serde_json::Map::new();
        // Serialising a struct of strings and integers cannot fail.
        map.insert(CUSTOM_KEY.to_string(), serde_json::to_value(self).unwrap_or_default());
        map
    }

    pub fn validate(&self) -> Result<(), FormatError> {
        if self.hardware.is_empty() || self.hardware.iter().any(|h| h.trim().is_empty()) {
            return Err(FormatError::NoHardware);
        }
        if self.release.trim().is_empty() {
            return Err(FormatError::NoRelease);
        }
        if self.kind == Kind::AppPackage && self.component_id.is_empty() {
            return Err(FormatError::NoComponentId);
        }
        Ok(())
    }

    /// Whether this target may be installed on board `hardware`.
    pub fn fits(&self, hardware: &str) -> bool {
        self.hardware.iter().any(|h| h == "*" || h == hardware)
    }

    pub fn display_version(&self) -> String {
        if self.version_name.is_empty() { self.version.to_string() } else { self.version_name.clone() }
    }
}

/// One target as the device sees it after TUF verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedTarget {
    /// TUF target name (path in the repository's `targets/`).
    pub name: String,
    pub length: u64,
    /// SHA-256 in hex (TUF `hashes.sha256`).
    pub sha256: String,
    pub info: TargetInfo,
}

/// A release: the targets that share a `release` name (e.g. an A7 image and M4 firmware
/// that must go together), with the OS version that orders releases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub name: String,
    pub targets: Vec<VerifiedTarget>,
}

impl Release {
    /// Highest target version in the release (releases are ordered by it).
    pub fn version(&self) -> u64 {
        self.targets.iter().map(|t| t.info.version).max().unwrap_or(0)
    }

    pub fn target(&self, kind: Kind) -> Option<&VerifiedTarget> {
        self.targets.iter().find(|t| t.info.kind == kind)
    }
}

/// Groups targets into releases, keeping only installable ones that fit `hardware`, newest
/// first. Targets for other boards are not an error (one repository serves many boards), and
/// reference values are the cloud's, never the device's.
pub fn releases_for(targets: Vec<VerifiedTarget>, hardware: &str) -> Vec<Release> {
    let mut releases: Vec<Release> = Vec::new();
    for target in targets.into_iter().filter(|t| t.info.kind.installable() && t.info.fits(hardware)) {
        match releases.iter_mut().find(|r| r.name == target.info.release) {
            Some(release) => release.targets.push(target),
            None => releases.push(Release { name: target.info.release.clone(), targets: vec![target] }),
        }
    }
    releases.sort_by(|a, b| b.version().cmp(&a.version()).then_with(|| b.name.cmp(&a.name)));
    releases
}

/// Reading our targets out of a TUF repository that tough has verified (feature `tuf`).
#[cfg(feature = "tuf")]
pub mod tuf {
    use super::{CUSTOM_KEY, FormatError, TargetInfo, VerifiedTarget};

    /// Every target of a verified repository that carries our metadata, and the names of those
    /// whose metadata is missing or malformed (with why). TUF has already checked signatures,
    /// thresholds, expiry and snapshot consistency; the bytes of each target are checked
    /// against `sha256`/`length` when it is read (`tough::Repository::read_target`).
    pub fn verified_targets(repo: &tough::Repository) -> (Vec<VerifiedTarget>, Vec<(String, FormatError)>) {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for (name, target) in repo.all_targets() {
            let name = name.raw().to_string();
            match TargetInfo::from_entry(target.custom.get(CUSTOM_KEY)) {
                Ok(info) => good.push(VerifiedTarget {
                    name,
                    length: target.length,
                    sha256: hex::encode(target.hashes.sha256.as_ref()),
                    info,
                }),
                Err(e) => bad.push((name, e)),
            }
        }
        (good, bad)
    }

    /// An error with its sources, for logs and API messages: tough's top-level errors
    /// ("Failed to load timestamp.json") only say why in their source chain.
    pub fn error_chain(e: &dyn std::error::Error) -> String {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            let s_text = s.to_string();
            if !text.contains(&s_text) {
                text.push_str(": ");
                text.push_str(&s_text);
            }
            source = s.source();
        }
        text
    }
}

/// The device's view of update state, shared by the daemon's D-Bus API and the CLI.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// `idle`, `checking`, `downloading`, `installing`, `deferred`, `installed` (waiting for
    /// reboot), `failed`.
    pub state: String,
    pub release: String,
    pub target: String,
    pub done_bytes: u64,
    pub total_bytes: u64,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn custom(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        json!({ CUSTOM_KEY: v }).as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn round_trips_and_checks_fields() {
        let info = TargetInfo {
            kind: Kind::OsImage,
            version: 7,
            version_name: String::new(),
            hardware: vec!["qemu-a7".into()],
            release: "r7".into(),
            component_id: String::new(),
        };
        assert_eq!(TargetInfo::from_custom(&info.to_custom()), Ok(info.clone()));
        assert!(info.fits("qemu-a7"));
        assert!(!info.fits("mt3620"));
        let no_hw = custom(json!({"kind": "os-image", "version": 1, "hardware": [], "release": "r"}));
        assert_eq!(TargetInfo::from_custom(&no_hw), Err(FormatError::NoHardware));
        let app = custom(json!({"kind": "app-package", "version": 1, "hardware": ["*"], "release": "r"}));
        assert_eq!(TargetInfo::from_custom(&app), Err(FormatError::NoComponentId));
        let unknown = custom(json!({"kind": "bios", "version": 1, "hardware": ["*"], "release": "r"}));
        assert!(matches!(TargetInfo::from_custom(&unknown), Err(FormatError::Malformed(_))));
        assert_eq!(TargetInfo::from_custom(&serde_json::Map::new()), Err(FormatError::Missing));
    }

    #[test]
    fn groups_releases_newest_first_for_one_board() {
        let t = |name: &str, kind, version, hw: &str, release: &str| VerifiedTarget {
            name: name.into(),
            length: 1,
            sha256: "00".repeat(32),
            info: TargetInfo {
                kind,
                version,
                version_name: String::new(),
                hardware: vec![hw.into()],
                release: release.into(),
                component_id: String::new(),
            },
        };
        let releases = releases_for(
            vec![
                t("os-1", Kind::OsImage, 1, "qemu-a7", "r1"),
                t("os-2", Kind::OsImage, 2, "qemu-a7", "r2"),
                t("m4-2", Kind::M4Firmware, 2, "qemu-a7", "r2"),
                t("os-3-other", Kind::OsImage, 3, "mt3620", "r3"),
            ],
            "qemu-a7",
        );
        assert_eq!(releases.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["r2", "r1"]);
        assert_eq!(releases[0].targets.len(), 2);
        assert!(releases[0].target(Kind::M4Firmware).is_some());

        // Reference values are the cloud's: never part of a device's release, even when newest.
        let releases = releases_for(
            vec![
                t("os-2", Kind::OsImage, 2, "qemu-a7", "r2"),
                t("rv-2", Kind::ReferenceValues, 2, "qemu-a7", "r2"),
                t("rv-9", Kind::ReferenceValues, 9, "*", "r9"),
            ],
            "qemu-a7",
        );
        assert_eq!(releases.len(), 1);
        assert_eq!(releases[0].targets.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["os-2"]);
        assert_eq!(Kind::parse("reference-values"), Some(Kind::ReferenceValues));
        assert!(!Kind::ReferenceValues.installable() && Kind::OsImage.installable());
    }
}
