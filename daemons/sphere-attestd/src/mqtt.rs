//! The cloud link: MQTT 3.1.1 (rumqttc) over mutual TLS (rustls, ring).
//!
//! The client certificate is the one sphere-cloud issued after the last passed attestation;
//! its key is the identity key, so the TLS handshake is signed in the keystore ([`TlsKey`]).
//! Topics are sphere-attestation's per-device topics: the device publishes `telemetry` (QoS 0:
//! only the latest matters) and `errors` (QoS 1 from the on-disk outbox: each report is deleted
//! only after the broker's PUBACK), and subscribes to `commands`, `config` and `updates`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, QoS, TlsConfiguration, Transport};
use rustls::pki_types::CertificateDer;
use sphere_attestation::api::{CertificateResponse, topics};
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::evidence::TlsKey;
use crate::fsutil::write_atomic;
use crate::keystore::IdentityKey;
use crate::queue::Outbox;

/// Every certificate in a PEM buffer.
pub fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut reader = pem;
    let certs: Vec<_> = rustls_pemfile::certs(&mut reader)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("reading PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in PEM".into());
    }
    Ok(certs)
}

pub fn first_cert(pem: &[u8]) -> Result<CertificateDer<'static>, String> {
    certs(pem)?.into_iter().next().ok_or_else(|| "no certificate in PEM".into())
}

pub fn root_store(pem: &[u8]) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(pem)? {
        roots.add(cert).map_err(|e| format!("CA certificate: {e}"))?;
    }
    Ok(roots)
}

#[derive(Debug)]
struct ClientCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        schemes.contains(&rustls::SignatureScheme::ECDSA_NISTP256_SHA256).then(|| self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// rustls client configuration: trust `ca_pem`, authenticate with `cert_pem` + identity key.
pub fn client_tls(ca_pem: &[u8], cert_pem: &[u8], key: Arc<IdentityKey>) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = root_store(ca_pem)?;
    let chain = certs(cert_pem)?;
    let certified = rustls::sign::CertifiedKey::new(chain, Arc::new(TlsKey(key)));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(ClientCert(Arc::new(certified))));
    Ok(Arc::new(config))
}

/// Why a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// The certificate is due for renewal: attest again, then reconnect.
    Renew,
    /// The cloud asked for a fresh attestation (`{"command":"attest"}`).
    AttestRequested,
    /// The connection failed or dropped (the text says why).
    Lost(String),
}

/// Options for one connection.
pub fn options(config: &Config, device_id: &str, tls: Arc<rustls::ClientConfig>) -> MqttOptions {
    let mut options = MqttOptions::new(device_id, config.mqtt.host.clone(), config.mqtt.port);
    options.set_keep_alive(Duration::from_secs(config.mqtt.keep_alive_s.max(5)));
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    options.set_max_packet_size(256 * 1024, 256 * 1024);
    options
}

/// What the event loop tells the session about.
enum Note {
    Connected,
    PubAck,
    Message(String, Vec<u8>),
}

async fn drive(mut eventloop: EventLoop, notes: mpsc::Sender<Note>, failed: watch::Sender<Option<String>>) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                let _ = notes.send(Note::Connected).await;
            }
            Ok(Event::Incoming(Incoming::PubAck(_))) => {
                let _ = notes.send(Note::PubAck).await;
            }
            Ok(Event::Incoming(Incoming::Publish(publish))) => {
                let _ = notes.send(Note::Message(publish.topic.clone(), publish.payload.to_vec())).await;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = failed.send(Some(e.to_string()));
                return;
            }
        }
    }
}

/// Telemetry: a small JSON document.
pub fn telemetry(config: &Config, outbox: &Outbox, cert: &CertificateResponse, key_storage: &str) -> Vec<u8> {
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()))
        .unwrap_or(0.0);
    serde_json::json!({
        "time": crate::attest::now(),
        "uptime_s": uptime as u64,
        "os_version": crate::measure::os_version(&config.os_release),
        "key_storage": key_storage,
        "certificate_not_after": cert.not_after,
        "outbox": outbox.len().unwrap_or(0),
    })
    .to_string()
    .into_bytes()
}

/// Run one MQTT session until the certificate is due (`renew_at`, Unix seconds), the cloud asks
/// for an attestation, or the link fails. Queued error reports are sent while connected.
pub async fn session(
    config: &Config,
    key: Arc<IdentityKey>,
    device_id: &str,
    cert: &CertificateResponse,
    outbox: &Outbox,
    renew_at: i64,
    wake: &mut mpsc::Receiver<()>,
) -> SessionEnd {
    let ca_pem = match &config.mqtt.ca_file {
        Some(path) => match std::fs::read(path) {
            Ok(pem) => pem,
            Err(e) => return SessionEnd::Lost(format!("{}: {e}", path.display())),
        },
        None => cert.ca_certificate_pem.as_bytes().to_vec(),
    };
    let key_storage = key.backend().storage_name();
    let tls = match client_tls(&ca_pem, cert.certificate_pem.as_bytes(), key) {
        Ok(tls) => tls,
        Err(e) => return SessionEnd::Lost(e),
    };
    let (client, eventloop) = AsyncClient::new(options(config, device_id, tls), 64);
    let (notes_tx, mut notes) = mpsc::channel(64);
    let (failed_tx, mut failed) = watch::channel(None);
    let driver = tokio::spawn(drive(eventloop, notes_tx, failed_tx));
    let end = run(config, &client, device_id, cert, outbox, renew_at, key_storage, &mut notes, &mut failed, wake).await;
    let _ = client.disconnect().await;
    // Give the DISCONNECT a moment to leave, then stop the event loop.
    let _ = tokio::time::timeout(Duration::from_millis(500), async { while failed.changed().await.is_ok() {} }).await;
    driver.abort();
    end
}

#[allow(clippy::too_many_arguments)]
async fn run(
    config: &Config,
    client: &AsyncClient,
    device_id: &str,
    cert: &CertificateResponse,
    outbox: &Outbox,
    renew_at: i64,
    key_storage: &str,
    notes: &mut mpsc::Receiver<Note>,
    failed: &mut watch::Receiver<Option<String>>,
    wake: &mut mpsc::Receiver<()>,
) -> SessionEnd {
    // Wait for the CONNACK (the TLS handshake and the broker's certificate checks come first).
    let connected = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            tokio::select! {
                note = notes.recv() => match note {
                    Some(Note::Connected) => return Ok(()),
                    Some(_) => {}
                    None => return Err(failed.borrow().clone().unwrap_or_else(|| "event loop ended".into())),
                },
                _ = failed.changed() => {
                    return Err(failed.borrow().clone().unwrap_or_else(|| "connection failed".into()));
                }
            }
        }
    })
    .await;
    match connected {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return SessionEnd::Lost(e),
        Err(_) => return SessionEnd::Lost("no CONNACK within 30 s".into()),
    }
    eprintln!("sphere-attestd: mqtt connected to {}:{} as {device_id}", config.mqtt.host, config.mqtt.port);
    for topic in [topics::commands(device_id), topics::config(device_id), topics::updates(device_id)] {
        if let Err(e) = client.subscribe(topic, QoS::AtLeastOnce).await {
            return SessionEnd::Lost(e.to_string());
        }
    }
    let mut ticker = tokio::time::interval(Duration::from_secs(config.telemetry_interval_s.max(1)));
    // The outbox message waiting for its PUBACK, and since when.
    let mut in_flight: Option<(u64, Instant)> = None;
    let mut flush = tokio::time::interval(Duration::from_secs(1));
    loop {
        let until_renew = Duration::from_secs((renew_at - crate::attest::now()).max(0) as u64);
        tokio::select! {
            _ = tokio::time::sleep(until_renew) => return SessionEnd::Renew,
            _ = failed.changed() => {
                return SessionEnd::Lost(failed.borrow().clone().unwrap_or_else(|| "connection lost".into()));
            }
            _ = ticker.tick() => {
                let payload = telemetry(config, outbox, cert, key_storage);
                if let Err(e) = client.publish(topics::telemetry(device_id), QoS::AtMostOnce, false, payload).await {
                    return SessionEnd::Lost(e.to_string());
                }
                eprintln!("sphere-attestd: telemetry sent");
            }
            woken = wake.recv() => {
                // A new error report was queued (or the sender is gone: nothing to do).
                let _ = woken;
            }
            note = notes.recv() => match note {
                Some(Note::PubAck) => {
                    if let Some((seq, _)) = in_flight.take() {
                        if let Err(e) = outbox.ack(seq) {
                            eprintln!("sphere-attestd: outbox: {e}");
                        }
                        eprintln!("sphere-attestd: error report {seq} delivered");
                    }
                }
                Some(Note::Message(topic, payload)) => {
                    if handle_message(config, device_id, &topic, &payload) {
                        return SessionEnd::AttestRequested;
                    }
                }
                Some(Note::Connected) => {}
                None => return SessionEnd::Lost(failed.borrow().clone().unwrap_or_else(|| "event loop ended".into())),
            },
            _ = flush.tick() => {}
        }
        // After every event: send the next queued report if none is waiting for its PUBACK
        // (or re-send one that waited too long: the broker may have missed it).
        if in_flight.is_some_and(|(_, since)| since.elapsed() > Duration::from_secs(20)) {
            in_flight = None;
        }
        if in_flight.is_none() {
            match outbox.peek() {
                Ok(Some(message)) => {
                    let topic = format!("{}/{}/{}", topics::PREFIX, device_id, message.leaf);
                    if let Err(e) = client.publish(topic, QoS::AtLeastOnce, false, message.payload).await {
                        return SessionEnd::Lost(e.to_string());
                    }
                    in_flight = Some((message.seq, Instant::now()));
                }
                Ok(None) => {}
                Err(e) => eprintln!("sphere-attestd: outbox: {e}"),
            }
        }
    }
}

/// Handle a message on one of our topics; true when the cloud asks for a new attestation.
fn handle_message(config: &Config, device_id: &str, topic: &str, payload: &[u8]) -> bool {
    let Some((device, leaf)) = topics::parse(topic) else { return false };
    if device != device_id {
        return false;
    }
    let text = String::from_utf8_lossy(payload);
    match leaf {
        "commands" => {
            eprintln!("sphere-attestd: command: {}", text.chars().take(200).collect::<String>());
            let command: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
            command.get("command").and_then(|c| c.as_str()) == Some("attest")
        }
        // Kept on the data partition for the daemons that act on them (the updater reads the
        // notification; config is the cloud's view of this device's settings).
        "config" | "updates" => {
            let name = if leaf == "config" { "cloud-config.json" } else { "update-notification.json" };
            let path = config.state_dir.join(name);
            match write_atomic(&path, payload, 0o644) {
                Ok(()) => eprintln!("sphere-attestd: {leaf} received ({} bytes) -> {}", payload.len(), path.display()),
                Err(e) => eprintln!("sphere-attestd: storing {leaf}: {e}"),
            }
            false
        }
        _ => false,
    }
}
