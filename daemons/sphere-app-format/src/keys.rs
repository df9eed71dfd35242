//! Ed25519 signing keys and the trust store that verifiers check signatures against.
//!
//! Keys are stored as standard PEM (PKCS#8 for private keys, SubjectPublicKeyInfo for public
//! keys) so that OpenSSL, HSM tooling and other languages can read them. A key is named by its
//! [`KeyId`]: the first 8 bytes of SHA-256 over the raw 32-byte public key, in hex. The id only
//! selects which trusted key to try; the signature check is what grants trust.

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not an Ed25519 {expected} in PEM form ({detail})")]
    Malformed { path: String, expected: &'static str, detail: String },
    #[error("cannot encode the key: {0}")]
    Encode(String),
}

/// The short identifier of a public key: hex of the first 8 bytes of SHA-256(public key).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    pub fn of(key: &VerifyingKey) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        KeyId(hex::encode(&digest[..8]))
    }

    /// Accept a key id read from untrusted input: exactly 16 lowercase hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        let valid = text.len() == 16 && text.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'));
        valid.then(|| KeyId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A private signing key with its id.
pub struct SigningKeyPair {
    key: SigningKey,
    id: KeyId,
}

impl SigningKeyPair {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        Self::from_key(SigningKey::generate(&mut rand_core::OsRng))
    }

    fn from_key(key: SigningKey) -> Self {
        let id = KeyId::of(&key.verifying_key());
        SigningKeyPair { key, id }
    }

    pub fn from_pem(pem: &str, origin: &Path) -> Result<Self, KeyError> {
        SigningKey::from_pkcs8_pem(pem).map(Self::from_key).map_err(|error| KeyError::Malformed {
            path: origin.display().to_string(),
            expected: "private key (PKCS#8)",
            detail: error.to_string(),
        })
    }

    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let pem = read_text(path)?;
        Self::from_pem(&pem, path)
    }

    pub fn id(&self) -> &KeyId {
        &self.id
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// PKCS#8 v1 (secret only): OpenSSL 3.0 cannot read the v2 form with the public key inside.
    pub fn private_pem(&self) -> Result<String, KeyError> {
        let bytes = KeypairBytes { secret_key: self.key.to_bytes(), public_key: None };
        let pem = bytes.to_pkcs8_pem(LineEnding::LF).map_err(|e| KeyError::Encode(e.to_string()))?;
        Ok(pem.to_string())
    }

    pub fn public_pem(&self) -> Result<String, KeyError> {
        public_pem(&self.public_key())
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        self.key.sign(message)
    }
}

/// PEM text of a public key.
pub fn public_pem(key: &VerifyingKey) -> Result<String, KeyError> {
    key.to_public_key_pem(LineEnding::LF).map_err(|e| KeyError::Encode(e.to_string()))
}

/// The public keys a verifier trusts, by id.
#[derive(Clone, Debug, Default)]
pub struct TrustStore {
    keys: BTreeMap<KeyId, VerifyingKey>,
}

impl TrustStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, key: VerifyingKey) -> KeyId {
        let id = KeyId::of(&key);
        self.keys.insert(id.clone(), key);
        id
    }

    /// Add a public key from a PEM file (a private key file is refused: trust needs no secret).
    pub fn add_pem_file(&mut self, path: &Path) -> Result<KeyId, KeyError> {
        let pem = read_text(path)?;
        let key = VerifyingKey::from_public_key_pem(&pem).map_err(|error| KeyError::Malformed {
            path: path.display().to_string(),
            expected: "public key (SubjectPublicKeyInfo)",
            detail: error.to_string(),
        })?;
        Ok(self.add(key))
    }

    /// Trust every key `other` trusts as well.
    pub fn extend(&mut self, other: &TrustStore) {
        self.keys.extend(other.keys.iter().map(|(id, key)| (id.clone(), *key)));
    }

    pub fn contains(&self, id: &KeyId) -> bool {
        self.keys.contains_key(id)
    }

    pub fn ids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.keys()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Check `signature` over `message` with the trusted key `id`.
    pub fn verify(&self, id: &KeyId, message: &[u8], signature: &Signature) -> Result<(), TrustError> {
        let key = self.keys.get(id).ok_or_else(|| TrustError::UnknownKey(id.clone()))?;
        key.verify(message, signature).map_err(|_| TrustError::BadSignature(id.clone()))
    }
}

/// Why a signature was not accepted.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("signed by key {0}, which is not in the trusted keys")]
    UnknownKey(KeyId),
    #[error("the signature does not verify with trusted key {0}")]
    BadSignature(KeyId),
}

/// Key files are a few hundred bytes; refuse to slurp anything large by mistake.
fn read_text(path: &Path) -> Result<String, KeyError> {
    const MAX_KEY_FILE_BYTES: u64 = 16 * 1024;
    let read_error = |source| KeyError::Read { path: path.display().to_string(), source };
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    if metadata.len() > MAX_KEY_FILE_BYTES {
        return Err(KeyError::Malformed {
            path: path.display().to_string(),
            expected: "key",
            detail: format!("file is {} bytes", metadata.len()),
        });
    }
    std::fs::read_to_string(path).map_err(read_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_keeps_the_key_id() {
        let pair = SigningKeyPair::generate();
        let pem = pair.private_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let again = SigningKeyPair::from_pem(&pem, Path::new("test.key")).unwrap();
        assert_eq!(again.id(), pair.id());
        assert_eq!(pair.id().as_str().len(), 16);
    }

    #[test]
    fn trust_store_tells_unknown_keys_from_bad_signatures() {
        let signer = SigningKeyPair::generate();
        let stranger = SigningKeyPair::generate();
        let mut trust = TrustStore::new();
        trust.add(signer.public_key());
        let signature = signer.sign(b"message");
        assert_eq!(trust.verify(signer.id(), b"message", &signature), Ok(()));
        assert_eq!(trust.verify(signer.id(), b"other", &signature), Err(TrustError::BadSignature(signer.id().clone())));
        assert_eq!(
            trust.verify(stranger.id(), b"message", &signature),
            Err(TrustError::UnknownKey(stranger.id().clone()))
        );
    }

    #[test]
    fn key_ids_from_input_must_be_16_hex_digits() {
        assert!(KeyId::parse("0123456789abcdef").is_some());
        assert!(KeyId::parse("0123456789ABCDEF").is_none());
        assert!(KeyId::parse("../../etc/passwd").is_none());
    }
}
