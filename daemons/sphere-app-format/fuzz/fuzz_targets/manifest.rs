//! Manifest parsing must never panic, and what it accepts must survive a round trip through
//! its own JSON form unchanged (so `sphere manifest check --json` output is itself loadable).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sphere_app_format::manifest::parse_manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(loaded) = parse_manifest(data) else { return };
    let json = serde_json::to_vec(&loaded.manifest).expect("an accepted manifest serializes");
    let again = parse_manifest(&json).expect("an accepted manifest's JSON form loads");
    assert_eq!(again.manifest, loaded.manifest);
});
