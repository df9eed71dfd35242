//! `sphere manifest check`.

use super::load_hardware;
use crate::cli::HardwareArgs;
use crate::output::{CommandError, Output};
use serde::Serialize;
use sphere_app_format::hardware_definition::ResolvedPeripheral;
use sphere_app_format::manifest::{self, AppManifest, LoadedManifest, MAX_MANIFEST_BYTES, ManifestWarning};
use sphere_app_format::{HardwareDefinitionSet, ResolveErrorList};
use std::io::Read;
use std::path::Path;

#[derive(Serialize)]
struct CheckReport<'a> {
    ok: bool,
    file: &'a Path,
    manifest: &'a AppManifest,
    warnings: &'a [ManifestWarning],
    #[serde(skip_serializing_if = "Option::is_none")]
    peripherals: Option<Vec<ResolvedPeripheral>>,
}

pub fn check(file: &Path, hardware: &HardwareArgs, output: &Output) -> Result<(), CommandError> {
    let loaded = load(file)?;
    let board = load_hardware(hardware)?;
    let peripherals = board.as_ref().map(|board| resolve(&loaded, board)).transpose()?;
    let report = CheckReport { ok: true, file, manifest: &loaded.manifest, warnings: &loaded.warnings, peripherals };
    print_warnings(&loaded.warnings, output);
    output.print(&report, || describe(&report));
    Ok(())
}

/// Read and validate a manifest file; reading stops just past the size limit.
pub fn load(file: &Path) -> Result<LoadedManifest, CommandError> {
    let opened = std::fs::File::open(file)
        .map_err(|error| CommandError::Usage(format!("cannot read {}: {error}", file.display())))?;
    let mut bytes = Vec::new();
    opened
        .take(MAX_MANIFEST_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| CommandError::Usage(format!("cannot read {}: {error}", file.display())))?;
    manifest::parse_manifest(&bytes)
        .map_err(|error| CommandError::invalid_with(format!("{}: {error}", file.display()), &error.errors))
}

pub fn resolve(
    loaded: &LoadedManifest,
    board: &HardwareDefinitionSet,
) -> Result<Vec<ResolvedPeripheral>, CommandError> {
    board.resolve_manifest(&loaded.manifest).map_err(|errors| {
        let list = ResolveErrorList(errors);
        CommandError::invalid_with(list.to_string(), &list.0)
    })
}

pub fn print_warnings(warnings: &[ManifestWarning], output: &Output) {
    for warning in warnings {
        output.note(&format!("sphere: warning: {warning}"));
    }
}

fn describe(report: &CheckReport<'_>) -> String {
    let manifest = report.manifest;
    let mut text = format!(
        "{}: valid\n  Name                 {}\n  ComponentId          {}\n  EntryPoint           {}\n  ApplicationType      {:?}\n",
        report.file.display(),
        manifest.name,
        manifest.component_id,
        manifest.entry_point,
        manifest.application_type
    );
    text.push_str(&describe_capabilities(manifest));
    for peripheral in report.peripherals.iter().flatten() {
        text.push_str(&format!("\n  {:<20} {}", peripheral.kind.key(), describe_peripheral(peripheral)));
    }
    text
}

/// One line per granted capability, from the manifest's own JSON form.
pub fn describe_capabilities(manifest: &AppManifest) -> String {
    let value = serde_json::to_value(&manifest.capabilities).unwrap_or_default();
    let granted: Vec<String> = value
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| !(v.is_null() || v == &false || v.as_array().is_some_and(Vec::is_empty)))
        .map(|(key, v)| format!("  {key:<20} {}", compact(v)))
        .collect();
    if granted.is_empty() { "  Capabilities         none".to_owned() } else { granted.join("\n") }
}

fn compact(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Array(items) => items.iter().map(compact).collect::<Vec<_>>().join(", "),
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn describe_peripheral(peripheral: &ResolvedPeripheral) -> String {
    let device = match &peripheral.linux_device {
        Some(device) => match device.line {
            Some(line) => format!(" ({} line {line})", device.path),
            None => format!(" ({})", device.path),
        },
        None => String::new(),
    };
    format!(
        "{} -> {} = {}{device}",
        peripheral.manifest_entry,
        peripheral.mapping_chain.join(" -> "),
        peripheral.app_manifest_value
    )
}
