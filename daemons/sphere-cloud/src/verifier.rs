//! The attestation verifier's judgement of a signature-checked token and its event log.
//!
//! This is the pure part: no clock, no database. The server ([`crate::service`]) does what
//! needs state first (find the device's registered key, check the signature, consume the
//! single-use nonce and check its expiry) and then calls [`appraise`]. Keeping the decision a
//! plain function of its inputs is what lets every rule have a unit test.
//!
//! Rules (each failure is one human-readable reason; all are collected, not just the first):
//! 1. The event log is well formed (bounded, each entry in its stage's PCR).
//! 2. Its digest equals the token's event-log digest (binds the log to the signature).
//! 3. Replaying it gives exactly the token's PCR measurements.
//! 4. Every entry's digest is a reference value for its (stage, component).
//! 5. The OS version is one the reference values allow (when they name any).
//! 6. Every app in the token has an `app` entry with the same package digest.
//! 7. Every app's sandbox/firewall policy hash is a reference value, and equals the log's
//!    `sandbox-policy`/`firewall-policy` entry for that app.
//! 8. If a CSR came with the evidence, its SHA-256 equals the token's CSR digest.
//!
//! [`appraise_tpm_quote`] adds the hardware rule: a TPM quote in the token must be a real
//! quote by the device's key over SHA-256(nonce) and exactly the token's PCR values, and with
//! `require` set a token without one fails. Without the quote, the PCR claims rest only on the
//! OS that signed them (a TPM signs any digest it is given with a non-restricted key); the
//! quote is what makes them the TPM's own statement.

use crate::reference::ReferenceValues;
use sphere_attestation::{DevicePublicKey, Digest, EventLog, EvidenceClaims, Stage, quote};

/// The verdict: passed when `reasons` is empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Appraisal {
    pub reasons: Vec<String>,
}

impl Appraisal {
    pub fn passed(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// Judge `claims` (already signature-checked, nonce already consumed) with `log` against `refs`.
pub fn appraise(claims: &EvidenceClaims, log: &EventLog, refs: &ReferenceValues, csr_pem: Option<&str>) -> Appraisal {
    let mut reasons = Vec::new();
    if let Err(problem) = log.check_well_formed() {
        reasons.push(format!("event log malformed: {problem}"));
        return Appraisal { reasons };
    }
    if log.digest() != claims.event_log_digest {
        reasons.push(format!(
            "event log digest {} does not match the signed digest {} (the log was altered)",
            log.digest(),
            claims.event_log_digest
        ));
    }
    let replayed = log.replay();
    if replayed != claims.measurements {
        reasons.push("replaying the event log does not give the signed PCR measurements".to_owned());
    }
    for entry in &log.entries {
        let allowed = refs.measurements.get(&(entry.stage, entry.component.clone()));
        if !allowed.is_some_and(|set| set.contains(&entry.digest)) {
            reasons.push(format!(
                "measurement not in the reference values: {} {} = {}",
                entry.stage, entry.component, entry.digest
            ));
        }
    }
    if !refs.os_versions.is_empty() && !refs.os_versions.contains(&claims.os_version) {
        reasons.push(format!("OS version {:?} is not a released version", claims.os_version));
    }
    let logged = |stage: Stage, component: &str| -> Vec<Digest> {
        log.entries.iter().filter(|e| e.stage == stage && e.component == component).map(|e| e.digest).collect()
    };
    for app in &claims.apps {
        if !logged(Stage::App, &app.app_id).contains(&app.package_digest) {
            reasons.push(format!("app {} {}: package digest is not in the event log", app.app_id, app.version));
        }
    }
    for policy in &claims.policy_hashes {
        for (what, stage, digest, table) in [
            ("sandbox", Stage::SandboxPolicy, policy.sandbox, &refs.sandbox),
            ("firewall", Stage::FirewallPolicy, policy.firewall, &refs.firewall),
        ] {
            if !table.get(&policy.app_id).is_some_and(|set| set.contains(&digest)) {
                reasons
                    .push(format!("app {}: {what} policy hash {digest} is not in the reference values", policy.app_id));
            }
            if logged(stage, &policy.app_id) != [digest] {
                reasons.push(format!("app {}: {what} policy hash does not match the event log", policy.app_id));
            }
        }
    }
    if csr_pem.is_some_and(|csr| claims.csr_digest != Some(Digest::of(csr.as_bytes()))) {
        reasons.push("the CSR sent is not the one the evidence signed".to_owned());
    }
    Appraisal { reasons }
}

/// The TPM-quote rule: `None` when it passes, else the reason.
pub fn appraise_tpm_quote(claims: &EvidenceClaims, key: &DevicePublicKey, require: bool) -> Option<String> {
    match &claims.tpm_quote {
        Some(tpm_quote) => quote::verify_quote(tpm_quote, key, &claims.nonce, &claims.measurements)
            .err()
            .map(|e| format!("TPM quote does not vouch for the measurements: {e}")),
        None if require => Some("no TPM quote, and this cloud requires one (--require-tpm-quote)".to_owned()),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{ReferenceFile, ReferenceMeasurement, ReferencePolicy, SCHEMA};
    use sphere_attestation::{AppVersion, PolicyHashes};

    fn healthy() -> (EvidenceClaims, EventLog, ReferenceValues) {
        let mut log = EventLog::new();
        log.measure(Stage::BootRecord, "initramfs", b"initramfs");
        log.measure(Stage::Init, "sphere-init", b"init");
        let pkg = log.measure(Stage::App, "app1", b"package");
        let sandbox = log.measure(Stage::SandboxPolicy, "app1", b"sandbox");
        let firewall = log.measure(Stage::FirewallPolicy, "app1", b"firewall");
        let claims = EvidenceClaims {
            nonce: vec![1; 16],
            ueid: vec![1; 33],
            issued_at: 0,
            measurements: log.replay(),
            event_log_digest: log.digest(),
            os_version: "1.0.0".into(),
            apps: vec![AppVersion { app_id: "app1".into(), version: "1".into(), package_digest: pkg }],
            policy_hashes: vec![PolicyHashes { app_id: "app1".into(), sandbox, firewall }],
            tpm_quote: None,
            csr_digest: Some(Digest::of(b"CSR")),
        };
        let file = ReferenceFile {
            schema: SCHEMA.into(),
            os_versions: vec!["1.0.0".into()],
            measurements: log
                .entries
                .iter()
                .map(|e| ReferenceMeasurement {
                    stage: e.stage,
                    component: e.component.clone(),
                    digests: vec![e.digest],
                })
                .collect(),
            policies: vec![ReferencePolicy { app_id: "app1".into(), sandbox: vec![sandbox], firewall: vec![firewall] }],
        };
        let refs = ReferenceValues::from_file_contents(file, "test".into()).unwrap();
        (claims, log, refs)
    }

    fn reasons(a: Appraisal) -> String {
        a.reasons.join("\n")
    }

    #[test]
    fn healthy_device_passes() {
        let (claims, log, refs) = healthy();
        assert_eq!(appraise(&claims, &log, &refs, Some("CSR")), Appraisal::default());
    }

    #[test]
    fn tampered_event_log_fails_on_digest() {
        let (claims, mut log, refs) = healthy();
        log.entries[1].digest = Digest::of(b"evil init");
        let r = reasons(appraise(&claims, &log, &refs, None));
        assert!(r.contains("event log digest"), "{r}");
        assert!(r.contains("does not give the signed PCR"), "{r}");
    }

    #[test]
    fn dropped_entry_fails() {
        let (claims, mut log, refs) = healthy();
        log.entries.remove(0);
        assert!(!appraise(&claims, &log, &refs, None).passed());
    }

    #[test]
    fn unknown_measurement_fails_even_when_consistently_signed() {
        // The device honestly reports a binary nobody released: log and token agree.
        let (mut claims, mut log, refs) = healthy();
        log.entries[1].digest = Digest::of(b"patched init");
        claims.measurements = log.replay();
        claims.event_log_digest = log.digest();
        let r = reasons(appraise(&claims, &log, &refs, None));
        assert!(r.contains("not in the reference values: init sphere-init"), "{r}");
        assert!(!r.contains("event log digest"), "{r}");
    }

    #[test]
    fn unreleased_os_version_fails() {
        let (mut claims, log, refs) = healthy();
        claims.os_version = "9.9.9".into();
        assert!(reasons(appraise(&claims, &log, &refs, None)).contains("OS version"));
    }

    #[test]
    fn policy_hash_not_in_reference_fails() {
        let (mut claims, mut log, refs) = healthy();
        let evil = Digest::of(b"allow everything");
        log.entries[4].digest = evil;
        claims.policy_hashes[0].firewall = evil;
        claims.measurements = log.replay();
        claims.event_log_digest = log.digest();
        let r = reasons(appraise(&claims, &log, &refs, None));
        assert!(r.contains("firewall policy hash"), "{r}");
    }

    #[test]
    fn policy_claim_disagreeing_with_log_fails() {
        let (mut claims, log, refs) = healthy();
        claims.policy_hashes[0].sandbox = Digest::of(b"other");
        let r = reasons(appraise(&claims, &log, &refs, None));
        assert!(r.contains("sandbox policy hash does not match the event log"), "{r}");
    }

    #[test]
    fn app_without_log_entry_fails() {
        let (mut claims, log, refs) = healthy();
        claims.apps[0].package_digest = Digest::of(b"other");
        assert!(reasons(appraise(&claims, &log, &refs, None)).contains("package digest"));
    }

    #[test]
    fn swapped_csr_fails() {
        let (claims, log, refs) = healthy();
        let r = reasons(appraise(&claims, &log, &refs, Some("ATTACKER CSR")));
        assert!(r.contains("CSR"), "{r}");
    }

    #[test]
    fn empty_reference_values_refuse_everything_measured() {
        let (claims, log, _) = healthy();
        assert!(!appraise(&claims, &log, &ReferenceValues::default(), None).passed());
    }

    fn p256_key() -> DevicePublicKey {
        use sphere_attestation::DeviceSigner;
        sphere_attestation::P256Signer::generate().public_key()
    }

    #[test]
    fn a_missing_quote_fails_only_when_required() {
        let (claims, _, _) = healthy();
        assert_eq!(appraise_tpm_quote(&claims, &p256_key(), false), None);
        assert!(appraise_tpm_quote(&claims, &p256_key(), true).is_some_and(|r| r.contains("no TPM quote")));
    }

    #[test]
    fn a_forged_quote_fails() {
        let (mut claims, _, _) = healthy();
        claims.tpm_quote = Some(sphere_attestation::TpmQuote { attest: vec![0xff; 80], signature: vec![0; 64] });
        for require in [false, true] {
            let reason = appraise_tpm_quote(&claims, &p256_key(), require);
            assert!(reason.is_some_and(|r| r.contains("TPM quote does not vouch")));
        }
    }
}
