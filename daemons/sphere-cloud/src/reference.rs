//! Reference values: what a healthy device is allowed to have measured.
//!
//! **Sources.** The issue's source of truth is the signed release metadata of the update system:
//! releases carry this file as a `reference-values` TUF target (`sphere update repo add-target
//! --kind reference-values`), which [`crate::reference_repo`] loads and verifies with tough.
//! The same information can also come from an operator file signed with an Ed25519 key
//! (`sphere keys new` makes one): `reference-values.json` plus a detached signature
//! `reference-values.json.sig` (base64 of the 64-byte Ed25519 signature over the file's exact
//! bytes) — [`ReferenceValues::load_signed`]. With both, the verifier uses their union
//! ([`ReferenceValues::union`]); the verifier reads nothing but a [`ReferenceValues`]. Both are
//! reloaded on `SIGHUP` (and periodically) and a refused reload keeps the previous values.
//!
//! ```json
//! {
//!   "schema": "opensphere-reference-values-v1",
//!   "os_versions": ["1.0.0"],
//!   "measurements": [
//!     {"stage": "init", "component": "sphere-init", "digests": ["<sha256 hex>", "..."]}
//!   ],
//!   "policies": [
//!     {"app_id": "<id>", "sandbox": ["<sha256 hex>"], "firewall": ["<sha256 hex>"]}
//!   ]
//! }
//! ```
//!
//! Several digests per component let two releases be valid at once during a rollout.

use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePublicKey;
use sphere_attestation::{Digest, Stage};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

// The file format is shared with `sphere update repo add-target --kind reference-values`.
pub use sphere_attestation::reference::{ReferenceFile, ReferenceMeasurement, ReferencePolicy, SCHEMA};

/// The verifier's view: lookup sets.
#[derive(Clone, Debug, Default)]
pub struct ReferenceValues {
    /// Allowed OS versions; empty means "any" (no release metadata names one).
    pub os_versions: BTreeSet<String>,
    pub measurements: BTreeMap<(Stage, String), BTreeSet<Digest>>,
    pub sandbox: BTreeMap<String, BTreeSet<Digest>>,
    pub firewall: BTreeMap<String, BTreeSet<Digest>>,
    /// Where they came from, for the operator API.
    pub source: String,
}

impl ReferenceValues {
    pub fn from_file_contents(file: ReferenceFile, source: String) -> Result<Self, String> {
        file.check_schema()?;
        let mut values =
            ReferenceValues { os_versions: file.os_versions.into_iter().collect(), source, ..Default::default() };
        for m in file.measurements {
            values.measurements.entry((m.stage, m.component)).or_default().extend(m.digests);
        }
        for p in file.policies {
            values.sandbox.entry(p.app_id.clone()).or_default().extend(p.sandbox);
            values.firewall.entry(p.app_id).or_default().extend(p.firewall);
        }
        Ok(values)
    }

    /// Several sets as one: a measurement is allowed if any part allows it. OS versions: a
    /// part that names none allows any, so then the union allows any too.
    pub fn union(parts: Vec<ReferenceValues>, source: String) -> Self {
        let any_os = parts.iter().any(|p| p.os_versions.is_empty());
        let mut all = ReferenceValues { source, ..Default::default() };
        for part in parts {
            if !any_os {
                all.os_versions.extend(part.os_versions);
            }
            for (key, digests) in part.measurements {
                all.measurements.entry(key).or_default().extend(digests);
            }
            for (app, digests) in part.sandbox {
                all.sandbox.entry(app).or_default().extend(digests);
            }
            for (app, digests) in part.firewall {
                all.firewall.entry(app).or_default().extend(digests);
            }
        }
        all
    }

    /// Load `path` and check `path.sig` with the Ed25519 public key PEM at `key_path`.
    pub fn load_signed(path: &Path, key_path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let sig_path = signature_path(path);
        let sig_text = std::fs::read_to_string(&sig_path).map_err(|e| format!("{}: {e}", sig_path.display()))?;
        let key_pem = std::fs::read_to_string(key_path).map_err(|e| format!("{}: {e}", key_path.display()))?;
        let key = ed25519_dalek::VerifyingKey::from_public_key_pem(&key_pem)
            .map_err(|e| format!("{}: not an Ed25519 public key: {e}", key_path.display()))?;
        let sig = base64::engine::general_purpose::STANDARD
            .decode(sig_text.trim())
            .ok()
            .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
            .ok_or_else(|| format!("{}: not a base64 Ed25519 signature", sig_path.display()))?;
        key.verify_strict(&bytes, &sig)
            .map_err(|_| format!("{}: signature does not verify with {}", path.display(), key_path.display()))?;
        let file: ReferenceFile = serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_file_contents(file, path.display().to_string())
    }
}

pub fn signature_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sig");
    name.into()
}
