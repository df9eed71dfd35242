//! Manifest loading: every documented capability, and every rejection naming its field and path.

use serde_json::{Value, json};
use sphere_app_format::manifest::{
    ApplicationType, ConnectionTarget, ManifestError, PeripheralRef, PowerControl, parse_manifest,
};

const APP_ID: &str = "7f0c2e5a-61d4-4b8e-9a3f-2c51d7e80b14";
const PEER_ID: &str = "005180bc-402f-4cb3-a662-72937dbcde47";
const TENANT_ID: &str = "77304f1f-9530-4157-8598-30bc1f3d66f0";

fn minimal() -> Value {
    json!({ "SchemaVersion": 1, "Name": "app", "ComponentId": APP_ID, "EntryPoint": "/bin/app" })
}

fn with_capability(key: &str, value: Value) -> Value {
    let mut manifest = minimal();
    manifest["Capabilities"] = json!({ key: value });
    manifest
}

fn parse(value: &Value) -> Result<sphere_app_format::LoadedManifest, ManifestError> {
    parse_manifest(value.to_string().as_bytes())
}

/// Assert the manifest is refused with an error at `path` whose field is `field` and whose
/// message contains `needle`; the Display text must name the path too.
#[track_caller]
fn assert_refused(value: &Value, path: &str, field: &str, needle: &str) {
    let error = parse(value).expect_err("manifest should be refused");
    let found = error.errors.iter().find(|e| e.path == path);
    let Some(found) = found else { panic!("no error at {path}: {error}") };
    assert_eq!(found.field, field, "{error}");
    assert!(found.message.contains(needle), "message {:?} lacks {needle:?}", found.message);
    assert!(error.to_string().contains(path), "{error}");
}

#[test]
fn loads_every_documented_capability() {
    let document = json!({
        "SchemaVersion": 1,
        "Name": "every-capability",
        "ComponentId": APP_ID,
        "EntryPoint": "/bin/app",
        "CmdArgs": ["--verbose", "--verbose"],
        "ApplicationType": "Default",
        "TargetBetaApis": "Beta2101",
        "TargetApplicationRuntimeVersion": 8,
        "MallocVersion": 2,
        "Capabilities": {
            "AllowedConnections": ["www.example.com", "*.azure-devices.net", "192.0.2.1", "2001:db8::1", "_sample._tcp.local"],
            "AllowedTcpServerPorts": [1024, 65535],
            "AllowedUdpServerPorts": [1, 50000],
            "AllowedApplicationConnections": [PEER_ID],
            "Gpio": ["$SAMPLE_LED", 8],
            "Uart": ["$SAMPLE_UART", "ISU0"],
            "I2cMaster": ["$SAMPLE_I2C"],
            "SpiMaster": ["$SAMPLE_SPI"],
            "Adc": ["$SAMPLE_ADC", 0],
            "Pwm": ["$SAMPLE_PWM"],
            "MutableStorage": { "SizeKB": 64 },
            "DeviceAuthentication": TENANT_ID,
            "CertStore": true,
            "PowerControls": ["ForcePowerDown", "ForceReboot", "SetPowerProfile"],
            "SoftwareUpdateDeferral": true,
            "SystemEventNotifications": true,
            "SystemTime": true,
            "TimeSyncConfig": true,
            "WifiConfig": true,
            "EnterpriseWifiConfig": true,
            "NetworkConfig": true,
            "DhcpService": true,
            "SntpService": true,
            "ReadNetworkProxyConfig": true,
            "HeapMemStats": true
        }
    });
    let loaded = parse(&document).expect("valid manifest");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let m = loaded.manifest;
    assert_eq!(m.cmd_args, vec!["--verbose", "--verbose"]);
    assert_eq!(m.application_type, ApplicationType::Default);
    assert_eq!(m.target_beta_apis.as_deref(), Some("Beta2101"));
    assert_eq!(m.target_application_runtime_version, Some(8));
    assert_eq!(m.malloc_version, Some(2));
    let c = &m.capabilities;
    assert_eq!(
        c.allowed_connections,
        vec![
            ConnectionTarget::Host("www.example.com".into()),
            ConnectionTarget::WildcardHost("azure-devices.net".into()),
            ConnectionTarget::Ip("192.0.2.1".parse().unwrap()),
            ConnectionTarget::Ip("2001:db8::1".parse().unwrap()),
            ConnectionTarget::DnsSd("_sample._tcp.local".into()),
        ]
    );
    assert_eq!(c.allowed_tcp_server_ports, vec![1024, 65535]);
    assert_eq!(c.allowed_udp_server_ports, vec![1, 50000]);
    assert_eq!(c.allowed_application_connections[0].to_string(), PEER_ID);
    assert_eq!(c.gpio, vec![PeripheralRef::Named("SAMPLE_LED".into()), PeripheralRef::RawNumber(8)]);
    assert_eq!(c.uart, vec![PeripheralRef::Named("SAMPLE_UART".into()), PeripheralRef::RawText("ISU0".into())]);
    assert_eq!(c.i2c_master, vec![PeripheralRef::Named("SAMPLE_I2C".into())]);
    assert_eq!(c.spi_master, vec![PeripheralRef::Named("SAMPLE_SPI".into())]);
    assert_eq!(c.adc, vec![PeripheralRef::Named("SAMPLE_ADC".into()), PeripheralRef::RawNumber(0)]);
    assert_eq!(c.pwm, vec![PeripheralRef::Named("SAMPLE_PWM".into())]);
    assert_eq!(c.mutable_storage.map(|s| s.size_kb), Some(64));
    assert_eq!(c.device_authentication.map(|t| t.to_string()).as_deref(), Some(TENANT_ID));
    assert_eq!(
        c.power_controls,
        vec![PowerControl::ForcePowerDown, PowerControl::ForceReboot, PowerControl::SetPowerProfile]
    );
    let flags = [
        c.cert_store,
        c.software_update_deferral,
        c.system_event_notifications,
        c.system_time,
        c.time_sync_config,
        c.wifi_config,
        c.enterprise_wifi_config,
        c.network_config,
        c.dhcp_service,
        c.sntp_service,
        c.read_network_proxy_config,
        c.heap_mem_stats,
    ];
    assert!(flags.iter().all(|flag| *flag), "{flags:?}");
}

#[test]
fn nothing_is_granted_by_default() {
    let loaded = parse(&minimal()).unwrap();
    assert_eq!(loaded.manifest.capabilities, Default::default());
    assert_eq!(loaded.manifest.application_type, ApplicationType::Default);
}

#[test]
fn every_boolean_capability_rejects_non_booleans_by_name() {
    for key in [
        "CertStore",
        "SoftwareUpdateDeferral",
        "SystemEventNotifications",
        "SystemTime",
        "TimeSyncConfig",
        "WifiConfig",
        "EnterpriseWifiConfig",
        "NetworkConfig",
        "DhcpService",
        "SntpService",
        "ReadNetworkProxyConfig",
        "HeapMemStats",
    ] {
        assert_refused(&with_capability(key, json!("yes")), &format!("$.Capabilities.{key}"), key, "true or false");
        assert!(parse(&with_capability(key, json!(false))).is_ok(), "{key}: false must load");
    }
}

#[test]
fn every_list_capability_rejects_non_arrays_and_duplicates() {
    let samples = [
        ("AllowedConnections", json!("a.example.com")),
        ("AllowedTcpServerPorts", json!(80)),
        ("AllowedUdpServerPorts", json!(53)),
        ("AllowedApplicationConnections", json!(PEER_ID)),
        ("Gpio", json!(8)),
        ("Uart", json!("ISU0")),
        ("I2cMaster", json!("ISU1")),
        ("SpiMaster", json!("ISU2")),
        ("Adc", json!(0)),
        ("Pwm", json!("PWM0")),
        ("PowerControls", json!("ForceReboot")),
    ];
    for (key, item) in samples {
        let path = format!("$.Capabilities.{key}");
        assert_refused(&with_capability(key, item.clone()), &path, key, "expected an array");
        assert_refused(&with_capability(key, json!([item, item])), &format!("{path}[1]"), key, "duplicate entry");
    }
}

#[test]
fn a_utf8_byte_order_mark_is_accepted() {
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(minimal().to_string().as_bytes());
    assert_eq!(parse_manifest(&bytes).unwrap().manifest.name, "app");
}

#[test]
fn unknown_capabilities_are_named_in_warnings_not_errors() {
    let mut manifest = with_capability("FutureThing", json!(true));
    manifest["Capabilities"]["ExternalInterrupt"] = json!(["EINT4"]);
    let loaded = parse(&manifest).expect("unknown capabilities only warn");
    let text: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert!(text.iter().any(|w| w.contains("$.Capabilities.FutureThing") && w.contains("\"FutureThing\"")), "{text:?}");
    assert!(text.iter().any(|w| w.contains("\"ExternalInterrupt\"")), "{text:?}");
}

#[test]
fn names_are_cut_to_31_characters_with_a_warning() {
    let mut manifest = minimal();
    manifest["Name"] = json!("an-application-name-that-is-far-too-long");
    let loaded = parse(&manifest).unwrap();
    assert_eq!(loaded.manifest.name, "an-application-name-that-is-far");
    assert_eq!(loaded.manifest.name.chars().count(), 31);
    assert!(loaded.warnings[0].path == "$.Name", "{:?}", loaded.warnings);
}

#[test]
fn required_fields_are_named_when_missing() {
    for field in ["SchemaVersion", "Name", "ComponentId", "EntryPoint"] {
        let mut manifest = minimal();
        manifest.as_object_mut().unwrap().remove(field);
        assert_refused(&manifest, &format!("$.{field}"), field, "required field is missing");
    }
}

#[test]
fn top_level_values_are_checked() {
    let cases = [
        ("SchemaVersion", json!(2), "must be 1"),
        ("SchemaVersion", json!("1"), "expected a whole number"),
        ("Name", json!(""), "must not be empty"),
        ("Name", json!("bad\u{1b}[2Jname"), "control characters"),
        ("Name", json!(7), "expected a string"),
        ("ComponentId", json!("not-a-guid"), "is not a GUID"),
        ("ComponentId", json!("00000000-0000-0000-0000-000000000000"), "all-zero"),
        ("EntryPoint", json!(""), "must not be empty"),
        ("EntryPoint", json!("bin/app"), "absolute path"),
        ("EntryPoint", json!("/bin/../../etc/passwd"), "not a valid package path"),
        ("CmdArgs", json!("--flag"), "expected an array"),
        ("CmdArgs", json!(["ok", 5]), "expected a string"),
        ("ApplicationType", json!("Service"), "not one of Default, RealTimeCapable, Debugger"),
        ("TargetBetaApis", json!("Beta 2101"), "beta API set"),
        ("MallocVersion", json!(7), "out of range 1..=2"),
        ("TargetApplicationRuntimeVersion", json!(-1), "out of range"),
    ];
    for (field, value, needle) in cases {
        let mut manifest = minimal();
        manifest[field] = value;
        let path = if field == "CmdArgs" && manifest[field].is_array() {
            "$.CmdArgs[1]".to_owned()
        } else {
            format!("$.{field}")
        };
        assert_refused(&manifest, &path, field, needle);
    }
}

#[test]
fn cmd_args_with_nul_are_refused() {
    let mut manifest = minimal();
    manifest["CmdArgs"] = json!(["a\u{0}b"]);
    assert_refused(&manifest, "$.CmdArgs[0]", "CmdArgs", "NUL");
}

#[test]
fn real_time_and_debugger_types_load() {
    for kind in ["RealTimeCapable", "Debugger"] {
        let mut manifest = minimal();
        manifest["ApplicationType"] = json!(kind);
        assert!(parse(&manifest).is_ok(), "{kind}");
    }
}

#[test]
fn ports_must_be_in_range() {
    for (value, needle) in [
        (json!(0), "out of range 1..=65535"),
        (json!(65536), "out of range"),
        (json!("80"), "whole number"),
        (json!(8.5), "out of range"),
    ] {
        for key in ["AllowedTcpServerPorts", "AllowedUdpServerPorts"] {
            assert_refused(&with_capability(key, json!([80, value])), &format!("$.Capabilities.{key}[1]"), key, needle);
        }
    }
}

#[test]
fn mutable_storage_size_is_bounded() {
    let path = "$.Capabilities.MutableStorage.SizeKB";
    assert_refused(&with_capability("MutableStorage", json!({"SizeKB": 0})), path, "SizeKB", "out of range");
    assert_refused(&with_capability("MutableStorage", json!({"SizeKB": 1_048_577})), path, "SizeKB", "out of range");
    assert_refused(&with_capability("MutableStorage", json!({"SizeKB": "64"})), path, "SizeKB", "whole number");
    assert_refused(&with_capability("MutableStorage", json!({})), path, "SizeKB", "required field is missing");
    assert_refused(
        &with_capability("MutableStorage", json!(64)),
        "$.Capabilities.MutableStorage",
        "MutableStorage",
        "an object",
    );
}

#[test]
fn guids_in_capabilities_are_checked() {
    assert_refused(
        &with_capability("AllowedApplicationConnections", json!([PEER_ID, "xyz"])),
        "$.Capabilities.AllowedApplicationConnections[1]",
        "AllowedApplicationConnections",
        "not a GUID",
    );
    assert_refused(
        &with_capability("DeviceAuthentication", json!("tenant")),
        "$.Capabilities.DeviceAuthentication",
        "DeviceAuthentication",
        "not a GUID",
    );
}

#[test]
fn allowed_connections_are_classified_and_checked() {
    let key = "AllowedConnections";
    for (entry, needle) in [
        ("*.com", "too broad"),
        ("-bad.example.com", "label"),
        ("exa mple.com", "label"),
        ("999.1.1.1", "neither a valid IP address nor a host name"),
        ("_x.example.com", "DNS-SD"),
        ("", "host name"),
    ] {
        assert_refused(&with_capability(key, json!([entry])), "$.Capabilities.AllowedConnections[0]", key, needle);
    }
    let case_duplicate = with_capability(key, json!(["Example.com", "example.COM"]));
    assert_refused(&case_duplicate, "$.Capabilities.AllowedConnections[1]", key, "duplicate entry");
}

#[test]
fn peripheral_entries_are_checked() {
    assert_refused(
        &with_capability("Gpio", json!(["$"])),
        "$.Capabilities.Gpio[0]",
        "Gpio",
        "hardware-definition name",
    );
    assert_refused(
        &with_capability("Gpio", json!(["$BAD-NAME"])),
        "$.Capabilities.Gpio[0]",
        "Gpio",
        "hardware-definition name",
    );
    assert_refused(&with_capability("Gpio", json!([-1])), "$.Capabilities.Gpio[0]", "Gpio", "out of range");
    assert_refused(&with_capability("Uart", json!([""])), "$.Capabilities.Uart[0]", "Uart", "neither");
    assert_refused(&with_capability("Pwm", json!([true])), "$.Capabilities.Pwm[0]", "Pwm", "expected a string");
}

#[test]
fn power_controls_are_a_closed_set() {
    assert_refused(
        &with_capability("PowerControls", json!(["SelfDestruct"])),
        "$.Capabilities.PowerControls[0]",
        "PowerControls",
        "not one of",
    );
}

#[test]
fn wrong_document_shapes_are_refused_at_the_root() {
    for bytes in [&b"[]"[..], b"not json", b"{\"Name\": \"a\", \"Name\": \"b\"}", b""] {
        let error = parse_manifest(bytes).expect_err("refused");
        assert_eq!(error.errors[0].path, "$");
    }
    let error = parse_manifest(br#"{"Name": "a", "Name": "b"}"#).unwrap_err();
    assert!(error.to_string().contains("duplicate key \"Name\""), "{error}");
    let huge = vec![b' '; 70_000];
    assert!(parse_manifest(&huge).unwrap_err().to_string().contains("limit"));
}

#[test]
fn capabilities_must_be_an_object() {
    let mut manifest = minimal();
    manifest["Capabilities"] = json!([]);
    assert_refused(&manifest, "$.Capabilities", "Capabilities", "expected an object");
}

#[test]
fn all_errors_are_reported_together() {
    let document = json!({
        "SchemaVersion": 3,
        "Name": "",
        "ComponentId": "nope",
        "EntryPoint": "",
        "Capabilities": { "AllowedTcpServerPorts": [0], "Gpio": "x" }
    });
    let error = parse(&document).unwrap_err();
    assert_eq!(error.errors.len(), 6, "{error}");
}

#[test]
fn unknown_top_level_fields_warn() {
    let mut manifest = minimal();
    manifest["Extra"] = json!(1);
    let loaded = parse(&manifest).unwrap();
    assert!(loaded.warnings.iter().any(|w| w.path == "$.Extra"));
}

#[test]
fn the_sample_app_manifest_loads() {
    let bytes = include_bytes!("../../../examples/hello-sphere/app/app_manifest.json");
    let loaded = parse_manifest(bytes).expect("sample manifest is valid");
    assert_eq!(loaded.manifest.name, "hello-sphere");
    assert!(loaded.warnings.is_empty());
}
