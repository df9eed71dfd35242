//! Attack tests against the real sphere-cloud server, real mosquitto (TLS, client certificates,
//! ACLs by certificate CN) or sphere-cloud's embedded broker (the same attacks, the same
//! assertions) and, for the PostgreSQL run, a real PostgreSQL server. Every attack must be
//! refused; each check is an assertion that names the attack.

mod common;

use base64::Engine as _;
use common::{Env, NONCE_TTL_SECS, Postgres, mqtt_connect, mqtt_connect_tls};
use rumqttc::{Event, Packet, QoS, SubscribeFilter, SubscribeReasonCode};
use sphere_attestation::api::{AttestationResult, ErrorKind, ErrorReport, topics};
use sphere_attestation::{DevicePublicKey, DeviceSigner, Digest, Ed25519Signer};
use sphere_cloud::service::{DeviceInfo, StoredErrorReport};
use sphere_cloud::sim::{Profile, SimDevice};
use std::time::{Duration, Instant};

/// Signs with its own key while claiming to be another device (the forged-evidence attacker).
struct Impostor {
    claimed: DevicePublicKey,
    real: Ed25519Signer,
}

impl DeviceSigner for Impostor {
    fn algorithm(&self) -> sphere_attestation::SignatureAlgorithm {
        self.real.algorithm()
    }
    fn public_key(&self) -> DevicePublicKey {
        self.claimed.clone()
    }
    fn sign(&self, message: &[u8]) -> sphere_attestation::Result<Vec<u8>> {
        self.real.sign(message)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

fn honest(env: &Env, device: &SimDevice) -> AttestationResult {
    let result = device.attest(&env.device_client()).expect("honest attestation is answered");
    assert!(result.passed, "honest device must pass: {:?}\n{}", result.reasons, env.logs());
    assert!(result.certificate.is_some(), "honest device with a CSR gets a certificate");
    result
}

fn errors_for(env: &Env, device: &str) -> Vec<StoredErrorReport> {
    env.operator().get(&format!("/v1/errors?device={device}")).expect("query errors")
}

/// Wait until the operator API shows an error report with `detail` for `device`.
fn wait_for_report(env: &Env, device: &str, detail: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if errors_for(env, device).iter().any(|r| r.report.detail == detail) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn run_attacks(env: &Env) {
    let client = env.device_client();

    // Baseline: both key algorithms (Ed25519 file key, P-256 as a TPM uses) attest and get certs.
    let device = env.device(false, Profile::default());
    honest(env, &device);
    let tpm_like = env.device(true, Profile::default());
    honest(env, &tpm_like);
    eprintln!("baseline: Ed25519 and P-256 devices attest and get certificates");

    // 1. Replayed nonce: the very same (valid) submission a second time.
    let nonce = device.nonce(&client).unwrap();
    let log = device.profile.event_log();
    let claims = device.claims(&nonce, &log, Some(&device.csr_pem));
    let submission = device.submission(&claims, log, Some(&device.csr_pem)).unwrap();
    assert!(device.submit(&client, &submission).unwrap().passed, "first use of the nonce passes");
    let replay = device.submit(&client, &submission).expect_err("REPLAYED NONCE was accepted");
    assert_eq!(replay.code(), "nonce-unknown-or-used", "replay refused for the wrong reason: {replay}");
    eprintln!("attack refused: replayed nonce ({replay})");

    // A nonce issued to another device is no good either.
    let other_nonce = tpm_like.nonce(&client).unwrap();
    let log = device.profile.event_log();
    let stolen = device.submission(&device.claims(&other_nonce, &log, None), log, None).unwrap();
    let refused = device.submit(&client, &stolen).expect_err("ANOTHER DEVICE'S NONCE was accepted");
    assert_eq!(refused.code(), "nonce-unknown-or-used");
    eprintln!("attack refused: another device's nonce ({refused})");

    // 2. Expired nonce.
    let nonce = device.nonce(&client).unwrap();
    std::thread::sleep(Duration::from_secs(NONCE_TTL_SECS + 2));
    let log = device.profile.event_log();
    let late = device.submission(&device.claims(&nonce, &log, None), log, None).unwrap();
    let expired = device.submit(&client, &late).expect_err("EXPIRED NONCE was accepted");
    assert_eq!(expired.code(), "nonce-expired", "{expired}");
    eprintln!("attack refused: expired nonce ({expired})");

    // 3. Tampered event log: signed honestly, then one entry edited in transit.
    let nonce = device.nonce(&client).unwrap();
    let log = device.profile.event_log();
    let claims = device.claims(&nonce, &log, Some(&device.csr_pem));
    let mut tampered_log = log.clone();
    tampered_log.entries[2].digest = Digest::of(b"a patched sphere-init");
    let tampered = device.submission(&claims, tampered_log, Some(&device.csr_pem)).unwrap();
    let result = device.submit(&client, &tampered).unwrap();
    assert!(!result.passed, "TAMPERED EVENT LOG passed");
    assert!(result.certificate.is_none(), "TAMPERED EVENT LOG got a certificate");
    assert!(
        result.reasons.iter().any(|r| r.contains("event log digest")),
        "tampered log refused for the wrong reason: {:?}",
        result.reasons
    );
    eprintln!("attack refused: tampered event log ({})", result.reasons[0]);

    // 4. Measurement not in the reference values: a device honestly running an unreleased daemon.
    let mut rogue = Profile::default();
    rogue.daemons.push("cryptominer".into());
    let rogue_device = env.device(false, rogue);
    let result = rogue_device.attest(&client).unwrap();
    assert!(!result.passed, "UNKNOWN MEASUREMENT passed");
    assert!(result.certificate.is_none(), "UNKNOWN MEASUREMENT got a certificate");
    assert!(
        result.reasons.iter().any(|r| r.contains("not in the reference values: daemon cryptominer")),
        "{:?}",
        result.reasons
    );
    eprintln!("attack refused: measurement not in the reference values ({})", result.reasons[0]);

    // 5. Certificate for a device whose latest attestation failed (the rogue device above).
    let refused = rogue_device.certificate(&client).expect_err("CERTIFICATE AFTER FAILED ATTESTATION issued");
    assert_eq!(refused.code(), "attestation-failed", "{refused}");
    // …and a healthy device whose latest attestation failed (tampered log above) is refused too,
    let refused = device.certificate(&client).expect_err("CERTIFICATE AFTER FAILED ATTESTATION issued");
    assert_eq!(refused.code(), "attestation-failed", "{refused}");
    // …until it attests successfully again.
    honest(env, &device);
    device.certificate(&client).expect("certificate after a passed attestation");
    eprintln!("attack refused: certificate for a device whose latest attestation failed ({refused})");

    // 6. Evidence signed by another device's key (claims and kid name the victim).
    let attacker = Impostor { claimed: device.signer.public_key(), real: Ed25519Signer::generate() };
    let nonce = device.nonce(&client).unwrap();
    let log = device.profile.event_log();
    let claims = device.claims(&nonce, &log, Some(&device.csr_pem));
    let token = claims.sign(&attacker).unwrap();
    let forged = sphere_attestation::api::EvidenceSubmission {
        token: base64::engine::general_purpose::STANDARD.encode(token),
        event_log: log,
        csr_pem: Some(device.csr_pem.clone()),
    };
    let refused = device.submit(&client, &forged).expect_err("EVIDENCE SIGNED BY ANOTHER KEY accepted");
    assert_eq!(refused.code(), "bad-signature", "{refused}");
    // The forgery must not count as the victim's attestation (else anyone could fail a device).
    let victim: DeviceInfo = env.operator().get(&format!("/v1/devices/{}", device.id)).unwrap();
    assert_eq!(victim.last_attestation_passed, Some(true), "a forgery changed the victim's state");
    // Certificate requests signed by another key are refused as well.
    let signature =
        Ed25519Signer::generate().sign(&sphere_attestation::api::certificate_request_message(&device.csr_pem)).unwrap();
    let refused_cert = env
        .device_client()
        .send::<_, serde_json::Value>(
            "POST",
            sphere_attestation::api::CERTIFICATE_PATH,
            &serde_json::json!({"device_id": device.id, "csr_pem": device.csr_pem,
                "signature": base64::engine::general_purpose::STANDARD.encode(signature)}),
        )
        .expect_err("CERTIFICATE REQUEST SIGNED BY ANOTHER KEY accepted");
    assert_eq!(refused_cert.code(), "bad-signature");
    eprintln!("attack refused: evidence signed by another device's key ({refused})");

    // Operator API without the token.
    let anonymous =
        env.device_client().get::<serde_json::Value>("/v1/devices").expect_err("OPERATOR API WITHOUT TOKEN");
    assert_eq!(anonymous.status(), 401);

    // MQTT over mutual TLS with the issued certificates.
    let rt = runtime();
    let victim = env.device(false, Profile::default());
    let victim_cert = honest(env, &victim).certificate.unwrap();
    let device_cert = honest(env, &device).certificate.unwrap();
    rt.block_on(async {
        // The victim reports an error; the operator API returns it (the legitimate path).
        let (victim_client, mut victim_events) =
            mqtt_connect(env, &victim_cert.certificate_pem, &victim.tls_key_pem, &victim.id)
                .await
                .expect("victim connects");
        let own = ErrorReport {
            kind: ErrorKind::Crash,
            app_id: Some("hello-sphere".into()),
            count: 1,
            detail: "own report".into(),
            occurred_at: 1,
        };
        victim_client
            .publish(topics::errors(&victim.id), QoS::AtLeastOnce, false, serde_json::to_vec(&own).unwrap())
            .await
            .unwrap();
        victim_client.subscribe(topics::commands(&victim.id), QoS::AtLeastOnce).await.unwrap();
        let telemetry = serde_json::json!({"temperature": 21.5});
        victim_client
            .publish(topics::telemetry(&victim.id), QoS::AtLeastOnce, false, telemetry.to_string())
            .await
            .unwrap();
        let (victim_tx, mut victim_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(event) = victim_events.poll().await {
                if let Event::Incoming(Packet::Publish(p)) = event {
                    let _ = victim_tx.send(p.payload.to_vec());
                }
            }
        });

        // 7. A device publishing to (and subscribing to) another device's topics.
        let (attacker_client, mut attacker_events) =
            mqtt_connect(env, &device_cert.certificate_pem, &device.tls_key_pem, &device.id)
                .await
                .expect("attacker connects");
        let forged = ErrorReport {
            kind: ErrorKind::Crash,
            app_id: None,
            count: 1,
            detail: "forged by another device".into(),
            occurred_at: 1,
        };
        attacker_client
            .publish(topics::errors(&victim.id), QoS::AtLeastOnce, false, serde_json::to_vec(&forged).unwrap())
            .await
            .unwrap();
        attacker_client
            .publish(topics::telemetry(&victim.id), QoS::AtLeastOnce, false, r#"{"temperature": -99}"#)
            .await
            .unwrap();
        // The victim's topic itself and wildcards that would reach it.
        attacker_client
            .subscribe_many([
                SubscribeFilter::new(topics::commands(&victim.id), QoS::AtLeastOnce),
                SubscribeFilter::new(format!("{}/+/commands", topics::PREFIX), QoS::AtLeastOnce),
                SubscribeFilter::new("#".to_owned(), QoS::AtLeastOnce),
            ])
            .await
            .unwrap();
        // mosquitto 2.0 answers a denied MQTT 3.1.1 subscription with SUBACK success and then
        // delivers nothing, so the assertion is on delivery, not on the SUBACK code.
        let suback = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Ok(Event::Incoming(Packet::SubAck(ack))) = attacker_events.poll().await {
                    return ack.return_codes;
                }
            }
        })
        .await
        .expect("SUBACK");
        if env.mosquitto_pid.is_none() {
            // The embedded broker says so (mosquitto does not, see above).
            assert_eq!(suback, vec![SubscribeReasonCode::Failure; 3], "embedded broker granted a foreign subscription");
        }
        let (attacker_tx, mut attacker_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(event) = attacker_events.poll().await {
                if let Event::Incoming(Packet::Publish(p)) = event {
                    let _ = attacker_tx.send(p.payload.to_vec());
                }
            }
        });
        victim_client.publish(topics::commands(&victim.id), QoS::AtLeastOnce, false, "secret command").await.unwrap();
        let delivered = tokio::time::timeout(Duration::from_secs(10), victim_rx.recv()).await;
        assert_eq!(
            delivered.ok().flatten().as_deref(),
            Some(&b"secret command"[..]),
            "the victim's own subscription works"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            attacker_rx.try_recv().is_err(),
            "ANOTHER DEVICE'S TOPIC: the attacker received the victim's command (SUBACK {suback:?})"
        );
        eprintln!("  subscription to another device's topic: SUBACK {suback:?}, nothing delivered");
    });
    assert!(wait_for_report(env, &victim.id, "own report"), "the victim's own report never arrived\n{}", env.logs());
    std::thread::sleep(Duration::from_millis(500));
    let reports = errors_for(env, &victim.id);
    assert!(
        !reports.iter().any(|r| r.report.detail == "forged by another device"),
        "ANOTHER DEVICE'S TOPIC: the forged error report was stored: {reports:?}"
    );
    let shown: DeviceInfo = env.operator().get(&format!("/v1/devices/{}", victim.id)).unwrap();
    assert_eq!(shown.last_telemetry, Some(serde_json::json!({"temperature": 21.5})), "telemetry forged or lost");
    eprintln!(
        "attack refused: a device publishing/subscribing to another device's topics (nothing delivered, forged report and telemetry dropped)"
    );

    // 9. Clients without a certificate from sphere-cloud's CA: none at all, and a self-made
    // one that names the victim as its CN.
    rt.block_on(async {
        let tls = sphere_cloud::tls::client_config(&env.read("ca.crt"), None).unwrap();
        let attempt = mqtt_connect_tls(env, tls, "anonymous").await;
        assert!(attempt.is_err(), "CLIENT WITHOUT A CERTIFICATE accepted by the broker");
        eprintln!("attack refused: no client certificate ({})", attempt.err().unwrap_or_default());
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, victim.id.clone());
        let forged = params.self_signed(&key).unwrap();
        let attempt = mqtt_connect(env, &forged.pem(), &key.serialize_pem(), &victim.id).await;
        assert!(attempt.is_err(), "SELF-MADE CERTIFICATE naming the victim accepted by the broker");
        eprintln!("attack refused: certificate not issued by the CA ({})", attempt.err().unwrap_or_default());
    });

    // 8a. Revoked certificate: revoke the victim's certificate; the broker (after reloading the
    // CRL sphere-cloud rewrote) refuses it, and the revoked device gets no nonce.
    let revoked: serde_json::Value = env
        .operator()
        .send("POST", &format!("/v1/certificates/{}/revoke", victim_cert.serial), &serde_json::json!({}))
        .unwrap();
    assert!(revoked["revoked_at"].is_i64());
    env.reload_mosquitto();
    let attempt = rt.block_on(mqtt_connect(env, &victim_cert.certificate_pem, &victim.tls_key_pem, "revoked"));
    assert!(attempt.is_err(), "REVOKED CERTIFICATE accepted by the broker");
    // A fresh certificate (fresh attestation) still works: the CRL names serials, not devices.
    let fresh = honest(env, &victim).certificate.unwrap();
    rt.block_on(mqtt_connect(env, &fresh.certificate_pem, &victim.tls_key_pem, "fresh"))
        .expect("fresh certificate connects");
    eprintln!("attack refused: revoked certificate ({})", attempt.err().unwrap_or_default());
    // Revoking the device: no more nonces, no more certificates.
    let _: DeviceInfo =
        env.operator().send("POST", &format!("/v1/devices/{}/revoke", victim.id), &serde_json::json!({})).unwrap();
    let refused = victim.nonce(&client).expect_err("REVOKED DEVICE got a nonce");
    assert_eq!(refused.code(), "device-revoked");
    env.reload_mosquitto();
    let attempt = rt.block_on(mqtt_connect(env, &fresh.certificate_pem, &victim.tls_key_pem, "revoked-device"));
    assert!(attempt.is_err(), "REVOKED DEVICE'S CERTIFICATE accepted by the broker");
    eprintln!("attack refused: revoked device ({refused})");

    // 8b. Expired certificate: wait out the (test-shortened) lifetime of device_cert.
    let wait = device_cert.not_after - sphere_cloud::service::now() + 2;
    if wait > 0 {
        std::thread::sleep(Duration::from_secs(wait as u64));
    }
    let attempt = rt.block_on(mqtt_connect(env, &device_cert.certificate_pem, &device.tls_key_pem, "expired"));
    assert!(attempt.is_err(), "EXPIRED CERTIFICATE accepted by the broker");
    eprintln!("attack refused: expired certificate ({})", attempt.err().unwrap_or_default());
}

// Ignored by plain `cargo test`: they need mosquitto and PostgreSQL from Debian, which
// `tests/cloud-test.sh` (test.sh suite `cloud`) installs before running them with --ignored.
#[test]
#[ignore = "needs mosquitto: run by tests/cloud-test.sh"]
fn attacks_are_refused_sqlite() {
    let env = Env::start(None);
    run_attacks(&env);
}

#[test]
#[ignore = "starts the built server for ~30 s: run by tests/cloud-test.sh"]
fn attacks_are_refused_embedded_broker() {
    let env = Env::start_embedded(None);
    run_attacks(&env);
    third_party_client_on_embedded_broker(&env);
    revocation_closes_a_connected_session(&env);
}

/// The embedded broker watches crl.pem: a session whose certificate is revoked while it is
/// connected is closed (mosquitto checks the CRL only at the handshake).
fn revocation_closes_a_connected_session(env: &Env) {
    let device = env.device(false, Profile::default());
    let certificate = honest(env, &device).certificate.unwrap();
    let rt = runtime();
    let (client, mut events) = rt
        .block_on(mqtt_connect(env, &certificate.certificate_pem, &device.tls_key_pem, &device.id))
        .expect("device connects");
    let (ended_tx, ended_rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let _client = client;
        loop {
            if let Err(e) = events.poll().await {
                let _ = ended_tx.send(e.to_string());
                return;
            }
        }
    });
    assert!(ended_rx.recv_timeout(Duration::from_secs(3)).is_err(), "the session ended before any revocation");
    let _: serde_json::Value = env
        .operator()
        .send("POST", &format!("/v1/certificates/{}/revoke", certificate.serial), &serde_json::json!({}))
        .unwrap();
    let ended = ended_rx.recv_timeout(sphere_cloud::broker::CRL_POLL + Duration::from_secs(5));
    assert!(ended.is_ok(), "REVOKED CERTIFICATE: the connected session stayed open\n{}", env.logs());
    eprintln!("embedded broker: a connected session closed after its certificate was revoked ({})", ended.unwrap());
}

/// mosquitto's own clients (another MQTT implementation than the one in the broker) against
/// the embedded broker: an error report arrives in the operator API, a group release reaches
/// the device as a retained message, and a report sent to another device's topic is dropped.
fn third_party_client_on_embedded_broker(env: &Env) {
    let device = env.device(false, Profile::default());
    let other = env.device(false, Profile::default());
    let certificate = honest(env, &device).certificate.unwrap();
    let dir = env.dir.path();
    std::fs::write(dir.join("device.crt"), &certificate.certificate_pem).unwrap();
    std::fs::write(dir.join("device.key"), &device.tls_key_pem).unwrap();
    let mosquitto_client = |program: &str, topic: &str, extra: &[&str]| {
        std::process::Command::new(program)
            .args(["-h", "127.0.0.1", "-p", &env.mqtt_port.to_string(), "--cafile"])
            .arg(env.data.join("ca.crt"))
            .arg("--cert")
            .arg(dir.join("device.crt"))
            .arg("--key")
            .arg(dir.join("device.key"))
            .args(["-i", &device.id, "-q", "1", "-t", topic])
            .args(extra)
            .output()
            .unwrap_or_else(|e| panic!("{program} (scripts/install-host-deps.sh cloud): {e}"))
    };
    let report = |detail: &str| {
        serde_json::to_string(&ErrorReport {
            kind: ErrorKind::SandboxViolation,
            app_id: None,
            count: 2,
            detail: detail.into(),
            occurred_at: 7,
        })
        .unwrap()
    };
    let out = mosquitto_client("mosquitto_pub", &topics::errors(&device.id), &["-m", &report("via mosquitto_pub")]);
    assert!(out.status.success(), "mosquitto_pub: {}", String::from_utf8_lossy(&out.stderr));
    assert!(wait_for_report(env, &device.id, "via mosquitto_pub"), "{}", env.logs());
    let out =
        mosquitto_client("mosquitto_pub", &topics::errors(&other.id), &["-m", &report("forged via mosquitto_pub")]);
    assert!(out.status.success(), "mosquitto_pub: {}", String::from_utf8_lossy(&out.stderr));

    let operator = env.operator();
    let _: serde_json::Value =
        operator.send("POST", "/v1/groups", &serde_json::json!({"name": "embedded", "release": "2.0.0"})).unwrap();
    let _: serde_json::Value = operator
        .send("PUT", &format!("/v1/devices/{}/group", device.id), &serde_json::json!({"group": "embedded"}))
        .unwrap();
    let _: serde_json::Value =
        operator.send("PUT", "/v1/groups/embedded/release", &serde_json::json!({"release": "2.1.0"})).unwrap();
    let out = mosquitto_client("mosquitto_sub", &topics::updates(&device.id), &["-C", "1", "-W", "8"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2.1.0"), "retained update not delivered: {text:?} {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !errors_for(env, &other.id).iter().any(|r| r.report.detail == "forged via mosquitto_pub"),
        "ANOTHER DEVICE'S TOPIC: mosquitto_pub's forged report was stored"
    );
    eprintln!("embedded broker: mosquitto_pub/mosquitto_sub over mTLS work; a foreign topic is dropped");
}

#[test]
#[ignore = "needs mosquitto and PostgreSQL: run by tests/cloud-test.sh"]
fn groups_releases_and_errors_on_postgresql() {
    let postgres = Postgres::start();
    let env = Env::start(Some(postgres.url.clone()));
    let operator = env.operator();
    let health: serde_json::Value = env.device_client().get("/v1/health").unwrap();
    assert_eq!(health["storage"], "postgresql");

    // Groups and releases.
    let group: serde_json::Value = operator
        .send(
            "POST",
            "/v1/groups",
            &serde_json::json!({"name": "field", "description": "field units", "release": "1.0.0"}),
        )
        .unwrap();
    assert_eq!(group["release"], "1.0.0");
    let device = SimDevice::new(true, Profile::default()).unwrap();
    device.register(&operator, Some("field")).unwrap();
    let _: serde_json::Value =
        operator.send("PUT", "/v1/groups/field/release", &serde_json::json!({"release": "1.1.0"})).unwrap();
    let release: serde_json::Value = env.device_client().get(&format!("/v1/devices/{}/release", device.id)).unwrap();
    assert_eq!(release["release"], "1.1.0");
    let groups: Vec<sphere_cloud::service::GroupInfo> = operator.get("/v1/groups").unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].devices, 1);

    // The attestation protocol and its replay protection on PostgreSQL.
    let client = env.device_client();
    let result = device.attest(&client).unwrap();
    assert!(result.passed, "{:?}", result.reasons);
    let nonce = device.nonce(&client).unwrap();
    let log = device.profile.event_log();
    let submission = device.submission(&device.claims(&nonce, &log, None), log, None).unwrap();
    device.submit(&client, &submission).unwrap();
    assert_eq!(device.submit(&client, &submission).unwrap_err().code(), "nonce-unknown-or-used");

    // Error reports through mosquitto into PostgreSQL and back out of the operator API.
    let certificate = result.certificate.unwrap();
    let rt = runtime();
    rt.block_on(async {
        let (mqtt, mut events) =
            mqtt_connect(&env, &certificate.certificate_pem, &device.tls_key_pem, &device.id).await.unwrap();
        for (kind, detail) in [(ErrorKind::Crash, "SIGSEGV"), (ErrorKind::FirewallViolation, "10.0.0.1:443")] {
            let report = ErrorReport {
                kind,
                app_id: Some("hello-sphere".into()),
                count: 3,
                detail: detail.into(),
                occurred_at: 5,
            };
            mqtt.publish(topics::errors(&device.id), QoS::AtLeastOnce, false, serde_json::to_vec(&report).unwrap())
                .await
                .unwrap();
        }
        tokio::spawn(async move { while events.poll().await.is_ok() {} });
    });
    assert!(wait_for_report(&env, &device.id, "10.0.0.1:443"), "{}", env.logs());
    let crashes: Vec<StoredErrorReport> = operator.get(&format!("/v1/errors?device={}&kind=crash", device.id)).unwrap();
    assert_eq!(crashes.len(), 1);
    assert_eq!(crashes[0].report.detail, "SIGSEGV");
    assert_eq!(crashes[0].report.count, 3);
    let attestations: Vec<sphere_cloud::service::AttestationRecord> =
        operator.get(&format!("/v1/devices/{}/attestations", device.id)).unwrap();
    assert_eq!(attestations.len(), 2);
    drop(env);
    drop(postgres);
}
