//! Evidence and certificate requests, signed inside the keystore.
//!
//! The token format is sphere-attestation's EAT (COSE_Sign1, ES256); this module only fills it
//! in: the cloud's nonce, the PCR values replayed from our event log, the log's digest, OS and
//! app versions, policy hashes, a TPM quote whose `extraData` is SHA-256(nonce), and the
//! digest of the CSR that travels with it.
//!
//! The CSR's key is the identity key itself: the TLS client key then lives in the same
//! keystore (in the TPM: never exportable), and rustls signs the TLS handshake through
//! [`TlsKey`].

use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use sphere_attestation::keys::{DevicePublicKey, DeviceSigner, SignatureAlgorithm};
use sphere_attestation::{Digest, EvidenceClaims, TpmQuote};

use crate::keystore::{IdentityKey, signature_to_der};
use crate::measure::MeasuredState;

/// The identity key as sphere-attestation's signing seam.
pub struct Signer<'a> {
    key: &'a IdentityKey,
    public: DevicePublicKey,
}

impl<'a> Signer<'a> {
    pub fn new(key: &'a IdentityKey) -> Result<Signer<'a>, String> {
        Ok(Signer { key, public: public_key(key)? })
    }
}

impl DeviceSigner for Signer<'_> {
    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::P256
    }
    fn public_key(&self) -> DevicePublicKey {
        self.public.clone()
    }
    fn sign(&self, message: &[u8]) -> sphere_attestation::Result<Vec<u8>> {
        self.key.sign(message).map(|sig| sig.to_vec()).map_err(|e| sphere_attestation::Error::Signing(e.to_string()))
    }
}

/// The public key in sphere-attestation's type.
pub fn public_key(key: &IdentityKey) -> Result<DevicePublicKey, String> {
    p256::ecdsa::VerifyingKey::from_sec1_bytes(key.public_sec1())
        .map(DevicePublicKey::P256)
        .map_err(|e| format!("the identity key is not a P-256 point: {e}"))
}

/// A PEM PKCS#10 CSR for the identity key (subject CN = device id), signed in the keystore.
pub fn certificate_request(key: &IdentityKey) -> Result<String, String> {
    let device_id = key.device_id().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, device_id);
    let remote = RemoteKey { key, sec1: key.public_sec1().to_vec() };
    let csr = params.serialize_request(&remote).map_err(|e| format!("building the CSR: {e}"))?;
    csr.pem().map_err(|e| format!("encoding the CSR: {e}"))
}

struct RemoteKey<'a> {
    key: &'a IdentityKey,
    sec1: Vec<u8>,
}

impl rcgen::PublicKeyData for RemoteKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.sec1
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for RemoteKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let fixed = self.key.sign(msg).map_err(|_| rcgen::Error::RemoteKeyError)?;
        signature_to_der(&fixed).map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

/// Build and sign the EAT for `nonce`. With a TPM the token carries a quote of the measured
/// PCRs over SHA-256(nonce), signed by the same key.
pub fn make_token(
    key: &IdentityKey,
    state: &MeasuredState,
    nonce: &[u8],
    csr_pem: Option<&str>,
    now: i64,
) -> Result<Vec<u8>, String> {
    let measurements = state.log.replay();
    let tpm_quote = if state.in_tpm {
        let pcrs: Vec<u32> = measurements.keys().map(|p| u32::from(*p)).collect();
        let qualifying: [u8; 32] = Sha256::digest(nonce).into();
        key.quote(&qualifying, &pcrs)
            .map_err(|e| format!("TPM quote: {e}"))?
            .map(|q| TpmQuote { attest: q.attest, signature: q.signature.to_fixed().to_vec() })
    } else {
        None
    };
    let signer = Signer::new(key)?;
    let claims = EvidenceClaims {
        nonce: nonce.to_vec(),
        ueid: signer.public.ueid(),
        issued_at: now,
        measurements,
        event_log_digest: state.log.digest(),
        os_version: state.os_version.clone(),
        apps: state.apps.clone(),
        policy_hashes: state.policies.clone(),
        tpm_quote,
        csr_digest: csr_pem.map(|pem| Digest::of(pem.as_bytes())),
    };
    claims.sign(&signer).map_err(|e| format!("signing the evidence: {e}"))
}

/// The identity key as a rustls client-authentication key (ECDSA P-256 / SHA-256, the only
/// scheme the key can do); the handshake signature is made in the keystore.
#[derive(Clone)]
pub struct TlsKey(pub Arc<IdentityKey>);

impl std::fmt::Debug for TlsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsKey(identity)")
    }
}

impl rustls::sign::SigningKey for TlsKey {
    fn choose_scheme(&self, offered: &[rustls::SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        offered
            .contains(&rustls::SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(self.clone()) as Box<dyn rustls::sign::Signer>)
    }
    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        rustls::SignatureAlgorithm::ECDSA
    }
}

impl rustls::sign::Signer for TlsKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let fixed = self.0.sign(message).map_err(|e| rustls::Error::General(e.to_string()))?;
        signature_to_der(&fixed).map_err(|e| rustls::Error::General(e.to_string()))
    }
    fn scheme(&self) -> rustls::SignatureScheme {
        rustls::SignatureScheme::ECDSA_NISTP256_SHA256
    }
}
