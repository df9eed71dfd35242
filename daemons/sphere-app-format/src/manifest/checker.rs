//! Walks a parsed manifest, collecting every error and warning with its JSON path.
//!
//! Each `fn` here checks one kind of value and returns `None` after recording why it failed, so a
//! single pass reports all problems instead of stopping at the first.

use super::capabilities::{ConnectionTarget, MutableStorage, PeripheralKind, PeripheralRef, PowerControl};
use super::{AppManifest, ApplicationType, Capabilities, FieldError, MAX_NAME_CHARS, ManifestWarning};
use crate::json::{JsonPath, type_name};
use crate::package::check_package_path;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;
use std::net::IpAddr;
use uuid::Uuid;

/// Bounds on list lengths: far above real manifests, low enough that a hostile one stays cheap.
const MAX_LIST_ENTRIES: usize = 256;
const MAX_CMD_ARG_BYTES: usize = 4096;

const TOP_LEVEL_FIELDS: [&str; 10] = [
    "SchemaVersion",
    "Name",
    "ComponentId",
    "EntryPoint",
    "CmdArgs",
    "ApplicationType",
    "TargetBetaApis",
    "TargetApplicationRuntimeVersion",
    "MallocVersion",
    "Capabilities",
];

type BoolSlot = fn(&mut Capabilities) -> &mut bool;

const BOOLEAN_CAPABILITIES: [(&str, BoolSlot); 12] = [
    ("CertStore", |c| &mut c.cert_store),
    ("SoftwareUpdateDeferral", |c| &mut c.software_update_deferral),
    ("SystemEventNotifications", |c| &mut c.system_event_notifications),
    ("SystemTime", |c| &mut c.system_time),
    ("TimeSyncConfig", |c| &mut c.time_sync_config),
    ("WifiConfig", |c| &mut c.wifi_config),
    ("EnterpriseWifiConfig", |c| &mut c.enterprise_wifi_config),
    ("NetworkConfig", |c| &mut c.network_config),
    ("DhcpService", |c| &mut c.dhcp_service),
    ("SntpService", |c| &mut c.sntp_service),
    ("ReadNetworkProxyConfig", |c| &mut c.read_network_proxy_config),
    ("HeapMemStats", |c| &mut c.heap_mem_stats),
];

#[derive(Default)]
pub(super) struct Checker {
    pub errors: Vec<FieldError>,
    pub warnings: Vec<ManifestWarning>,
}

/// Whether a list may repeat an entry (`CmdArgs` may; capability lists may not).
#[derive(Clone, Copy, PartialEq)]
enum Repeats {
    Allowed,
    Refused,
}

impl Checker {
    fn error(&mut self, path: &JsonPath, message: impl Into<String>) {
        let field = path.field().to_owned();
        self.errors.push(FieldError { path: path.to_string(), field, message: message.into() });
    }

    fn warn(&mut self, path: &JsonPath, message: impl Into<String>) {
        self.warnings.push(ManifestWarning { path: path.to_string(), message: message.into() });
    }

    fn wrong_type<T>(&mut self, path: &JsonPath, expected: &str, found: &Value) -> Option<T> {
        self.error(path, format!("expected {expected}, found {}", type_name(found)));
        None
    }

    pub fn manifest(&mut self, document: &Value) -> Option<AppManifest> {
        let root = JsonPath::root();
        let object = self.object(document, &root)?;
        for key in object.keys().filter(|key| !TOP_LEVEL_FIELDS.contains(&key.as_str())) {
            self.warn(&root.key(key), format!("unknown field \"{key}\" is ignored"));
        }
        let schema_version = self.field(object, &root, "SchemaVersion", true, Self::schema_version);
        let name = self.field(object, &root, "Name", true, Self::name);
        let component_id = self.field(object, &root, "ComponentId", true, Self::guid);
        let entry_point = self.field(object, &root, "EntryPoint", true, Self::entry_point);
        let cmd_args =
            self.field(object, &root, "CmdArgs", false, |c, v, p| c.list(v, p, Repeats::Allowed, Self::cmd_arg));
        let application_type = self.field(object, &root, "ApplicationType", false, Self::application_type);
        let target_beta_apis = self.field(object, &root, "TargetBetaApis", false, Self::beta_apis);
        let runtime_version =
            self.field(object, &root, "TargetApplicationRuntimeVersion", false, |c, v, p| c.integer(v, p, 0, u32::MAX));
        let malloc_version = self.field(object, &root, "MallocVersion", false, |c, v, p| c.integer(v, p, 1, 2));
        let capabilities = self.field(object, &root, "Capabilities", false, Self::capabilities);
        Some(AppManifest {
            schema_version: schema_version?,
            name: name?,
            component_id: component_id?,
            entry_point: entry_point?,
            cmd_args: cmd_args.unwrap_or_default(),
            application_type: application_type.unwrap_or_default(),
            target_beta_apis,
            target_application_runtime_version: runtime_version,
            malloc_version,
            capabilities: capabilities.unwrap_or_default(),
        })
    }

    /// Look up `key` in `object` and check it; a missing required key is an error.
    fn field<T>(
        &mut self,
        object: &Map<String, Value>,
        parent: &JsonPath,
        key: &str,
        required: bool,
        check: impl FnOnce(&mut Self, &Value, &JsonPath) -> Option<T>,
    ) -> Option<T> {
        let path = parent.key(key);
        match object.get(key) {
            Some(value) => check(self, value, &path),
            None if required => {
                self.error(&path, "required field is missing");
                None
            }
            None => None,
        }
    }

    fn object<'v>(&mut self, value: &'v Value, path: &JsonPath) -> Option<&'v Map<String, Value>> {
        match value {
            Value::Object(object) => Some(object),
            other => self.wrong_type(path, "an object", other),
        }
    }

    fn boolean(&mut self, value: &Value, path: &JsonPath) -> Option<bool> {
        match value {
            Value::Bool(flag) => Some(*flag),
            other => self.wrong_type(path, "true or false", other),
        }
    }

    fn string<'v>(&mut self, value: &'v Value, path: &JsonPath) -> Option<&'v str> {
        match value {
            Value::String(text) => Some(text),
            other => self.wrong_type(path, "a string", other),
        }
    }

    fn integer(&mut self, value: &Value, path: &JsonPath, min: u32, max: u32) -> Option<u32> {
        let Value::Number(number) = value else {
            return self.wrong_type(path, "a whole number", value);
        };
        match number.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.error(path, format!("{number} is out of range {min}..={max}"));
                None
            }
        }
    }

    /// A JSON array whose items all pass `item`, at most [`MAX_LIST_ENTRIES`] long.
    fn list<T: Clone + Eq + Hash + Display>(
        &mut self,
        value: &Value,
        path: &JsonPath,
        repeats: Repeats,
        mut item: impl FnMut(&mut Self, &Value, &JsonPath) -> Option<T>,
    ) -> Option<Vec<T>> {
        let Value::Array(values) = value else {
            return self.wrong_type(path, "an array", value);
        };
        if values.len() > MAX_LIST_ENTRIES {
            self.error(path, format!("{} entries; at most {MAX_LIST_ENTRIES} are allowed", values.len()));
            return None;
        }
        let errors_before = self.errors.len();
        let mut items = Vec::with_capacity(values.len());
        let mut first_index: HashMap<T, usize> = HashMap::new();
        for (index, value) in values.iter().enumerate() {
            let at = path.index(index);
            let Some(parsed) = item(self, value, &at) else { continue };
            if repeats == Repeats::Refused {
                if let Some(first) = first_index.get(&parsed) {
                    self.error(&at, format!("duplicate entry \"{parsed}\" (first at index {first})"));
                    continue;
                }
                first_index.insert(parsed.clone(), index);
            }
            items.push(parsed);
        }
        (self.errors.len() == errors_before).then_some(items)
    }

    fn schema_version(&mut self, value: &Value, path: &JsonPath) -> Option<u32> {
        let version = self.integer(value, path, 0, u32::MAX)?;
        if version != 1 {
            self.error(path, format!("SchemaVersion {version} is not supported; it must be 1"));
            return None;
        }
        Some(version)
    }

    fn name(&mut self, value: &Value, path: &JsonPath) -> Option<String> {
        let name = self.string(value, path)?;
        if name.trim().is_empty() {
            self.error(path, "must not be empty");
            return None;
        }
        if name.chars().any(char::is_control) {
            self.error(path, "must not contain control characters");
            return None;
        }
        if name.chars().count() > MAX_NAME_CHARS {
            let kept: String = name.chars().take(MAX_NAME_CHARS).collect();
            self.warn(
                path,
                format!("longer than {MAX_NAME_CHARS} characters; kept as \"{kept}\" (as Azure Sphere does)"),
            );
            return Some(kept);
        }
        Some(name.to_owned())
    }

    fn guid(&mut self, value: &Value, path: &JsonPath) -> Option<Uuid> {
        let text = self.string(value, path)?;
        match Uuid::try_parse(text) {
            Ok(guid) if guid.is_nil() => {
                self.error(path, "the all-zero GUID cannot identify anything");
                None
            }
            Ok(guid) => Some(guid),
            Err(_) => {
                self.error(
                    path,
                    format!("\"{text}\" is not a GUID (expected the form 01234567-89ab-cdef-0123-456789abcdef)"),
                );
                None
            }
        }
    }

    fn entry_point(&mut self, value: &Value, path: &JsonPath) -> Option<String> {
        let text = self.string(value, path)?;
        if text.is_empty() {
            self.error(path, "must not be empty; Azure Sphere apps use \"/bin/app\"");
            return None;
        }
        let Some(relative) = text.strip_prefix('/') else {
            self.error(path, format!("\"{text}\" must be an absolute path inside the package, such as \"/bin/app\""));
            return None;
        };
        if let Err(problem) = check_package_path(relative) {
            self.error(path, format!("\"{text}\" is not a valid package path: {problem}"));
            return None;
        }
        Some(text.to_owned())
    }

    fn cmd_arg(&mut self, value: &Value, path: &JsonPath) -> Option<String> {
        let text = self.string(value, path)?;
        if text.contains('\0') {
            self.error(path, "must not contain a NUL character");
            return None;
        }
        if text.len() > MAX_CMD_ARG_BYTES {
            self.error(path, format!("{} bytes long; at most {MAX_CMD_ARG_BYTES}", text.len()));
            return None;
        }
        Some(text.to_owned())
    }

    fn application_type(&mut self, value: &Value, path: &JsonPath) -> Option<ApplicationType> {
        let text = self.string(value, path)?;
        let found = ApplicationType::ALL.iter().find(|(name, _)| *name == text).map(|(_, kind)| *kind);
        if found.is_none() {
            self.error(path, format!("\"{text}\" is not one of Default, RealTimeCapable, Debugger"));
        }
        found
    }

    fn beta_apis(&mut self, value: &Value, path: &JsonPath) -> Option<String> {
        let text = self.string(value, path)?;
        if text.is_empty() || text.len() > 64 || !text.chars().all(|c| c.is_ascii_alphanumeric() || c == '+') {
            self.error(path, format!("\"{text}\" is not a beta API set name such as \"Beta2101\""));
            return None;
        }
        Some(text.to_owned())
    }

    fn capabilities(&mut self, value: &Value, path: &JsonPath) -> Option<Capabilities> {
        let object = self.object(value, path)?;
        let errors_before = self.errors.len();
        let mut granted = Capabilities::default();
        for (key, value) in object {
            self.capability(&mut granted, key, value, &path.key(key));
        }
        (self.errors.len() == errors_before).then_some(granted)
    }

    fn capability(&mut self, granted: &mut Capabilities, key: &str, value: &Value, path: &JsonPath) {
        if let Some((_, slot)) = BOOLEAN_CAPABILITIES.iter().find(|(name, _)| *name == key) {
            set(slot(granted), self.boolean(value, path));
            return;
        }
        if let Some(kind) = PeripheralKind::ALL.into_iter().find(|kind| kind.key() == key) {
            set(granted.peripherals_mut(kind), self.list(value, path, Repeats::Refused, Self::peripheral));
            return;
        }
        match key {
            "AllowedConnections" => {
                set(&mut granted.allowed_connections, self.list(value, path, Repeats::Refused, Self::connection_target))
            }
            "AllowedTcpServerPorts" => {
                set(&mut granted.allowed_tcp_server_ports, self.list(value, path, Repeats::Refused, Self::port))
            }
            "AllowedUdpServerPorts" => {
                set(&mut granted.allowed_udp_server_ports, self.list(value, path, Repeats::Refused, Self::port))
            }
            "AllowedApplicationConnections" => {
                set(&mut granted.allowed_application_connections, self.list(value, path, Repeats::Refused, Self::guid))
            }
            "MutableStorage" => granted.mutable_storage = self.mutable_storage(value, path),
            "DeviceAuthentication" => granted.device_authentication = self.guid(value, path),
            "PowerControls" => {
                set(&mut granted.power_controls, self.list(value, path, Repeats::Refused, Self::power_control))
            }
            unknown => self.warn(path, format!("unknown capability \"{unknown}\" is ignored; the app does not get it")),
        }
    }

    fn port(&mut self, value: &Value, path: &JsonPath) -> Option<u16> {
        self.integer(value, path, 1, u32::from(u16::MAX)).and_then(|port| u16::try_from(port).ok())
    }

    fn mutable_storage(&mut self, value: &Value, path: &JsonPath) -> Option<MutableStorage> {
        let object = self.object(value, path)?;
        for key in object.keys().filter(|key| *key != "SizeKB") {
            self.warn(&path.key(key), format!("unknown field \"{key}\" is ignored"));
        }
        let max = u32::try_from(MutableStorage::MAX_SIZE_KB).unwrap_or(u32::MAX);
        let size_kb = self.field(object, path, "SizeKB", true, |c, v, p| c.integer(v, p, 1, max))?;
        Some(MutableStorage { size_kb })
    }

    fn power_control(&mut self, value: &Value, path: &JsonPath) -> Option<PowerControl> {
        let text = self.string(value, path)?;
        let found = PowerControl::ALL.iter().find(|(name, _)| *name == text).map(|(_, control)| *control);
        if found.is_none() {
            self.error(path, format!("\"{text}\" is not one of ForcePowerDown, ForceReboot, SetPowerProfile"));
        }
        found
    }

    fn peripheral(&mut self, value: &Value, path: &JsonPath) -> Option<PeripheralRef> {
        if let Value::Number(_) = value {
            return self.integer(value, path, 0, u32::MAX).map(PeripheralRef::RawNumber);
        }
        let text = self.string(value, path)?;
        let parsed = match text.strip_prefix('$') {
            Some(name) if is_identifier(name) => PeripheralRef::Named(name.to_owned()),
            Some(_) => {
                self.error(
                    path,
                    format!("\"{text}\" is not a hardware-definition name (letters, digits and _ after the $)"),
                );
                return None;
            }
            None if !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                PeripheralRef::RawText(text.to_owned())
            }
            None => {
                self.error(path, format!("\"{text}\" is neither a \"$NAME\" reference nor a raw peripheral value"));
                return None;
            }
        };
        Some(parsed)
    }

    fn connection_target(&mut self, value: &Value, path: &JsonPath) -> Option<ConnectionTarget> {
        let text = self.string(value, path)?;
        match parse_connection_target(text) {
            Ok(target) => Some(target),
            Err(problem) => {
                self.error(path, format!("\"{text}\" {problem}"));
                None
            }
        }
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Classify an `AllowedConnections` entry: IP literal, DNS-SD name, wildcard or host name.
pub(crate) fn parse_connection_target(text: &str) -> Result<ConnectionTarget, String> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(ConnectionTarget::Ip(ip));
    }
    let lower = text.to_ascii_lowercase();
    if lower.starts_with('_') {
        return check_dns_sd_name(&lower).map(|()| ConnectionTarget::DnsSd(lower));
    }
    if let Some(suffix) = lower.strip_prefix("*.") {
        check_host_name(suffix)?;
        if !suffix.contains('.') {
            return Err("is too broad: a wildcard needs at least two labels after \"*.\"".to_owned());
        }
        return Ok(ConnectionTarget::WildcardHost(suffix.to_owned()));
    }
    check_host_name(&lower).map(|()| ConnectionTarget::Host(lower))
}

fn check_host_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err("is not a host name (1 to 253 characters)".to_owned());
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.iter().all(|label| label.chars().all(|c| c.is_ascii_digit())) {
        return Err("is neither a valid IP address nor a host name".to_owned());
    }
    for label in labels {
        let valid_chars = label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if label.is_empty() || label.len() > 63 || !valid_chars || label.starts_with('-') || label.ends_with('-') {
            return Err(format!("is not a host name: label \"{label}\" must be 1-63 letters, digits or inner hyphens"));
        }
    }
    Ok(())
}

/// `_service._tcp.domain`: RFC 6763 service names, which start with an underscore.
fn check_dns_sd_name(name: &str) -> Result<(), String> {
    let mut labels = name.splitn(3, '.');
    let (service, protocol, domain) = (labels.next(), labels.next(), labels.next());
    let service_ok = service
        .and_then(|s| s.strip_prefix('_'))
        .is_some_and(|s| !s.is_empty() && s.len() <= 15 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    let protocol_ok = matches!(protocol, Some("_tcp" | "_udp"));
    match (service_ok, protocol_ok, domain) {
        (true, true, Some(domain)) => check_host_name(domain),
        _ => Err("is not a DNS-SD service name such as \"_sample._tcp.local\"".to_owned()),
    }
}
