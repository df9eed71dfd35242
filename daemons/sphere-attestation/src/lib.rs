//! OpenSphere remote attestation: the wire formats the device (`sphere-attestd`) and the cloud
//! (`sphere-cloud`) both speak. One crate, so the producer and the verifier cannot drift apart.
//!
//! - [`eventlog`]: the measured-boot event log. Every stage (boot record, root slot,
//!   sphere-init, daemons, app packages, each app's sandbox and firewall policy) is one entry
//!   whose SHA-256 digest is *extended* into a PCR exactly like TPM 2.0 does
//!   (`PCR = SHA-256(PCR || digest)`), so a verifier can replay the log and compare it with the
//!   PCR values the device reports (and, with a TPM, with a signed quote).
//! - [`eat`]: the evidence itself, an Entity Attestation Token (RFC 9711) encoded as a CBOR
//!   claims set inside a COSE_Sign1 (RFC 9052), signed by the device identity key.
//! - [`keys`]: the signing and verification seams for Ed25519 (file backend) and ECDSA P-256
//!   (TPM backend: TPM 2.0 parts implement P-256 but not Ed25519).
//! - [`api`]: the JSON request and response types of sphere-cloud's device-facing HTTP API
//!   (nonce, evidence submission, certificate), the MQTT topic names and the error-report
//!   payload.
//!
//! # Why CBOR/COSE and not JWT
//! RFC 9711 allows both. We chose COSE_Sign1 because (1) it is the encoding the EAT and RATS
//! ecosystem (Veraison, TPM-based attesters, PSA tokens) standardised on, so a third-party
//! verifier can read our tokens; (2) binary digests stay binary (no base64 inside base64) and
//! a typical token is ~600 bytes instead of ~1.2 KB; (3) the parser (`coset`/`ciborium`) is
//! pure Rust with no C dependency and builds for the device at rustc 1.85, and it is
//! bounded and fuzzed (`fuzz/`).
//!
//! # Threat model
//! Everything the cloud decodes came from the network: an attacker may send any bytes, replay
//! old tokens, sign with another device's key or edit the event log. Decoding never panics, the
//! verifier accepts a token only after its signature checks against the key *registered* for
//! the device named in it, and the event log is bound to the token by its digest. Freshness
//! (nonce single-use and expiry) and reference-value comparison live in the cloud's verifier;
//! this crate gives it the exact, typed data to decide on.

pub mod api;
pub mod eat;
pub mod eventlog;
pub mod keys;
pub mod quote;
pub mod reference;

pub use eat::{AppVersion, EvidenceClaims, PolicyHashes, TpmQuote, VerifiedEvidence};
pub use eventlog::{Digest, EventLog, EventLogEntry, Stage};
pub use keys::{DevicePublicKey, DeviceSigner, Ed25519Signer, P256Signer, SignatureAlgorithm};

/// Everything that can go wrong while producing, decoding or verifying evidence.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not a well-formed token or structure; the text says what was wrong.
    #[error("malformed evidence: {0}")]
    Malformed(String),
    /// The signature does not verify with the given key.
    #[error("evidence signature does not verify with the device's registered key")]
    BadSignature,
    /// The token uses an algorithm other than the one of the key it must be checked with.
    #[error("signature algorithm {found} does not match the device key ({expected})")]
    AlgorithmMismatch { expected: SignatureAlgorithm, found: String },
    /// A key could not be read (PEM/DER/PKCS#8 problem).
    #[error("key: {0}")]
    Key(String),
    /// The signer (file key, TPM) failed.
    #[error("signing failed: {0}")]
    Signing(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
