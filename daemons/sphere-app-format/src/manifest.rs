//! Azure Sphere's `app_manifest.json`, loaded unchanged.
//!
//! Existing Azure Sphere apps must migrate without edits, so this module accepts exactly the
//! documented format (field names, value types, the UTF-8 BOM some files start with) and keeps
//! Azure Sphere's rules: `SchemaVersion` 1, only the first 31 characters of `Name`, nothing
//! granted unless listed. Where Azure Sphere would fail a sideload we fail too, but with every
//! problem listed and located by JSON path, so a developer fixes them all in one pass.
//! Capability keys we do not know yet are warnings, not errors: a newer manifest should still
//! load, and the app simply does not get the unknown capability.

mod capabilities;
mod checker;

pub use capabilities::{Capabilities, ConnectionTarget, PeripheralKind, PeripheralRef, PowerControl};

use crate::json::{self, JsonPath};
use checker::Checker;
use serde::Serialize;
use std::fmt;
use uuid::Uuid;

/// Azure Sphere keeps this many characters of `Name` in an image package.
pub const MAX_NAME_CHARS: usize = 31;
/// A manifest larger than this is not a manifest (Azure Sphere's own are under 4 KiB).
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;

/// A validated app manifest. Field names serialize as Azure Sphere spells them.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AppManifest {
    pub schema_version: u32,
    /// At most [`MAX_NAME_CHARS`] characters, as Azure Sphere stores it.
    pub name: String,
    pub component_id: Uuid,
    /// Absolute path inside the app package, e.g. `/bin/app`.
    pub entry_point: String,
    pub cmd_args: Vec<String>,
    pub application_type: ApplicationType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_beta_apis: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_application_runtime_version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub malloc_version: Option<u32>,
    pub capabilities: Capabilities,
}

impl AppManifest {
    /// The entry point as a path relative to the package root (`bin/app`).
    pub fn entry_point_in_package(&self) -> &str {
        self.entry_point.trim_start_matches('/')
    }
}

/// Azure Sphere's `ApplicationType` values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum ApplicationType {
    /// A high-level app on the Cortex-A core.
    #[default]
    Default,
    /// A real-time app for a Cortex-M core.
    RealTimeCapable,
    /// A debugging server (gdbserver) app.
    Debugger,
}

impl ApplicationType {
    const ALL: [(&'static str, ApplicationType); 3] = [
        ("Default", ApplicationType::Default),
        ("RealTimeCapable", ApplicationType::RealTimeCapable),
        ("Debugger", ApplicationType::Debugger),
    ];
}

/// A manifest that loaded, with what the developer should still hear about.
#[derive(Clone, Debug)]
pub struct LoadedManifest {
    pub manifest: AppManifest,
    pub warnings: Vec<ManifestWarning>,
}

/// Something accepted but worth telling the developer, located by JSON path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ManifestWarning {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ManifestWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// One invalid value: where it is, which field it belongs to, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON path of the offending value, e.g. `$.Capabilities.AllowedTcpServerPorts[1]`.
    pub path: String,
    /// The manifest field it belongs to, e.g. `AllowedTcpServerPorts`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.path, self.field, self.message)
    }
}

/// Why a manifest was refused: every problem found, in document order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct ManifestError {
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.errors.len();
        write!(f, "invalid app manifest ({count} error{})", if count == 1 { "" } else { "s" })?;
        for error in &self.errors {
            write!(f, "\n  {error}")?;
        }
        Ok(())
    }
}

impl ManifestError {
    fn single(path: &JsonPath, message: String) -> Self {
        ManifestError { errors: vec![FieldError { path: path.to_string(), field: path.field().to_owned(), message }] }
    }
}

/// Load a manifest from the bytes of an `app_manifest.json`.
pub fn parse_manifest(bytes: &[u8]) -> Result<LoadedManifest, ManifestError> {
    let root = JsonPath::root();
    if bytes.len() > MAX_MANIFEST_BYTES {
        let message = format!("manifest is {} bytes; the limit is {MAX_MANIFEST_BYTES}", bytes.len());
        return Err(ManifestError::single(&root, message));
    }
    let document =
        json::parse_strict(bytes).map_err(|error| ManifestError::single(&root, format!("not valid JSON: {error}")))?;
    let mut checker = Checker::default();
    let manifest = checker.manifest(&document);
    match manifest {
        Some(manifest) if checker.errors.is_empty() => Ok(LoadedManifest { manifest, warnings: checker.warnings }),
        _ => Err(ManifestError { errors: checker.errors }),
    }
}
