//! OpenSphere's app format, shared by the device daemons and the `sphere` CLI.
//!
//! Everything an app is made of crosses a trust boundary, so this crate is where untrusted bytes
//! become typed values:
//!
//! - [`manifest`]: Azure Sphere's `app_manifest.json`, loaded unchanged so existing apps migrate.
//!   Every problem is reported with the JSON path of the offending value.
//! - [`hardware_definition`]: Azure Sphere's hardware-definition files, which turn the `"$NAME"`
//!   peripheral references in a manifest into a board's concrete peripherals.
//! - [`keys`]: Ed25519 signing keys (PKCS#8 / SPKI PEM, readable by OpenSSL) and key ids.
//! - [`package`]: the signed app package (`.sphpkg`), built reproducibly and verified as a stream
//!   in bounded memory. The format is specified in `docs/app-package-format.md`.
//!
//! Threat model: manifests, hardware definitions and packages may be written by an attacker. No
//! input may panic this crate, exhaust memory, or make a verifier accept bytes that the signer
//! did not sign. Parsers therefore reject duplicate JSON keys (two parsers could otherwise
//! disagree about which value counts) and package paths are limited to a plain character set.

pub mod fs_atomic;
pub mod hardware_definition;
pub mod json;
pub mod keys;
pub mod manifest;
pub mod package;

pub use hardware_definition::{HardwareDefinitionSet, ResolveErrorList, ResolvedPeripheral};
pub use keys::{KeyId, SigningKeyPair, TrustStore};
pub use manifest::{AppManifest, LoadedManifest, ManifestError};
pub use package::{PackageError, PackageSummary};
