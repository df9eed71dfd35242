//! OpenSphere A/B slots: the device side of over-the-air OS updates.
//!
//! - [`env`]: the U-Boot environment format (CRC-32, optional redundant copy with a flags
//!   byte), read and written the way U-Boot and libubootenv (`fw_printenv`/`fw_setenv`) do.
//! - [`state`]: the boot-state record kept in that environment (active slot, try-once flag,
//!   boot counter and limit, committed/good slot) and the boot loader's decision.
//! - [`writer`]: streaming an image into the inactive slot while hashing it (bounded memory,
//!   exact length and SHA-256 checked before the slot may become bootable; resumable).
//! - [`rollback`]: the anti-rollback minimum version (data-partition record; TPM NV index
//!   where a TPM is present).
//! - [`layout`]: finding the `bootenv`, `rootfs_a`, `rootfs_b` partitions and the running slot.
//!
//! [`Slots`] ties them together for an installer (`sphere-updated`):
//!
//! ```no_run
//! use sphere_slots::{Slots, ExpectedImage, layout::Layout};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let slots = Slots::open(Layout::discover()?)?;
//! let booted = slots.booted_slot()?;
//! let expected = ExpectedImage::from_hex(123_456, &"00".repeat(32))?;
//! // Either in one call from any reader ...
//! let image = std::fs::File::open("/data/update/rootfs.erofs")?;
//! let target = slots.install(booted, image, expected, "42", |done| eprintln!("{done} bytes"))?;
//! // ... or step by step with your own download loop (resumable):
//! let (target, mut writer) = slots.begin_install(booted, expected, 0)?;
//! writer.write_chunk(b"...")?;
//! let verified = writer.finish()?;
//! slots.finish_install(target, &verified, "42")?; // now on trial for the next boot
//! // After the reboot, once the health check passed:
//! slots.commit(slots.booted_slot()?)?;
//! # Ok(()) }
//! ```
//!
//! Power-cut safety: every record change is one redundant-copy environment write (old or new
//! record survives, never neither); the slot being written is marked not bootable *before* the
//! first byte and bootable only after verification; the running slot and, during a trial, the
//! fallback slot are never opened for writing.

pub mod env;
pub mod hash;
pub mod layout;
pub mod rollback;
pub mod state;
pub mod writer;

use std::io::Read;

use serde::Serialize;

pub use env::{Env, EnvError, EnvLocation, EnvStore};
pub use layout::{Layout, LayoutError};
pub use rollback::{FileMinVersion, MinVersionStore, RollbackError, raise_to_committed};
pub use state::{BootDecision, BootRecord, BootState, Slot, StateError};
pub use writer::{ExpectedImage, SlotWriter, Verified, WriteError};

/// Any failure of a [`Slots`] operation.
#[derive(Debug, thiserror::Error)]
pub enum SlotsError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("verified image is on {got}, not on slot {slot}'s device {want}")]
    WrongDevice { slot: Slot, got: String, want: String },
}

/// A failure of [`Slots::commit_and_raise`]: the commit itself, or raising the minimum after it.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Slots(#[from] SlotsError),
    #[error("slot committed, but the anti-rollback minimum was not raised: {0}")]
    MinVersion(#[from] RollbackError),
}

/// The A/B system: its layout and boot-state record.
#[derive(Debug, Clone)]
pub struct Slots {
    layout: Layout,
    record: BootRecord,
}

/// Status for `sphere update status` and the D-Bus API.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub booted: Option<Slot>,
    pub state: BootState,
    pub committed: bool,
    pub attempts_left: u32,
}

impl Slots {
    pub fn open(layout: Layout) -> Result<Self, SlotsError> {
        let record = BootRecord::new(EnvStore::new(layout.env.clone())?);
        Ok(Slots { layout, record })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn record(&self) -> &BootRecord {
        &self.record
    }

    pub fn booted_slot(&self) -> Result<Slot, SlotsError> {
        Ok(self.layout.booted_slot()?)
    }

    pub fn status(&self, booted: Option<Slot>) -> Result<Status, SlotsError> {
        let (_, state) = self.record.load()?;
        Ok(Status { booted, committed: state.committed(), attempts_left: state.attempts_left(), state })
    }

    /// Picks the target (the slot not running; refused while a trial is pending), marks it
    /// not bootable in the record, and opens a writer on it, resuming at `offset` (0 for a
    /// fresh install).
    pub fn begin_install(
        &self,
        booted: Slot,
        expected: ExpectedImage,
        offset: u64,
    ) -> Result<(Slot, SlotWriter), SlotsError> {
        let target = self.record.update(|state| {
            let target = state.install_target(booted)?;
            Ok((Some(state.begin_install(target)), target))
        })?;
        let writer = SlotWriter::resume(self.layout.slot_device(target), expected, offset)?;
        Ok((target, writer))
    }

    /// Marks the verified `target` bootable with `version` and puts it on trial for the next
    /// boot (try-once, `bootlimit` attempts).
    pub fn finish_install(&self, target: Slot, verified: &Verified, version: &str) -> Result<(), SlotsError> {
        let want = self.layout.slot_device(target);
        if verified.device() != want {
            return Err(SlotsError::WrongDevice {
                slot: target,
                got: verified.device().display().to_string(),
                want: want.display().to_string(),
            });
        }
        self.record.update(|state| Ok((Some(state.finish_install(target, version)?), ())))?;
        Ok(())
    }

    /// [`Slots::begin_install`], copy `image` in 1 MiB pieces, [`Slots::finish_install`].
    pub fn install(
        &self,
        booted: Slot,
        image: impl Read,
        expected: ExpectedImage,
        version: &str,
        progress: impl FnMut(u64),
    ) -> Result<Slot, SlotsError> {
        let (target, mut writer) = self.begin_install(booted, expected, 0)?;
        writer.copy_from(image, 1 << 20, progress)?;
        let verified = writer.finish()?;
        self.finish_install(target, &verified, version)?;
        Ok(target)
    }

    /// The health check passed on `booted`: commit it if it is on trial. Returns whether the
    /// record changed.
    pub fn commit(&self, booted: Slot) -> Result<bool, SlotsError> {
        Ok(self.record.update(|state| {
            let next = state.commit(booted);
            let changed = next.is_some();
            Ok((next, changed))
        })?)
    }

    /// The health check's whole step: [`Slots::commit`], then raise the anti-rollback minimum
    /// to the committed slot's recorded version ([`raise_to_committed`]). The record is
    /// committed first: a power cut between the two leaves a committed slot and the old
    /// minimum, which the next call (every boot, and sphere-updated's start) raises; the other
    /// order could pin the minimum above a fallback that is still needed. Returns whether the
    /// record changed and the new minimum, if it rose.
    pub fn commit_and_raise(
        &self,
        booted: Slot,
        store: &mut dyn MinVersionStore,
    ) -> Result<(bool, Option<u64>), CommitError> {
        let changed = self.commit(booted)?;
        let (_, state) = self.record.load().map_err(SlotsError::from)?;
        let raised = raise_to_committed(&state, booted, store)?;
        Ok((changed, raised))
    }

    /// Put the other slot on trial (manual rollback).
    pub fn rollback(&self, booted: Slot) -> Result<Slot, SlotsError> {
        Ok(self.record.update(|state| {
            let next = state.rollback(booted)?;
            let slot = next.slot;
            Ok((Some(next), slot))
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn setup(dir: &tempfile::TempDir) -> Slots {
        let env = EnvLocation::redundant_default(dir.path().join("bootenv"));
        EnvStore::create_file(&env).unwrap();
        let slots = [dir.path().join("a"), dir.path().join("b")];
        std::fs::write(&slots[0], b"running root A").unwrap();
        Slots::open(Layout { env, slots }).unwrap()
    }

    #[test]
    fn install_writes_only_the_inactive_slot_and_puts_it_on_trial() {
        let dir = tempfile::tempdir().unwrap();
        let slots = setup(&dir);
        let image = vec![0x5au8; 3 << 20];
        let expected = ExpectedImage { len: image.len() as u64, sha256: sha2::Sha256::digest(&image).into() };
        let target = slots.install(Slot::A, &image[..], expected, "2", |_| {}).unwrap();
        assert_eq!(target, Slot::B);
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"running root A");
        assert_eq!(std::fs::read(dir.path().join("b")).unwrap(), image);
        let status = slots.status(Some(Slot::A)).unwrap();
        assert_eq!((status.state.slot, status.committed, status.attempts_left), (Slot::B, false, 3));
        // A second install during the trial is refused (A is the fallback now).
        assert!(slots.install(Slot::B, &image[..], expected, "3", |_| {}).is_err());
        assert!(slots.commit(Slot::B).unwrap());
        assert!(slots.status(None).unwrap().committed);
    }

    #[test]
    fn commit_raises_the_minimum_to_the_installed_version() {
        let dir = tempfile::tempdir().unwrap();
        let slots = setup(&dir);
        let mut store = FileMinVersion::new(dir.path().join("data/min-version"));
        store.raise(1).unwrap();
        let image = vec![7u8; 4096];
        let expected = ExpectedImage { len: image.len() as u64, sha256: sha2::Sha256::digest(&image).into() };
        slots.install(Slot::A, &image[..], expected, "5", |_| {}).unwrap();
        // The fallback A still runs (trial not booted yet): nothing to commit, no raise.
        assert_eq!(slots.commit_and_raise(Slot::A, &mut store).unwrap(), (false, None));
        assert_eq!(store.minimum().unwrap(), 1);
        // The trial boot of B passes its health check.
        assert_eq!(slots.commit_and_raise(Slot::B, &mut store).unwrap(), (true, Some(5)));
        assert_eq!(store.minimum().unwrap(), 5);
        assert!(matches!(store.check(4), Err(RollbackError::Downgrade { candidate: 4, minimum: 5 })));
        // Later boots: nothing changes.
        assert_eq!(slots.commit_and_raise(Slot::B, &mut store).unwrap(), (false, None));
    }

    #[test]
    fn commit_after_a_lost_raise_catches_up() {
        // Power cut after the record's commit, before the minimum was written.
        let dir = tempfile::tempdir().unwrap();
        let slots = setup(&dir);
        let image = vec![9u8; 512];
        let expected = ExpectedImage { len: image.len() as u64, sha256: sha2::Sha256::digest(&image).into() };
        slots.install(Slot::A, &image[..], expected, "8", |_| {}).unwrap();
        assert!(slots.commit(Slot::B).unwrap());
        let mut store = FileMinVersion::new(dir.path().join("min-version"));
        assert_eq!(slots.commit_and_raise(Slot::B, &mut store).unwrap(), (false, Some(8)));
    }

    #[test]
    fn failed_verification_leaves_the_target_unbootable_and_no_trial() {
        let dir = tempfile::tempdir().unwrap();
        let slots = setup(&dir);
        let expected = ExpectedImage { len: 10, sha256: [1; 32] };
        assert!(slots.install(Slot::A, &[0u8; 10][..], expected, "2", |_| {}).is_err());
        let state = slots.status(None).unwrap().state;
        assert!(!state.is_bootable(Slot::B));
        assert!(state.committed());
        assert_eq!(state.next_boot().0, BootDecision::Normal { slot: Slot::A });
    }
}
