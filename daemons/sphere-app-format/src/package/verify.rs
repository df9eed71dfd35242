//! Streaming verification: one pass over the archive, bounded memory, every byte hashed.

use super::listing::{EntryKind, Listing, ListingEntry};
use super::{HashingReader, LISTING_ENTRY, Limits, MANIFEST_PATH, PackageError, SIGNATURE_DOMAIN, SIGNATURE_ENTRY};
use crate::keys::{KeyId, TrustStore};
use crate::manifest::{self, AppManifest, MAX_MANIFEST_BYTES, ManifestWarning};
use base64::Engine;
use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{self, Read};

/// The signature entry, as JSON.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SignatureDocument {
    pub format: String,
    pub algorithm: String,
    pub key_id: String,
    /// Hex SHA-256 of the listing bytes.
    pub listing_sha256: String,
    /// Base64 Ed25519 signature over `SIGNATURE_DOMAIN || sha256(listing)`.
    pub signature: String,
}

pub(super) const SIGNATURE_FORMAT: &str = "opensphere-app-package-signature/1";

/// Receives a package's contents while it is verified, e.g. to unpack into a staging directory.
///
/// Nothing handed to a sink is trustworthy until [`verify_package`] returns `Ok`: a file's
/// digest is only compared after the sink has read it, so on error the sink's output must be
/// thrown away.
pub trait PackageSink {
    fn directory(&mut self, entry: &ListingEntry) -> io::Result<()>;
    fn file(&mut self, entry: &ListingEntry, contents: &mut dyn Read) -> io::Result<()>;
    fn symlink(&mut self, entry: &ListingEntry) -> io::Result<()>;
}

/// A sink that keeps nothing: verification only.
pub struct DiscardSink;

impl PackageSink for DiscardSink {
    fn directory(&mut self, _: &ListingEntry) -> io::Result<()> {
        Ok(())
    }
    fn file(&mut self, _: &ListingEntry, _: &mut dyn Read) -> io::Result<()> {
        Ok(())
    }
    fn symlink(&mut self, _: &ListingEntry) -> io::Result<()> {
        Ok(())
    }
}

/// Whether the signature was checked against trusted keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "key_id", rename_all = "snake_case")]
pub enum SignatureStatus {
    /// Verified with this trusted key.
    Verified(KeyId),
    /// Claims to be signed by this key; not checked (no trusted keys were given).
    NotChecked(KeyId),
}

/// What a package holds, once its structure and every digest have been checked.
#[derive(Clone, Debug, Serialize)]
pub struct PackageSummary {
    pub manifest: AppManifest,
    pub manifest_warnings: Vec<ManifestWarning>,
    pub signature: SignatureStatus,
    #[serde(with = "hex::serde")]
    pub listing_sha256: [u8; 32],
    pub listing: Listing,
}

/// Verify a package against trusted keys, streaming its contents into `sink`.
pub fn verify_package(
    reader: impl Read,
    trust: &TrustStore,
    limits: &Limits,
    sink: &mut dyn PackageSink,
) -> Result<PackageSummary, PackageError> {
    read_package(reader, Some(trust), limits, sink)
}

/// Check everything but the signature (for `sphere app show` without trusted keys).
pub fn inspect_package(
    reader: impl Read,
    limits: &Limits,
    sink: &mut dyn PackageSink,
) -> Result<PackageSummary, PackageError> {
    read_package(reader, None, limits, sink)
}

fn read_package(
    reader: impl Read,
    trust: Option<&TrustStore>,
    limits: &Limits,
    sink: &mut dyn PackageSink,
) -> Result<PackageSummary, PackageError> {
    let mut archive = tar::Archive::new(reader);
    let mut entries = archive.entries()?;
    let listing_bytes = read_preamble(entries.next(), LISTING_ENTRY, limits.max_listing_bytes)?;
    let signature_bytes = read_preamble(entries.next(), SIGNATURE_ENTRY, 64 * 1024)?;
    let listing_sha256: [u8; 32] = Sha256::digest(&listing_bytes).into();
    let signature = check_signature(&signature_bytes, &listing_sha256, trust)?;
    // Parse only after the signature passed: an attacker cannot make us parse a listing the
    // signer did not produce (when trusted keys are given).
    let listing = Listing::parse(&listing_bytes, limits)?;
    let manifest_bytes = stream_entries(&mut entries, &listing, sink)?;
    let loaded = manifest::parse_manifest(&manifest_bytes)?;
    let entry_point = loaded.manifest.entry_point_in_package();
    if !listing.get(entry_point).is_some_and(ListingEntry::is_executable_file) {
        return Err(PackageError::EntryPointMissing { entry_point: loaded.manifest.entry_point.clone() });
    }
    Ok(PackageSummary {
        manifest: loaded.manifest,
        manifest_warnings: loaded.warnings,
        signature,
        listing_sha256,
        listing,
    })
}

type Entry<'a, R> = tar::Entry<'a, R>;

/// Read one of the two leading entries, which must have exactly this name and be small.
fn read_preamble<R: Read>(
    next: Option<io::Result<Entry<'_, R>>>,
    name: &str,
    max_bytes: u64,
) -> Result<Vec<u8>, PackageError> {
    let mut entry = match next {
        Some(entry) => entry?,
        None => return Err(PackageError::NotAPackage(format!("the archive ends before \"{name}\""))),
    };
    let path = entry_path(&entry)?;
    if path != name || !entry.header().entry_type().is_file() {
        return Err(PackageError::NotAPackage(format!("expected \"{name}\" as the next entry, found \"{path}\"")));
    }
    let size = entry.size();
    if size > max_bytes {
        return Err(PackageError::Oversized { path, size, limit: max_bytes });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    entry.read_to_end(&mut bytes)?;
    if bytes.len() as u64 != size {
        return Err(PackageError::Truncated { path, expected: size, got: bytes.len() as u64 });
    }
    Ok(bytes)
}

fn check_signature(
    bytes: &[u8],
    listing_sha256: &[u8; 32],
    trust: Option<&TrustStore>,
) -> Result<SignatureStatus, PackageError> {
    let bad = |reason: &str| PackageError::MalformedSignature(reason.to_owned());
    let document: SignatureDocument =
        serde_json::from_slice(bytes).map_err(|error| PackageError::MalformedSignature(error.to_string()))?;
    if document.format != SIGNATURE_FORMAT || document.algorithm != "ed25519" {
        return Err(bad("unsupported format or algorithm (expected ed25519)"));
    }
    let key_id = KeyId::parse(&document.key_id).ok_or_else(|| bad("key_id is not 16 hex digits"))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&document.signature)
        .map_err(|_| bad("signature is not base64"))?;
    let signature = Signature::from_slice(&raw).map_err(|_| bad("signature is not 64 bytes"))?;
    let Some(trust) = trust else { return Ok(SignatureStatus::NotChecked(key_id)) };
    let mut message = SIGNATURE_DOMAIN.to_vec();
    message.extend_from_slice(listing_sha256);
    trust.verify(&key_id, &message, &signature)?;
    // The digest field is informative; what was verified is our own hash of the listing bytes.
    if document.listing_sha256 != hex::encode(listing_sha256) {
        return Err(PackageError::ListingDigestMismatch { signed_by: key_id });
    }
    Ok(SignatureStatus::Verified(key_id))
}

/// Match the archive entry by entry against the listing, hashing file contents on the way.
/// Returns the manifest's bytes (checked against its digest like every other file).
fn stream_entries<R: Read>(
    entries: &mut tar::Entries<'_, R>,
    listing: &Listing,
    sink: &mut dyn PackageSink,
) -> Result<Vec<u8>, PackageError> {
    let mut manifest_bytes = Vec::new();
    let mut expected = listing.entries.iter().peekable();
    let mut previous: Option<String> = None;
    for entry in entries {
        let mut entry = entry?;
        let path = entry_path(&entry)?;
        let Some(listed) = expected.next_if(|listed| listed.path == path) else {
            return Err(unexpected_entry(path, previous.as_deref(), listing, expected.peek().copied()));
        };
        check_header(&entry, listed)?;
        match listed.kind {
            EntryKind::Directory => sink.directory(listed)?,
            EntryKind::Symlink => sink.symlink(listed)?,
            EntryKind::File => {
                let capture = (listed.path == MANIFEST_PATH).then_some(&mut manifest_bytes);
                stream_file(&mut entry, listed, capture, sink)?;
            }
        }
        previous = Some(path);
    }
    match expected.next() {
        Some(missing) => Err(PackageError::MissingEntry { path: missing.path.clone() }),
        None => Ok(manifest_bytes),
    }
}

/// Name the problem with an entry that is not the next one listed.
fn unexpected_entry(
    path: String,
    previous: Option<&str>,
    listing: &Listing,
    expected: Option<&ListingEntry>,
) -> PackageError {
    if previous == Some(path.as_str()) {
        return PackageError::DuplicateEntry { path };
    }
    match (listing.get(&path), expected) {
        (None, _) => PackageError::ExtraEntry { path },
        (Some(_), Some(expected)) if path.as_bytes() > expected.path.as_bytes() => {
            PackageError::MissingEntry { path: expected.path.clone() }
        }
        (Some(_), _) => PackageError::DuplicateEntry { path },
    }
}

fn entry_path<R: Read>(entry: &Entry<'_, R>) -> Result<String, PackageError> {
    let raw = entry.path_bytes();
    String::from_utf8(raw.into_owned()).map_err(|error| PackageError::PathNotAllowed {
        path: String::from_utf8_lossy(error.as_bytes()).into_owned(),
        reason: "not UTF-8".to_owned(),
    })
}

/// The tar header must agree with the listing: same type, same permission bits, same size.
fn check_header<R: Read>(entry: &Entry<'_, R>, listed: &ListingEntry) -> Result<(), PackageError> {
    let header = entry.header();
    let kind = header.entry_type();
    let actual = if kind.is_file() {
        EntryKind::File
    } else if kind.is_dir() {
        EntryKind::Directory
    } else if kind.is_symlink() {
        EntryKind::Symlink
    } else {
        return Err(PackageError::SpecialFile { path: listed.path.clone(), kind: special_kind_name(kind).to_owned() });
    };
    let mismatch = |reason: String| PackageError::EntryMismatch { path: listed.path.clone(), reason };
    let mode = header.mode().map_err(|_| mismatch("unreadable mode".to_owned()))?;
    if mode & 0o7000 != 0 {
        return Err(PackageError::SetIdBits { path: listed.path.clone(), mode });
    }
    if actual != listed.kind {
        return Err(mismatch(format!("archive has a {actual:?}, listing says {:?}", listed.kind)));
    }
    if mode & 0o777 != listed.mode {
        return Err(mismatch(format!("mode {:04o} in the archive, {:04o} listed", mode & 0o777, listed.mode)));
    }
    if entry.size() != listed.size {
        return Err(mismatch(format!("{} bytes in the archive, {} listed", entry.size(), listed.size)));
    }
    if listed.kind == EntryKind::Symlink {
        let target = entry.link_name_bytes().map(|t| t.into_owned());
        if target.as_deref() != listed.target.as_ref().map(|t| t.as_bytes()) {
            return Err(mismatch("symlink target differs from the listing".to_owned()));
        }
    }
    Ok(())
}

fn special_kind_name(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "FIFO",
        tar::EntryType::Link => "hard link",
        tar::EntryType::GNUSparse => "sparse file",
        _ => "special entry",
    }
}

/// Hand a file to the sink through a reader that counts and hashes, then check size and digest.
fn stream_file<R: Read>(
    entry: &mut Entry<'_, R>,
    listed: &ListingEntry,
    capture: Option<&mut Vec<u8>>,
    sink: &mut dyn PackageSink,
) -> Result<(), PackageError> {
    if capture.is_some() && listed.size > MAX_MANIFEST_BYTES as u64 {
        return Err(PackageError::Oversized {
            path: listed.path.clone(),
            size: listed.size,
            limit: MAX_MANIFEST_BYTES as u64,
        });
    }
    let mut reader = HashingReader { inner: entry.take(listed.size), hasher: Sha256::new(), count: 0, capture };
    sink.file(listed, &mut reader)?;
    io::copy(&mut reader, &mut io::sink())?;
    if reader.count != listed.size {
        return Err(PackageError::Truncated { path: listed.path.clone(), expected: listed.size, got: reader.count });
    }
    let digest: [u8; 32] = reader.hasher.finalize().into();
    if Some(digest) != listed.sha256 {
        return Err(PackageError::DigestMismatch { path: listed.path.clone() });
    }
    Ok(())
}
