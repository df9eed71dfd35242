//! The device's trusted TUF root, kept so a power cut cannot lose it or leave it half-written.
//!
//! Why this exists: tough persists the root it verified into its datastore by deleting
//! `root.json` and writing it anew (`tokio::fs::write`: truncate, write, no fsync) on *every*
//! metadata load. A power cut in that window leaves the file missing, empty or truncated. Read
//! back as the root of trust, an empty file made every later check fail ("device can never
//! update again"), and a missing one silently fell back to the image's `1.root.json`, undoing
//! key rotations (a revoked key trusted again until the chain walk finds the newer roots).
//!
//! So the device keeps its own copy, `state_dir/trusted-root.json`, replaced atomically (temp
//! file, fsync, rename, fsync dir) after each successful load, and starts each load from the
//! newest *complete* root among that copy, tough's copy and the image's: a torn file does not
//! parse and is skipped. Every candidate was verified before it was stored (or ships in the
//! image), and tough verifies the chosen root's own signatures again, so picking the highest
//! version cannot lower trust.

use std::path::{Path, PathBuf};

use crate::download::write_atomic;

/// A candidate root: where it came from and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootFile {
    pub path: PathBuf,
    pub version: u64,
    pub bytes: Vec<u8>,
}

/// `signed.version` of a complete root document; `None` for a missing, empty, torn or foreign
/// file (anything that is not a JSON object with `signed._type == "root"` and `signatures`).
pub fn root_version(bytes: &[u8]) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let signed = value.get("signed")?;
    if signed.get("_type")?.as_str()? != "root" || !value.get("signatures")?.is_array() {
        return None;
    }
    signed.get("version")?.as_u64()
}

/// The newest complete root among `candidates` (in order of preference on equal versions).
/// `None` when none is readable: the caller reports the image's root as the error.
pub fn newest(candidates: &[&Path]) -> Option<RootFile> {
    let mut best: Option<RootFile> = None;
    for path in candidates {
        let Ok(bytes) = std::fs::read(path) else { continue };
        let Some(version) = root_version(&bytes) else {
            eprintln!("sphere-updated: ignoring {}: not a complete TUF root (torn by a power cut?)", path.display());
            continue;
        };
        if best.as_ref().is_none_or(|b| version > b.version) {
            best = Some(RootFile { path: path.to_path_buf(), version, bytes });
        }
    }
    best
}

/// After a successful load: make `verified` (the root tough just verified and wrote to its
/// datastore) the durable copy at `ours`, unless `ours` already holds those bytes.
pub fn persist(ours: &Path, verified: &Path) -> std::io::Result<()> {
    let bytes = std::fs::read(verified)?;
    if root_version(&bytes).is_none() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: not a complete root after a successful load", verified.display()),
        ));
    }
    if std::fs::read(ours).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    write_atomic(ours, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(version: u64) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "signatures": [{"keyid": "ab", "sig": "cd"}],
            "signed": {"_type": "root", "version": version, "spec_version": "1.0.0"}
        }))
        .unwrap()
    }

    #[test]
    fn torn_and_missing_roots_are_skipped_and_the_newest_complete_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image-root.json");
        let tough = dir.path().join("tuf-root.json");
        let ours = dir.path().join("trusted-root.json");
        std::fs::write(&image, root(1)).unwrap();
        let candidates = [ours.as_path(), tough.as_path(), image.as_path()];

        // First boot: only the image's root.
        assert_eq!(newest(&candidates).unwrap().path, image);

        // A rotation to v3 was verified and stored by both.
        std::fs::write(&tough, root(3)).unwrap();
        std::fs::write(&ours, root(3)).unwrap();
        assert_eq!(newest(&candidates).unwrap().version, 3);

        // Power cuts in tough's remove+write window: empty, truncated, gone. Our copy carries it.
        for torn in [Vec::new(), root(3)[..20].to_vec()] {
            std::fs::write(&tough, &torn).unwrap();
            let got = newest(&candidates).unwrap();
            assert_eq!((got.path.as_path(), got.version), (ours.as_path(), 3));
        }
        std::fs::remove_file(&tough).unwrap();
        assert_eq!(newest(&candidates).unwrap().version, 3, "a missing tough copy must not fall back to v1");

        // Devices updated from before our copy existed: tough's (complete) copy is used.
        std::fs::remove_file(&ours).unwrap();
        std::fs::write(&tough, root(2)).unwrap();
        assert_eq!(newest(&candidates).unwrap().version, 2);

        // Other JSON is not a root.
        std::fs::write(&tough, br#"{"signed":{"_type":"timestamp","version":9},"signatures":[]}"#).unwrap();
        assert_eq!(newest(&candidates).unwrap().version, 1);
        assert!(newest(&[dir.path().join("none").as_path()]).is_none());
    }

    #[test]
    fn persist_replaces_the_copy_only_with_a_complete_root() {
        let dir = tempfile::tempdir().unwrap();
        let tough = dir.path().join("tuf/root.json");
        let ours = dir.path().join("trusted-root.json");
        std::fs::create_dir_all(tough.parent().unwrap()).unwrap();
        std::fs::write(&tough, root(4)).unwrap();
        persist(&ours, &tough).unwrap();
        assert_eq!(std::fs::read(&ours).unwrap(), root(4));
        std::fs::write(&tough, b"{\"sig").unwrap();
        assert!(persist(&ours, &tough).is_err());
        assert_eq!(std::fs::read(&ours).unwrap(), root(4), "a torn source must not replace the copy");
    }
}
