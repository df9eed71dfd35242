//! `sphere app package|verify|show`.

use super::load_hardware;
use super::manifest::{describe_capabilities, print_warnings, resolve};
use crate::cli::HardwareArgs;
use crate::output::{CommandError, Output};
use serde_json::json;
use sphere_app_format::keys::{KeyError, SigningKeyPair};
use sphere_app_format::package::{self, DiscardSink, Limits, PackageError, PackageSummary, SignatureStatus};
use sphere_app_format::{TrustStore, manifest};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

pub fn package(
    dir: &Path,
    file: &Path,
    key: &Path,
    hardware: &HardwareArgs,
    output: &Output,
) -> Result<(), CommandError> {
    let key = SigningKeyPair::load(key).map_err(key_error)?;
    // With a hardware definition the package carries the manifest with concrete peripheral
    // values, as Azure Sphere's build produces it; the app's files are staged beside it.
    let staged = match load_hardware(hardware)? {
        Some(board) => Some(stage_with_values(dir, &board)?),
        None => None,
    };
    let source = staged.as_ref().map_or(dir, |staging| staging.path());
    let built = package::build_package(source, &key, file, &Limits::default()).map_err(package_error)?;
    print_warnings(&built.loaded_manifest.warnings, output);
    let report = json!({
        "ok": true,
        "package": built.path,
        "name": built.loaded_manifest.manifest.name,
        "component_id": built.loaded_manifest.manifest.component_id,
        "signed_by": built.signed_by,
        "listing_sha256": hex::encode(built.listing_sha256),
        "entries": built.entries,
        "bytes": built.bytes,
    });
    output.print(&report, || {
        format!(
            "packaged {} ({} entries, {} bytes)\n  app        {} {}\n  signed by  {}",
            built.path.display(),
            built.entries,
            built.bytes,
            built.loaded_manifest.manifest.name,
            built.loaded_manifest.manifest.component_id,
            built.signed_by
        )
    });
    Ok(())
}

pub fn verify(file: &Path, trust: &[PathBuf], output: &Output) -> Result<(), CommandError> {
    let trust = load_trust(trust)?;
    let summary = package::verify_package(open(file)?, &trust, &Limits::default(), &mut DiscardSink)
        .map_err(|error| rejected(file, error))?;
    print_warnings(&summary.manifest_warnings, output);
    output.print(&json!({ "ok": true, "package": file, "summary": &summary }), || {
        format!(
            "{}: verified\n  app        {} {}\n  signed by  {} (trusted)\n  entries    {}",
            file.display(),
            summary.manifest.name,
            summary.manifest.component_id,
            signer(&summary.signature),
            summary.listing.entries.len()
        )
    });
    Ok(())
}

pub fn show(file: &Path, trust: &[PathBuf], output: &Output) -> Result<(), CommandError> {
    let reader = open(file)?;
    let summary = if trust.is_empty() {
        package::inspect_package(reader, &Limits::default(), &mut DiscardSink)
    } else {
        package::verify_package(reader, &load_trust(trust)?, &Limits::default(), &mut DiscardSink)
    }
    .map_err(|error| rejected(file, error))?;
    print_warnings(&summary.manifest_warnings, output);
    output.print(&json!({ "ok": true, "package": file, "summary": &summary }), || describe(file, &summary));
    Ok(())
}

/// Copy the app directory to a temporary one whose manifest has `$NAME`s replaced by values.
fn stage_with_values(
    dir: &Path,
    board: &sphere_app_format::HardwareDefinitionSet,
) -> Result<tempfile::TempDir, CommandError> {
    let manifest_path = dir.join(package::MANIFEST_PATH);
    let loaded = super::manifest::load(&manifest_path)?;
    let resolved = resolve(&loaded, board)?;
    let original = std::fs::read(&manifest_path)
        .map_err(|e| CommandError::Usage(format!("cannot read {}: {e}", manifest_path.display())))?;
    let rewritten = sphere_app_format::hardware_definition::manifest_with_values(&original, &resolved)
        .map_err(CommandError::invalid)?;
    let staging =
        tempfile::tempdir().map_err(|e| CommandError::Usage(format!("cannot create a staging directory: {e}")))?;
    let copy = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", dir.display()))
        .arg(staging.path())
        .status()
        .map_err(|e| CommandError::Usage(format!("cannot copy {}: {e}", dir.display())))?;
    if !copy.success() {
        return Err(CommandError::Usage(format!("cannot copy {} for packaging", dir.display())));
    }
    std::fs::write(staging.path().join(package::MANIFEST_PATH), rewritten)
        .map_err(|e| CommandError::Usage(format!("cannot stage the manifest: {e}")))?;
    Ok(staging)
}

fn describe(file: &Path, summary: &PackageSummary) -> String {
    let manifest = &summary.manifest;
    let signature = match &summary.signature {
        SignatureStatus::Verified(id) => format!("{id} (verified against trusted keys)"),
        SignatureStatus::NotChecked(id) => format!("{id} (NOT checked: pass --trust KEY to verify)"),
    };
    let mut text = format!(
        "{}\n  Name                 {}\n  ComponentId          {}\n  EntryPoint           {}\n  ApplicationType      {:?}\n  Signed by            {signature}\n  Listing SHA-256      {}\n{}\n  Contents",
        file.display(),
        manifest.name,
        manifest.component_id,
        manifest.entry_point,
        manifest.application_type,
        hex::encode(summary.listing_sha256),
        describe_capabilities(manifest),
    );
    for entry in &summary.listing.entries {
        let target = entry.target.as_ref().map(|t| format!(" -> {t}")).unwrap_or_default();
        text.push_str(&format!("\n    {:?} {:04o} {:>10}  {}{target}", entry.kind, entry.mode, entry.size, entry.path));
    }
    text
}

fn signer(status: &SignatureStatus) -> &str {
    match status {
        SignatureStatus::Verified(id) | SignatureStatus::NotChecked(id) => id.as_str(),
    }
}

fn open(file: &Path) -> Result<BufReader<File>, CommandError> {
    File::open(file)
        .map(BufReader::new)
        .map_err(|error| CommandError::Usage(format!("cannot read {}: {error}", file.display())))
}

fn load_trust(paths: &[PathBuf]) -> Result<TrustStore, CommandError> {
    let mut trust = TrustStore::new();
    for path in paths {
        trust.add_pem_file(path).map_err(key_error)?;
    }
    Ok(trust)
}

fn key_error(error: KeyError) -> CommandError {
    CommandError::Usage(error.to_string())
}

/// A package that failed verification: exit 1, with the typed reason for tools.
fn rejected(file: &Path, error: PackageError) -> CommandError {
    let details = json!({ "reason": error.code(), "manifest_errors": manifest_errors(&error) });
    CommandError::invalid_with(format!("{}: {error}", file.display()), details)
}

fn manifest_errors(error: &PackageError) -> Option<&[manifest::FieldError]> {
    match error {
        PackageError::Manifest(manifest_error) => Some(&manifest_error.errors),
        _ => None,
    }
}

/// Packaging failures: problems in the app directory are invalid input, I/O trouble is not.
fn package_error(error: PackageError) -> CommandError {
    match error {
        PackageError::SourceIo { .. } | PackageError::Io(_) => CommandError::Usage(error.to_string()),
        other => {
            let details = json!({ "reason": other.code(), "manifest_errors": manifest_errors(&other) });
            CommandError::invalid_with(other.to_string(), details)
        }
    }
}
