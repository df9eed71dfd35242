//! Signing and verification seams for the device identity key.
//!
//! Two algorithms, because the two key backends can do different things:
//!
//! - **ECDSA P-256 with SHA-256** (COSE `ES256`, -7): what a TPM 2.0 can do. The TPM backend
//!   implements [`DeviceSigner`] by hashing the message with SHA-256 and calling `TPM2_Sign`
//!   with `TPM2_ALG_ECDSA`/`SHA256`; it returns the signature as the fixed 64-byte `r || s`
//!   (each left-padded to 32 bytes) that COSE requires — *not* DER.
//! - **Ed25519** (COSE `EdDSA`, -8): the file backend's default (fast, deterministic). The file
//!   backend may also use P-256 ([`P256Signer`]) so the same fleet can mix backends.
//!
//! A device is known to the cloud by its public key in SubjectPublicKeyInfo DER form. Its
//! **device id** is the lowercase hex SHA-256 of that DER (64 characters), and its **UEID**
//! (RFC 9711 §4.2.1) is type byte `0x01` (RAND) followed by the same 32 bytes, so the id in a
//! token can be checked against the key without a lookup table.

use crate::{Error, Result};
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;

/// The signature algorithms a device key may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureAlgorithm {
    /// Ed25519 (COSE alg -8, "EdDSA").
    Ed25519,
    /// ECDSA P-256 with SHA-256 (COSE alg -7, "ES256").
    P256,
}

impl SignatureAlgorithm {
    /// The COSE algorithm this maps to.
    pub fn cose(self) -> coset::iana::Algorithm {
        match self {
            SignatureAlgorithm::Ed25519 => coset::iana::Algorithm::EdDSA,
            SignatureAlgorithm::P256 => coset::iana::Algorithm::ES256,
        }
    }
}

impl fmt::Display for SignatureAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignatureAlgorithm::Ed25519 => "ed25519",
            SignatureAlgorithm::P256 => "p256",
        })
    }
}

/// Something that can sign with the device identity key without revealing it: a file key or a
/// TPM-resident key. `sign` receives the complete message (the COSE `Sig_structure`); hashing
/// is the signer's job so a TPM can hash on the host and sign the digest inside the chip.
///
/// Signers take `&self`; a TPM backend holding a `tss_esapi::Context` wraps it in a `Mutex`.
pub trait DeviceSigner {
    /// Which algorithm [`DeviceSigner::sign`] produces.
    fn algorithm(&self) -> SignatureAlgorithm;
    /// The public half, as registered with the cloud.
    fn public_key(&self) -> DevicePublicKey;
    /// Sign `message`: Ed25519 → 64-byte signature; P-256 → 64-byte `r || s` over SHA-256(message).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>>;
}

/// A verifying key for a device, parsed from SubjectPublicKeyInfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DevicePublicKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
}

impl DevicePublicKey {
    /// Parse SubjectPublicKeyInfo DER (Ed25519 or P-256).
    pub fn from_spki_der(der: &[u8]) -> Result<Self> {
        if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_der(der) {
            return Ok(DevicePublicKey::Ed25519(key));
        }
        if let Ok(key) = p256::PublicKey::from_public_key_der(der) {
            return Ok(DevicePublicKey::P256(key.into()));
        }
        Err(Error::Key("not an Ed25519 or P-256 SubjectPublicKeyInfo".into()))
    }

    /// Parse a `-----BEGIN PUBLIC KEY-----` PEM (Ed25519 or P-256).
    pub fn from_spki_pem(pem: &str) -> Result<Self> {
        if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            return Ok(DevicePublicKey::Ed25519(key));
        }
        if let Ok(key) = p256::PublicKey::from_public_key_pem(pem) {
            return Ok(DevicePublicKey::P256(key.into()));
        }
        Err(Error::Key("not an Ed25519 or P-256 public key PEM (SubjectPublicKeyInfo)".into()))
    }

    /// SubjectPublicKeyInfo DER.
    pub fn to_spki_der(&self) -> Vec<u8> {
        let der = match self {
            DevicePublicKey::Ed25519(key) => key.to_public_key_der(),
            DevicePublicKey::P256(key) => p256::PublicKey::from(key).to_public_key_der(),
        };
        // Encoding a valid in-memory key cannot fail; an empty result would simply never match.
        der.map(|d| d.as_bytes().to_vec()).unwrap_or_default()
    }

    /// SubjectPublicKeyInfo PEM.
    pub fn to_spki_pem(&self) -> String {
        let pem = match self {
            DevicePublicKey::Ed25519(key) => key.to_public_key_pem(Default::default()),
            DevicePublicKey::P256(key) => p256::PublicKey::from(key).to_public_key_pem(Default::default()),
        };
        pem.unwrap_or_default()
    }

    pub fn algorithm(&self) -> SignatureAlgorithm {
        match self {
            DevicePublicKey::Ed25519(_) => SignatureAlgorithm::Ed25519,
            DevicePublicKey::P256(_) => SignatureAlgorithm::P256,
        }
    }

    /// The device id: lowercase hex SHA-256 of the SPKI DER.
    pub fn device_id(&self) -> String {
        hex::encode(Sha256::digest(self.to_spki_der()))
    }

    /// The RFC 9711 UEID: `0x01` (RAND type) followed by SHA-256 of the SPKI DER.
    pub fn ueid(&self) -> Vec<u8> {
        ueid_for_device_id_bytes(&Sha256::digest(self.to_spki_der()))
    }

    /// Verify `signature` over `message` (format as in [`DeviceSigner::sign`]).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<()> {
        match self {
            DevicePublicKey::Ed25519(key) => {
                let signature = ed25519_dalek::Signature::from_slice(signature).map_err(|_| Error::BadSignature)?;
                key.verify_strict(message, &signature).map_err(|_| Error::BadSignature)
            }
            DevicePublicKey::P256(key) => {
                let signature = p256::ecdsa::Signature::from_slice(signature).map_err(|_| Error::BadSignature)?;
                key.verify(message, &signature).map_err(|_| Error::BadSignature)
            }
        }
    }
}

/// The UEID for a 32-byte device id (`0x01 || id`).
pub fn ueid_for_device_id_bytes(id: &[u8]) -> Vec<u8> {
    let mut ueid = Vec::with_capacity(1 + id.len());
    ueid.push(0x01);
    ueid.extend_from_slice(id);
    ueid
}

/// The device id (hex) a UEID names, if it is a 33-byte RAND UEID.
pub fn device_id_from_ueid(ueid: &[u8]) -> Option<String> {
    match ueid {
        [0x01, rest @ ..] if rest.len() == 32 => Some(hex::encode(rest)),
        _ => None,
    }
}

/// A software Ed25519 device key (file backend, simulated devices).
pub struct Ed25519Signer(ed25519_dalek::SigningKey);

impl Ed25519Signer {
    pub fn generate() -> Self {
        Ed25519Signer(ed25519_dalek::SigningKey::generate(&mut OsRng))
    }
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map(Ed25519Signer)
            .map_err(|e| Error::Key(format!("Ed25519 PKCS#8 PEM: {e}")))
    }
    pub fn to_pkcs8_pem(&self) -> Result<String> {
        self.0.to_pkcs8_pem(Default::default()).map(|pem| pem.to_string()).map_err(|e| Error::Key(e.to_string()))
    }
}

impl DeviceSigner for Ed25519Signer {
    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::Ed25519
    }
    fn public_key(&self) -> DevicePublicKey {
        DevicePublicKey::Ed25519(self.0.verifying_key())
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        use ed25519_dalek::Signer as _;
        Ok(self.0.sign(message).to_bytes().to_vec())
    }
}

/// A software ECDSA P-256 device key (file backend; the same algorithm a TPM key uses).
pub struct P256Signer(p256::ecdsa::SigningKey);

impl P256Signer {
    pub fn generate() -> Self {
        P256Signer(p256::ecdsa::SigningKey::random(&mut OsRng))
    }
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self> {
        p256::SecretKey::from_pkcs8_pem(pem)
            .map(|key| P256Signer(key.into()))
            .map_err(|e| Error::Key(format!("P-256 PKCS#8 PEM: {e}")))
    }
    pub fn to_pkcs8_pem(&self) -> Result<String> {
        p256::SecretKey::from(&self.0)
            .to_pkcs8_pem(Default::default())
            .map(|pem| pem.to_string())
            .map_err(|e| Error::Key(e.to_string()))
    }
}

impl DeviceSigner for P256Signer {
    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::P256
    }
    fn public_key(&self) -> DevicePublicKey {
        DevicePublicKey::P256(*self.0.verifying_key())
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let signature: p256::ecdsa::Signature = self.0.sign(message);
        Ok(signature.to_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_algorithms_round_trip_and_reject_other_keys() {
        let signers: [Box<dyn DeviceSigner>; 2] =
            [Box::new(Ed25519Signer::generate()), Box::new(P256Signer::generate())];
        for signer in &signers {
            let key = signer.public_key();
            let parsed = DevicePublicKey::from_spki_der(&key.to_spki_der()).unwrap();
            assert_eq!(parsed, key);
            assert_eq!(DevicePublicKey::from_spki_pem(&key.to_spki_pem()).unwrap(), key);
            let signature = signer.sign(b"message").unwrap();
            assert_eq!(signature.len(), 64);
            key.verify(b"message", &signature).unwrap();
            assert!(key.verify(b"messagf", &signature).is_err());
            assert_eq!(device_id_from_ueid(&key.ueid()), Some(key.device_id()));
        }
        let other = Ed25519Signer::generate().public_key();
        let signature = signers[0].sign(b"m").unwrap();
        assert!(other.verify(b"m", &signature).is_err());
    }
}
