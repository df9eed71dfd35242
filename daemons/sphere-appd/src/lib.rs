//! sphere-appd: OpenSphere's app manager.
//!
//! - [`store`]: the on-device app store. Installs are atomic: a crash or power cut at any point
//!   leaves each app fully at its old version or fully at its new one, never a mix, and the
//!   store repairs itself when it is next opened.
//!
//! Apps are identified by their manifest's ComponentId, as on Azure Sphere.

pub mod store;
