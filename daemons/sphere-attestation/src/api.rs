//! sphere-cloud's device-facing HTTP API (JSON over HTTPS) and the MQTT conventions.
//!
//! The attestation exchange is three steps, each a `POST` with a JSON body:
//!
//! 1. [`NONCE_PATH`]: [`NonceRequest`] → [`NonceResponse`]. The nonce is single-use and
//!    expires (default 60 s).
//! 2. The device builds its [`crate::EventLog`], signs an [`crate::EvidenceClaims`] carrying
//!    the nonce and, when it wants a certificate, the SHA-256 of its CSR
//!    ([`crate::EvidenceClaims::csr_digest`]), so the CSR cannot be swapped in transit.
//! 3. [`EVIDENCE_PATH`]: [`EvidenceSubmission`] → [`AttestationResult`], which carries the
//!    short-lived certificate ([`CertificateResponse`]) when the evidence passed and a CSR was
//!    sent. Renewal is the same exchange again before `not_after`: every certificate is backed
//!    by a fresh attestation.
//!
//! [`CERTIFICATE_PATH`] re-issues a certificate from the device's *latest* attestation (if it
//! passed and is recent) for a CSR signed by the device key ([`CertificateRequest`]); it exists
//! for devices that lost the evidence response. Errors are [`ApiError`] with a 4xx/5xx status.
//!
//! Device ids are the 64-hex-digit form of [`crate::DevicePublicKey::device_id`].

use crate::eventlog::EventLog;
use serde::{Deserialize, Serialize};

/// `POST`: ask for a nonce.
pub const NONCE_PATH: &str = "/v1/attestation/nonce";
/// `POST`: submit evidence.
pub const EVIDENCE_PATH: &str = "/v1/attestation/evidence";
/// `POST`: certificate from the latest (passed, recent) attestation.
pub const CERTIFICATE_PATH: &str = "/v1/attestation/certificate";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NonceRequest {
    pub device_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NonceResponse {
    /// Hex nonce to put in `eat_nonce`.
    pub nonce: String,
    /// Unix seconds after which the cloud refuses evidence carrying it.
    pub expires_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceSubmission {
    /// The COSE_Sign1 EAT, standard base64.
    pub token: String,
    /// The event log the token's measurements and event-log digest were computed from.
    pub event_log: EventLog,
    /// PEM PKCS#10 CSR for the device's TLS client key; its SHA-256 (of these exact PEM bytes)
    /// must be the token's `csr_digest`. Omit to attest without getting a certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr_pem: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationResult {
    pub attestation_id: i64,
    pub device_id: String,
    pub passed: bool,
    /// Why the evidence failed (empty when it passed).
    pub reasons: Vec<String>,
    /// Present when the evidence passed and a CSR was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateResponse>,
}

/// The message a device signs to ask [`CERTIFICATE_PATH`] for a certificate.
pub fn certificate_request_message(csr_pem: &str) -> Vec<u8> {
    let mut message = b"opensphere-certificate-request-v1\0".to_vec();
    message.extend_from_slice(csr_pem.as_bytes());
    message
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateRequest {
    pub device_id: String,
    pub csr_pem: String,
    /// Base64 signature by the device key over [`certificate_request_message`].
    pub signature: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateResponse {
    /// The device's client certificate (subject CN = device id).
    pub certificate_pem: String,
    /// The issuing CA, to verify the chain and to pin.
    pub ca_certificate_pem: String,
    /// Serial number, hex.
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// Error body of every non-2xx response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// A stable machine-readable code, e.g. `nonce-expired`, `unknown-device`.
    pub code: String,
    /// What went wrong, for people.
    pub error: String,
}

/// What an error report is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    Crash,
    SandboxViolation,
    FirewallViolation,
    Other,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Crash => "crash",
            ErrorKind::SandboxViolation => "sandbox-violation",
            ErrorKind::FirewallViolation => "firewall-violation",
            ErrorKind::Other => "other",
        }
    }
}

/// An error report, published as JSON on [`topics::errors`]. Devices queue them on disk while
/// offline, so `occurred_at` (device clock) can be much older than the arrival time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    pub kind: ErrorKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// How many events this report stands for (violation counters are aggregated).
    #[serde(default = "one")]
    pub count: u64,
    /// Free text: exit status, signal, the denied syscall or address.
    #[serde(default)]
    pub detail: String,
    /// Unix seconds on the device's clock.
    pub occurred_at: i64,
}

fn one() -> u64 {
    1
}

/// MQTT topic names. Everything of one device is under `sphere/devices/<device-id>/`, and the
/// broker ACL lets a client whose certificate CN is `<device-id>` publish and subscribe there
/// and nowhere else (mosquitto: `pattern readwrite sphere/devices/%u/#` with
/// `use_identity_as_username true`).
pub mod topics {
    /// Prefix of every device topic.
    pub const PREFIX: &str = "sphere/devices";

    /// Device → cloud: telemetry (JSON, free-form).
    pub fn telemetry(device_id: &str) -> String {
        format!("{PREFIX}/{device_id}/telemetry")
    }
    /// Device → cloud: [`super::ErrorReport`] JSON.
    pub fn errors(device_id: &str) -> String {
        format!("{PREFIX}/{device_id}/errors")
    }
    /// Cloud → device: commands.
    pub fn commands(device_id: &str) -> String {
        format!("{PREFIX}/{device_id}/commands")
    }
    /// Cloud → device: configuration (retained).
    pub fn config(device_id: &str) -> String {
        format!("{PREFIX}/{device_id}/config")
    }
    /// Cloud → device: update notifications (retained: the release the device's group runs).
    pub fn updates(device_id: &str) -> String {
        format!("{PREFIX}/{device_id}/updates")
    }
    /// The device id and leaf name of a device topic, if `topic` is one.
    pub fn parse(topic: &str) -> Option<(&str, &str)> {
        let rest = topic.strip_prefix(PREFIX)?.strip_prefix('/')?;
        let (device, leaf) = rest.split_once('/')?;
        (!device.is_empty() && !leaf.contains('/')).then_some((device, leaf))
    }
}

/// The operator API's response types (`/v1/devices`, `/v1/groups`, `/v1/errors`, …), shared by
/// sphere-cloud and the `sphere` CLI. Documented in `docs/openapi/sphere-cloud.yaml`.
pub mod operator {
    use super::ErrorReport;
    use serde::{Deserialize, Serialize};

    /// What the operator API shows about a device.
    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct DeviceInfo {
        pub id: String,
        pub algorithm: String,
        pub public_key_pem: String,
        pub group: Option<String>,
        pub description: String,
        pub created_at: i64,
        pub revoked_at: Option<i64>,
        pub last_attestation_id: Option<i64>,
        pub last_attestation_passed: Option<bool>,
        pub last_attestation_at: Option<i64>,
        pub os_version: Option<String>,
        pub last_telemetry: Option<serde_json::Value>,
        pub last_telemetry_at: Option<i64>,
    }

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct AttestationRecord {
        pub id: i64,
        pub device_id: String,
        pub at: i64,
        pub passed: bool,
        pub reasons: Vec<String>,
        pub os_version: Option<String>,
        pub claims: Option<serde_json::Value>,
    }

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct CertificateRecord {
        pub serial: String,
        pub device_id: String,
        pub attestation_id: Option<i64>,
        pub not_before: i64,
        pub not_after: i64,
        pub revoked_at: Option<i64>,
        pub certificate_pem: String,
    }

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct GroupInfo {
        pub name: String,
        pub description: String,
        pub release: Option<String>,
        pub devices: i64,
    }

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct StoredErrorReport {
        pub id: i64,
        pub device_id: String,
        pub received_at: i64,
        #[serde(flatten)]
        pub report: ErrorReport,
    }
}
