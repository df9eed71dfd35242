//! Checking a TPM 2.0 quote ([`crate::TpmQuote`]) against the token that carries it.
//!
//! A quote is the TPM's own statement about its PCRs: a marshalled `TPMS_ATTEST` (TPM 2.0
//! Part 2, 10.12.12) signed by the identity key inside the TPM. It binds the token's PCR values
//! to hardware: software that edits the event log and the claimed PCR values together still
//! cannot make the TPM sign PCR contents it does not hold. Checked here:
//!
//! 1. the signature (ECDSA P-256 over SHA-256 of the attest bytes) verifies with the device's
//!    registered key;
//! 2. the structure starts with `TPM_GENERATED_VALUE` and is of type `TPM_ST_ATTEST_QUOTE`;
//! 3. `extraData` is SHA-256 of the token's nonce (the quote is as fresh as the token);
//! 4. the SHA-256 bank selection is exactly the PCRs the token reports, and `pcrDigest` is
//!    SHA-256 of those PCR values concatenated in ascending index order.
//!
//! Parsing is bounds-checked: a truncated or hostile structure is an error, never a panic.

use crate::eventlog::PcrBank;
use crate::keys::DevicePublicKey;
use crate::{Error, Result, TpmQuote};
use sha2::{Digest as _, Sha256};

const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
const TPM_ALG_SHA256: u16 = 0x000B;

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(Error::Malformed("TPM quote: structure truncated".into()));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn tpm2b(&mut self) -> Result<&'a [u8]> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
}

/// Check `quote` (see the module documentation) for a token with `nonce` and `measurements`,
/// signed by `key`. Only P-256 keys can quote (TPMs do not do Ed25519).
pub fn verify_quote(quote: &TpmQuote, key: &DevicePublicKey, nonce: &[u8], measurements: &PcrBank) -> Result<()> {
    if !matches!(key, DevicePublicKey::P256(_)) {
        return Err(Error::Malformed("TPM quote from a device whose key is not P-256".into()));
    }
    key.verify(&quote.attest, &quote.signature)?;
    let mut r = Reader(&quote.attest);
    if r.u32()? != TPM_GENERATED_VALUE || r.u16()? != TPM_ST_ATTEST_QUOTE {
        return Err(Error::Malformed("TPM quote: not a TPM-generated quote structure".into()));
    }
    let _qualified_signer = r.tpm2b()?;
    if r.tpm2b()? != Sha256::digest(nonce).as_slice() {
        return Err(Error::Malformed("TPM quote: extraData is not SHA-256 of the token's nonce".into()));
    }
    r.take(8 + 4 + 4 + 1)?; // clockInfo: clock, resetCount, restartCount, safe
    r.take(8)?; // firmwareVersion
    let mut selected = Vec::new();
    for _ in 0..r.u32()? {
        let hash = r.u16()?;
        let size = usize::from(r.u8()?);
        let bits = r.take(size)?;
        if hash != TPM_ALG_SHA256 {
            return Err(Error::Malformed("TPM quote: a PCR bank other than SHA-256 is selected".into()));
        }
        for (byte, value) in bits.iter().enumerate() {
            for bit in 0..8 {
                if value & (1 << bit) != 0 {
                    selected.push(byte * 8 + bit);
                }
            }
        }
    }
    let reported: Vec<usize> = measurements.keys().map(|pcr| usize::from(*pcr)).collect();
    if selected != reported {
        return Err(Error::Malformed(format!("TPM quote covers PCRs {selected:?}, the token reports {reported:?}")));
    }
    let mut composite = Sha256::new();
    for value in measurements.values() {
        composite.update(value.0);
    }
    if r.tpm2b()? != composite.finalize().as_slice() {
        return Err(Error::Malformed("TPM quote: the TPM's PCR values differ from the token's measurements".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::Digest;
    use crate::keys::{DeviceSigner, P256Signer};

    /// A TPMS_ATTEST as a TPM would marshal it for PCRs 8 and 9 of the SHA-256 bank.
    fn attest(nonce: &[u8], bank: &PcrBank) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&TPM_GENERATED_VALUE.to_be_bytes());
        a.extend_from_slice(&TPM_ST_ATTEST_QUOTE.to_be_bytes());
        a.extend_from_slice(&[0, 2, 0xAA, 0xBB]); // qualifiedSigner
        a.extend_from_slice(&32u16.to_be_bytes());
        a.extend_from_slice(&Sha256::digest(nonce));
        a.extend_from_slice(&[0; 17]); // clockInfo
        a.extend_from_slice(&[0; 8]); // firmwareVersion
        a.extend_from_slice(&1u32.to_be_bytes());
        a.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
        a.extend_from_slice(&[3, 0, 0b11, 0]); // PCRs 8, 9
        let mut composite = Sha256::new();
        for value in bank.values() {
            composite.update(value.0);
        }
        a.extend_from_slice(&32u16.to_be_bytes());
        a.extend_from_slice(&composite.finalize());
        a
    }

    #[test]
    fn genuine_quote_passes_and_each_tampering_fails() {
        let device = P256Signer::generate();
        let bank: PcrBank = [(8, Digest::of(b"a")), (9, Digest::of(b"b"))].into_iter().collect();
        let nonce = [5u8; 32];
        let bytes = attest(&nonce, &bank);
        let quote = TpmQuote { signature: device.sign(&bytes).unwrap(), attest: bytes.clone() };
        verify_quote(&quote, &device.public_key(), &nonce, &bank).unwrap();

        assert!(verify_quote(&quote, &device.public_key(), &[6u8; 32], &bank).is_err(), "other nonce");
        let mut other_bank = bank.clone();
        other_bank.insert(9, Digest::of(b"edited"));
        assert!(verify_quote(&quote, &device.public_key(), &nonce, &other_bank).is_err(), "edited PCR");
        let other = P256Signer::generate();
        assert!(verify_quote(&quote, &other.public_key(), &nonce, &bank).is_err(), "other key");
        for cut in 0..bytes.len() {
            let short = TpmQuote { signature: device.sign(&bytes[..cut]).unwrap(), attest: bytes[..cut].to_vec() };
            assert!(verify_quote(&short, &device.public_key(), &nonce, &bank).is_err(), "cut at {cut}");
        }
    }
}
