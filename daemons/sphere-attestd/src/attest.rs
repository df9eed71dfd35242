//! One attestation round with sphere-cloud: nonce → evidence (+ CSR) → result and certificate.
//!
//! Every certificate the device holds is backed by an attestation made just before it was
//! issued: renewal is simply the next round (see `sphere_attestation::api`).

use std::sync::Arc;

use base64::Engine as _;
use sphere_attestation::api::{
    self, ApiError, AttestationResult, CertificateResponse, EvidenceSubmission, NonceRequest, NonceResponse,
};

use crate::config::Config;
use crate::evidence;
use crate::fsutil::write_atomic;
use crate::http::{self, Endpoint};
use crate::keystore::IdentityKey;
use crate::measure::MeasuredState;

#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    #[error("no cloud configured (cloud.url or sphere.cloud=)")]
    NoCloud,
    #[error(transparent)]
    Http(#[from] http::HttpError),
    #[error("sphere-cloud refused ({status}, {code}): {message}")]
    Refused { status: u16, code: String, message: String },
    #[error("sphere-cloud sent an unreadable answer: {0}")]
    BadAnswer(String),
    #[error("{0}")]
    Local(String),
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

async fn call<T: serde::de::DeserializeOwned>(
    endpoint: &Endpoint,
    tls: Option<&Arc<rustls::ClientConfig>>,
    path: &str,
    body: &impl serde::Serialize,
) -> Result<T, AttestError> {
    let body = serde_json::to_vec(body).map_err(|e| AttestError::Local(e.to_string()))?;
    let response = http::post_json(endpoint, tls, path, &body).await?;
    if !(200..300).contains(&response.status) {
        let error: ApiError = serde_json::from_slice(&response.body).unwrap_or_else(|_| ApiError {
            code: "unknown".into(),
            error: String::from_utf8_lossy(&response.body).chars().take(200).collect(),
        });
        return Err(AttestError::Refused { status: response.status, code: error.code, message: error.error });
    }
    serde_json::from_slice(&response.body).map_err(|e| AttestError::BadAnswer(format!("{path}: {e}")))
}

/// TLS client config for an https cloud URL (server verification with the configured CA).
pub fn cloud_tls(config: &Config) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    let Some(ca) = &config.cloud.ca_file else { return Ok(None) };
    let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    let roots = crate::mqtt::root_store(&pem)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(Arc::new(tls)))
}

/// Run one round. With `want_certificate` a CSR goes along and a passed result carries the
/// new certificate, which is stored before returning.
pub async fn attest_once(
    config: &Config,
    key: &IdentityKey,
    state: &MeasuredState,
    want_certificate: bool,
) -> Result<AttestationResult, AttestError> {
    if config.cloud.url.is_empty() {
        return Err(AttestError::NoCloud);
    }
    let endpoint = Endpoint::parse(&config.cloud.url)?;
    let tls = cloud_tls(config).map_err(AttestError::Local)?;
    let device_id = key.device_id().map_err(|e| AttestError::Local(e.to_string()))?;
    let nonce: NonceResponse =
        call(&endpoint, tls.as_ref(), api::NONCE_PATH, &NonceRequest { device_id: device_id.clone() }).await?;
    let nonce_bytes = hex::decode(&nonce.nonce).map_err(|e| AttestError::BadAnswer(format!("nonce: {e}")))?;
    let csr =
        if want_certificate { Some(evidence::certificate_request(key).map_err(AttestError::Local)?) } else { None };
    let token = evidence::make_token(key, state, &nonce_bytes, csr.as_deref(), now()).map_err(AttestError::Local)?;
    let submission = EvidenceSubmission {
        token: base64::engine::general_purpose::STANDARD.encode(&token),
        event_log: state.log.clone(),
        csr_pem: csr,
    };
    let result: AttestationResult = call(&endpoint, tls.as_ref(), api::EVIDENCE_PATH, &submission).await?;
    if result.device_id != device_id {
        return Err(AttestError::BadAnswer(format!("result is for device {}, not us", result.device_id)));
    }
    if let Some(certificate) = &result.certificate {
        store_certificate(config, key, certificate).map_err(AttestError::Local)?;
    }
    Ok(result)
}

/// Check the certificate is for our key, then store it (and its CA) atomically.
pub fn store_certificate(config: &Config, key: &IdentityKey, cert: &CertificateResponse) -> Result<(), String> {
    let der = crate::mqtt::first_cert(cert.certificate_pem.as_bytes())?;
    let spki = key.public_spki_der().map_err(|e| e.to_string())?;
    // The SPKI DER appears verbatim inside the certificate's TBSCertificate.
    if !der.as_ref().windows(spki.len()).any(|w| w == spki.as_slice()) {
        return Err("the cloud issued a certificate for another key".into());
    }
    let io = |what: &str, e: std::io::Error| format!("storing {what}: {e}");
    write_atomic(&config.cert_path(), cert.certificate_pem.as_bytes(), 0o644).map_err(|e| io("the certificate", e))?;
    write_atomic(&config.ca_path(), cert.ca_certificate_pem.as_bytes(), 0o644).map_err(|e| io("the CA", e))?;
    let json = serde_json::to_vec_pretty(cert).map_err(|e| e.to_string())?;
    write_atomic(&config.cert_info_path(), &json, 0o644).map_err(|e| io("the certificate info", e))?;
    Ok(())
}

/// The stored certificate, if any.
pub fn load_certificate(config: &Config) -> Option<CertificateResponse> {
    let bytes = std::fs::read(config.cert_info_path()).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// When to renew: after `renew_fraction` of the lifetime (and at least a minute before expiry).
pub fn renew_at(config: &Config, cert: &CertificateResponse) -> i64 {
    let lifetime = (cert.not_after - cert.not_before).max(0);
    let fraction = config.renew_fraction.clamp(0.1, 0.95);
    let at = cert.not_before + (lifetime as f64 * fraction) as i64;
    at.min(cert.not_after - 60)
}
