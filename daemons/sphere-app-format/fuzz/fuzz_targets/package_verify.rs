//! Package verification must never panic, and never accept bytes its signer did not sign.
//!
//! The seed corpus (scripts/fuzz.sh) holds packages signed by `keys/fuzz-signing.key`, a test key
//! trusted here, so mutations explore every stage of verification, not just the signature check.
//! Anything accepted is checked against an independent re-verification and the listing's own
//! claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sphere_app_format::TrustStore;
use sphere_app_format::package::{DiscardSink, Limits, inspect_package, verify_package};
use std::path::Path;

fn trust() -> TrustStore {
    let mut trust = TrustStore::new();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("keys/fuzz-signing.pub");
    trust.add_pem_file(&path).expect("fuzz trust key");
    trust
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_file_bytes: 1 << 20, max_total_bytes: 4 << 20, ..Limits::default() };
    let inspected = inspect_package(data, &limits, &mut DiscardSink);
    let Ok(summary) = verify_package(data, &trust(), &limits, &mut DiscardSink) else { return };
    let inspected = inspected.expect("a verified package also passes inspection");
    assert_eq!(inspected.listing_sha256, summary.listing_sha256);
    assert!(summary.listing.total_bytes() <= limits.max_total_bytes);
    assert!(summary.listing.get("app_manifest.json").is_some());
});
