//! Signed packages: a round trip, and every rejection the verifier promises, each checked for a
//! typed error whose message names the offending entry.
//!
//! Hostile archives are written byte by byte (`RawTar`), because a well-behaved tar library
//! refuses to produce most of them.

use base64::Engine;
use sha2::{Digest, Sha256};
use sphere_app_format::keys::SigningKeyPair;
use sphere_app_format::package::{
    self, DiscardSink, Limits, ListingEntry, PackageError, PackageSink, SIGNATURE_DOMAIN, build_package,
    inspect_package, verify_package,
};
use sphere_app_format::{PackageSummary, TrustStore};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const MANIFEST: &str =
    r#"{"SchemaVersion":1,"Name":"test","ComponentId":"7f0c2e5a-61d4-4b8e-9a3f-2c51d7e80b14","EntryPoint":"/bin/app"}"#;
const APP: &[u8] = b"\x7fELF pretend binary";

// ---------------------------------------------------------------- helpers

struct Signer {
    key: SigningKeyPair,
    trust: TrustStore,
}

fn signer() -> Signer {
    let key = SigningKeyPair::generate();
    let mut trust = TrustStore::new();
    trust.add(key.public_key());
    Signer { key, trust }
}

fn verify(bytes: &[u8], signer: &Signer) -> Result<PackageSummary, PackageError> {
    verify_package(bytes, &signer.trust, &Limits::default(), &mut DiscardSink)
}

/// Assert a rejection of the expected kind whose message mentions `needle`.
#[track_caller]
fn assert_rejected(result: Result<PackageSummary, PackageError>, code: &str, needle: &str) {
    match result {
        Ok(_) => panic!("package was accepted; expected {code}"),
        Err(error) => {
            assert_eq!(error.code(), code, "{error}");
            assert!(error.to_string().contains(needle), "message {:?} lacks {needle:?}", error.to_string());
        }
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn file_line(path: &str, mode: u32, data: &[u8]) -> String {
    format!("f {mode:04o} {} {} {path}", data.len(), sha256_hex(data))
}

fn dir_line(path: &str) -> String {
    format!("d 0755 0 - {path}")
}

fn listing(lines: &[String]) -> String {
    let mut text = "opensphere-app-package 1\n".to_owned();
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    text
}

fn signature_for(key: &SigningKeyPair, listing: &[u8]) -> Vec<u8> {
    let digest = Sha256::digest(listing);
    let mut message = SIGNATURE_DOMAIN.to_vec();
    message.extend_from_slice(&digest);
    serde_json::to_vec(&serde_json::json!({
        "format": "opensphere-app-package-signature/1",
        "algorithm": "ed25519",
        "key_id": key.id(),
        "listing_sha256": hex::encode(digest),
        "signature": base64::engine::general_purpose::STANDARD.encode(key.sign(&message).to_bytes()),
    }))
    .unwrap()
}

/// A tar writer that writes whatever header it is told to.
#[derive(Default)]
struct RawTar(Vec<u8>);

impl RawTar {
    fn entry(mut self, name: &str, typeflag: u8, mode: u32, data: &[u8], link: &str) -> Self {
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        let octal = |field: &mut [u8], value: u64| {
            let text = format!("{value:0width$o}\0", width = field.len() - 1);
            field.copy_from_slice(text.as_bytes());
        };
        octal(&mut header[100..108], u64::from(mode));
        octal(&mut header[108..116], 0);
        octal(&mut header[116..124], 0);
        octal(&mut header[124..136], data.len() as u64);
        octal(&mut header[136..148], 0);
        header[156] = typeflag;
        header[157..157 + link.len()].copy_from_slice(link.as_bytes());
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].fill(b' ');
        let checksum: u32 = header.iter().map(|b| u32::from(*b)).sum();
        header[148..156].copy_from_slice(format!("{checksum:06o}\0 ").as_bytes());
        self.0.extend_from_slice(&header);
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
        self
    }

    fn file(self, name: &str, mode: u32, data: &[u8]) -> Self {
        self.entry(name, b'0', mode, data, "")
    }

    fn dir(self, name: &str) -> Self {
        self.entry(name, b'5', 0o755, b"", "")
    }

    fn preamble(self, key: &SigningKeyPair, listing: &str) -> Self {
        let signature = signature_for(key, listing.as_bytes());
        self.file(".sphpkg/listing", 0o644, listing.as_bytes()).file(".sphpkg/signature", 0o644, &signature)
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        self.0
    }
}

/// The listing lines of a good minimal app.
fn good_lines() -> Vec<String> {
    vec![file_line("app_manifest.json", 0o644, MANIFEST.as_bytes()), dir_line("bin"), file_line("bin/app", 0o755, APP)]
}

/// A good package, written by hand, to mutate in tests.
fn good_raw(signer: &Signer) -> RawTar {
    RawTar::default()
        .preamble(&signer.key, &listing(&good_lines()))
        .file("app_manifest.json", 0o644, MANIFEST.as_bytes())
        .dir("bin")
        .file("bin/app", 0o755, APP)
}

fn app_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app_manifest.json"), MANIFEST).unwrap();
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    std::fs::write(dir.path().join("bin/app"), APP).unwrap();
    std::fs::set_permissions(dir.path().join("bin/app"), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn build(dir: &Path, signer: &Signer) -> Result<Vec<u8>, PackageError> {
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("app.sphpkg");
    build_package(dir, &signer.key, &path, &Limits::default())?;
    Ok(std::fs::read(path).unwrap())
}

// ---------------------------------------------------------------- acceptance

#[test]
fn a_built_package_verifies_and_is_reproducible() {
    let signer = signer();
    let dir = app_dir();
    let first = build(dir.path(), &signer).unwrap();
    let second = build(dir.path(), &signer).unwrap();
    assert_eq!(first, second, "same input and key must give the same bytes");
    let summary = verify(&first, &signer).unwrap();
    assert_eq!(summary.manifest.name, "test");
    assert_eq!(summary.listing.entries.len(), 3);
    assert_eq!(summary.listing.get("bin/app").map(|e| e.mode), Some(0o755));
}

#[test]
fn the_hand_written_reference_package_verifies() {
    let signer = signer();
    assert!(verify(&good_raw(&signer).finish(), &signer).is_ok());
}

#[test]
fn a_sink_receives_exactly_the_signed_contents() {
    struct Collect(Vec<(String, Vec<u8>)>);
    impl PackageSink for Collect {
        fn directory(&mut self, entry: &ListingEntry) -> std::io::Result<()> {
            self.0.push((entry.path.clone(), Vec::new()));
            Ok(())
        }
        fn file(&mut self, entry: &ListingEntry, contents: &mut dyn Read) -> std::io::Result<()> {
            let mut data = Vec::new();
            contents.read_to_end(&mut data)?;
            self.0.push((entry.path.clone(), data));
            Ok(())
        }
        fn symlink(&mut self, _: &ListingEntry) -> std::io::Result<()> {
            Ok(())
        }
    }
    let signer = signer();
    let mut sink = Collect(Vec::new());
    verify_package(&good_raw(&signer).finish()[..], &signer.trust, &Limits::default(), &mut sink).unwrap();
    assert_eq!(sink.0[2], ("bin/app".to_owned(), APP.to_vec()));
}

#[test]
fn inspect_reports_the_signer_without_trusting_it() {
    let signer = signer();
    let bytes = good_raw(&signer).finish();
    let summary = inspect_package(&bytes[..], &Limits::default(), &mut DiscardSink).unwrap();
    assert_eq!(summary.signature, package::SignatureStatus::NotChecked(signer.key.id().clone()));
}

#[test]
fn internal_symlinks_are_allowed() {
    let signer = signer();
    let mut lines = good_lines();
    lines.push("l 0777 0 - bin/link app".to_owned());
    let bytes = RawTar::default()
        .preamble(&signer.key, &listing(&lines))
        .file("app_manifest.json", 0o644, MANIFEST.as_bytes())
        .dir("bin")
        .file("bin/app", 0o755, APP)
        .entry("bin/link", b'2', 0o777, b"", "app")
        .finish();
    verify(&bytes, &signer).unwrap();
}

// ---------------------------------------------------------------- signature and trust

#[test]
fn a_bad_signature_is_rejected() {
    let signer = signer();
    let forged_listing = listing(&good_lines());
    // Sign different bytes, then present that signature with the real listing.
    let signature = signature_for(&signer.key, b"something else");
    let bytes = RawTar::default()
        .file(".sphpkg/listing", 0o644, forged_listing.as_bytes())
        .file(".sphpkg/signature", 0o644, &signature)
        .file("app_manifest.json", 0o644, MANIFEST.as_bytes())
        .dir("bin")
        .file("bin/app", 0o755, APP)
        .finish();
    assert_rejected(verify(&bytes, &signer), "bad_signature", signer.key.id().as_str());
}

#[test]
fn a_listing_changed_after_signing_is_rejected() {
    let signer = signer();
    let signed = listing(&good_lines());
    let signature = signature_for(&signer.key, signed.as_bytes());
    let evil_app = b"evil";
    let changed = listing(&[good_lines()[0].clone(), dir_line("bin"), file_line("bin/app", 0o755, evil_app)]);
    let bytes = RawTar::default()
        .file(".sphpkg/listing", 0o644, changed.as_bytes())
        .file(".sphpkg/signature", 0o644, &signature)
        .file("app_manifest.json", 0o644, MANIFEST.as_bytes())
        .dir("bin")
        .file("bin/app", 0o755, evil_app)
        .finish();
    assert_rejected(verify(&bytes, &signer), "bad_signature", "does not verify");
}

#[test]
fn an_unknown_key_is_rejected() {
    let signer = signer();
    let stranger = self::signer();
    let bytes = good_raw(&stranger).finish();
    assert_rejected(verify(&bytes, &signer), "unknown_key", stranger.key.id().as_str());
}

#[test]
fn a_malformed_signature_document_is_rejected() {
    let signer = signer();
    let bytes = RawTar::default()
        .file(".sphpkg/listing", 0o644, listing(&good_lines()).as_bytes())
        .file(".sphpkg/signature", 0o644, b"{\"format\": 1}")
        .finish();
    assert_rejected(verify(&bytes, &signer), "malformed_signature", "signature");
}

#[test]
fn something_that_is_not_a_package_is_rejected() {
    let signer = signer();
    let bytes = RawTar::default().file("README", 0o644, b"hello").finish();
    assert_rejected(verify(&bytes, &signer), "not_a_package", "README");
    assert!(verify(b"", &signer).is_err());
}

// ---------------------------------------------------------------- contents

#[test]
fn a_tampered_file_is_rejected() {
    let signer = signer();
    let bytes = RawTar::default()
        .preamble(&signer.key, &listing(&good_lines()))
        .file("app_manifest.json", 0o644, MANIFEST.as_bytes())
        .dir("bin")
        .file("bin/app", 0o755, b"\x7fELF pretend binarZ")
        .finish();
    assert_rejected(verify(&bytes, &signer), "digest_mismatch", "bin/app");
}

#[test]
fn an_extra_file_is_rejected() {
    let signer = signer();
    let bytes = good_raw(&signer).file("bin/zz-extra", 0o755, b"payload").finish();
    assert_rejected(verify(&bytes, &signer), "extra_entry", "bin/zz-extra");
}

#[test]
fn a_missing_file_is_rejected() {
    let signer = signer();
    let bytes = RawTar::default()
        .preamble(&signer.key, &listing(&good_lines()))
        .file("app_manifest.json", 0o644, MANIFEST.as_bytes())
        .dir("bin")
        .finish();
    assert_rejected(verify(&bytes, &signer), "missing_entry", "bin/app");
}

#[test]
fn a_skipped_file_in_the_middle_is_rejected() {
    let signer = signer();
    let bytes = RawTar::default()
        .preamble(&signer.key, &listing(&good_lines()))
        .file("app_manifest.json", 0o644, MANIFEST.as_bytes())
        .file("bin/app", 0o755, APP)
        .finish();
    assert_rejected(verify(&bytes, &signer), "missing_entry", "\"bin\"");
}

#[test]
fn a_duplicate_archive_entry_is_rejected() {
    let signer = signer();
    let bytes = good_raw(&signer).file("bin/app", 0o755, APP).finish();
    assert_rejected(verify(&bytes, &signer), "duplicate_entry", "bin/app");
}

#[test]
fn a_duplicate_listing_entry_is_rejected() {
    let signer = signer();
    let mut lines = good_lines();
    lines.push(file_line("bin/app", 0o755, APP));
    let bytes = RawTar::default().preamble(&signer.key, &listing(&lines)).finish();
    assert_rejected(verify(&bytes, &signer), "duplicate_entry", "bin/app");
}

#[test]
fn path_traversal_in_the_listing_is_rejected() {
    for (path, needle) in [("../evil", "\"..\""), ("bin/../../evil", "\"..\""), ("/etc/evil", "absolute")] {
        let signer = signer();
        let mut lines = good_lines();
        lines.insert(0, file_line(path, 0o644, b"x"));
        let bytes = RawTar::default().preamble(&signer.key, &listing(&lines)).finish();
        let result = verify(&bytes, &signer);
        assert_rejected(result, "path_not_allowed", needle);
    }
}

#[test]
fn path_traversal_in_the_archive_only_is_rejected() {
    let signer = signer();
    let bytes = good_raw(&signer).file("../../etc/cron.d/evil", 0o644, b"x").finish();
    assert_rejected(verify(&bytes, &signer), "extra_entry", "../../etc/cron.d/evil");
}

#[test]
fn symlinks_escaping_the_root_are_rejected() {
    for target in ["../../etc/passwd", "../..", "../../../tmp"] {
        let signer = signer();
        let mut lines = good_lines();
        lines.push(format!("l 0777 0 - bin/link {target}"));
        let bytes = RawTar::default().preamble(&signer.key, &listing(&lines)).finish();
        assert_rejected(verify(&bytes, &signer), "symlink_escapes", "bin/link");
    }
}

#[test]
fn absolute_symlinks_are_rejected() {
    let signer = signer();
    let mut lines = good_lines();
    lines.push("l 0777 0 - bin/link /etc/shadow".to_owned());
    let bytes = RawTar::default().preamble(&signer.key, &listing(&lines)).finish();
    assert_rejected(verify(&bytes, &signer), "symlink_escapes", "bin/link");
}

#[test]
fn symlinks_through_other_symlinks_are_rejected() {
    // up -> "..", then bin/chain -> "up/../x": lexically inside, really outside.
    let signer = signer();
    let lines = vec![
        good_lines()[0].clone(),
        dir_line("bin"),
        file_line("bin/app", 0o755, APP),
        "l 0777 0 - bin/chain up/../../x".to_owned(),
        "l 0777 0 - bin/up ..".to_owned(),
    ];
    let bytes = RawTar::default().preamble(&signer.key, &listing(&lines)).finish();
    assert_rejected(verify(&bytes, &signer), "symlink_escapes", "bin/chain");
}

#[test]
fn entries_below_a_symlink_are_rejected() {
    let signer = signer();
    let lines = vec![
        good_lines()[0].clone(),
        dir_line("bin"),
        file_line("bin/app", 0o755, APP),
        "l 0777 0 - lib bin".to_owned(),
        file_line("lib/x", 0o644, b"x"),
    ];
    let bytes = RawTar::default().preamble(&signer.key, &listing(&lines)).finish();
    assert_rejected(verify(&bytes, &signer), "path_not_allowed", "lib/x");
}

#[test]
fn device_nodes_fifos_and_hard_links_are_rejected() {
    for (typeflag, kind) in [(b'3', "character device"), (b'4', "block device"), (b'6', "FIFO"), (b'1', "hard link")] {
        let signer = signer();
        let bytes = RawTar::default()
            .preamble(&signer.key, &listing(&good_lines()))
            .file("app_manifest.json", 0o644, MANIFEST.as_bytes())
            .dir("bin")
            .entry("bin/app", typeflag, 0o755, b"", "app_manifest.json")
            .finish();
        let result = verify(&bytes, &signer);
        assert_rejected(result, "special_file", kind);
    }
}

#[test]
fn set_id_bits_are_rejected_in_listing_and_archive() {
    let signer = signer();
    let lines = vec![good_lines()[0].clone(), dir_line("bin"), file_line("bin/app", 0o4755, APP)];
    let bytes = RawTar::default().preamble(&signer.key, &listing(&lines)).finish();
    assert_rejected(verify(&bytes, &signer), "set_id_bits", "bin/app");

    let bytes = RawTar::default()
        .preamble(&signer.key, &listing(&good_lines()))
        .file("app_manifest.json", 0o644, MANIFEST.as_bytes())
        .dir("bin")
        .file("bin/app", 0o6755, APP)
        .finish();
    assert_rejected(verify(&bytes, &signer), "set_id_bits", "bin/app");
}

#[test]
fn a_header_that_disagrees_with_the_listing_is_rejected() {
    let signer = signer();
    let bytes = RawTar::default()
        .preamble(&signer.key, &listing(&good_lines()))
        .file("app_manifest.json", 0o644, MANIFEST.as_bytes())
        .dir("bin")
        .file("bin/app", 0o777, APP)
        .finish();
    assert_rejected(verify(&bytes, &signer), "entry_mismatch", "bin/app");
}

#[test]
fn oversized_entries_and_packages_are_rejected() {
    let signer = signer();
    let bytes = good_raw(&signer).finish();
    let small = Limits { max_file_bytes: 16, ..Limits::default() };
    let result = verify_package(&bytes[..], &signer.trust, &small, &mut DiscardSink);
    assert_rejected(result, "oversized", "app_manifest.json\" is 110 bytes");

    let tight_total = Limits { max_total_bytes: 64, ..Limits::default() };
    let result = verify_package(&bytes[..], &signer.trust, &tight_total, &mut DiscardSink);
    assert_rejected(result, "total_too_large", "limit is 64");

    let few_entries = Limits { max_entries: 2, ..Limits::default() };
    let result = verify_package(&bytes[..], &signer.trust, &few_entries, &mut DiscardSink);
    assert_rejected(result, "too_many_entries", "limit is 2");

    let tiny_listing = Limits { max_listing_bytes: 10, ..Limits::default() };
    let result = verify_package(&bytes[..], &signer.trust, &tiny_listing, &mut DiscardSink);
    assert_rejected(result, "oversized", ".sphpkg/listing");
}

#[test]
fn an_oversized_manifest_is_rejected_before_it_is_buffered() {
    let signer = signer();
    let huge = vec![b' '; 100_000];
    let lines = vec![file_line("app_manifest.json", 0o644, &huge)];
    let bytes =
        RawTar::default().preamble(&signer.key, &listing(&lines)).file("app_manifest.json", 0o644, &huge).finish();
    assert_rejected(verify(&bytes, &signer), "oversized", "app_manifest.json");
}

#[test]
fn truncated_archives_are_rejected_at_every_cut() {
    let signer = signer();
    let bytes = good_raw(&signer).finish();
    let body_end = bytes.len() - 1024;
    for cut in (0..body_end).step_by(97) {
        assert!(verify(&bytes[..cut], &signer).is_err(), "accepted a package cut at byte {cut}");
    }
    // A cut inside bin/app's data names the file.
    let app_data_start = body_end - 512;
    assert_rejected(verify(&bytes[..app_data_start + 5], &signer), "truncated", "bin/app");
}

#[test]
fn a_non_canonical_listing_is_rejected() {
    let signer = signer();
    let text = listing(&good_lines()).replace("f 0644", "f  0644");
    let bytes = RawTar::default().preamble(&signer.key, &text).finish();
    assert_rejected(verify(&bytes, &signer), "malformed_listing", "line");
    let unsorted = listing(&[dir_line("bin"), good_lines()[0].clone()]);
    let bytes = RawTar::default().preamble(&signer.key, &unsorted).finish();
    assert_rejected(verify(&bytes, &signer), "malformed_listing", "increasing byte order");
}

#[test]
fn a_package_without_a_manifest_is_rejected() {
    let signer = signer();
    let lines = vec![dir_line("bin"), file_line("bin/app", 0o755, APP)];
    let bytes = RawTar::default().preamble(&signer.key, &listing(&lines)).finish();
    assert_rejected(verify(&bytes, &signer), "manifest_missing", "app_manifest.json");
}

#[test]
fn an_invalid_manifest_inside_a_package_names_its_field() {
    let signer = signer();
    let manifest = MANIFEST.replace("\"SchemaVersion\":1", "\"SchemaVersion\":9");
    let lines = vec![
        file_line("app_manifest.json", 0o644, manifest.as_bytes()),
        dir_line("bin"),
        file_line("bin/app", 0o755, APP),
    ];
    let bytes = RawTar::default()
        .preamble(&signer.key, &listing(&lines))
        .file("app_manifest.json", 0o644, manifest.as_bytes())
        .dir("bin")
        .file("bin/app", 0o755, APP)
        .finish();
    assert_rejected(verify(&bytes, &signer), "manifest_invalid", "$.SchemaVersion");
}

#[test]
fn an_entry_point_that_is_missing_or_not_executable_is_rejected() {
    let signer = signer();
    let lines = vec![good_lines()[0].clone(), dir_line("bin"), file_line("bin/app", 0o644, APP)];
    let bytes = RawTar::default()
        .preamble(&signer.key, &listing(&lines))
        .file("app_manifest.json", 0o644, MANIFEST.as_bytes())
        .dir("bin")
        .file("bin/app", 0o644, APP)
        .finish();
    assert_rejected(verify(&bytes, &signer), "entry_point_missing", "/bin/app");
}

// ---------------------------------------------------------------- building

#[test]
fn building_refuses_special_files_set_id_bits_and_missing_entry_points() {
    let signer = signer();
    let dir = app_dir();
    std::fs::set_permissions(dir.path().join("bin/app"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    let error = build(dir.path(), &signer).unwrap_err();
    assert_eq!(error.code(), "set_id_bits", "{error}");
    assert!(error.to_string().contains("bin/app"));

    let dir = app_dir();
    let fifo = dir.path().join("bin/fifo");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let error = build(dir.path(), &signer).unwrap_err();
    assert_eq!(error.code(), "special_file", "{error}");
    assert!(error.to_string().contains("bin/fifo"));

    let dir = app_dir();
    std::fs::remove_file(dir.path().join("bin/app")).unwrap();
    assert_eq!(build(dir.path(), &signer).unwrap_err().code(), "entry_point_missing");

    let dir = app_dir();
    std::os::unix::fs::symlink("../../etc/passwd", dir.path().join("bin/escape")).unwrap();
    let error = build(dir.path(), &signer).unwrap_err();
    assert_eq!(error.code(), "symlink_escapes", "{error}");

    let dir = app_dir();
    std::fs::write(dir.path().join("bad name"), b"x").unwrap();
    let error = build(dir.path(), &signer).unwrap_err();
    assert_eq!(error.code(), "path_not_allowed", "{error}");
    assert!(error.to_string().contains("bad name"));
}

#[test]
fn a_failed_build_leaves_no_output_file() {
    let signer = signer();
    let dir = app_dir();
    std::fs::remove_file(dir.path().join("app_manifest.json")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("app.sphpkg");
    assert!(build_package(dir.path(), &signer.key, &path, &Limits::default()).is_err());
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0, "no output and no temporary file left");
}
