//! `sphere keys`: signing key pairs.

use crate::output::{CommandError, Output};
use serde_json::json;
use sphere_app_format::SigningKeyPair;
use sphere_app_format::fs_atomic;
use std::path::Path;

pub fn new(name: &str, dir: &Path, force: bool, output: &Output) -> Result<(), CommandError> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(CommandError::Usage(format!("key name \"{name}\" must be a plain file name")));
    }
    let private_path = dir.join(format!("{name}.key"));
    let public_path = dir.join(format!("{name}.pub"));
    for path in [&private_path, &public_path] {
        if path.exists() && !force {
            return Err(CommandError::Usage(format!("{} exists; pass --force to replace it", path.display())));
        }
    }
    let pair = SigningKeyPair::generate();
    let encode_error = |error: sphere_app_format::keys::KeyError| CommandError::Usage(error.to_string());
    let private_pem = pair.private_pem().map_err(encode_error)?;
    let public_pem = pair.public_pem().map_err(encode_error)?;
    let write_error =
        |path: &Path, error: std::io::Error| CommandError::Usage(format!("cannot write {}: {error}", path.display()));
    // Private key first and owner-only: if writing the public key fails, nothing secret leaks.
    fs_atomic::write_bytes(&private_path, 0o600, private_pem.as_bytes()).map_err(|e| write_error(&private_path, e))?;
    fs_atomic::write_bytes(&public_path, 0o644, public_pem.as_bytes()).map_err(|e| write_error(&public_path, e))?;
    let report = json!({
        "ok": true,
        "key_id": pair.id(),
        "private_key": private_path,
        "public_key": public_path,
    });
    output.print(&report, || {
        format!(
            "key {}\n  private {} (keep secret)\n  public  {} (give to devices and verifiers)",
            pair.id(),
            private_path.display(),
            public_path.display()
        )
    });
    Ok(())
}
