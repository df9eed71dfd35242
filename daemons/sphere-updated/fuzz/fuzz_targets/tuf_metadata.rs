//! The device's update-metadata path on hostile repository files: sphere-updated's own
//! `Updater::load_repository` (tough's TUF client workflow through our transport, from a
//! trusted root, with the on-disk metadata cache), then our reading of every target's
//! `custom.opensphere` object, the board filter and release grouping, the pre-download checks
//! `install` runs (`vet_release`) and the target URLs. Nothing may panic, and no target name
//! may produce a URL outside the repository's targets directory.
//!
//! Input: one flags byte, then role files separated by 0xFF (a byte valid UTF-8, hence JSON,
//! never contains): `root.json` (the trusted root) 0xFF `timestamp.json` 0xFF `snapshot.json`
//! 0xFF `targets.json` [0xFF `2.root.json`].
//!
//! Signatures would stop a mutated file at the first check, so the flags let the harness act
//! as the repository owner, holding the one key (keys/fuzz-tuf.pem) its seed repositories use
//! for every role:
//! - bit 0: re-sign every role that parses as `{"signed": ...}` with that key;
//! - bit 1: before signing, write each file's real length and SHA-256 into the role that
//!   lists it (snapshot's `targets.json`, timestamp's `snapshot.json`), so a mutated
//!   targets.json gets past snapshot and timestamp to our own parsing.
//!
//! Seeds (scripts/fuzz.sh): a repository made by `sphere update repo` with that key, packed
//! with each flags value.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sha2::Digest;
use sphere_slots::Slot;
use sphere_updated::config::Config;
use sphere_updated::updater::{Installed, Updater, target_url};

const KEY_PEM: &str = include_str!("../keys/fuzz-tuf.pem");
const BOARD: &str = "qemu-a7";
const SEPARATOR: u8 = 0xFF;
const RESIGN: u8 = 1;
const FIX_META: u8 = 2;

struct Fixture {
    dir: PathBuf,
    updater: Updater,
    runtime: tokio::runtime::Runtime,
    key: Ed25519KeyPair,
    keyid: String,
    targets_base: url::Url,
    /// `TUF_FUZZ_VERBOSE=1`: say how far each input got (to check that seeds get deep).
    verbose: bool,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // libFuzzer ends the process with exit(): no destructor removes the scratch
        // directory, so each run removes those of earlier runs that are gone.
        let prefix = "sphere-updated-fuzz-";
        for entry in std::fs::read_dir(std::env::temp_dir()).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(prefix) {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = std::env::temp_dir().join(format!("{prefix}{}", std::process::id()));
        std::fs::create_dir_all(dir.join("metadata")).expect("scratch directory");
        std::fs::create_dir_all(dir.join("targets")).expect("scratch directory");
        let metadata_url = url::Url::from_directory_path(dir.join("metadata")).expect("absolute path");
        let targets_base = url::Url::from_directory_path(dir.join("targets")).expect("absolute path");
        let config = Config {
            metadata_url: metadata_url.to_string(),
            targets_url: targets_base.to_string(),
            trusted_root: dir.join("trusted-root.json"),
            ca_certificates: None,
            allow_plain_http: false,
            hardware: BOARD.into(),
            state_dir: dir.join("state"),
            min_version: dir.join("min-version"),
            m4_dir: dir.join("m4"),
            slots: None,
            appd_socket: dir.join("appd.sock"),
            socket: dir.join("updated.sock"),
            download: Default::default(),
        };
        std::fs::write(&config.min_version, "2\n").expect("min-version");
        let updater = Updater::new(config).expect("updater");
        let body: String = KEY_PEM.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64_decode(&body);
        let key = Ed25519KeyPair::from_pkcs8(&der).expect("fuzz key");
        let keyid = key_id(key.public_key().as_ref());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let verbose = std::env::var_os("TUF_FUZZ_VERBOSE").is_some();
        Fixture { dir, updater, runtime, key, keyid, targets_base, verbose }
    })
}

/// TUF key id: SHA-256 of the canonical JSON of the public key (as tough and python-tuf).
fn key_id(public: &[u8]) -> String {
    let key = serde_json::json!({"keytype": "ed25519", "keyval": {"public": hex::encode(public)}, "scheme": "ed25519"});
    hex::encode(sha2::Sha256::digest(canonical(&key).expect("canonical key")))
}

fn canonical(value: &Value) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, olpc_cjson::CanonicalFormatter::new());
    serde::Serialize::serialize(value, &mut ser).ok()?;
    Some(buf)
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        let Some(v) = ALPHABET.iter().position(|&a| a == c) else { continue };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Replaces the signatures of a `{"signed": ...}` document with one by the fuzz key;
/// anything else is returned as it was.
fn resign(fx: &Fixture, bytes: &[u8]) -> Vec<u8> {
    let Ok(mut doc) = serde_json::from_slice::<Value>(bytes) else { return bytes.to_vec() };
    let Some(signed) = doc.get("signed") else { return bytes.to_vec() };
    let Some(message) = canonical(signed) else { return bytes.to_vec() };
    let sig = hex::encode(fx.key.sign(&message).as_ref());
    doc["signatures"] = serde_json::json!([{"keyid": fx.keyid, "sig": sig}]);
    serde_json::to_vec(&doc).unwrap_or_else(|_| bytes.to_vec())
}

/// Writes `file`'s length and SHA-256 into `lister`'s `signed.meta[name]`, if present.
fn fix_meta(lister: &[u8], name: &str, file: &[u8]) -> Vec<u8> {
    let Ok(mut doc) = serde_json::from_slice::<Value>(lister) else { return lister.to_vec() };
    let Some(entry) = doc.pointer_mut(&format!("/signed/meta/{name}")).and_then(Value::as_object_mut) else {
        return lister.to_vec();
    };
    entry.insert("length".into(), file.len().into());
    entry.insert("hashes".into(), serde_json::json!({"sha256": hex::encode(sha2::Sha256::digest(file))}));
    serde_json::to_vec(&doc).unwrap_or_else(|_| lister.to_vec())
}

fn write(path: &Path, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => std::fs::write(path, bytes).expect("scratch file"),
        None => {
            let _ = std::fs::remove_file(path);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let mut pieces: Vec<Vec<u8>> = rest.splitn(5, |&b| b == SEPARATOR).map(<[u8]>::to_vec).collect();
    let root2 = if pieces.len() == 5 { pieces.pop() } else { None };
    pieces.resize(4, Vec::new());
    let [mut root, mut timestamp, mut snapshot, mut targets]: [Vec<u8>; 4] = pieces.try_into().expect("four pieces");
    let fx = fixture();
    let mut root2 = root2;
    if flags & RESIGN != 0 {
        root = resign(fx, &root);
        root2 = root2.map(|r| resign(fx, &r));
        targets = resign(fx, &targets);
        if flags & FIX_META != 0 {
            snapshot = fix_meta(&snapshot, "targets.json", &targets);
        }
        snapshot = resign(fx, &snapshot);
        if flags & FIX_META != 0 {
            timestamp = fix_meta(&timestamp, "snapshot.json", &snapshot);
        }
        timestamp = resign(fx, &timestamp);
    }

    // A fresh device every run: no cached root or metadata versions from earlier inputs.
    let _ = std::fs::remove_dir_all(fx.dir.join("state"));
    let metadata = fx.dir.join("metadata");
    write(&fx.dir.join("trusted-root.json"), Some(&root));
    write(&metadata.join("timestamp.json"), Some(&timestamp));
    write(&metadata.join("snapshot.json"), Some(&snapshot));
    write(&metadata.join("targets.json"), Some(&targets));
    write(&metadata.join("2.root.json"), root2.as_deref());

    let repo = match fx.runtime.block_on(fx.updater.load_repository()) {
        Ok(repo) => repo,
        Err(e) => {
            if fx.verbose {
                eprintln!("tuf_metadata: rejected: {e}");
            }
            return;
        }
    };
    let consistent = repo.root().signed.consistent_snapshot;
    let (verified, rejected) = Updater::targets(&repo);
    if fx.verbose {
        eprintln!("tuf_metadata: loaded: {} targets ours, {} rejected", verified.len(), rejected.len());
    }
    for release in sphere_update_format::releases_for(verified, BOARD) {
        for t in &release.targets {
            assert!(t.info.fits(BOARD), "releases_for kept {} for another board", t.name);
            for prefix in [None, Some(t.sha256.as_str())] {
                if let Ok(url) = target_url(&fx.targets_base, &t.name, prefix) {
                    assert!(
                        url.as_str().starts_with(fx.targets_base.as_str()),
                        "target {:?} (consistent {consistent}) resolves outside the targets directory: {url}",
                        t.name
                    );
                }
            }
        }
        let installed = Installed::default();
        let _ = fx.updater.vet_release(&release, Slot::A, 1, &installed);
    }
});
