//! `sphere-updated`: signed, resumable over-the-air updates for OpenSphere devices.
//!
//! - [`updater`]: TUF verification (tough), release selection, anti-rollback, installing OS
//!   images into the inactive A/B slot (`sphere-slots`), M4 firmware and app packages.
//! - [`download`]: resumable, length-bounded, hash-while-writing downloads with backoff.
//! - [`http`]: the small HTTPS client (rustls) with range requests and stall timeouts.
//! - [`transport`]: tough's transport over that client.
//! - [`root_store`]: the trusted TUF root, kept power-cut safe.
//! - [`deferral`]: apps' update deferral, bounded from the first announcement (24 h for an
//!   OS update), kept across restarts.
//! - [`api`]: the D-Bus interface `org.opensphere.Update1`.
//!
//! See `docs/updates.md` for the design and the threat model.

pub mod api;
pub mod config;
pub mod deferral;
pub mod download;
pub mod http;
pub mod root_store;
pub mod server;
pub mod transport;
pub mod updater;
