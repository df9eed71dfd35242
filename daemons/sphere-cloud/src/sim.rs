//! A simulated device with software keys: the client half of the attestation protocol, for
//! the attack tests and `scripts/bench-cloud.sh`. It measures a fixed, plausible software
//! stack ([`Profile`]) so the matching reference values can be generated ([`reference_file`]).
//! A real device does the same with `sphere-attestd`.

use crate::reference::{ReferenceFile, ReferenceMeasurement, ReferencePolicy, SCHEMA};
use base64::Engine as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sphere_attestation::api::{
    ApiError, AttestationResult, CERTIFICATE_PATH, CertificateRequest, CertificateResponse, EVIDENCE_PATH,
    EvidenceSubmission, NONCE_PATH, NonceRequest, NonceResponse, certificate_request_message,
};
use sphere_attestation::{
    AppVersion, DeviceSigner, Digest, Ed25519Signer, EventLog, EvidenceClaims, P256Signer, PolicyHashes, Stage,
};
use std::sync::Arc;
use std::time::Duration;

/// A failed API call: an HTTP error status with the server's error body, or no answer.
#[derive(Debug, Clone)]
pub enum ApiFailure {
    Status { status: u16, error: ApiError },
    Transport(String),
}

impl ApiFailure {
    /// The server's error code, or `"transport"`.
    pub fn code(&self) -> &str {
        match self {
            ApiFailure::Status { error, .. } => &error.code,
            ApiFailure::Transport(_) => "transport",
        }
    }
    pub fn status(&self) -> u16 {
        match self {
            ApiFailure::Status { status, .. } => *status,
            ApiFailure::Transport(_) => 0,
        }
    }
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiFailure::Status { status, error } => write!(f, "HTTP {status} {}: {}", error.code, error.error),
            ApiFailure::Transport(m) => write!(f, "{m}"),
        }
    }
}

/// An HTTPS client for sphere-cloud's API (also what the `sphere` CLI does).
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl Client {
    /// `base` like `https://127.0.0.1:8443`; `ca_pem` the cloud CA; `token` for operator calls.
    pub fn new(base: &str, ca_pem: &str, token: Option<String>) -> Result<Client, String> {
        let tls = crate::tls::client_config(ca_pem, None)?;
        let agent = ureq::AgentBuilder::new()
            .tls_config(tls)
            .timeout(Duration::from_secs(30))
            .max_idle_connections_per_host(4)
            .build();
        Ok(Client { agent, base: base.trim_end_matches('/').to_owned(), token })
    }

    fn finish<R: DeserializeOwned>(response: Result<ureq::Response, ureq::Error>) -> Result<R, ApiFailure> {
        match response {
            Ok(ok) => ok.into_json::<R>().map_err(|e| ApiFailure::Transport(format!("reading response: {e}"))),
            Err(ureq::Error::Status(status, response)) => {
                let error = response.into_json::<ApiError>().unwrap_or(ApiError {
                    code: "unknown".into(),
                    error: format!("HTTP {status} without an error body"),
                });
                Err(ApiFailure::Status { status, error })
            }
            Err(other) => Err(ApiFailure::Transport(other.to_string())),
        }
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let request = self.agent.request(method, &format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.set("Authorization", &format!("Bearer {token}")),
            None => request,
        }
    }

    pub fn send<B: Serialize, R: DeserializeOwned>(&self, method: &str, path: &str, body: &B) -> Result<R, ApiFailure> {
        Self::finish(self.request(method, path).send_json(body))
    }

    pub fn get<R: DeserializeOwned>(&self, path: &str) -> Result<R, ApiFailure> {
        Self::finish(self.request("GET", path).call())
    }

    pub fn get_text(&self, path: &str) -> Result<String, ApiFailure> {
        match self.request("GET", path).call() {
            Ok(ok) => ok.into_string().map_err(|e| ApiFailure::Transport(e.to_string())),
            Err(e) => Self::finish::<String>(Err(e)),
        }
    }
}

/// The software a simulated device runs. Changing a field makes it measure something else.
#[derive(Clone, Debug)]
pub struct Profile {
    pub os_version: String,
    pub daemons: Vec<String>,
    pub apps: Vec<String>,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            os_version: "1.0.0".into(),
            daemons: vec!["sphere-appd".into(), "sphere-attestd".into(), "sphere-netd".into()],
            apps: vec!["hello-sphere".into()],
        }
    }
}

impl Profile {
    /// The event log a healthy device with this profile produces.
    pub fn event_log(&self) -> EventLog {
        let v = &self.os_version;
        let mut log = EventLog::new();
        log.measure(Stage::BootRecord, "initramfs", format!("initramfs {v}").as_bytes());
        log.measure(Stage::RootSlot, "rootfs", format!("rootfs {v}").as_bytes());
        log.measure(Stage::Init, "sphere-init", format!("sphere-init {v}").as_bytes());
        for daemon in &self.daemons {
            log.measure(Stage::Daemon, daemon, format!("{daemon} {v}").as_bytes());
        }
        for app in &self.apps {
            log.measure(Stage::App, app, format!("package {app}").as_bytes());
            log.measure(Stage::SandboxPolicy, app, format!("sandbox {app}").as_bytes());
            log.measure(Stage::FirewallPolicy, app, format!("firewall {app}").as_bytes());
        }
        log
    }
}

/// Reference values accepting exactly what `profile` measures.
pub fn reference_file(profile: &Profile) -> ReferenceFile {
    let log = profile.event_log();
    ReferenceFile {
        schema: SCHEMA.into(),
        os_versions: vec![profile.os_version.clone()],
        measurements: log
            .entries
            .iter()
            .map(|e| ReferenceMeasurement { stage: e.stage, component: e.component.clone(), digests: vec![e.digest] })
            .collect(),
        policies: profile
            .apps
            .iter()
            .map(|app| ReferencePolicy {
                app_id: app.clone(),
                sandbox: vec![Digest::of(format!("sandbox {app}").as_bytes())],
                firewall: vec![Digest::of(format!("firewall {app}").as_bytes())],
            })
            .collect(),
    }
}

/// A simulated device: identity key, TLS key + CSR, and a profile.
pub struct SimDevice {
    pub signer: Arc<dyn DeviceSigner + Send + Sync>,
    pub id: String,
    pub profile: Profile,
    pub tls_key_pem: String,
    pub csr_pem: String,
}

impl SimDevice {
    /// A new device; `p256` chooses the TPM's algorithm instead of Ed25519.
    pub fn new(p256: bool, profile: Profile) -> Result<SimDevice, String> {
        let signer: Arc<dyn DeviceSigner + Send + Sync> =
            if p256 { Arc::new(P256Signer::generate()) } else { Arc::new(Ed25519Signer::generate()) };
        let id = signer.public_key().device_id();
        let tls_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(rcgen::DnType::CommonName, id.clone());
        let csr_pem = params.serialize_request(&tls_key).and_then(|csr| csr.pem()).map_err(|e| e.to_string())?;
        Ok(SimDevice { signer, id, profile, tls_key_pem: tls_key.serialize_pem(), csr_pem })
    }

    pub fn public_key_pem(&self) -> String {
        self.signer.public_key().to_spki_pem()
    }

    /// Honest claims over `log` for `nonce`.
    pub fn claims(&self, nonce: &[u8], log: &EventLog, csr: Option<&str>) -> EvidenceClaims {
        let digest_of = |stage: Stage, app: &str| {
            log.entries.iter().find(|e| e.stage == stage && e.component == app).map(|e| e.digest).unwrap_or_default()
        };
        EvidenceClaims {
            nonce: nonce.to_vec(),
            ueid: self.signer.public_key().ueid(),
            issued_at: crate::service::now(),
            measurements: log.replay(),
            event_log_digest: log.digest(),
            os_version: self.profile.os_version.clone(),
            apps: self
                .profile
                .apps
                .iter()
                .map(|app| AppVersion {
                    app_id: app.clone(),
                    version: "1.0".into(),
                    package_digest: digest_of(Stage::App, app),
                })
                .collect(),
            policy_hashes: self
                .profile
                .apps
                .iter()
                .map(|app| PolicyHashes {
                    app_id: app.clone(),
                    sandbox: digest_of(Stage::SandboxPolicy, app),
                    firewall: digest_of(Stage::FirewallPolicy, app),
                })
                .collect(),
            tpm_quote: None,
            csr_digest: csr.map(|c| Digest::of(c.as_bytes())),
        }
    }

    /// Sign `claims` and package them with `log` (and the CSR) for submission.
    pub fn submission(
        &self,
        claims: &EvidenceClaims,
        log: EventLog,
        csr: Option<&str>,
    ) -> Result<EvidenceSubmission, String> {
        let token = claims.sign(self.signer.as_ref()).map_err(|e| e.to_string())?;
        Ok(EvidenceSubmission {
            token: base64::engine::general_purpose::STANDARD.encode(token),
            event_log: log,
            csr_pem: csr.map(str::to_owned),
        })
    }

    pub fn nonce(&self, client: &Client) -> Result<Vec<u8>, ApiFailure> {
        let response: NonceResponse = client.send("POST", NONCE_PATH, &NonceRequest { device_id: self.id.clone() })?;
        hex::decode(&response.nonce).map_err(|e| ApiFailure::Transport(format!("nonce is not hex: {e}")))
    }

    pub fn submit(&self, client: &Client, submission: &EvidenceSubmission) -> Result<AttestationResult, ApiFailure> {
        client.send("POST", EVIDENCE_PATH, submission)
    }

    /// The whole honest exchange: nonce, evidence with CSR, certificate.
    pub fn attest(&self, client: &Client) -> Result<AttestationResult, ApiFailure> {
        let nonce = self.nonce(client)?;
        let log = self.profile.event_log();
        let claims = self.claims(&nonce, &log, Some(&self.csr_pem));
        let submission = self.submission(&claims, log, Some(&self.csr_pem)).map_err(ApiFailure::Transport)?;
        self.submit(client, &submission)
    }

    /// Ask for a certificate from the latest attestation (signed certificate request).
    pub fn certificate(&self, client: &Client) -> Result<CertificateResponse, ApiFailure> {
        let signature = self
            .signer
            .sign(&certificate_request_message(&self.csr_pem))
            .map_err(|e| ApiFailure::Transport(e.to_string()))?;
        client.send(
            "POST",
            CERTIFICATE_PATH,
            &CertificateRequest {
                device_id: self.id.clone(),
                csr_pem: self.csr_pem.clone(),
                signature: base64::engine::general_purpose::STANDARD.encode(signature),
            },
        )
    }

    /// Register with the operator API (`client` must carry the operator token).
    pub fn register(&self, client: &Client, group: Option<&str>) -> Result<crate::service::DeviceInfo, ApiFailure> {
        client.send(
            "POST",
            "/v1/devices",
            &serde_json::json!({"public_key_pem": self.public_key_pem(), "group": group, "description": "simulated"}),
        )
    }
}
