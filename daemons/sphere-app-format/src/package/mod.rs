//! The signed OpenSphere app package (`.sphpkg`).
//!
//! A package is a POSIX tar archive whose first entry is a canonical listing of every file,
//! directory and symlink (type, mode, size, SHA-256, path), whose second entry is an Ed25519
//! signature over the listing's SHA-256 digest, and whose remaining entries are the app's files in
//! listing order. `docs/app-package-format.md` is the specification.
//!
//! Why this shape: putting the signed listing first lets a device verify a package as a stream
//! (hash each entry while it is read, then compare) in bounded memory, and know before reading a
//! single file byte whether the signer is trusted. Requiring the archive order to equal the listing
//! order turns duplicate, extra and missing entries into simple, typed errors. Everything the
//! listing may say is restricted (plain path characters, no set-id bits, no special files, parents
//! listed before children, symlinks that stay inside the package) so an installer that trusts a
//! verified package cannot be steered outside its directory.

mod build;
mod listing;
mod paths;
mod verify;

pub use build::{BuiltPackage, build_package};
pub use listing::{EntryKind, Listing, ListingEntry};
pub use paths::check_package_path;
pub use verify::{DiscardSink, PackageSink, PackageSummary, SignatureStatus, inspect_package, verify_package};

use crate::keys::{KeyId, TrustError};
use crate::manifest::ManifestError;

/// Archive name of the signed listing (always the first entry).
pub const LISTING_ENTRY: &str = ".sphpkg/listing";
/// Archive name of the signature (always the second entry).
pub const SIGNATURE_ENTRY: &str = ".sphpkg/signature";
/// The manifest every package carries at its root.
pub const MANIFEST_PATH: &str = "app_manifest.json";
/// Prefix of the signed message, so a package signature can never be replayed as a signature
/// over anything else the same key signs (update metadata, certificates).
pub const SIGNATURE_DOMAIN: &[u8] = b"opensphere-app-package-v1\0";

/// Resource bounds applied while verifying; a package over any of them is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_entries: usize,
    pub max_file_bytes: u64,
    pub max_total_bytes: u64,
    pub max_listing_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 4096,
            max_file_bytes: 64 * 1024 * 1024,
            max_total_bytes: 256 * 1024 * 1024,
            max_listing_bytes: 1024 * 1024,
        }
    }
}

/// Every way a package can be refused. Each names the entry concerned where there is one.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("cannot read the package: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot read {path}: {source}")]
    SourceIo { path: String, source: std::io::Error },
    #[error("not an OpenSphere app package: {0}")]
    NotAPackage(String),
    #[error("malformed package listing, line {line}: {reason}")]
    MalformedListing { line: usize, reason: String },
    #[error("malformed package signature: {0}")]
    MalformedSignature(String),
    #[error("package is {0}")]
    Untrusted(#[from] TrustError),
    #[error("path \"{path}\" is not allowed: {reason}")]
    PathNotAllowed { path: String, reason: String },
    #[error("symlink \"{path}\" -> \"{target}\" points outside the package or through another symlink")]
    SymlinkEscapes { path: String, target: String },
    #[error("\"{path}\" is a {kind}; packages hold only files, directories and symlinks")]
    SpecialFile { path: String, kind: String },
    #[error("\"{path}\" has mode {mode:o}: set-user-id, set-group-id and sticky bits are not allowed")]
    SetIdBits { path: String, mode: u32 },
    #[error("\"{path}\" appears twice in the archive")]
    DuplicateEntry { path: String },
    #[error("\"{path}\" is in the archive but not in the signed listing")]
    ExtraEntry { path: String },
    #[error("\"{path}\" is in the signed listing but missing from the archive")]
    MissingEntry { path: String },
    #[error("\"{path}\" does not match the signed listing: {reason}")]
    EntryMismatch { path: String, reason: String },
    #[error("\"{path}\" was tampered with: its SHA-256 differs from the signed listing")]
    DigestMismatch { path: String },
    #[error("\"{path}\" is {size} bytes; the limit is {limit}")]
    Oversized { path: String, size: u64, limit: u64 },
    #[error("the package has {count} entries; the limit is {limit}")]
    TooManyEntries { count: usize, limit: usize },
    #[error("the package holds {size} bytes in all; the limit is {limit}")]
    TotalTooLarge { size: u64, limit: u64 },
    #[error("the archive is truncated inside \"{path}\" ({got} of {expected} bytes)")]
    Truncated { path: String, expected: u64, got: u64 },
    #[error("the package has no {MANIFEST_PATH} at its root")]
    ManifestMissing,
    #[error("{MANIFEST_PATH}: {0}")]
    Manifest(#[from] ManifestError),
    #[error("the manifest's EntryPoint \"{entry_point}\" is not an executable file in the package")]
    EntryPointMissing { entry_point: String },
    #[error("\"{path}\" changed while it was being packaged; package again")]
    SourceChanged { path: String },
    #[error("the package was signed by {signed_by}, but the listing digest in the signature does not match")]
    ListingDigestMismatch { signed_by: KeyId },
}

impl PackageError {
    /// A stable snake_case name for the kind of rejection, for tools reading `--json` output.
    pub fn code(&self) -> &'static str {
        match self {
            PackageError::Io(_) => "io",
            PackageError::SourceIo { .. } => "source_io",
            PackageError::NotAPackage(_) => "not_a_package",
            PackageError::MalformedListing { .. } => "malformed_listing",
            PackageError::MalformedSignature(_) => "malformed_signature",
            PackageError::Untrusted(TrustError::UnknownKey(_)) => "unknown_key",
            PackageError::Untrusted(TrustError::BadSignature(_)) => "bad_signature",
            PackageError::PathNotAllowed { .. } => "path_not_allowed",
            PackageError::SymlinkEscapes { .. } => "symlink_escapes",
            PackageError::SpecialFile { .. } => "special_file",
            PackageError::SetIdBits { .. } => "set_id_bits",
            PackageError::DuplicateEntry { .. } => "duplicate_entry",
            PackageError::ExtraEntry { .. } => "extra_entry",
            PackageError::MissingEntry { .. } => "missing_entry",
            PackageError::EntryMismatch { .. } => "entry_mismatch",
            PackageError::DigestMismatch { .. } => "digest_mismatch",
            PackageError::Oversized { .. } => "oversized",
            PackageError::TooManyEntries { .. } => "too_many_entries",
            PackageError::TotalTooLarge { .. } => "total_too_large",
            PackageError::Truncated { .. } => "truncated",
            PackageError::ManifestMissing => "manifest_missing",
            PackageError::Manifest(_) => "manifest_invalid",
            PackageError::EntryPointMissing { .. } => "entry_point_missing",
            PackageError::SourceChanged { .. } => "source_changed",
            PackageError::ListingDigestMismatch { .. } => "listing_digest_mismatch",
        }
    }
}

/// Counts and hashes what passes through it, optionally keeping a copy (the manifest).
pub(crate) struct HashingReader<'c, R> {
    pub(crate) inner: R,
    pub(crate) hasher: sha2::Sha256,
    pub(crate) count: u64,
    pub(crate) capture: Option<&'c mut Vec<u8>>,
}

impl<R: std::io::Read> std::io::Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let read = self.inner.read(buf)?;
        self.hasher.update(&buf[..read]);
        self.count += read as u64;
        if let Some(capture) = self.capture.as_deref_mut() {
            capture.extend_from_slice(&buf[..read]);
        }
        Ok(read)
    }
}
