//! The device identity key: one ECDSA P-256 key (COSE ES256, X.509 ecdsa-with-SHA256) that
//! signs evidence and certificate requests and never leaves its keystore.
//!
//! Two backends:
//! - **TPM 2.0** (`Backend::Tpm`): the key is a primary object of the owner hierarchy created
//!   from a fixed template (see [`crate::tpm`]); its private part exists only inside the TPM, and
//!   the TPM also quotes the measurement PCRs. This is the backend to ship.
//! - **File** (`Backend::File`): for boards without a TPM. A PKCS#8 key file, root-owned, mode
//!   0600, on the data partition. WEAKER: anyone who gets root or reads the flash gets the
//!   identity, and there is no hardware quote, so the cloud can only trust the event log as far
//!   as it trusts the software that wrote it. Evidence says which backend signed it
//!   (`key_storage` in the token), so a cloud can refuse file-backed devices.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use sha2::{Digest, Sha256};

use crate::tpm::{PcrValues, Quote, Tpm, TpmError, TpmKey, TpmPath};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Tpm(#[from] TpmError),
    #[error("identity key file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("signing failed: {0}")]
    Sign(String),
}

/// Which keystore holds the identity key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    Tpm(TpmPath),
    File(PathBuf),
}

impl Backend {
    /// The name evidence carries: `tpm2` or `file` (the weaker one).
    pub fn storage_name(&self) -> &'static str {
        match self {
            Backend::Tpm(_) => "tpm2",
            Backend::File(_) => "file",
        }
    }
}

enum Inner {
    Tpm { tpm: Tpm, key: TpmKey },
    File { key: SigningKey },
}

/// The open identity key. Signing goes through a mutex: the TPM channel is one conversation.
pub struct IdentityKey {
    backend: Backend,
    public_sec1: Vec<u8>,
    inner: Mutex<Inner>,
}

impl IdentityKey {
    /// Open the key, creating it on first use (TPM: CreatePrimary is deterministic, so
    /// "creating" and "opening" are the same command; file: generated once, then kept).
    pub fn open(backend: &Backend) -> Result<IdentityKey, KeyError> {
        let (inner, public_sec1) = match backend {
            Backend::Tpm(path) => {
                let mut tpm = Tpm::open(path)?;
                let key = tpm.create_identity_key()?;
                let public = key.public_sec1.clone();
                (Inner::Tpm { tpm, key }, public)
            }
            Backend::File(path) => {
                let key = load_or_create_file_key(path)?;
                let public = key.verifying_key().to_encoded_point(false).as_bytes().to_vec();
                (Inner::File { key }, public)
            }
        };
        Ok(IdentityKey { backend: backend.clone(), public_sec1, inner: Mutex::new(inner) })
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// SEC1 uncompressed public point.
    pub fn public_sec1(&self) -> &[u8] {
        &self.public_sec1
    }

    /// SubjectPublicKeyInfo DER of the public key (what certificates and CSRs carry).
    pub fn public_spki_der(&self) -> Result<Vec<u8>, KeyError> {
        let key = p256::PublicKey::from_sec1_bytes(&self.public_sec1)
            .map_err(|e| KeyError::Sign(format!("identity public key is not a P-256 point: {e}")))?;
        key.to_public_key_der()
            .map(|der| der.as_bytes().to_vec())
            .map_err(|e| KeyError::Sign(format!("encoding the public key: {e}")))
    }

    /// The device id the cloud knows us by: hex SHA-256 of the public key's SPKI DER.
    pub fn device_id(&self) -> Result<String, KeyError> {
        Ok(hex::encode(Sha256::digest(self.public_spki_der()?)))
    }

    /// ECDSA P-256 signature over SHA-256(`message`), in fixed `r || s` form.
    pub fn sign(&self, message: &[u8]) -> Result<[u8; 64], KeyError> {
        let digest: [u8; 32] = Sha256::digest(message).into();
        self.sign_digest(&digest)
    }

    pub fn sign_digest(&self, digest: &[u8; 32]) -> Result<[u8; 64], KeyError> {
        let mut inner = self.inner.lock().map_err(|_| KeyError::Sign("key lock poisoned".into()))?;
        match &mut *inner {
            Inner::Tpm { tpm, key } => {
                let handle = key.handle;
                Ok(tpm.sign_digest(handle, digest)?.to_fixed())
            }
            Inner::File { key } => {
                let signature: Signature = key.sign_prehash(digest).map_err(|e| KeyError::Sign(e.to_string()))?;
                // Low-S form, as verifiers that reject malleable signatures want.
                let signature = signature.normalize_s().unwrap_or(signature);
                Ok(signature.to_bytes().into())
            }
        }
    }

    /// A TPM quote of `pcrs` over `qualifying_data`, or None with the file backend.
    pub fn quote(&self, qualifying_data: &[u8], pcrs: &[u32]) -> Result<Option<Quote>, KeyError> {
        let mut inner = self.inner.lock().map_err(|_| KeyError::Sign("key lock poisoned".into()))?;
        match &mut *inner {
            Inner::Tpm { tpm, key } => {
                let handle = key.handle;
                Ok(Some(tpm.quote(handle, qualifying_data, pcrs)?))
            }
            Inner::File { .. } => Ok(None),
        }
    }

    /// Extend a TPM PCR (no-op with the file backend: its event log stands alone).
    pub fn pcr_extend(&self, pcr: u32, digest: &[u8; 32]) -> Result<bool, KeyError> {
        let mut inner = self.inner.lock().map_err(|_| KeyError::Sign("key lock poisoned".into()))?;
        match &mut *inner {
            Inner::Tpm { tpm, .. } => {
                tpm.pcr_extend(pcr, digest)?;
                Ok(true)
            }
            Inner::File { .. } => Ok(false),
        }
    }

    /// Read TPM PCRs (None with the file backend).
    pub fn pcr_read(&self, pcrs: &[u32]) -> Result<Option<PcrValues>, KeyError> {
        let mut inner = self.inner.lock().map_err(|_| KeyError::Sign("key lock poisoned".into()))?;
        match &mut *inner {
            Inner::Tpm { tpm, .. } => Ok(Some(tpm.pcr_read(pcrs)?)),
            Inner::File { .. } => Ok(None),
        }
    }

    /// Random bytes from the TPM when there is one (else the kernel's RNG).
    pub fn random(&self, count: usize) -> Result<Vec<u8>, KeyError> {
        let mut inner = self.inner.lock().map_err(|_| KeyError::Sign("key lock poisoned".into()))?;
        let mut out = Vec::with_capacity(count);
        match &mut *inner {
            Inner::Tpm { tpm, .. } => {
                while out.len() < count {
                    let want = (count - out.len()).min(32) as u16;
                    let chunk = tpm.get_random(want)?;
                    if chunk.is_empty() {
                        return Err(KeyError::Sign("TPM returned no random bytes".into()));
                    }
                    out.extend_from_slice(&chunk);
                }
                out.truncate(count);
            }
            Inner::File { .. } => {
                out.resize(count, 0);
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut out);
            }
        }
        Ok(out)
    }
}

impl Drop for IdentityKey {
    fn drop(&mut self) {
        // With /dev/tpmrm0 the kernel flushes on close; a raw /dev/tpm0 or simulator does not.
        if let Ok(Inner::Tpm { tpm, key }) = self.inner.get_mut() {
            let _ = tpm.flush(key.handle);
        }
    }
}

/// DER-encode a fixed `r || s` ECDSA signature (X.509 and CSRs want DER).
pub fn signature_to_der(fixed: &[u8; 64]) -> Result<Vec<u8>, KeyError> {
    let signature = Signature::from_slice(fixed).map_err(|e| KeyError::Sign(e.to_string()))?;
    Ok(signature.to_der().as_bytes().to_vec())
}

fn file_error(path: &Path, reason: impl Into<String>) -> KeyError {
    KeyError::File { path: path.to_owned(), reason: reason.into() }
}

fn load_or_create_file_key(path: &Path) -> Result<SigningKey, KeyError> {
    match fs::symlink_metadata(path) {
        Ok(meta) => {
            // Refuse a key others could read or swap: it would not be an identity any more.
            if !meta.file_type().is_file() {
                return Err(file_error(path, "not a regular file"));
            }
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(file_error(
                    path,
                    format!("mode {:o} lets others read it; it must be 0600", meta.permissions().mode() & 0o777),
                ));
            }
            if meta.uid() != unsafe_geteuid() {
                return Err(file_error(path, format!("owned by uid {}, not by us", meta.uid())));
            }
            let pem = fs::read_to_string(path).map_err(|e| file_error(path, e.to_string()))?;
            SigningKey::from_pkcs8_pem(&pem).map_err(|e| file_error(path, format!("not a P-256 PKCS#8 key: {e}")))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SigningKey::random(&mut rand_core::OsRng);
            let pem =
                key.to_pkcs8_pem(LineEnding::LF).map_err(|e| file_error(path, format!("encoding the new key: {e}")))?;
            let dir = path.parent().ok_or_else(|| file_error(path, "no parent directory"))?;
            fs::create_dir_all(dir).map_err(|e| file_error(path, e.to_string()))?;
            // Written 0600 from the first byte (no chmod window), synced, then renamed into
            // place: a power cut leaves either no key or a whole one.
            let tmp = dir.join(format!(".identity.{}.tmp", std::process::id()));
            let _ = fs::remove_file(&tmp);
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| file_error(&tmp, e.to_string()))?;
            file.write_all(pem.as_bytes()).map_err(|e| file_error(&tmp, e.to_string()))?;
            file.sync_all().map_err(|e| file_error(&tmp, e.to_string()))?;
            drop(file);
            fs::rename(&tmp, path).map_err(|e| file_error(path, e.to_string()))?;
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(key)
        }
        Err(e) => Err(file_error(path, e.to_string())),
    }
}

fn unsafe_geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
