//! sphere-cloud: OpenSphere's self-hostable security service.
//!
//! Devices prove what they booted (EAT evidence, [`sphere_attestation`]), the [`verifier`]
//! compares it with [`reference`] values, the [`ca`] issues a short-lived client certificate,
//! and the device then talks MQTT over mutual TLS ([`mqtt`]; to mosquitto or to the embedded
//! [`broker`]). Operators manage devices, groups, releases and error reports through the HTTPS
//! API ([`http`]) or `sphere` CLI.
//! State lives in SQLite or PostgreSQL ([`store`]). [`sim`] is a simulated device with
//! software keys for tests and the benchmark.
//!
//! Operator guide: `docs/cloud.md`.

pub mod broker;
pub mod ca;
pub mod http;
pub mod mqtt;
pub mod reference;
pub mod reference_repo;
pub mod service;
pub mod sim;
pub mod store;
pub mod tls;
pub mod verifier;
