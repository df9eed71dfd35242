//! Hardware-definition loading and name resolution must never panic on hostile files.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sphere_app_format::HardwareDefinitionSet;
use sphere_app_format::manifest::{PeripheralKind, PeripheralRef};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("sphere-fuzz-hwdef-{}", std::process::id()));
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let path = dir.join("board.json");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let Ok(set) = HardwareDefinitionSet::load(&path, &[]) else { return };
    for peripheral in set.peripherals() {
        for kind in PeripheralKind::ALL {
            let _ = set.resolve(kind, &PeripheralRef::Named(peripheral.name.clone()));
        }
    }
});
