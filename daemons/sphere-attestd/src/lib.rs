//! sphere-attestd: the device half of OpenSphere's attestation (docs/attestation.md).
//!
//! Modules follow the protocol's concepts: [`tpm`] (TPM 2.0 commands, marshalled here),
//! [`keystore`] (the identity key: TPM or file), [`measure`] (measured boot into the event log
//! and PCRs), [`evidence`] (EAT token, CSR, TLS signing key), [`attest`] (the exchange with
//! sphere-cloud), [`mqtt`] (the mutual-TLS cloud link), [`queue`] (the on-disk outbox) and
//! [`violations`] (error reports from the app manager). Wire formats are sphere-attestation's.

pub mod attest;
pub mod bench;
pub mod config;
pub mod evidence;
pub mod fsutil;
pub mod http;
pub mod keystore;
pub mod measure;
pub mod mqtt;
pub mod queue;
pub mod tpm;
pub mod violations;
