//! Building a package from an app directory, reproducibly and atomically.
//!
//! Reproducible: entries are sorted, modes normalised (0755 for directories and executables,
//! 0644 otherwise), owners and times zeroed, so the same directory and key always give the same
//! bytes. Atomic: the archive is written to a temporary file beside the output, synced, then
//! renamed, so a crash never leaves a half-written package under the final name.

use super::listing::{EntryKind, Listing, ListingEntry};
use super::verify::{SIGNATURE_FORMAT, SignatureDocument};
use super::{HashingReader, LISTING_ENTRY, Limits, MANIFEST_PATH, PackageError, SIGNATURE_DOMAIN, SIGNATURE_ENTRY};
use crate::fs_atomic;
use crate::keys::{KeyId, SigningKeyPair};
use crate::manifest::{self, LoadedManifest};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What was written.
#[derive(Clone, Debug)]
pub struct BuiltPackage {
    pub path: PathBuf,
    pub loaded_manifest: LoadedManifest,
    pub signed_by: KeyId,
    pub listing_sha256: [u8; 32],
    pub entries: usize,
    pub bytes: u64,
}

/// Package the app in `source` (which must hold `app_manifest.json`) into `output`.
pub fn build_package(
    source: &Path,
    key: &SigningKeyPair,
    output: &Path,
    limits: &Limits,
) -> Result<BuiltPackage, PackageError> {
    let manifest_path = source.join(MANIFEST_PATH);
    let manifest_bytes = fs::read(&manifest_path).map_err(|error| match error.kind() {
        io::ErrorKind::NotFound => PackageError::ManifestMissing,
        _ => source_io(&manifest_path, error),
    })?;
    let loaded_manifest = manifest::parse_manifest(&manifest_bytes)?;
    let mut entries = Vec::new();
    collect_entries(source, "", &mut entries)?;
    let listing = Listing::from_entries(entries, limits)?;
    let entry_point = loaded_manifest.manifest.entry_point_in_package();
    if !listing.get(entry_point).is_some_and(ListingEntry::is_executable_file) {
        return Err(PackageError::EntryPointMissing { entry_point: loaded_manifest.manifest.entry_point.clone() });
    }
    let listing_text = listing.render();
    let listing_sha256: [u8; 32] = Sha256::digest(listing_text.as_bytes()).into();
    let signature = sign(key, &listing_sha256);
    let bytes =
        fs_atomic::write(output, 0o644, |file| write_archive(file, source, &listing, &listing_text, &signature))
            .map_err(|error| match error {
                fs_atomic::WriteError::Io(error) => source_io(output, error),
                fs_atomic::WriteError::Inner(error) => error,
            })?;
    Ok(BuiltPackage {
        path: output.to_owned(),
        loaded_manifest,
        signed_by: key.id().clone(),
        listing_sha256,
        entries: listing.entries.len(),
        bytes,
    })
}

fn source_io(path: &Path, source: io::Error) -> PackageError {
    PackageError::SourceIo { path: path.display().to_string(), source }
}

fn sign(key: &SigningKeyPair, listing_sha256: &[u8; 32]) -> Vec<u8> {
    let mut message = SIGNATURE_DOMAIN.to_vec();
    message.extend_from_slice(listing_sha256);
    let document = SignatureDocument {
        format: SIGNATURE_FORMAT.to_owned(),
        algorithm: "ed25519".to_owned(),
        key_id: key.id().to_string(),
        listing_sha256: hex::encode(listing_sha256),
        signature: base64::engine::general_purpose::STANDARD.encode(key.sign(&message).to_bytes()),
    };
    let mut bytes = serde_json::to_vec_pretty(&document).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Walk `dir` (below the package root at `prefix`), listing what it holds.
fn collect_entries(dir: &Path, prefix: &str, entries: &mut Vec<ListingEntry>) -> Result<(), PackageError> {
    let mut names = Vec::new();
    for item in fs::read_dir(dir).map_err(|e| source_io(dir, e))? {
        names.push(item.map_err(|e| source_io(dir, e))?.file_name());
    }
    names.sort();
    for name in names {
        let name = name.into_string().map_err(|name| PackageError::PathNotAllowed {
            path: format!("{prefix}{}", name.to_string_lossy()),
            reason: "not UTF-8".to_owned(),
        })?;
        let path = format!("{prefix}{name}");
        let on_disk = dir.join(&name);
        let entry = list_one(&on_disk, path.clone())?;
        let is_dir = entry.kind == EntryKind::Directory;
        entries.push(entry);
        if is_dir {
            collect_entries(&on_disk, &format!("{path}/"), entries)?;
        }
    }
    Ok(())
}

fn list_one(on_disk: &Path, path: String) -> Result<ListingEntry, PackageError> {
    let metadata = fs::symlink_metadata(on_disk).map_err(|e| source_io(on_disk, e))?;
    let mode = metadata.permissions().mode();
    if mode & 0o7000 != 0 {
        return Err(PackageError::SetIdBits { path, mode: mode & 0o7777 });
    }
    let file_type = metadata.file_type();
    let (kind, mode, size, sha256, target) = if file_type.is_dir() {
        (EntryKind::Directory, 0o755, 0, None, None)
    } else if file_type.is_symlink() {
        let target = fs::read_link(on_disk).map_err(|e| source_io(on_disk, e))?;
        let target = target
            .into_os_string()
            .into_string()
            .map_err(|_| PackageError::SymlinkEscapes { path: path.clone(), target: "(not UTF-8)".to_owned() })?;
        (EntryKind::Symlink, 0o777, 0, None, Some(target))
    } else if file_type.is_file() {
        let normalised = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
        let digest = hash_file(on_disk)?;
        (EntryKind::File, normalised, metadata.len(), Some(digest), None)
    } else {
        return Err(PackageError::SpecialFile { path, kind: "special file (device, FIFO or socket)".to_owned() });
    };
    Ok(ListingEntry { kind, mode, size, sha256, path, target })
}

fn hash_file(path: &Path) -> Result<[u8; 32], PackageError> {
    let mut file = File::open(path).map_err(|e| source_io(path, e))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(|e| source_io(path, e))?;
    Ok(hasher.finalize().into())
}

fn write_archive(
    file: &mut File,
    source: &Path,
    listing: &Listing,
    listing_text: &str,
    signature: &[u8],
) -> Result<(), PackageError> {
    let mut builder = tar::Builder::new(io::BufWriter::new(file));
    append(&mut builder, &preamble_header(LISTING_ENTRY, listing_text.len())?, listing_text.as_bytes())?;
    append(&mut builder, &preamble_header(SIGNATURE_ENTRY, signature.len())?, signature)?;
    for entry in &listing.entries {
        let header = entry_header(entry)?;
        match entry.kind {
            EntryKind::File => append_file(&mut builder, &header, &source.join(&entry.path), entry)?,
            _ => append(&mut builder, &header, io::empty())?,
        }
    }
    let mut writer = builder.into_inner()?;
    writer.flush()?;
    Ok(())
}

fn append<W: Write>(builder: &mut tar::Builder<W>, header: &tar::Header, data: impl Read) -> Result<(), PackageError> {
    builder.append(header, data).map_err(PackageError::Io)
}

/// Copy a file into the archive, re-hashing it: a file edited since it was listed would make
/// the package fail verification, so fail here instead with a clear message.
fn append_file<W: Write>(
    builder: &mut tar::Builder<W>,
    header: &tar::Header,
    on_disk: &Path,
    entry: &ListingEntry,
) -> Result<(), PackageError> {
    let file = File::open(on_disk).map_err(|e| source_io(on_disk, e))?;
    let mut reader = HashingReader { inner: file.take(entry.size), hasher: Sha256::new(), count: 0, capture: None };
    append(builder, header, &mut reader)?;
    let digest: [u8; 32] = reader.hasher.finalize().into();
    if reader.count != entry.size || Some(digest) != entry.sha256 {
        return Err(PackageError::SourceChanged { path: entry.path.clone() });
    }
    Ok(())
}

fn base_header(path: &str, kind: tar::EntryType, mode: u32, size: u64) -> Result<tar::Header, PackageError> {
    let mut header = tar::Header::new_ustar();
    header
        .set_path(path)
        .map_err(|error| PackageError::PathNotAllowed { path: path.to_owned(), reason: error.to_string() })?;
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_cksum();
    Ok(header)
}

fn preamble_header(path: &str, size: usize) -> Result<tar::Header, PackageError> {
    base_header(path, tar::EntryType::Regular, 0o644, size as u64)
}

fn entry_header(entry: &ListingEntry) -> Result<tar::Header, PackageError> {
    let kind = match entry.kind {
        EntryKind::File => tar::EntryType::Regular,
        EntryKind::Directory => tar::EntryType::Directory,
        EntryKind::Symlink => tar::EntryType::Symlink,
    };
    let mut header = base_header(&entry.path, kind, entry.mode, entry.size)?;
    if let Some(target) = &entry.target {
        header.set_link_name(target).map_err(|error| PackageError::SymlinkEscapes {
            path: entry.path.clone(),
            target: format!("{target} ({error})"),
        })?;
        header.set_cksum();
    }
    Ok(header)
}
