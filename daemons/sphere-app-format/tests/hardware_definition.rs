//! Hardware definitions: import chains, search paths, name resolution and its failures.

use serde_json::{Value, json};
use sphere_app_format::HardwareDefinitionSet;
use sphere_app_format::hardware_definition::{AppManifestValue, HardwareDefinitionError};
use sphere_app_format::manifest::{PeripheralKind, PeripheralRef, parse_manifest};
use std::path::{Path, PathBuf};

fn definition(imports: &[&str], peripherals: Value) -> Value {
    let imports: Vec<Value> = imports.iter().map(|path| json!({ "Path": path })).collect();
    json!({
        "Metadata": { "Type": "Azure Sphere Hardware Definition", "Version": 1 },
        "Description": { "Name": "test" },
        "Imports": imports,
        "Peripherals": peripherals,
    })
}

fn write(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    path
}

/// chip.json (in a search-path dir) <- board.json <- sample.json, as Azure Sphere lays them out.
fn three_level_chain(dir: &Path) -> (PathBuf, PathBuf) {
    let sdk = dir.join("sdk");
    std::fs::create_dir(&sdk).unwrap();
    write(
        &sdk,
        "chip.json",
        &definition(
            &[],
            json!([
                { "Name": "CHIP_GPIO8", "Type": "Gpio", "MainCoreHeaderValue": "(8)", "AppManifestValue": 8,
                  "LinuxDevice": { "Path": "/dev/gpiochip0", "Line": 8 } },
                { "Name": "CHIP_ISU0_UART", "Type": "Uart", "AppManifestValue": "ISU0", "LinuxDevice": { "Path": "/dev/ttyS1" } }
            ]),
        ),
    );
    write(
        dir,
        "board.json",
        &definition(&["chip.json"], json!([{ "Name": "BOARD_LED", "Type": "Gpio", "Mapping": "CHIP_GPIO8" }])),
    );
    let sample = write(
        dir,
        "sample.json",
        &definition(
            &["board.json"],
            json!([
                { "Name": "SAMPLE_LED", "Type": "Gpio", "Mapping": "BOARD_LED", "Comment": "the LED" },
                { "Name": "SAMPLE_UART", "Type": "Uart", "Mapping": "CHIP_ISU0_UART" }
            ]),
        ),
    );
    (sample, sdk)
}

fn named(name: &str) -> PeripheralRef {
    PeripheralRef::Named(name.to_owned())
}

#[test]
fn names_resolve_through_imports_and_the_search_path() {
    let dir = tempfile::tempdir().unwrap();
    let (sample, sdk) = three_level_chain(dir.path());
    let set = HardwareDefinitionSet::load(&sample, &[sdk]).unwrap();
    assert_eq!(set.files().len(), 3);
    let led = set.resolve(PeripheralKind::Gpio, &named("SAMPLE_LED")).unwrap();
    assert_eq!(led.mapping_chain, vec!["SAMPLE_LED", "BOARD_LED", "CHIP_GPIO8"]);
    assert_eq!(led.app_manifest_value, AppManifestValue::Number(8));
    let device = led.linux_device.unwrap();
    assert_eq!((device.path.as_str(), device.line), ("/dev/gpiochip0", Some(8)));
    let uart = set.resolve(PeripheralKind::Uart, &named("SAMPLE_UART")).unwrap();
    assert_eq!(uart.app_manifest_value, AppManifestValue::Text("ISU0".into()));
}

#[test]
fn raw_values_resolve_to_themselves_and_find_their_device() {
    let dir = tempfile::tempdir().unwrap();
    let (sample, sdk) = three_level_chain(dir.path());
    let set = HardwareDefinitionSet::load(&sample, &[sdk]).unwrap();
    let raw = set.resolve(PeripheralKind::Gpio, &PeripheralRef::RawNumber(8)).unwrap();
    assert_eq!(raw.linux_device.map(|d| d.path), Some("/dev/gpiochip0".to_owned()));
    let unknown = set.resolve(PeripheralKind::Gpio, &PeripheralRef::RawNumber(99)).unwrap();
    assert_eq!(unknown.linux_device, None);
}

#[test]
fn an_unresolvable_name_names_the_manifest_entry_and_the_files_searched() {
    let dir = tempfile::tempdir().unwrap();
    let (sample, sdk) = three_level_chain(dir.path());
    let set = HardwareDefinitionSet::load(&sample, &[sdk]).unwrap();
    let manifest = br#"{"SchemaVersion":1,"Name":"a","ComponentId":"7f0c2e5a-61d4-4b8e-9a3f-2c51d7e80b14",
        "EntryPoint":"/bin/app","Capabilities":{"Gpio":["$SAMPLE_LED","$NO_SUCH_PIN"]}}"#;
    let manifest = parse_manifest(manifest).unwrap().manifest;
    let errors = set.resolve_manifest(&manifest).unwrap_err();
    assert_eq!(errors.len(), 1);
    let text = errors[0].to_string();
    assert!(text.contains("$.Capabilities.Gpio[1]"), "{text}");
    assert!(text.contains("$NO_SUCH_PIN"), "{text}");
    assert!(text.contains("is not defined"), "{text}");
    for file in ["sample.json", "board.json", "chip.json"] {
        assert!(text.contains(file), "{text} lacks {file}");
    }
}

#[test]
fn a_name_of_the_wrong_type_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (sample, sdk) = three_level_chain(dir.path());
    let set = HardwareDefinitionSet::load(&sample, &[sdk]).unwrap();
    let error = set.resolve(PeripheralKind::Gpio, &named("SAMPLE_UART")).unwrap_err();
    assert!(error.contains("is a Uart peripheral"), "{error}");
}

#[test]
fn a_dangling_mapping_and_a_mapping_loop_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "loop.json",
        &definition(
            &[],
            json!([
                { "Name": "A", "Type": "Gpio", "Mapping": "B" },
                { "Name": "B", "Type": "Gpio", "Mapping": "A" },
                { "Name": "C", "Type": "Gpio", "Mapping": "MISSING" }
            ]),
        ),
    );
    let set = HardwareDefinitionSet::load(&path, &[]).unwrap();
    assert!(set.resolve(PeripheralKind::Gpio, &named("A")).unwrap_err().contains("mapping loop"));
    assert!(set.resolve(PeripheralKind::Gpio, &named("C")).unwrap_err().contains("\"MISSING\", which is not defined"));
}

#[test]
fn a_missing_import_lists_where_it_was_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "a.json", &definition(&["absent.json"], json!([])));
    let error = HardwareDefinitionSet::load(&path, &[dir.path().join("sdk")]).unwrap_err();
    assert!(matches!(error, HardwareDefinitionError::ImportNotFound { .. }));
    let text = error.to_string();
    assert!(text.contains("absent.json") && text.contains("sdk"), "{text}");
}

#[test]
fn import_cycles_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.json", &definition(&["b.json"], json!([])));
    write(dir.path(), "b.json", &definition(&["a.json"], json!([])));
    let error = HardwareDefinitionSet::load(&a, &[]).unwrap_err();
    assert!(matches!(error, HardwareDefinitionError::ImportCycle { .. }), "{error}");
}

#[test]
fn diamond_imports_load_once() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "base.json", &definition(&[], json!([{ "Name": "PIN", "Type": "Gpio", "AppManifestValue": 1 }])));
    write(dir.path(), "left.json", &definition(&["base.json"], json!([])));
    write(dir.path(), "right.json", &definition(&["base.json"], json!([])));
    let top = write(dir.path(), "top.json", &definition(&["left.json", "right.json"], json!([])));
    let set = HardwareDefinitionSet::load(&top, &[]).unwrap();
    assert_eq!(set.files().len(), 4);
}

#[test]
fn a_name_defined_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "base.json", &definition(&[], json!([{ "Name": "PIN", "Type": "Gpio", "AppManifestValue": 1 }])));
    let top = write(
        dir.path(),
        "top.json",
        &definition(&["base.json"], json!([{ "Name": "PIN", "Type": "Gpio", "AppManifestValue": 2 }])),
    );
    let error = HardwareDefinitionSet::load(&top, &[]).unwrap_err();
    assert!(error.to_string().contains("\"PIN\" is defined twice"), "{error}");
}

#[test]
fn invalid_files_are_refused_with_file_and_json_path() {
    let cases = [
        (json!({ "Peripherals": [] }), "$.Metadata", "required field is missing"),
        (json!({ "Metadata": { "Type": "Something else", "Version": 1 } }), "$.Metadata.Type", "is not"),
        (
            json!({ "Metadata": { "Type": "Azure Sphere Hardware Definition", "Version": 2 } }),
            "$.Metadata.Version",
            "must be 1",
        ),
        (
            definition(&[], json!([{ "Name": "X", "Type": "Gpio" }])),
            "$.Peripherals[0]",
            "exactly one of Mapping and AppManifestValue",
        ),
        (
            definition(&[], json!([{ "Name": "X-Y", "Type": "Gpio", "AppManifestValue": 1 }])),
            "$.Peripherals[0].Name",
            "letters",
        ),
        (definition(&[], json!([{ "Name": "X", "AppManifestValue": 1 }])), "$.Peripherals[0].Type", "required"),
        (
            definition(&[], json!([{ "Name": "X", "Type": "Gpio", "AppManifestValue": true }])),
            "$.Peripherals[0].AppManifestValue",
            "a string or a number",
        ),
        (
            definition(
                &[],
                json!([{ "Name": "X", "Type": "Gpio", "AppManifestValue": 1, "LinuxDevice": { "Path": "/etc/shadow" } }]),
            ),
            "$.Peripherals[0].LinuxDevice.Path",
            "under /dev/",
        ),
        (
            json!({ "Metadata": { "Type": "Azure Sphere Hardware Definition", "Version": 1 }, "Imports": [{ "Path": "/abs.json" }] }),
            "$.Imports[0].Path",
            "relative",
        ),
        (
            json!({ "Metadata": { "Type": "Azure Sphere Hardware Definition", "Version": 1 }, "Peripherals": {} }),
            "$.Peripherals",
            "an array",
        ),
    ];
    for (document, json_path, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "bad.json", &document);
        let error = HardwareDefinitionSet::load(&path, &[]).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("bad.json") && text.contains(json_path) && text.contains(needle),
            "{text} (wanted {json_path}, {needle})"
        );
    }
}

#[test]
fn the_qemu_board_and_sample_definitions_resolve_the_sample_manifest() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let sample = root.join("examples/hello-sphere/hardware-definitions/sample_appliance.json");
    let board_dir = root.join("images/qemu-a7/hardware-definitions");
    let set = HardwareDefinitionSet::load(&sample, &[board_dir]).unwrap();
    let manifest = std::fs::read(root.join("examples/hello-sphere/app/app_manifest.json")).unwrap();
    let manifest = parse_manifest(&manifest).unwrap().manifest;
    let resolved = set.resolve_manifest(&manifest).unwrap();
    assert_eq!(resolved.len(), 2);
    assert!(resolved.iter().all(|p| p.linux_device.is_some()), "{resolved:?}");
}

#[test]
fn packaged_manifests_carry_concrete_values_like_azure_sphere_builds() {
    let dir = tempfile::tempdir().unwrap();
    let (sample, sdk) = three_level_chain(dir.path());
    let set = HardwareDefinitionSet::load(&sample, &[sdk]).unwrap();
    let original = br#"{"SchemaVersion":1,"Name":"a","ComponentId":"7f0c2e5a-61d4-4b8e-9a3f-2c51d7e80b14",
        "EntryPoint":"/bin/app","Capabilities":{"Gpio":["$SAMPLE_LED", 9],"Uart":["$SAMPLE_UART"],"SystemTime":true}}"#;
    let manifest = parse_manifest(original).unwrap().manifest;
    let resolved = set.resolve_manifest(&manifest).unwrap();
    let rewritten = sphere_app_format::hardware_definition::manifest_with_values(original, &resolved).unwrap();
    let value: Value = serde_json::from_slice(&rewritten).unwrap();
    assert_eq!(value["Capabilities"]["Gpio"], json!([8, 9]));
    assert_eq!(value["Capabilities"]["Uart"], json!(["ISU0"]));
    assert_eq!(value["Capabilities"]["SystemTime"], json!(true));
    let reloaded = parse_manifest(&rewritten).unwrap().manifest;
    assert_eq!(reloaded.capabilities.gpio, vec![PeripheralRef::RawNumber(8), PeripheralRef::RawNumber(9)]);
}
