//! Evidence decoding as sphere-cloud meets it: arbitrary bytes as a COSE_Sign1 EAT (kid
//! lookup, unverified decode, verification with a fixed device key whose signed seeds are in
//! the corpus), and arbitrary JSON as an event log. Nothing may panic, and a token that
//! verifies must decode to the same claims without verification.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sphere_attestation::{DevicePublicKey, EventLog, eat};

fuzz_target!(|data: &[u8]| {
    let key = DevicePublicKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key());
    let _ = eat::claimed_device_id(data);
    let unverified = eat::decode_unverified(data);
    if let Ok(verified) = eat::verify(data, &key) {
        let claims = unverified.expect("a verified token decodes unverified too");
        assert_eq!(claims, verified.claims);
        assert_eq!(verified.device_id, key.device_id());
    }
    if let Ok(log) = serde_json::from_slice::<EventLog>(data) {
        if log.check_well_formed().is_ok() {
            let _ = log.digest();
            let _ = log.replay();
        }
    }
});
