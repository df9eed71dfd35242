//! Azure Sphere hardware definitions: how `"$NAME"` in a manifest becomes a real peripheral.
//!
//! A hardware-definition file lists named peripherals. A name either maps to another name
//! (`Mapping`, usually defined in an imported file: sample name → board name → chip pin) or
//! carries the concrete value (`AppManifestValue`). Files import others through `Imports`,
//! resolved relative to the importing file and then along a search path, as Azure Sphere's
//! tools do. OpenSphere adds one optional field, `LinuxDevice` (`{"Path": "/dev/gpiochip0",
//! "Line": 3}`), which says which device node or GPIO line a peripheral is on a Linux board; the
//! app manager grants exactly those nodes to the app's sandbox.

use crate::json::{self, JsonPath, type_name};
use crate::manifest::{AppManifest, PeripheralKind, PeripheralRef};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

const METADATA_TYPE: &str = "Azure Sphere Hardware Definition";
/// More than any real chain (sample → board → module → chip is four), few enough to stay cheap.
const MAX_FILES: usize = 64;
const MAX_FILE_BYTES: u64 = 1024 * 1024;
const MAX_MAPPING_HOPS: usize = 16;

/// A peripheral's concrete manifest value: a number (GPIO 8) or a text (`"ISU0"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum AppManifestValue {
    Number(u32),
    Text(String),
}

impl fmt::Display for AppManifestValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppManifestValue::Number(n) => write!(f, "{n}"),
            AppManifestValue::Text(t) => f.write_str(t),
        }
    }
}

/// OpenSphere's extension: where a peripheral is on a Linux board.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LinuxDevice {
    /// The device node, e.g. `/dev/gpiochip0` or `/dev/ttyAMA1`.
    pub path: String,
    /// The line on a GPIO chip.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

/// One entry of a file's `Peripherals`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PeripheralDefinition {
    pub name: String,
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapping: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_manifest_value: Option<AppManifestValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linux_device: Option<LinuxDevice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(skip)]
    pub defined_in: PathBuf,
}

/// Why a hardware definition (or one it imports) could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum HardwareDefinitionError {
    #[error("cannot read hardware definition {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {json_path} ({field}): {message}")]
    Invalid { path: PathBuf, json_path: String, field: String, message: String },
    #[error("{importer}: import \"{import}\" not found; searched {}", display_paths(.searched))]
    ImportNotFound { importer: PathBuf, import: String, searched: Vec<PathBuf> },
    #[error("import cycle: {}", display_paths(.chain))]
    ImportCycle { chain: Vec<PathBuf> },
    #[error("peripheral \"{name}\" is defined twice: in {first} and in {second}")]
    DuplicateName { name: String, first: PathBuf, second: PathBuf },
    #[error("more than {MAX_FILES} hardware-definition files are imported")]
    TooManyFiles,
}

/// Why a manifest entry did not resolve.
#[derive(Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{json_path}: {entry} {reason} (hardware definitions searched: {})", display_paths(.files_searched))]
pub struct ResolveError {
    /// Where the entry is in the manifest, e.g. `$.Capabilities.Gpio[0]`.
    pub json_path: String,
    pub entry: String,
    pub reason: String,
    pub files_searched: Vec<PathBuf>,
}

/// A manifest peripheral entry, resolved to its concrete value (and Linux device if known).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResolvedPeripheral {
    pub kind: PeripheralKind,
    /// The entry as written in the manifest (`$SAMPLE_LED` or a raw value).
    pub manifest_entry: String,
    /// The names followed, from the manifest's to the concrete one.
    pub mapping_chain: Vec<String>,
    pub app_manifest_value: AppManifestValue,
    pub linux_device: Option<LinuxDevice>,
}

fn display_paths(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths.iter().map(|path| path.display().to_string()).collect();
    shown.join(", ")
}

/// A hardware definition with all its imports loaded.
#[derive(Clone, Debug, Default)]
pub struct HardwareDefinitionSet {
    files: Vec<PathBuf>,
    peripherals: HashMap<String, PeripheralDefinition>,
}

impl HardwareDefinitionSet {
    /// Load `path` and, recursively, everything it imports.
    pub fn load(path: &Path, search_path: &[PathBuf]) -> Result<Self, HardwareDefinitionError> {
        let mut set = HardwareDefinitionSet::default();
        let mut loader = Loader { search_path, stack: Vec::new() };
        loader.load_file(path, &mut set)?;
        Ok(set)
    }

    /// Every file loaded, the given one first.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    pub fn peripheral(&self, name: &str) -> Option<&PeripheralDefinition> {
        self.peripherals.get(name)
    }

    /// Every peripheral, sorted by name.
    pub fn peripherals(&self) -> Vec<&PeripheralDefinition> {
        let mut all: Vec<_> = self.peripherals.values().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Resolve every peripheral entry of a manifest; all failures are reported together.
    pub fn resolve_manifest(&self, manifest: &AppManifest) -> Result<Vec<ResolvedPeripheral>, Vec<ResolveError>> {
        let mut resolved = Vec::new();
        let mut errors = Vec::new();
        for kind in PeripheralKind::ALL {
            let list_path = JsonPath::root().key("Capabilities").key(kind.key());
            for (index, entry) in manifest.capabilities.peripherals(kind).iter().enumerate() {
                match self.resolve(kind, entry) {
                    Ok(peripheral) => resolved.push(peripheral),
                    Err(reason) => errors.push(ResolveError {
                        json_path: list_path.index(index).to_string(),
                        entry: entry.to_string(),
                        reason,
                        files_searched: self.files.clone(),
                    }),
                }
            }
        }
        if errors.is_empty() { Ok(resolved) } else { Err(errors) }
    }

    /// Resolve one entry. Raw values resolve to themselves (real-time apps use them), picking up
    /// the Linux device of a peripheral with that value if the board defines one.
    pub fn resolve(&self, kind: PeripheralKind, entry: &PeripheralRef) -> Result<ResolvedPeripheral, String> {
        let raw = match entry {
            PeripheralRef::Named(name) => return self.follow_mapping(kind, name, entry),
            PeripheralRef::RawNumber(number) => AppManifestValue::Number(*number),
            PeripheralRef::RawText(text) => AppManifestValue::Text(text.clone()),
        };
        let on_board = self
            .peripherals()
            .into_iter()
            .find(|p| p.kind == kind.key() && p.app_manifest_value.as_ref() == Some(&raw));
        Ok(ResolvedPeripheral {
            kind,
            manifest_entry: entry.to_string(),
            mapping_chain: on_board.map(|p| vec![p.name.clone()]).unwrap_or_default(),
            app_manifest_value: raw,
            linux_device: on_board.and_then(|p| p.linux_device.clone()),
        })
    }

    fn follow_mapping(
        &self,
        kind: PeripheralKind,
        name: &str,
        entry: &PeripheralRef,
    ) -> Result<ResolvedPeripheral, String> {
        let mut chain: Vec<String> = Vec::new();
        let mut linux_device = None;
        let mut current = name;
        loop {
            if chain.iter().any(|seen| seen == current) || chain.len() >= MAX_MAPPING_HOPS {
                return Err(format!("has a mapping loop: {} -> {current}", chain.join(" -> ")));
            }
            chain.push(current.to_owned());
            let Some(definition) = self.peripherals.get(current) else {
                return Err(match chain.len() {
                    1 => "is not defined".to_owned(),
                    _ => format!("maps to \"{current}\", which is not defined"),
                });
            };
            if definition.kind != kind.key() {
                return Err(format!(
                    "is a {} peripheral (\"{current}\" in {}), not {kind}",
                    definition.kind,
                    definition.defined_in.display()
                ));
            }
            linux_device = linux_device.or_else(|| definition.linux_device.clone());
            if let Some(value) = &definition.app_manifest_value {
                return Ok(ResolvedPeripheral {
                    kind,
                    manifest_entry: entry.to_string(),
                    mapping_chain: chain,
                    app_manifest_value: value.clone(),
                    linux_device,
                });
            }
            current = definition.mapping.as_deref().unwrap_or_default();
        }
    }
}

struct Loader<'s> {
    search_path: &'s [PathBuf],
    /// Files being loaded, outermost first, for cycle detection.
    stack: Vec<PathBuf>,
}

impl Loader<'_> {
    fn load_file(&mut self, path: &Path, set: &mut HardwareDefinitionSet) -> Result<(), HardwareDefinitionError> {
        let canonical =
            path.canonicalize().map_err(|source| HardwareDefinitionError::Read { path: path.to_owned(), source })?;
        if self.stack.contains(&canonical) {
            let mut chain = self.stack.clone();
            chain.push(canonical);
            return Err(HardwareDefinitionError::ImportCycle { chain });
        }
        if set.files.contains(&canonical) {
            return Ok(()); // Imported twice through different files (a diamond): load once.
        }
        if set.files.len() >= MAX_FILES {
            return Err(HardwareDefinitionError::TooManyFiles);
        }
        set.files.push(canonical.clone());
        let parsed = parse_file(&canonical)?;
        self.stack.push(canonical.clone());
        for import in &parsed.imports {
            let found = self.find_import(&canonical, import)?;
            self.load_file(&found, set)?;
        }
        self.stack.pop();
        for peripheral in parsed.peripherals {
            if let Some(first) = set.peripherals.get(&peripheral.name) {
                return Err(HardwareDefinitionError::DuplicateName {
                    name: peripheral.name.clone(),
                    first: first.defined_in.clone(),
                    second: peripheral.defined_in.clone(),
                });
            }
            set.peripherals.insert(peripheral.name.clone(), peripheral);
        }
        Ok(())
    }

    fn find_import(&self, importer: &Path, import: &str) -> Result<PathBuf, HardwareDefinitionError> {
        let beside = importer.parent().map(|dir| dir.join(import));
        let candidates: Vec<PathBuf> =
            beside.into_iter().chain(self.search_path.iter().map(|dir| dir.join(import))).collect();
        match candidates.iter().find(|candidate| candidate.is_file()) {
            Some(found) => Ok(found.clone()),
            None => Err(HardwareDefinitionError::ImportNotFound {
                importer: importer.to_owned(),
                import: import.to_owned(),
                searched: candidates,
            }),
        }
    }
}

struct ParsedFile {
    imports: Vec<String>,
    peripherals: Vec<PeripheralDefinition>,
}

fn parse_file(path: &Path) -> Result<ParsedFile, HardwareDefinitionError> {
    let read_error = |source| HardwareDefinitionError::Read { path: path.to_owned(), source };
    let size = std::fs::metadata(path).map_err(read_error)?.len();
    let root = JsonPath::root();
    let invalid = |at: &JsonPath, message: String| HardwareDefinitionError::Invalid {
        path: path.to_owned(),
        json_path: at.to_string(),
        field: at.field().to_owned(),
        message,
    };
    if size > MAX_FILE_BYTES {
        return Err(invalid(&root, format!("file is {size} bytes; the limit is {MAX_FILE_BYTES}")));
    }
    let bytes = std::fs::read(path).map_err(read_error)?;
    let document = json::parse_strict(&bytes).map_err(|error| invalid(&root, format!("not valid JSON: {error}")))?;
    let reader = FileReader { path, invalid: &invalid };
    let object = reader.object(&document, &root)?;
    reader.metadata(object)?;
    let imports = match object.get("Imports") {
        None => Vec::new(),
        Some(value) => reader
            .array(value, &root.key("Imports"))?
            .iter()
            .enumerate()
            .map(|(i, item)| reader.import(item, &root.key("Imports").index(i)))
            .collect::<Result<_, _>>()?,
    };
    let peripherals_path = root.key("Peripherals");
    let peripherals = match object.get("Peripherals") {
        None => Vec::new(),
        Some(value) => reader
            .array(value, &peripherals_path)?
            .iter()
            .enumerate()
            .map(|(i, item)| reader.peripheral(item, &peripherals_path.index(i)))
            .collect::<Result<Vec<_>, _>>()?,
    };
    Ok(ParsedFile { imports, peripherals })
}

/// Typed access to one file's JSON, every error located by JSON path.
struct FileReader<'a, F: Fn(&JsonPath, String) -> HardwareDefinitionError> {
    path: &'a Path,
    invalid: &'a F,
}

impl<F: Fn(&JsonPath, String) -> HardwareDefinitionError> FileReader<'_, F> {
    fn wrong_type(&self, at: &JsonPath, expected: &str, found: &Value) -> HardwareDefinitionError {
        (self.invalid)(at, format!("expected {expected}, found {}", type_name(found)))
    }

    fn object<'v>(&self, value: &'v Value, at: &JsonPath) -> Result<&'v Map<String, Value>, HardwareDefinitionError> {
        value.as_object().ok_or_else(|| self.wrong_type(at, "an object", value))
    }

    fn array<'v>(&self, value: &'v Value, at: &JsonPath) -> Result<&'v Vec<Value>, HardwareDefinitionError> {
        value.as_array().ok_or_else(|| self.wrong_type(at, "an array", value))
    }

    fn string(
        &self,
        object: &Map<String, Value>,
        parent: &JsonPath,
        key: &str,
    ) -> Result<Option<String>, HardwareDefinitionError> {
        match object.get(key) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(other) => Err(self.wrong_type(&parent.key(key), "a string", other)),
        }
    }

    fn required_string(
        &self,
        object: &Map<String, Value>,
        parent: &JsonPath,
        key: &str,
    ) -> Result<String, HardwareDefinitionError> {
        self.string(object, parent, key)?
            .ok_or_else(|| (self.invalid)(&parent.key(key), "required field is missing".to_owned()))
    }

    fn metadata(&self, object: &Map<String, Value>) -> Result<(), HardwareDefinitionError> {
        let at = JsonPath::root().key("Metadata");
        let metadata =
            object.get("Metadata").ok_or_else(|| (self.invalid)(&at, "required field is missing".to_owned()))?;
        let metadata = self.object(metadata, &at)?;
        let kind = self.required_string(metadata, &at, "Type")?;
        if kind != METADATA_TYPE {
            return Err((self.invalid)(&at.key("Type"), format!("\"{kind}\" is not \"{METADATA_TYPE}\"")));
        }
        match metadata.get("Version") {
            Some(version) if version == 1 => Ok(()),
            Some(other) => {
                Err((self.invalid)(&at.key("Version"), format!("version {other} is not supported; it must be 1")))
            }
            None => Err((self.invalid)(&at.key("Version"), "required field is missing".to_owned())),
        }
    }

    fn import(&self, item: &Value, at: &JsonPath) -> Result<String, HardwareDefinitionError> {
        let object = self.object(item, at)?;
        let import = self.required_string(object, at, "Path")?;
        if import.is_empty() || Path::new(&import).is_absolute() {
            return Err((self.invalid)(&at.key("Path"), format!("\"{import}\" must be a relative file name")));
        }
        Ok(import)
    }

    fn peripheral(&self, item: &Value, at: &JsonPath) -> Result<PeripheralDefinition, HardwareDefinitionError> {
        let object = self.object(item, at)?;
        let name = self.required_string(object, at, "Name")?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err((self.invalid)(&at.key("Name"), format!("\"{name}\" must be letters, digits and _")));
        }
        let kind = self.required_string(object, at, "Type")?;
        let mapping = self.string(object, at, "Mapping")?;
        let app_manifest_value = match object.get("AppManifestValue") {
            None => None,
            Some(Value::String(text)) => Some(AppManifestValue::Text(text.clone())),
            Some(Value::Number(n)) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => Some(AppManifestValue::Number(n)),
                None => {
                    return Err((self.invalid)(
                        &at.key("AppManifestValue"),
                        format!("{n} is not a whole number in 0..=4294967295"),
                    ));
                }
            },
            Some(other) => return Err(self.wrong_type(&at.key("AppManifestValue"), "a string or a number", other)),
        };
        if mapping.is_some() == app_manifest_value.is_some() {
            return Err((self.invalid)(
                at,
                format!("peripheral \"{name}\" needs exactly one of Mapping and AppManifestValue"),
            ));
        }
        let linux_device =
            object.get("LinuxDevice").map(|value| self.linux_device(value, &at.key("LinuxDevice"))).transpose()?;
        let comment = self.string(object, at, "Comment")?;
        Ok(PeripheralDefinition {
            name,
            kind,
            mapping,
            app_manifest_value,
            linux_device,
            comment,
            defined_in: self.path.to_owned(),
        })
    }

    fn linux_device(&self, value: &Value, at: &JsonPath) -> Result<LinuxDevice, HardwareDefinitionError> {
        let object = self.object(value, at)?;
        let path = self.required_string(object, at, "Path")?;
        if !path.starts_with("/dev/") || path.contains("/../") || path.contains('\0') {
            return Err((self.invalid)(&at.key("Path"), format!("\"{path}\" must be a device node under /dev/")));
        }
        let line = match object.get("Line") {
            None => None,
            Some(value) => match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(line) => Some(line),
                None => return Err(self.wrong_type(&at.key("Line"), "a whole number", value)),
            },
        };
        Ok(LinuxDevice { path, line })
    }
}

/// Several [`ResolveError`]s, displayed one per line.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub struct ResolveErrorList(pub Vec<ResolveError>);

impl fmt::Display for ResolveErrorList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unresolved peripheral references")?;
        for error in &self.0 {
            write!(f, "\n  {error}")?;
        }
        Ok(())
    }
}

/// The manifest as Azure Sphere's build puts it in an image package: every `"$NAME"` peripheral
/// reference replaced by its concrete `AppManifestValue`, everything else byte-for-byte the same
/// JSON value. A device then needs only its board's definition, not the app's own.
pub fn manifest_with_values(original: &[u8], resolved: &[ResolvedPeripheral]) -> Result<Vec<u8>, String> {
    let mut document = json::parse_strict(original).map_err(|e| e.to_string())?;
    let Some(capabilities) = document.get_mut("Capabilities").and_then(Value::as_object_mut) else {
        return Ok(original.to_vec());
    };
    for peripheral in resolved {
        let Some(entries) = capabilities.get_mut(peripheral.kind.key()).and_then(Value::as_array_mut) else { continue };
        for entry in entries.iter_mut().filter(|entry| entry.as_str() == Some(peripheral.manifest_entry.as_str())) {
            *entry = serde_json::to_value(&peripheral.app_manifest_value).map_err(|e| e.to_string())?;
        }
    }
    let mut bytes = serde_json::to_vec_pretty(&document).map_err(|e| e.to_string())?;
    bytes.push(b'\n');
    Ok(bytes)
}
