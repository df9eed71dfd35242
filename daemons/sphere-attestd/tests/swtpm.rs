//! The TPM backend against a real swtpm (Debian's `swtpm`), no mocks. Skipped with a message
//! when swtpm is not installed (scripts/install-host-deps.sh attest installs it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};
use sphere_attestation::{Stage, eat};
use sphere_attestd::evidence;
use sphere_attestd::keystore::{Backend, IdentityKey};
use sphere_attestd::measure::{MeasureConfig, MeasuredState};
use sphere_attestd::tpm::{self, TpmPath};

struct Swtpm {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn swtpm() -> Option<Swtpm> {
    if Command::new("swtpm").arg("--version").output().is_err() {
        eprintln!("SKIP: swtpm not installed");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("tpm.sock");
    let ctrl = dir.path().join("ctrl.sock");
    let child = Command::new("swtpm")
        .args(["socket", "--tpm2", "--flags", "not-need-init"])
        .arg("--server")
        .arg(format!("type=unixio,path={}", socket.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", ctrl.display()))
        .arg("--tpmstate")
        .arg(format!("dir={}", dir.path().display()))
        .spawn()
        .expect("start swtpm");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "swtpm did not create its socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Swtpm { child, socket, _dir: dir })
}

fn backend(socket: &Path) -> Backend {
    Backend::Tpm(TpmPath::Unix(socket.to_owned()))
}

#[test]
fn identity_key_is_stable_and_signs_verifiably() {
    let Some(sw) = swtpm() else { return };
    let first = IdentityKey::open(&backend(&sw.socket)).expect("create identity key");
    let public = first.public_sec1().to_vec();
    assert_eq!(public.len(), 65);
    let signature = first.sign(b"evidence bytes").expect("sign");
    drop(first);
    // CreatePrimary from the same seed and template gives the same key: nothing stored outside.
    let second = IdentityKey::open(&backend(&sw.socket)).expect("recreate identity key");
    assert_eq!(second.public_sec1(), public.as_slice());

    let verifying = VerifyingKey::from_sec1_bytes(&public).unwrap();
    let digest = Sha256::digest(b"evidence bytes");
    let sig = Signature::from_slice(&signature).unwrap();
    verifying.verify_prehash(&digest, &sig).expect("TPM signature verifies");
    assert!(verifying.verify_prehash(&Sha256::digest(b"other bytes"), &sig).is_err());
}

#[test]
fn pcr_extend_quote_and_read_agree() {
    let Some(sw) = swtpm() else { return };
    let key = IdentityKey::open(&backend(&sw.socket)).unwrap();
    let before = key.pcr_read(&[9]).unwrap().unwrap();
    let measurement: [u8; 32] = Sha256::digest(b"sphere-init binary").into();
    assert!(key.pcr_extend(9, &measurement).unwrap());
    let after = key.pcr_read(&[9]).unwrap().unwrap();
    let mut expected = Sha256::new();
    expected.update(before[0].1);
    expected.update(measurement);
    assert_eq!(after[0].1, <[u8; 32]>::from(expected.finalize()), "PCR-extend semantics");

    let nonce = key.random(32).unwrap();
    assert_eq!(nonce.len(), 32);
    let quote = key.quote(&nonce, &[8, 9]).unwrap().expect("TPM backend quotes");
    let info = tpm::parse_quote(&quote.attest).unwrap();
    assert_eq!(info.extra_data, nonce);
    assert_eq!(info.pcrs, vec![8, 9]);
    let values = key.pcr_read(&[8, 9]).unwrap().unwrap();
    let mut composite = Sha256::new();
    for (_, value) in &values {
        composite.update(value);
    }
    assert_eq!(info.pcr_digest, composite.finalize().to_vec());
    let verifying = VerifyingKey::from_sec1_bytes(key.public_sec1()).unwrap();
    let sig = Signature::from_slice(&quote.signature.to_fixed()).unwrap();
    verifying.verify_prehash(&Sha256::digest(&quote.attest), &sig).expect("quote signature verifies");
}

#[test]
fn file_backend_refuses_readable_key_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.key");
    let key = IdentityKey::open(&Backend::File(path.clone())).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let id = key.device_id().unwrap();
    drop(key);
    assert_eq!(IdentityKey::open(&Backend::File(path.clone())).unwrap().device_id().unwrap(), id);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = IdentityKey::open(&Backend::File(path)).err().expect("0644 key refused");
    assert!(err.to_string().contains("0600"), "{err}");
}

/// A fake device root: command line, root image, sphere-init, one daemon, one installed app.
fn fake_root(dir: &Path) -> MeasureConfig {
    let root_image = dir.join("rootfs.erofs");
    std::fs::write(&root_image, vec![7u8; 3 * 4096]).unwrap();
    std::fs::write(dir.join("cmdline"), format!("console=ttyAMA0 sphere.root={}\n", root_image.display())).unwrap();
    std::fs::write(dir.join("init"), b"init binary").unwrap();
    std::fs::write(dir.join("appd"), b"appd binary").unwrap();
    let store = dir.join("apps");
    let digest = hex::encode(Sha256::digest(b"listing"));
    let app_dir = store.join("apps").join("app-1").join(&digest);
    std::fs::create_dir_all(&app_dir).unwrap();
    std::fs::write(
        app_dir.join("app_manifest.json"),
        r#"{"Name":"a","ComponentId":"app-1","Capabilities":{"AllowedConnections":["x.example"]}}"#,
    )
    .unwrap();
    std::fs::write(
        store.join("registry.json"),
        format!(r#"{{"apps":{{"app-1":{{"component_id":"app-1","version_digest":"{digest}","uid":20000}}}}}}"#),
    )
    .unwrap();
    MeasureConfig {
        cmdline: dir.join("cmdline"),
        mountinfo: None,
        init: dir.join("init"),
        daemons: vec![("sphere-appd".into(), dir.join("appd")), ("absent".into(), dir.join("nope"))],
        app_store: store,
        board: None,
        ..MeasureConfig::default()
    }
}

#[test]
fn measured_boot_extends_pcrs_and_evidence_verifies() {
    let Some(sw) = swtpm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = fake_root(dir.path());
    let key = IdentityKey::open(&backend(&sw.socket)).unwrap();
    let state = MeasuredState::measure_boot(&config, Some(&key), "1.0.0".into()).unwrap();
    let stages: Vec<Stage> = state.log.entries.iter().map(|e| e.stage).collect();
    assert_eq!(
        stages,
        [
            Stage::BootRecord,
            Stage::RootSlot,
            Stage::Init,
            Stage::Daemon,
            Stage::App,
            Stage::SandboxPolicy,
            Stage::FirewallPolicy
        ]
    );
    assert_eq!(state.log.entries[1].digest.0, <[u8; 32]>::from(Sha256::digest(vec![7u8; 3 * 4096])));
    // The TPM's PCRs hold exactly what replaying the log gives.
    state.check_against_tpm(&key).expect("PCRs match the event log");
    // A second measurement of the same apps adds nothing.
    let mut again = state.clone();
    assert_eq!(again.measure_apps(&config, Some(&key)).unwrap(), 0);

    // Evidence: a token sphere-attestation verifies with our public key, carrying a quote
    // over SHA-256(nonce) and the CSR digest.
    let nonce = [9u8; 32];
    let csr = evidence::certificate_request(&key).unwrap();
    assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    let token = evidence::make_token(&key, &state, &nonce, Some(&csr), 1_800_000_000).unwrap();
    let public = evidence::public_key(&key).unwrap();
    let verified = eat::verify(&token, &public).expect("token verifies");
    assert_eq!(verified.device_id, key.device_id().unwrap());
    assert_eq!(verified.claims.nonce, nonce);
    assert_eq!(verified.claims.event_log_digest, state.log.digest());
    assert_eq!(verified.claims.measurements, state.log.replay());
    assert_eq!(verified.claims.csr_digest, Some(sphere_attestation::Digest::of(csr.as_bytes())));
    assert_eq!(verified.claims.apps.len(), 1);
    let quote = verified.claims.tpm_quote.expect("TPM evidence carries a quote");
    let info = tpm::parse_quote(&quote.attest).unwrap();
    assert_eq!(info.extra_data, Sha256::digest(nonce).to_vec());
    assert_eq!(info.pcrs, vec![8, 9, 10, 11, 12]);
    public.verify(&quote.attest, &quote.signature).expect("quote signed by the identity key");
    // And sphere-attestation's verifier accepts this real TPM's quote for the token's claims.
    sphere_attestation::quote::verify_quote(&quote, &public, &nonce, &verified.claims.measurements)
        .expect("the cloud-side quote check accepts a real TPM quote");
    assert!(
        sphere_attestation::quote::verify_quote(&quote, &public, &[1u8; 32], &verified.claims.measurements).is_err()
    );
    // Another device's key does not verify it.
    let other = IdentityKey::open(&Backend::File(dir.path().join("other.key"))).unwrap();
    assert!(eat::verify(&token, &evidence::public_key(&other).unwrap()).is_err());

    // Software extending one of our PCRs behind the log's back is noticed, both by the daemon
    // and by the cloud-side quote check.
    key.pcr_extend(11, &[1; 32]).unwrap();
    assert!(state.check_against_tpm(&key).is_err(), "an extra extend must be detected");
    let token = evidence::make_token(&key, &state, &nonce, None, 1_800_000_000).unwrap();
    let claims = eat::verify(&token, &public).unwrap().claims;
    let quote = claims.tpm_quote.expect("quote");
    assert!(sphere_attestation::quote::verify_quote(&quote, &public, &nonce, &claims.measurements).is_err());
}
