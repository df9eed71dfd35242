//! The cloud's operations, independent of HTTP and MQTT: registry, nonces, attestation,
//! certificates, revocation, groups, error reports. Every function is one load → decide →
//! persist step, and every refusal is a [`ServiceError`] with a stable code.

use crate::ca::{Ca, Issued};
use crate::reference::ReferenceValues;
use crate::store::{Row, Store};
use crate::verifier;
use base64::Engine as _;
use serde::Deserialize;
pub use sphere_attestation::api::operator::{
    AttestationRecord, CertificateRecord, DeviceInfo, GroupInfo, StoredErrorReport,
};
use sphere_attestation::api::{
    AttestationResult, CertificateRequest, CertificateResponse, ErrorReport, EvidenceSubmission, NonceResponse,
    certificate_request_message,
};
use sphere_attestation::{DevicePublicKey, eat};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Tunables, with the defaults the issue asks for.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long a nonce may be used (default 60 s).
    pub nonce_ttl: Duration,
    /// Device certificate lifetime (default 24 h).
    pub certificate_lifetime: Duration,
    /// How recent a passed attestation must be for [`Cloud::certificate_from_latest`].
    pub attestation_validity: Duration,
    /// Refuse evidence without a TPM quote (a fleet with no file-key devices).
    pub require_tpm_quote: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            nonce_ttl: Duration::from_secs(60),
            certificate_lifetime: Duration::from_secs(24 * 3600),
            attestation_validity: Duration::from_secs(3600),
            require_tpm_quote: false,
        }
    }
}

/// A refusal or failure, mapped to an HTTP status by the API layer.
#[derive(Debug, Clone)]
pub struct ServiceError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ServiceError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ServiceError { status, code, message: message.into() }
    }
    fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(500, "internal", message.to_string())
    }
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl From<crate::store::StoreError> for ServiceError {
    fn from(e: crate::store::StoreError) -> Self {
        ServiceError::internal(e)
    }
}
impl From<crate::ca::CaError> for ServiceError {
    fn from(e: crate::ca::CaError) -> Self {
        match e {
            crate::ca::CaError::BadCsr(m) => ServiceError::new(400, "bad-csr", m),
            other => ServiceError::internal(other),
        }
    }
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

const DEVICE_COLUMNS: &str = "id, algorithm, public_key_pem, group_name, description, created_at, \
    revoked_at, last_attestation_id, last_attestation_passed, last_attestation_at, os_version, \
    last_telemetry, last_telemetry_at";

fn device_from_row(r: &Row) -> DeviceInfo {
    DeviceInfo {
        id: r.text_or_empty(0),
        algorithm: r.text_or_empty(1),
        public_key_pem: r.text_or_empty(2),
        group: r.text(3),
        description: r.text_or_empty(4),
        created_at: r.int(5).unwrap_or(0),
        revoked_at: r.int(6),
        last_attestation_id: r.int(7),
        last_attestation_passed: r.int(8).map(|v| v != 0),
        last_attestation_at: r.int(9),
        os_version: r.text(10),
        last_telemetry: r.text(11).and_then(|t| serde_json::from_str(&t).ok()),
        last_telemetry_at: r.int(12),
    }
}

/// Filter for [`Cloud::query_errors`].
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ErrorQuery {
    pub device: Option<String>,
    pub kind: Option<String>,
    pub app: Option<String>,
    /// Only reports received at or after this Unix time.
    pub since: Option<i64>,
    pub limit: Option<i64>,
}

/// Called when a group's release changes, so the MQTT side can notify its devices.
pub type ReleaseListener = Arc<dyn Fn(Vec<String>, Option<String>) + Send + Sync>;

pub struct Cloud {
    pub store: Store,
    pub ca: Ca,
    pub settings: Settings,
    pub data_dir: PathBuf,
    refs: RwLock<Arc<ReferenceValues>>,
    crl_lock: tokio::sync::Mutex<()>,
    release_listener: RwLock<Option<ReleaseListener>>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn valid_device_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Cloud {
    pub fn new(store: Store, ca: Ca, settings: Settings, data_dir: PathBuf, refs: ReferenceValues) -> Self {
        Cloud {
            store,
            ca,
            settings,
            data_dir,
            refs: RwLock::new(Arc::new(refs)),
            crl_lock: tokio::sync::Mutex::new(()),
            release_listener: RwLock::new(None),
        }
    }

    pub fn reference_values(&self) -> Arc<ReferenceValues> {
        self.refs.read().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn set_reference_values(&self, refs: ReferenceValues) {
        if let Ok(mut slot) = self.refs.write() {
            *slot = Arc::new(refs);
        }
    }

    pub fn set_release_listener(&self, listener: ReleaseListener) {
        if let Ok(mut slot) = self.release_listener.write() {
            *slot = Some(listener);
        }
    }

    // ---- registry ----

    /// Register a device by its public key (SPKI PEM, Ed25519 or P-256). The id is derived
    /// from the key, so registering the same key twice is refused rather than duplicated.
    pub async fn register_device(
        &self,
        public_key_pem: &str,
        group: Option<&str>,
        description: &str,
    ) -> Result<DeviceInfo> {
        let key = DevicePublicKey::from_spki_pem(public_key_pem)
            .map_err(|e| ServiceError::new(400, "bad-public-key", e.to_string()))?;
        if let Some(group) = group {
            self.group(group).await?;
        }
        let id = key.device_id();
        if self.device(&id).await.is_ok() {
            return Err(ServiceError::new(409, "device-exists", format!("device {id} is already registered")));
        }
        self.store
            .execute(
                "INSERT INTO devices (id, public_key_pem, algorithm, group_name, description, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                vec![
                    id.clone().into(),
                    key.to_spki_pem().into(),
                    key.algorithm().to_string().into(),
                    group.into(),
                    description.into(),
                    now().into(),
                ],
            )
            .await?;
        self.device(&id).await
    }

    pub async fn device(&self, id: &str) -> Result<DeviceInfo> {
        let row = self
            .store
            .query_one(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1"), vec![id.into()])
            .await?
            .ok_or_else(|| ServiceError::new(404, "unknown-device", format!("no device {id} is registered")))?;
        Ok(device_from_row(&row))
    }

    pub async fn list_devices(&self, group: Option<&str>) -> Result<Vec<DeviceInfo>> {
        let rows = match group {
            Some(g) => {
                self.store
                    .query(
                        &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE group_name = $1 ORDER BY id"),
                        vec![g.into()],
                    )
                    .await?
            }
            None => self.store.query(&format!("SELECT {DEVICE_COLUMNS} FROM devices ORDER BY id"), vec![]).await?,
        };
        Ok(rows.iter().map(device_from_row).collect())
    }

    /// Revoke a device: it gets no more nonces or certificates and all its certificates are
    /// revoked (CRL rewritten).
    pub async fn revoke_device(&self, id: &str) -> Result<DeviceInfo> {
        self.device(id).await?;
        let at = now();
        self.store
            .execute(
                "UPDATE devices SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                vec![at.into(), id.into()],
            )
            .await?;
        self.store
            .execute(
                "UPDATE certificates SET revoked_at = $1 WHERE device_id = $2 AND revoked_at IS NULL",
                vec![at.into(), id.into()],
            )
            .await?;
        self.write_crl().await?;
        self.device(id).await
    }

    fn device_key(device: &DeviceInfo) -> Result<DevicePublicKey> {
        DevicePublicKey::from_spki_pem(&device.public_key_pem).map_err(ServiceError::internal)
    }

    async fn active_device(&self, id: &str) -> Result<DeviceInfo> {
        let device = self.device(id).await?;
        if device.revoked_at.is_some() {
            return Err(ServiceError::new(403, "device-revoked", format!("device {id} is revoked")));
        }
        Ok(device)
    }

    // ---- attestation ----

    pub async fn new_nonce(&self, device_id: &str) -> Result<NonceResponse> {
        if !valid_device_id(device_id) {
            return Err(ServiceError::new(400, "bad-device-id", "device ids are 64 lowercase hex digits"));
        }
        self.active_device(device_id).await?;
        use rand_core::RngCore as _;
        let mut bytes = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut bytes);
        let nonce = hex::encode(bytes);
        let expires_at = now() + self.settings.nonce_ttl.as_secs() as i64;
        self.store
            .execute(
                "INSERT INTO nonces (nonce, device_id, expires_at) VALUES ($1, $2, $3)",
                vec![nonce.clone().into(), device_id.into(), expires_at.into()],
            )
            .await?;
        Ok(NonceResponse { nonce, expires_at })
    }

    /// Forget nonces that expired (they would be refused anyway; this bounds the table).
    pub async fn purge_nonces(&self) -> Result<u64> {
        Ok(self.store.execute("DELETE FROM nonces WHERE expires_at < $1", vec![now().into()]).await?)
    }

    /// Verify evidence. Failures that prove nothing about the device (unknown device, bad
    /// signature, unknown/replayed/expired nonce) are refused with an error and *not*
    /// recorded: otherwise anyone could make a healthy device's latest attestation "failed".
    /// Signed evidence of a bad state is recorded as a failed attestation and answered 200
    /// with `passed: false` and the reasons.
    pub async fn submit_evidence(&self, submission: &EvidenceSubmission) -> Result<AttestationResult> {
        let token = base64::engine::general_purpose::STANDARD
            .decode(submission.token.trim())
            .map_err(|_| ServiceError::new(400, "bad-token", "token is not base64"))?;
        let claimed = eat::claimed_device_id(&token).map_err(|e| ServiceError::new(400, "bad-token", e.to_string()))?;
        let device = self.active_device(&claimed).await?;
        let key = Self::device_key(&device)?;
        let verified = eat::verify(&token, &key).map_err(|e| match e {
            sphere_attestation::Error::Malformed(m) => ServiceError::new(400, "bad-token", m),
            other => ServiceError::new(401, "bad-signature", other.to_string()),
        })?;
        let claims = verified.claims;
        // Single use: DELETE … RETURNING consumes the nonce atomically.
        let nonce_hex = hex::encode(&claims.nonce);
        let consumed = self
            .store
            .query_one(
                "DELETE FROM nonces WHERE nonce = $1 AND device_id = $2 RETURNING expires_at",
                vec![nonce_hex.into(), device.id.clone().into()],
            )
            .await?;
        match consumed.and_then(|r| r.int(0)) {
            None => {
                return Err(ServiceError::new(
                    409,
                    "nonce-unknown-or-used",
                    "the nonce was never issued to this device or was already used (replay)",
                ));
            }
            Some(expires_at) if expires_at < now() => {
                return Err(ServiceError::new(401, "nonce-expired", "the nonce has expired; ask for a new one"));
            }
            Some(_) => {}
        }
        let refs = self.reference_values();
        let mut appraisal = verifier::appraise(&claims, &submission.event_log, &refs, submission.csr_pem.as_deref());
        appraisal.reasons.extend(verifier::appraise_tpm_quote(&claims, &key, self.settings.require_tpm_quote));
        let at = now();
        let claims_json = serde_json::to_string(&claims).unwrap_or_default();
        let reasons_json = serde_json::to_string(&appraisal.reasons).unwrap_or_default();
        let row = self
            .store
            .query_one(
                "INSERT INTO attestations (device_id, at, passed, reasons, os_version, claims) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                vec![
                    device.id.clone().into(),
                    at.into(),
                    appraisal.passed().into(),
                    reasons_json.into(),
                    claims.os_version.clone().into(),
                    claims_json.into(),
                ],
            )
            .await?;
        let attestation_id =
            row.and_then(|r| r.int(0)).ok_or_else(|| ServiceError::internal("attestation insert returned no id"))?;
        self.store
            .execute(
                "UPDATE devices SET last_attestation_id = $1, last_attestation_passed = $2, \
                 last_attestation_at = $3, os_version = $4 WHERE id = $5",
                vec![
                    attestation_id.into(),
                    appraisal.passed().into(),
                    at.into(),
                    claims.os_version.clone().into(),
                    device.id.clone().into(),
                ],
            )
            .await?;
        let certificate = match (&submission.csr_pem, appraisal.passed()) {
            (Some(csr), true) => Some(self.issue(&device.id, csr, Some(attestation_id)).await?),
            _ => None,
        };
        Ok(AttestationResult {
            attestation_id,
            device_id: device.id,
            passed: appraisal.passed(),
            reasons: appraisal.reasons,
            certificate,
        })
    }

    async fn issue(&self, device_id: &str, csr_pem: &str, attestation_id: Option<i64>) -> Result<CertificateResponse> {
        let issued: Issued = self.ca.issue_device(csr_pem, device_id, self.settings.certificate_lifetime)?;
        self.store
            .execute(
                "INSERT INTO certificates (serial, device_id, attestation_id, not_before, not_after, certificate_pem) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                vec![
                    issued.serial_hex.clone().into(),
                    device_id.into(),
                    attestation_id.into(),
                    issued.not_before.into(),
                    issued.not_after.into(),
                    issued.pem.clone().into(),
                ],
            )
            .await?;
        Ok(CertificateResponse {
            certificate_pem: issued.pem,
            ca_certificate_pem: self.ca.certificate_pem.clone(),
            serial: issued.serial_hex,
            not_before: issued.not_before,
            not_after: issued.not_after,
        })
    }

    /// Issue a certificate from the device's latest attestation, which must have passed and be
    /// recent; the CSR must be signed by the device key.
    pub async fn certificate_from_latest(&self, request: &CertificateRequest) -> Result<CertificateResponse> {
        let device = self.active_device(&request.device_id).await?;
        let key = Self::device_key(&device)?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(request.signature.trim())
            .map_err(|_| ServiceError::new(400, "bad-signature", "signature is not base64"))?;
        key.verify(&certificate_request_message(&request.csr_pem), &signature)
            .map_err(|_| ServiceError::new(401, "bad-signature", "the request is not signed by the device key"))?;
        match (device.last_attestation_passed, device.last_attestation_at) {
            (Some(true), Some(at)) if now() - at <= self.settings.attestation_validity.as_secs() as i64 => {}
            (Some(true), _) => {
                return Err(ServiceError::new(
                    403,
                    "attestation-stale",
                    "the latest attestation is too old; attest again",
                ));
            }
            (Some(false), _) => {
                return Err(ServiceError::new(403, "attestation-failed", "the device's latest attestation failed"));
            }
            (None, _) => {
                return Err(ServiceError::new(403, "not-attested", "the device has never attested"));
            }
        }
        self.issue(&device.id, &request.csr_pem, device.last_attestation_id).await
    }

    pub async fn attestations(&self, device_id: &str, limit: i64) -> Result<Vec<AttestationRecord>> {
        self.device(device_id).await?;
        let rows = self
            .store
            .query(
                "SELECT id, device_id, at, passed, reasons, os_version, claims FROM attestations \
                 WHERE device_id = $1 ORDER BY id DESC LIMIT $2",
                vec![device_id.into(), limit.clamp(1, 1000).into()],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| AttestationRecord {
                id: r.int(0).unwrap_or(0),
                device_id: r.text_or_empty(1),
                at: r.int(2).unwrap_or(0),
                passed: r.int(3) == Some(1),
                reasons: serde_json::from_str(&r.text_or_empty(4)).unwrap_or_default(),
                os_version: r.text(5),
                claims: r.text(6).and_then(|c| serde_json::from_str(&c).ok()),
            })
            .collect())
    }

    // ---- certificates ----

    pub async fn certificates(&self, device_id: &str) -> Result<Vec<CertificateRecord>> {
        self.device(device_id).await?;
        let rows = self
            .store
            .query(
                "SELECT serial, device_id, attestation_id, not_before, not_after, revoked_at, certificate_pem \
                 FROM certificates WHERE device_id = $1 ORDER BY not_before DESC, serial LIMIT 100",
                vec![device_id.into()],
            )
            .await?;
        Ok(rows.iter().map(certificate_from_row).collect())
    }

    pub async fn revoke_certificate(&self, serial: &str) -> Result<CertificateRecord> {
        let serial = serial.to_ascii_lowercase();
        let changed = self
            .store
            .execute(
                "UPDATE certificates SET revoked_at = $1 WHERE serial = $2 AND revoked_at IS NULL",
                vec![now().into(), serial.clone().into()],
            )
            .await?;
        let row = self
            .store
            .query_one(
                "SELECT serial, device_id, attestation_id, not_before, not_after, revoked_at, certificate_pem \
                 FROM certificates WHERE serial = $1",
                vec![serial.clone().into()],
            )
            .await?
            .ok_or_else(|| {
                ServiceError::new(404, "unknown-certificate", format!("no certificate with serial {serial}"))
            })?;
        if changed > 0 {
            self.write_crl().await?;
        }
        Ok(certificate_from_row(&row))
    }

    /// Rewrite `crl.pem` with every revoked certificate that has not expired yet (expired
    /// ones are refused for being expired; listing them would only grow the CRL).
    pub async fn write_crl(&self) -> Result<PathBuf> {
        let _guard = self.crl_lock.lock().await;
        let rows = self
            .store
            .query(
                "SELECT serial, revoked_at FROM certificates WHERE revoked_at IS NOT NULL AND not_after > $1 ORDER BY serial",
                vec![now().into()],
            )
            .await?;
        let revoked: Vec<(String, i64)> = rows.iter().map(|r| (r.text_or_empty(0), r.int(1).unwrap_or(0))).collect();
        let number = now().max(1) as u64; // monotonic enough: one CRL per second at most matters
        let pem = self.ca.crl_pem(&revoked, number, Duration::from_secs(7 * 24 * 3600))?;
        let path = self.data_dir.join("crl.pem");
        let tmp = self.data_dir.join("crl.pem.tmp");
        std::fs::write(&tmp, pem).map_err(ServiceError::internal)?;
        std::fs::rename(&tmp, &path).map_err(ServiceError::internal)?;
        Ok(path)
    }

    pub fn crl(&self) -> Result<String> {
        std::fs::read_to_string(self.data_dir.join("crl.pem")).map_err(ServiceError::internal)
    }

    // ---- groups and releases ----

    pub async fn create_group(&self, name: &str, description: &str, release: Option<&str>) -> Result<GroupInfo> {
        if !valid_name(name) {
            return Err(ServiceError::new(400, "bad-group-name", "group names are 1-64 of A-Z a-z 0-9 - _ ."));
        }
        if self.group(name).await.is_ok() {
            return Err(ServiceError::new(409, "group-exists", format!("group {name} exists")));
        }
        self.store
            .execute(
                "INSERT INTO device_groups (name, description, release_version, created_at) VALUES ($1, $2, $3, $4)",
                vec![name.into(), description.into(), release.into(), now().into()],
            )
            .await?;
        self.group(name).await
    }

    pub async fn group(&self, name: &str) -> Result<GroupInfo> {
        let row = self
            .store
            .query_one(
                "SELECT g.name, g.description, g.release_version, \
                 (SELECT COUNT(*) FROM devices d WHERE d.group_name = g.name) \
                 FROM device_groups g WHERE g.name = $1",
                vec![name.into()],
            )
            .await?
            .ok_or_else(|| ServiceError::new(404, "unknown-group", format!("no group {name}")))?;
        Ok(group_from_row(&row))
    }

    pub async fn list_groups(&self) -> Result<Vec<GroupInfo>> {
        let rows = self
            .store
            .query(
                "SELECT g.name, g.description, g.release_version, \
                 (SELECT COUNT(*) FROM devices d WHERE d.group_name = g.name) \
                 FROM device_groups g ORDER BY g.name",
                vec![],
            )
            .await?;
        Ok(rows.iter().map(group_from_row).collect())
    }

    /// Set the release a group should run and tell its devices (MQTT `updates` topic).
    pub async fn set_group_release(&self, name: &str, release: Option<&str>) -> Result<GroupInfo> {
        self.group(name).await?;
        self.store
            .execute("UPDATE device_groups SET release_version = $1 WHERE name = $2", vec![release.into(), name.into()])
            .await?;
        let devices = self.list_devices(Some(name)).await?;
        let listener = self.release_listener.read().ok().and_then(|l| l.clone());
        if let Some(listener) = listener {
            listener(devices.into_iter().map(|d| d.id).collect(), release.map(str::to_owned));
        }
        self.group(name).await
    }

    pub async fn assign_group(&self, device_id: &str, group: Option<&str>) -> Result<DeviceInfo> {
        self.device(device_id).await?;
        if let Some(g) = group {
            self.group(g).await?;
        }
        self.store
            .execute("UPDATE devices SET group_name = $1 WHERE id = $2", vec![group.into(), device_id.into()])
            .await?;
        self.device(device_id).await
    }

    /// The release a device should run (its group's), for the update repository.
    pub async fn release_for_device(&self, device_id: &str) -> Result<Option<String>> {
        let device = self.device(device_id).await?;
        match device.group {
            Some(g) => Ok(self.group(&g).await?.release),
            None => Ok(None),
        }
    }

    // ---- telemetry and error reports (arrive over MQTT) ----

    pub async fn store_telemetry(&self, device_id: &str, payload: &[u8]) -> Result<()> {
        let value: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| ServiceError::new(400, "bad-telemetry", e.to_string()))?;
        let changed = self
            .store
            .execute(
                "UPDATE devices SET last_telemetry = $1, last_telemetry_at = $2 WHERE id = $3",
                vec![value.to_string().into(), now().into(), device_id.into()],
            )
            .await?;
        if changed == 0 {
            return Err(ServiceError::new(404, "unknown-device", device_id.to_owned()));
        }
        Ok(())
    }

    pub async fn store_error_report(&self, device_id: &str, report: &ErrorReport) -> Result<i64> {
        self.device(device_id).await?;
        let row = self
            .store
            .query_one(
                "INSERT INTO error_reports (device_id, kind, app_id, count, detail, occurred_at, received_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                vec![
                    device_id.into(),
                    report.kind.as_str().into(),
                    report.app_id.clone().into(),
                    (report.count.min(i64::MAX as u64) as i64).into(),
                    report.detail.chars().take(4096).collect::<String>().into(),
                    report.occurred_at.into(),
                    now().into(),
                ],
            )
            .await?;
        row.and_then(|r| r.int(0)).ok_or_else(|| ServiceError::internal("error report insert returned no id"))
    }

    pub async fn query_errors(&self, q: &ErrorQuery) -> Result<Vec<StoredErrorReport>> {
        // One statement with optional filters (`$n IS NULL OR …`), the same on both engines.
        let rows = self
            .store
            .query(
                "SELECT id, device_id, kind, app_id, count, detail, occurred_at, received_at FROM error_reports \
                 WHERE (CAST($1 AS TEXT) IS NULL OR device_id = $1) AND (CAST($2 AS TEXT) IS NULL OR kind = $2) \
                 AND (CAST($3 AS TEXT) IS NULL OR app_id = $3) AND (CAST($4 AS BIGINT) IS NULL OR received_at >= $4) \
                 ORDER BY id DESC LIMIT $5",
                vec![
                    q.device.clone().into(),
                    q.kind.clone().into(),
                    q.app.clone().into(),
                    q.since.into(),
                    q.limit.unwrap_or(100).clamp(1, 10_000).into(),
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| StoredErrorReport {
                id: r.int(0).unwrap_or(0),
                device_id: r.text_or_empty(1),
                received_at: r.int(7).unwrap_or(0),
                report: ErrorReport {
                    kind: serde_json::from_value(serde_json::Value::String(r.text_or_empty(2)))
                        .unwrap_or(sphere_attestation::api::ErrorKind::Other),
                    app_id: r.text(3),
                    count: r.int(4).unwrap_or(0).max(0) as u64,
                    detail: r.text_or_empty(5),
                    occurred_at: r.int(6).unwrap_or(0),
                },
            })
            .collect())
    }
}

fn certificate_from_row(r: &Row) -> CertificateRecord {
    CertificateRecord {
        serial: r.text_or_empty(0),
        device_id: r.text_or_empty(1),
        attestation_id: r.int(2),
        not_before: r.int(3).unwrap_or(0),
        not_after: r.int(4).unwrap_or(0),
        revoked_at: r.int(5),
        certificate_pem: r.text_or_empty(6),
    }
}

fn group_from_row(r: &Row) -> GroupInfo {
    GroupInfo {
        name: r.text_or_empty(0),
        description: r.text_or_empty(1),
        release: r.text(2),
        devices: r.int(3).unwrap_or(0),
    }
}
