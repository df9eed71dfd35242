//! The reference-values file: what a healthy device is allowed to have measured.
//!
//! Shared by sphere-cloud (which verifies evidence against it) and `sphere update repo
//! add-target --kind reference-values` (which refuses a malformed file before it is signed
//! into a release). The cloud turns it into lookup sets (`sphere_cloud::reference`).
//!
//! ```json
//! {
//!   "schema": "opensphere-reference-values-v1",
//!   "os_versions": ["1.0.0"],
//!   "measurements": [
//!     {"stage": "init", "component": "sphere-init", "digests": ["<sha256 hex>", "..."]}
//!   ],
//!   "policies": [
//!     {"app_id": "<id>", "sandbox": ["<sha256 hex>"], "firewall": ["<sha256 hex>"]}
//!   ]
//! }
//! ```

use crate::eventlog::{Digest, Stage};
use serde::{Deserialize, Serialize};

pub const SCHEMA: &str = "opensphere-reference-values-v1";

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceFile {
    pub schema: String,
    #[serde(default)]
    pub os_versions: Vec<String>,
    #[serde(default)]
    pub measurements: Vec<ReferenceMeasurement>,
    #[serde(default)]
    pub policies: Vec<ReferencePolicy>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceMeasurement {
    pub stage: Stage,
    pub component: String,
    pub digests: Vec<Digest>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferencePolicy {
    pub app_id: String,
    pub sandbox: Vec<Digest>,
    pub firewall: Vec<Digest>,
}

impl ReferenceFile {
    /// Parses `bytes` and checks the schema tag (unknown fields, bad digests and a wrong
    /// schema are all refused, so a typo cannot silently allow or deny a measurement).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let file: ReferenceFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        file.check_schema()?;
        Ok(file)
    }

    pub fn check_schema(&self) -> Result<(), String> {
        if self.schema != SCHEMA {
            return Err(format!("schema must be {SCHEMA:?}, found {:?}", self.schema));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_refuses_wrong_schema_unknown_fields_and_bad_digests() {
        let good = format!(
            r#"{{"schema":"{SCHEMA}","measurements":[{{"stage":"init","component":"sphere-init","digests":["{}"]}}]}}"#,
            "ab".repeat(32)
        );
        assert_eq!(ReferenceFile::parse(good.as_bytes()).map(|f| f.measurements.len()), Ok(1));
        assert!(ReferenceFile::parse(br#"{"schema":"v0"}"#).unwrap_err().contains("schema must be"));
        assert!(ReferenceFile::parse(format!(r#"{{"schema":"{SCHEMA}","extra":1}}"#).as_bytes()).is_err());
        let short = format!(
            r#"{{"schema":"{SCHEMA}","measurements":[{{"stage":"init","component":"c","digests":["abcd"]}}]}}"#
        );
        assert!(ReferenceFile::parse(short.as_bytes()).is_err());
        assert!(ReferenceFile::parse(b"not json").is_err());
    }
}
