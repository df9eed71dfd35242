//! Anti-rollback: a monotonic minimum version. An update whose version is below it is refused,
//! even when correctly signed, so an attacker who holds an old signed image with a known hole
//! cannot put it back on the device.
//!
//! Versions here are unsigned integers (a "security version": the update metadata maps release
//! versions onto it). The minimum only ever rises: [`MinVersionStore::raise`] ignores lower
//! values, and a downgrade is rejected before a single byte is written to a slot.
//!
//! # Where it is stored, and what that protects against
//!
//! - [`FileMinVersion`] (this crate): a small file on the data partition, replaced atomically
//!   (write to a temporary name, fsync, rename, fsync the directory), so a power cut leaves
//!   the old or the new value. It stops rollback **through the update path**: a replayed or
//!   mix-and-matched signed old release offered by a network attacker or a malicious
//!   repository mirror. It does **not** stop someone who controls the running OS as root
//!   (they can rewrite the file) or who has the storage in hand (they can rewrite the data
//!   partition offline, or erase it: the device then accepts any signed version again, down
//!   to the oldest signed image).
//! - A TPM NV index (owned by the attestation code, helper "attest-device"), defined with
//!   `TPMA_NV_COUNTER` (increment-only) or with a write policy bound to a PCR state that only
//!   the update path reaches: the running OS cannot lower it, and erasing the disk does not
//!   reset it. Where a TPM is present it is the authority and implements [`MinVersionStore`];
//!   the file then serves as a cache only.
//!
//! The boot side enforces nothing here: the minimum is checked before installing, and raised
//! only once the new version has committed (raising it at install time would brick the
//! fallback slot's version).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a version check or the store failed.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("version {candidate} is below the anti-rollback minimum {minimum}")]
    Downgrade { candidate: u64, minimum: u64 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a version number: {text:?}")]
    Corrupt { path: PathBuf, text: String },
}

/// A monotonic minimum version (file, or a TPM NV index elsewhere).
pub trait MinVersionStore {
    /// The current minimum (0 when never set).
    fn minimum(&self) -> Result<u64, RollbackError>;
    /// Raises the minimum to `version`; a lower or equal value changes nothing.
    fn raise(&mut self, version: u64) -> Result<(), RollbackError>;

    /// `Ok` when `candidate` may be installed.
    fn check(&self, candidate: u64) -> Result<(), RollbackError> {
        let minimum = self.minimum()?;
        if candidate < minimum { Err(RollbackError::Downgrade { candidate, minimum }) } else { Ok(()) }
    }
}

/// The data-partition record: one decimal number in a file, e.g. `/data/sphere/min-version`.
#[derive(Debug, Clone)]
pub struct FileMinVersion {
    path: PathBuf,
}

/// Where the QEMU image and the Yocto image keep it.
pub const DEFAULT_MIN_VERSION_PATH: &str = "/data/sphere/min-version";

impl FileMinVersion {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileMinVersion { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> RollbackError {
        RollbackError::Io { path: self.path.clone(), source }
    }
}

impl MinVersionStore for FileMinVersion {
    fn minimum(&self) -> Result<u64, RollbackError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => text
                .trim()
                .parse()
                .map_err(|_| RollbackError::Corrupt { path: self.path.clone(), text: text.chars().take(40).collect() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(self.io(e)),
        }
    }

    fn raise(&mut self, version: u64) -> Result<(), RollbackError> {
        if version <= self.minimum()? {
            return Ok(());
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        // A per-process temporary name: init (at commit) and sphere-updated (at start) may
        // raise at the same moment, and a shared name would let one truncate the other's file
        // between its write and its rename (an empty record reads as corrupt).
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            std::process::id()
        ));
        let mut file = File::create(&tmp).map_err(|e| self.io(e))?;
        writeln!(file, "{version}").map_err(|e| self.io(e))?;
        file.sync_all().map_err(|e| self.io(e))?;
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| self.io(e))
    }
}

/// After a committed boot of `booted`: raises `store` to the version the boot record holds
/// for that slot (recorded by [`crate::Slots::finish_install`] at install time). Returns the
/// new minimum when it rose.
///
/// Nothing changes while `booted` is on trial or is not the committed (good) slot: during a
/// trial the fallback must stay installable-over and bootable, and a fallback boot must not
/// pin the minimum to the trial's version. A version that is not a decimal number (a factory
/// label such as `dev`) raises nothing. Idempotent, so it also catches up after a power cut
/// between the record's commit and this step.
pub fn raise_to_committed(
    state: &crate::BootState,
    booted: crate::Slot,
    store: &mut dyn MinVersionStore,
) -> Result<Option<u64>, RollbackError> {
    if !state.committed() || state.slot != booted || state.good_slot != booted {
        return Ok(None);
    }
    let Some(version) = state.version(booted).and_then(|v| v.trim().parse::<u64>().ok()) else {
        return Ok(None);
    };
    if version <= store.minimum()? {
        return Ok(None);
    }
    store.raise(version)?;
    Ok(Some(version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BootState, Slot};

    #[test]
    fn commit_raises_to_the_committed_slot_version_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileMinVersion::new(dir.path().join("min-version"));
        store.raise(3).unwrap();
        let base = BootState { bootable: [true, false], versions: [Some("3".into()), None], ..BootState::default() };
        let trial = base.finish_install(Slot::B, "7").unwrap();
        // On trial: the fallback (3) must stay the floor.
        assert_eq!(raise_to_committed(&trial, Slot::B, &mut store).unwrap(), None);
        assert_eq!(store.minimum().unwrap(), 3);
        // The trial fell back to A: A is committed, its version is 3, nothing rises to 7.
        let fell_back = BootState { upgrade_available: false, slot: Slot::A, ..trial.clone() };
        assert_eq!(raise_to_committed(&fell_back, Slot::A, &mut store).unwrap(), None);
        assert_eq!(raise_to_committed(&fell_back, Slot::B, &mut store).unwrap(), None);
        assert_eq!(store.minimum().unwrap(), 3);
        // Committed B: the floor becomes 7, and a second call changes nothing.
        let committed = trial.commit(Slot::B).unwrap();
        assert_eq!(raise_to_committed(&committed, Slot::B, &mut store).unwrap(), Some(7));
        assert_eq!(raise_to_committed(&committed, Slot::B, &mut store).unwrap(), None);
        assert_eq!(std::fs::read_to_string(store.path()).unwrap(), "7\n");
        // Never lowered: a committed slot whose version is below the floor leaves it.
        let old = BootState { versions: [Some("2".into()), None], ..BootState::default() };
        assert_eq!(raise_to_committed(&old, Slot::A, &mut store).unwrap(), None);
        assert_eq!(store.minimum().unwrap(), 7);
        // A non-numeric label raises nothing.
        let label = BootState { versions: [Some("dev".into()), None], ..BootState::default() };
        assert_eq!(raise_to_committed(&label, Slot::A, &mut store).unwrap(), None);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("min-version")]);
    }

    #[test]
    fn minimum_only_rises() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileMinVersion::new(dir.path().join("sphere/min-version"));
        assert_eq!(store.minimum().unwrap(), 0);
        store.raise(5).unwrap();
        store.raise(3).unwrap();
        assert_eq!(store.minimum().unwrap(), 5);
        assert!(store.check(5).is_ok());
        assert!(matches!(store.check(4), Err(RollbackError::Downgrade { candidate: 4, minimum: 5 })));
        std::fs::write(store.path(), "five").unwrap();
        assert!(matches!(store.minimum(), Err(RollbackError::Corrupt { .. })));
        assert!(store.check(100).is_err(), "a corrupt record refuses installs rather than allowing any");
    }
}
