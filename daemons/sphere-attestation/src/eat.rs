//! Evidence: an Entity Attestation Token (RFC 9711) as a CBOR claims set signed in a
//! COSE_Sign1 (RFC 9052, tag 18).
//!
//! Claims (integer keys, so tokens stay small; standard keys where RFC 9711/8392 define one):
//!
//! | key    | claim | CBOR | [`EvidenceClaims`] field |
//! |--------|-------|------|--------------------------|
//! | 10     | `eat_nonce` | bstr (8–64 bytes) | `nonce` |
//! | 256    | `ueid` | bstr `0x01 ‖ SHA-256(SPKI)` | `ueid` |
//! | 6      | `iat` | int (Unix seconds) | `issued_at` |
//! | 265    | `eat_profile` | tstr [`PROFILE`] | — |
//! | 270    | `swname` | tstr `"OpenSphere"` | — |
//! | 271    | `swversion` | `[tstr]` | `os_version` |
//! | 273    | `measurements` | `[[65001, bstr .cbor {pcr: bstr}]]` | `measurements` |
//! | -70000 | event-log digest (private) | bstr(32) | `event_log_digest` |
//! | -70001 | app versions (private) | `[[id, version, digest]]` | `apps` |
//! | -70002 | policy hashes (private) | `[[id, sandbox, firewall]]` | `policy_hashes` |
//! | -70003 | TPM quote (private, optional) | `[attest, signature]` | `tpm_quote` |
//! | -70004 | CSR digest (private, optional) | bstr(32) | `csr_digest` |
//!
//! Private claim keys are below -65536 as RFC 8392 reserves for private use. Measurement
//! content-format 65001 is in CoAP's experimental range and means "OpenSphere PCR bank: a CBOR
//! map from PCR index to SHA-256 PCR value".
//!
//! The COSE protected header carries the algorithm (`EdDSA` or `ES256`) and, as `kid`, the
//! 32-byte device id, so the verifier can find the registered key before trusting anything.
//! No external AAD is used.

use crate::eventlog::{Digest, PcrBank};
use crate::keys::{DevicePublicKey, DeviceSigner, SignatureAlgorithm, device_id_from_ueid};
use crate::{Error, Result};
use ciborium::Value;
use coset::{CborSerializable, CoseSign1, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable};
use serde::{Deserialize, Serialize};

/// The `eat_profile` value identifying this claim layout.
pub const PROFILE: &str = "tag:opensphere.dev,2026:eat-v1";
/// Largest token accepted for decoding (a real one is well under 4 KiB).
pub const MAX_TOKEN_LEN: usize = 64 * 1024;
/// Nonce length bounds from RFC 9711 §4.1.
pub const NONCE_MIN: usize = 8;
pub const NONCE_MAX: usize = 64;

const KEY_IAT: i64 = 6;
const KEY_NONCE: i64 = 10;
const KEY_UEID: i64 = 256;
const KEY_PROFILE: i64 = 265;
const KEY_SWNAME: i64 = 270;
const KEY_SWVERSION: i64 = 271;
const KEY_MEASUREMENTS: i64 = 273;
const KEY_EVENT_LOG_DIGEST: i64 = -70000;
const KEY_APPS: i64 = -70001;
const KEY_POLICIES: i64 = -70002;
const KEY_TPM_QUOTE: i64 = -70003;
const KEY_CSR_DIGEST: i64 = -70004;
/// CoAP content-format (experimental range) for the OpenSphere PCR bank.
pub const MEASUREMENTS_CONTENT_FORMAT: i64 = 65001;

/// An installed app and its version, as the device reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppVersion {
    pub app_id: String,
    pub version: String,
    /// Digest of the installed package (the same digest measured into the event log).
    pub package_digest: Digest,
}

/// An app's effective sandbox and firewall policy hashes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyHashes {
    pub app_id: String,
    pub sandbox: Digest,
    pub firewall: Digest,
}

/// A TPM2_Quote over the measured PCRs: the marshalled `TPMS_ATTEST` and the TPM's signature
/// over it (`r || s`, P-256, by the same identity key). Its `extraData` must equal SHA-256 of
/// the nonce so the quote is as fresh as the token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TpmQuote {
    #[serde(with = "hex::serde")]
    pub attest: Vec<u8>,
    #[serde(with = "hex::serde")]
    pub signature: Vec<u8>,
}

/// The claims of an OpenSphere EAT.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceClaims {
    /// The cloud's nonce, echoed.
    #[serde(with = "hex::serde")]
    pub nonce: Vec<u8>,
    /// RFC 9711 UEID, `0x01 ‖ SHA-256(SPKI)`.
    #[serde(with = "hex::serde")]
    pub ueid: Vec<u8>,
    /// When the device made the token (Unix seconds; informative, freshness is the nonce's).
    pub issued_at: i64,
    /// PCR values after the event log was extended (replayed by the verifier).
    pub measurements: PcrBank,
    /// [`crate::EventLog::digest`] of the log sent with this token.
    pub event_log_digest: Digest,
    /// The OS release running (the update system's version string).
    pub os_version: String,
    pub apps: Vec<AppVersion>,
    pub policy_hashes: Vec<PolicyHashes>,
    pub tpm_quote: Option<TpmQuote>,
    /// SHA-256 of the PEM CSR sent with this evidence: binds the certificate request to the
    /// attested device, so nobody can swap in their own CSR.
    pub csr_digest: Option<Digest>,
}

/// Claims whose signature has been checked, with the device they belong to.
#[derive(Clone, Debug)]
pub struct VerifiedEvidence {
    pub device_id: String,
    pub algorithm: SignatureAlgorithm,
    pub claims: EvidenceClaims,
}

fn int(value: i64) -> Value {
    Value::Integer(value.into())
}

impl EvidenceClaims {
    /// The device id (hex) named by the UEID, if the UEID has the OpenSphere form.
    pub fn device_id(&self) -> Option<String> {
        device_id_from_ueid(&self.ueid)
    }

    fn to_cbor(&self) -> Result<Vec<u8>> {
        let pcrs: Vec<(Value, Value)> = self
            .measurements
            .iter()
            .map(|(pcr, value)| (int(i64::from(*pcr)), Value::Bytes(value.0.to_vec())))
            .collect();
        let mut pcr_bytes = Vec::new();
        ciborium::into_writer(&Value::Map(pcrs), &mut pcr_bytes).map_err(|e| Error::Malformed(e.to_string()))?;
        let mut map = vec![
            (int(KEY_NONCE), Value::Bytes(self.nonce.clone())),
            (int(KEY_UEID), Value::Bytes(self.ueid.clone())),
            (int(KEY_IAT), int(self.issued_at)),
            (int(KEY_PROFILE), Value::Text(PROFILE.into())),
            (int(KEY_SWNAME), Value::Text("OpenSphere".into())),
            (int(KEY_SWVERSION), Value::Array(vec![Value::Text(self.os_version.clone())])),
            (
                int(KEY_MEASUREMENTS),
                Value::Array(vec![Value::Array(vec![int(MEASUREMENTS_CONTENT_FORMAT), Value::Bytes(pcr_bytes)])]),
            ),
            (int(KEY_EVENT_LOG_DIGEST), Value::Bytes(self.event_log_digest.0.to_vec())),
            (
                int(KEY_APPS),
                Value::Array(
                    self.apps
                        .iter()
                        .map(|app| {
                            Value::Array(vec![
                                Value::Text(app.app_id.clone()),
                                Value::Text(app.version.clone()),
                                Value::Bytes(app.package_digest.0.to_vec()),
                            ])
                        })
                        .collect(),
                ),
            ),
            (
                int(KEY_POLICIES),
                Value::Array(
                    self.policy_hashes
                        .iter()
                        .map(|policy| {
                            Value::Array(vec![
                                Value::Text(policy.app_id.clone()),
                                Value::Bytes(policy.sandbox.0.to_vec()),
                                Value::Bytes(policy.firewall.0.to_vec()),
                            ])
                        })
                        .collect(),
                ),
            ),
        ];
        if let Some(quote) = &self.tpm_quote {
            map.push((
                int(KEY_TPM_QUOTE),
                Value::Array(vec![Value::Bytes(quote.attest.clone()), Value::Bytes(quote.signature.clone())]),
            ));
        }
        if let Some(digest) = &self.csr_digest {
            map.push((int(KEY_CSR_DIGEST), Value::Bytes(digest.0.to_vec())));
        }
        let mut out = Vec::new();
        ciborium::into_writer(&Value::Map(map), &mut out).map_err(|e| Error::Malformed(e.to_string()))?;
        Ok(out)
    }

    fn from_cbor(bytes: &[u8]) -> Result<Self> {
        let value: Value =
            ciborium::from_reader(bytes).map_err(|e| Error::Malformed(format!("claims are not CBOR: {e}")))?;
        let Value::Map(entries) = value else {
            return Err(bad("claims set is not a CBOR map"));
        };
        let mut seen = std::collections::BTreeSet::new();
        let mut nonce = None;
        let mut ueid = None;
        let mut issued_at = None;
        let mut profile_ok = false;
        let mut os_version = None;
        let mut measurements = None;
        let mut event_log_digest = None;
        let mut apps = Vec::new();
        let mut policy_hashes = Vec::new();
        let mut tpm_quote = None;
        let mut csr_digest = None;
        for (key, value) in entries {
            let key = as_i64(&key).ok_or_else(|| bad("claim keys must be integers"))?;
            if !seen.insert(key) {
                return Err(Error::Malformed(format!("claim {key} appears twice")));
            }
            match key {
                KEY_NONCE => {
                    let n = bytes_of(value, "eat_nonce")?;
                    if !(NONCE_MIN..=NONCE_MAX).contains(&n.len()) {
                        return Err(bad("eat_nonce must be 8 to 64 bytes"));
                    }
                    nonce = Some(n);
                }
                KEY_UEID => ueid = Some(bytes_of(value, "ueid")?),
                KEY_IAT => issued_at = Some(as_i64(&value).ok_or_else(|| bad("iat must be an integer"))?),
                KEY_PROFILE => profile_ok = value == Value::Text(PROFILE.into()),
                KEY_SWVERSION => {
                    let mut items = array_of(value, "swversion")?.into_iter();
                    os_version = Some(text_of(items.next().ok_or_else(|| bad("swversion is empty"))?, "swversion")?);
                }
                KEY_MEASUREMENTS => measurements = Some(decode_measurements(value)?),
                KEY_EVENT_LOG_DIGEST => event_log_digest = Some(digest_of(value, "event log digest")?),
                KEY_APPS => {
                    for item in array_of(value, "apps")? {
                        let [id, version, digest] = fixed::<3>(item, "app entry")?;
                        apps.push(AppVersion {
                            app_id: text_of(id, "app id")?,
                            version: text_of(version, "app version")?,
                            package_digest: digest_of(digest, "app package digest")?,
                        });
                    }
                }
                KEY_POLICIES => {
                    for item in array_of(value, "policy hashes")? {
                        let [id, sandbox, firewall] = fixed::<3>(item, "policy entry")?;
                        policy_hashes.push(PolicyHashes {
                            app_id: text_of(id, "policy app id")?,
                            sandbox: digest_of(sandbox, "sandbox policy hash")?,
                            firewall: digest_of(firewall, "firewall policy hash")?,
                        });
                    }
                }
                KEY_TPM_QUOTE => {
                    let [attest, signature] = fixed::<2>(value, "tpm quote")?;
                    tpm_quote = Some(TpmQuote {
                        attest: bytes_of(attest, "quote attest")?,
                        signature: bytes_of(signature, "quote signature")?,
                    });
                }
                KEY_CSR_DIGEST => csr_digest = Some(digest_of(value, "CSR digest")?),
                // RFC 9711: claims a verifier does not understand are ignored.
                _ => {}
            }
        }
        if !profile_ok {
            return Err(Error::Malformed(format!("eat_profile must be {PROFILE}")));
        }
        Ok(EvidenceClaims {
            nonce: nonce.ok_or_else(|| bad("eat_nonce missing"))?,
            ueid: ueid.ok_or_else(|| bad("ueid missing"))?,
            issued_at: issued_at.ok_or_else(|| bad("iat missing"))?,
            measurements: measurements.ok_or_else(|| bad("measurements missing"))?,
            event_log_digest: event_log_digest.ok_or_else(|| bad("event log digest missing"))?,
            os_version: os_version.ok_or_else(|| bad("swversion missing"))?,
            apps,
            policy_hashes,
            tpm_quote,
            csr_digest,
        })
    }

    /// Sign these claims with the device key and return the tagged COSE_Sign1 bytes.
    ///
    /// The UEID must be the signer's (a device cannot speak for another by mistake).
    pub fn sign(&self, signer: &dyn DeviceSigner) -> Result<Vec<u8>> {
        let public = signer.public_key();
        if self.ueid != public.ueid() {
            return Err(Error::Signing("the claims' ueid is not the signing key's".into()));
        }
        let kid = hex::decode(public.device_id()).map_err(|e| Error::Signing(e.to_string()))?;
        let protected = HeaderBuilder::new().algorithm(signer.algorithm().cose()).key_id(kid).build();
        let sign1 = CoseSign1Builder::new()
            .protected(protected)
            .payload(self.to_cbor()?)
            .try_create_signature(b"", |message| signer.sign(message))?
            .build();
        sign1.to_tagged_vec().map_err(|e| Error::Signing(format!("encoding COSE_Sign1: {e}")))
    }
}

fn parse_sign1(token: &[u8]) -> Result<CoseSign1> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(Error::Malformed(format!("token is {} bytes, at most {MAX_TOKEN_LEN} accepted", token.len())));
    }
    CoseSign1::from_tagged_slice(token)
        .or_else(|_| CoseSign1::from_slice(token))
        .map_err(|e| Error::Malformed(format!("not a COSE_Sign1: {e}")))
}

/// The device id a token *claims* to be from (its `kid`), read without verifying anything.
/// Use it only to look up the key to verify with.
pub fn claimed_device_id(token: &[u8]) -> Result<String> {
    let sign1 = parse_sign1(token)?;
    let kid = &sign1.protected.header.key_id;
    if kid.len() != 32 {
        return Err(bad("kid must be the 32-byte device id"));
    }
    Ok(hex::encode(kid))
}

/// Decode a token **without** checking its signature (for diagnostics and fuzzing only).
pub fn decode_unverified(token: &[u8]) -> Result<EvidenceClaims> {
    let sign1 = parse_sign1(token)?;
    let payload = sign1.payload.as_deref().ok_or_else(|| bad("no payload"))?;
    EvidenceClaims::from_cbor(payload)
}

/// Verify a token with the device's registered key and return its claims.
///
/// Checks, in order: size bound, COSE structure, algorithm equals the key's, signature, claims
/// structure, and that `kid` and `ueid` both name the key's device. Freshness and reference
/// values are the caller's (the cloud verifier's) job.
pub fn verify(token: &[u8], key: &DevicePublicKey) -> Result<VerifiedEvidence> {
    let sign1 = parse_sign1(token)?;
    let expected = key.algorithm();
    match &sign1.protected.header.alg {
        Some(coset::RegisteredLabelWithPrivate::Assigned(alg)) if *alg == expected.cose() => {}
        other => {
            return Err(Error::AlgorithmMismatch { expected, found: format!("{other:?}") });
        }
    }
    sign1.verify_signature(b"", |signature, message| key.verify(message, signature))?;
    let payload = sign1.payload.as_deref().ok_or_else(|| bad("no payload"))?;
    let claims = EvidenceClaims::from_cbor(payload)?;
    let device_id = key.device_id();
    if hex::encode(&sign1.protected.header.key_id) != device_id {
        return Err(bad("kid does not name the verifying key's device"));
    }
    if claims.ueid != key.ueid() {
        return Err(bad("ueid does not name the verifying key's device"));
    }
    Ok(VerifiedEvidence { device_id, algorithm: expected, claims })
}

fn bad(message: &str) -> Error {
    Error::Malformed(message.to_owned())
}

fn as_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Integer(i) => i64::try_from(*i).ok(),
        _ => None,
    }
}

fn bytes_of(value: Value, what: &str) -> Result<Vec<u8>> {
    match value {
        Value::Bytes(b) => Ok(b),
        _ => Err(Error::Malformed(format!("{what} must be a byte string"))),
    }
}

fn text_of(value: Value, what: &str) -> Result<String> {
    match value {
        Value::Text(t) if t.len() <= 256 => Ok(t),
        _ => Err(Error::Malformed(format!("{what} must be a text string of at most 256 bytes"))),
    }
}

fn digest_of(value: Value, what: &str) -> Result<Digest> {
    Digest::from_slice(&bytes_of(value, what)?).ok_or_else(|| Error::Malformed(format!("{what} must be 32 bytes")))
}

fn array_of(value: Value, what: &str) -> Result<Vec<Value>> {
    match value {
        Value::Array(items) if items.len() <= 4096 => Ok(items),
        _ => Err(Error::Malformed(format!("{what} must be an array of at most 4096 items"))),
    }
}

fn fixed<const N: usize>(value: Value, what: &str) -> Result<[Value; N]> {
    array_of(value, what)?.try_into().map_err(|_| Error::Malformed(format!("{what} must have {N} items")))
}

fn decode_measurements(value: Value) -> Result<PcrBank> {
    let mut bank = None;
    for item in array_of(value, "measurements")? {
        let [format, content] = fixed::<2>(item, "measurement")?;
        if as_i64(&format) != Some(MEASUREMENTS_CONTENT_FORMAT) {
            continue; // another measurement format: not ours to judge
        }
        let content = bytes_of(content, "measurement content")?;
        let map: Value = ciborium::from_reader(content.as_slice())
            .map_err(|e| Error::Malformed(format!("PCR bank is not CBOR: {e}")))?;
        let Value::Map(pcrs) = map else {
            return Err(bad("PCR bank must be a map"));
        };
        let mut out = PcrBank::new();
        for (pcr, digest) in pcrs {
            let pcr = as_i64(&pcr)
                .and_then(|p| u8::try_from(p).ok())
                .filter(|p| *p < 24)
                .ok_or_else(|| bad("PCR index must be 0..=23"))?;
            if out.insert(pcr, digest_of(digest, "PCR value")?).is_some() {
                return Err(bad("PCR appears twice"));
            }
        }
        if bank.replace(out).is_some() {
            return Err(bad("two OpenSphere PCR banks"));
        }
    }
    bank.ok_or_else(|| bad("no OpenSphere PCR bank in measurements"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::{EventLog, Stage};
    use crate::keys::{Ed25519Signer, P256Signer};

    fn claims_for(signer: &dyn DeviceSigner) -> (EvidenceClaims, EventLog) {
        let mut log = EventLog::new();
        log.measure(Stage::Init, "sphere-init", b"init");
        log.measure(Stage::App, "app", b"pkg");
        let claims = EvidenceClaims {
            nonce: vec![7; 32],
            ueid: signer.public_key().ueid(),
            issued_at: 1_700_000_000,
            measurements: log.replay(),
            event_log_digest: log.digest(),
            os_version: "1.2.3".into(),
            apps: vec![AppVersion { app_id: "app".into(), version: "1.0".into(), package_digest: Digest::of(b"pkg") }],
            policy_hashes: vec![PolicyHashes {
                app_id: "app".into(),
                sandbox: Digest::of(b"s"),
                firewall: Digest::of(b"f"),
            }],
            tpm_quote: Some(TpmQuote { attest: vec![1, 2], signature: vec![3] }),
            csr_digest: Some(Digest::of(b"csr")),
        };
        (claims, log)
    }

    #[test]
    fn sign_verify_round_trip_both_algorithms() {
        let signers: [Box<dyn DeviceSigner>; 2] =
            [Box::new(Ed25519Signer::generate()), Box::new(P256Signer::generate())];
        for signer in &signers {
            let (claims, _) = claims_for(signer.as_ref());
            let token = claims.sign(signer.as_ref()).unwrap();
            let verified = verify(&token, &signer.public_key()).unwrap();
            assert_eq!(verified.claims, claims);
            assert_eq!(claimed_device_id(&token).unwrap(), signer.public_key().device_id());
            assert_eq!(decode_unverified(&token).unwrap(), claims);
        }
    }

    #[test]
    fn another_devices_key_is_refused() {
        let device = Ed25519Signer::generate();
        let other = Ed25519Signer::generate();
        let (claims, _) = claims_for(&device);
        let token = claims.sign(&device).unwrap();
        assert!(matches!(verify(&token, &other.public_key()), Err(Error::BadSignature)));
        // A P-256 key for an Ed25519 token: algorithm mismatch, before any signature maths.
        assert!(matches!(verify(&token, &P256Signer::generate().public_key()), Err(Error::AlgorithmMismatch { .. })));
    }

    #[test]
    fn flipped_payload_byte_is_refused() {
        let device = P256Signer::generate();
        let (claims, _) = claims_for(&device);
        let mut token = claims.sign(&device).unwrap();
        let last = token.len() - 80;
        token[last] ^= 1;
        assert!(verify(&token, &device.public_key()).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        for len in 0..64 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
            assert!(decode_unverified(&bytes).is_err());
        }
    }
}
