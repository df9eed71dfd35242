//! The device certificate authority.
//!
//! Default: an ECDSA P-256 CA key in a PKCS#8 PEM file (`ca.key`, mode 0600) next to its
//! self-signed certificate (`ca.crt`, 10 years), both created by `sphere-cloud init`. Device
//! certificates are short-lived (default 24 h): subject CN = device id, client-auth only,
//! serial 16 random bytes. Short lifetimes are the main revocation mechanism (a device that
//! stops attesting stops getting certificates); the CRL (`crl.pem`, rewritten after every
//! revocation) covers the hours until expiry and is what mosquitto's `crlfile` reads.
//!
//! **HSM / PKCS#11 seam.** Everything signs through an [`rcgen::KeyPair`]. rcgen builds one
//! from a `Box<dyn rcgen::RemoteKeyPair>` ([`rcgen::KeyPair::from_remote`]), whose three
//! methods are the public key, `sign(msg)` and the algorithm. A PKCS#11 backend (e.g. the
//! `cryptoki` crate, `C_SignInit`/`C_Sign` with `CKM_ECDSA` over SHA-256(msg), converting the
//! raw `r||s` to DER) implements that trait; [`Ca::load_with_key`] takes the resulting key pair
//! so `ca.key` never needs to exist.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertificateSigningRequestParams,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SanType, SerialNumber,
};
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("the CSR is not a valid, self-signed PKCS#10 request: {0}")]
    BadCsr(String),
}

type Result<T, E = CaError> = std::result::Result<T, E>;

/// The CA: its key, certificate and a rebuilt issuer object rcgen signs with.
pub struct Ca {
    key: KeyPair,
    issuer: rcgen::Certificate,
    pub certificate_pem: String,
}

/// A freshly issued certificate.
pub struct Issued {
    pub pem: String,
    pub serial_hex: String,
    pub not_before: i64,
    pub not_after: i64,
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| CaError::Io { path: path.to_owned(), source })
}

pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| CaError::Io { path: path.to_owned(), source };
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)
}

fn write_public(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(|source| CaError::Io { path: path.to_owned(), source })
}

fn random_serial() -> SerialNumber {
    use rand_core::RngCore as _;
    let mut bytes = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut bytes);
    bytes[0] &= 0x7f; // positive, as RFC 5280 requires
    bytes[0] |= 0x01; // and never shortened by DER's leading-zero rule
    SerialNumber::from_slice(&bytes)
}

impl Ca {
    /// Create a new CA in `dir` (`ca.key`, `ca.crt`) named `name`.
    pub fn create(dir: &Path, name: &str) -> Result<Ca> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "OpenSphere");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::from_secs(3600);
        params.not_after = now + Duration::from_secs(10 * 365 * 24 * 3600);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        write_private(&dir.join("ca.key"), &key.serialize_pem())?;
        write_public(&dir.join("ca.crt"), &cert.pem())?;
        Self::load_with_key(&cert.pem(), key)
    }

    /// Load `ca.key` and `ca.crt` from `dir`.
    pub fn load(dir: &Path) -> Result<Ca> {
        let key = KeyPair::from_pem(&read(&dir.join("ca.key"))?)?;
        Self::load_with_key(&read(&dir.join("ca.crt"))?, key)
    }

    /// Use an existing CA certificate with a key from anywhere (file, HSM via `RemoteKeyPair`).
    pub fn load_with_key(certificate_pem: &str, key: KeyPair) -> Result<Ca> {
        // rcgen signs with an issuer `Certificate`; rebuilding it from the CA's parameters keeps
        // the issuer name and key identifier identical to the certificate on disk.
        let params = CertificateParams::from_ca_cert_pem(certificate_pem)?;
        let issuer = params.self_signed(&key)?;
        Ok(Ca { key, issuer, certificate_pem: certificate_pem.to_owned() })
    }

    /// Sign a device's PKCS#10 CSR (PEM). The CSR's signature is checked (proof it holds the
    /// key); its requested subject and extensions are ignored: the CA decides them.
    pub fn issue_device(&self, csr_pem: &str, device_id: &str, lifetime: Duration) -> Result<Issued> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| CaError::BadCsr(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, device_id);
        dn.push(DnType::OrganizationName, "OpenSphere device");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        self.finish(csr, params, lifetime)
    }

    /// Sign a certificate for a service (the MQTT broker's server cert, sphere-cloud's own
    /// HTTPS and MQTT client certs) for a key made here. Returns (certificate, key PEM).
    pub fn issue_service(
        &self,
        common_name: &str,
        dns_names: &[String],
        ip_addresses: &[std::net::IpAddr],
        server: bool,
        lifetime: Duration,
    ) -> Result<(Issued, String)> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "OpenSphere service");
        params.distinguished_name = dn;
        params.subject_alt_names = dns_names
            .iter()
            .filter_map(|n| n.clone().try_into().ok().map(SanType::DnsName))
            .chain(ip_addresses.iter().map(|ip| SanType::IpAddress(*ip)))
            .collect();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            if server { vec![ExtendedKeyUsagePurpose::ServerAuth] } else { vec![ExtendedKeyUsagePurpose::ClientAuth] };
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::from_secs(60);
        params.not_after = now + lifetime;
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        let (not_before, not_after) = (params.not_before, params.not_after);
        let cert = params.signed_by(&key, &self.issuer, &self.key)?;
        Ok((
            Issued {
                pem: cert.pem(),
                serial_hex: hex::encode(serial.as_ref()),
                not_before: not_before.unix_timestamp(),
                not_after: not_after.unix_timestamp(),
            },
            key.serialize_pem(),
        ))
    }

    fn finish(
        &self,
        mut csr: CertificateSigningRequestParams,
        mut params: CertificateParams,
        lifetime: Duration,
    ) -> Result<Issued> {
        // Backdate a minute for devices whose clock is slightly behind.
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::from_secs(60);
        params.not_after = now + lifetime;
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        let (not_before, not_after) = (params.not_before, params.not_after);
        csr.params = params;
        let cert = csr.signed_by(&self.issuer, &self.key)?;
        Ok(Issued {
            pem: cert.pem(),
            serial_hex: hex::encode(serial.as_ref()),
            not_before: not_before.unix_timestamp(),
            not_after: not_after.unix_timestamp(),
        })
    }

    /// A CRL listing `revoked` (serial hex, revocation time), valid for `validity`.
    pub fn crl_pem(&self, revoked: &[(String, i64)], number: u64, validity: Duration) -> Result<String> {
        let now = OffsetDateTime::now_utc();
        let revoked_certs = revoked
            .iter()
            .filter_map(|(serial, at)| {
                Some(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&hex::decode(serial).ok()?),
                    revocation_time: OffsetDateTime::from_unix_timestamp(*at).ok()?,
                    reason_code: Some(RevocationReason::Unspecified),
                    invalidity_date: None,
                })
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::from_secs(60),
            next_update: now + validity,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer, &self.key)?.pem()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_device_certificate_with_device_cn_and_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::create(dir.path(), "test CA").unwrap();
        let reloaded = Ca::load(dir.path()).unwrap();
        let device_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut req = CertificateParams::default();
        req.distinguished_name.push(DnType::CommonName, "someone-else");
        let csr = req.serialize_request(&device_key).unwrap().pem().unwrap();
        let issued = reloaded.issue_device(&csr, "abcd", Duration::from_secs(3600)).unwrap();
        assert!(issued.not_after - issued.not_before <= 3600 + 60);
        let (_, pem) = x509_parser::pem::parse_x509_pem(issued.pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        let cn = cert.subject().iter_common_name().next().unwrap().as_str().unwrap();
        assert_eq!(cn, "abcd", "the CA, not the CSR, names the device");
        let (_, ca_pem) = x509_parser::pem::parse_x509_pem(ca.certificate_pem.as_bytes()).unwrap();
        let ca_cert = ca_pem.parse_x509().unwrap();
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
        assert!(
            ca.issue_device(
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                "x",
                Duration::from_secs(1)
            )
            .is_err()
        );
        let crl = ca.crl_pem(&[(issued.serial_hex.clone(), 1_700_000_000)], 1, Duration::from_secs(3600)).unwrap();
        assert!(crl.contains("BEGIN X509 CRL"));
    }
}
