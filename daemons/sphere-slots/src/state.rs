//! The boot-state record: which slot boots, whether it is on trial, how many attempts it has
//! left, and which slot is the known-good fallback. Kept as variables of a U-Boot environment
//! ([`crate::env`]) so a real board's U-Boot script and the QEMU image's initramfs read and
//! update the very same record.
//!
//! | variable            | meaning                                                              |
//! |---------------------|----------------------------------------------------------------------|
//! | `sphere_slot`       | `a` or `b`: the slot the boot loader boots                           |
//! | `sphere_good_slot`  | `a` or `b`: the last committed slot, the fallback                    |
//! | `upgrade_available` | `1` while `sphere_slot` is on trial (the try-once flag; U-Boot's own |
//! |                     | bootcount feature uses the same name); `0` once committed            |
//! | `bootcount`         | boots of the trial slot so far (U-Boot's name)                       |
//! | `bootlimit`         | attempts a trial slot gets before the fallback (U-Boot's name)       |
//! | `sphere_bootable_a` | `1` when slot A holds a complete, verified image; `0` while written  |
//! | `sphere_bootable_b` | the same for slot B                                                  |
//! | `sphere_version_a`  | version of the image in slot A (informational)                       |
//! | `sphere_version_b`  | the same for slot B                                                  |
//! | `sphere_failed_slot`| the slot the last fallback left (cleared by the next commit)          |
//!
//! Missing variables take their defaults (slot A, committed, limit 3), so a blank record boots
//! slot A: the factory state. The committed flag of the issue is `upgrade_available == 0`.
//!
//! Every change is load → one mutation → write ([`BootRecord::update`]), and each write is
//! one redundant-copy write of the environment, so a power cut leaves the record before or
//! after the mutation, never between.

use serde::{Deserialize, Serialize};

use crate::env::{Env, EnvError, EnvStore};

/// One of the two root filesystem slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// `a` or `b`, as stored in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// The GPT partition name of the slot (`rootfs_a`, `rootfs_b`), as in the wic kickstart.
    pub fn partition_name(self) -> &'static str {
        match self {
            Slot::A => "rootfs_a",
            Slot::B => "rootfs_b",
        }
    }

    pub fn parse(text: &str) -> Option<Slot> {
        match text.trim() {
            "a" | "A" => Some(Slot::A),
            "b" | "B" => Some(Slot::B),
            _ => None,
        }
    }

    fn index(self) -> usize {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Default `bootlimit`: a trial slot gets this many boots to commit.
pub const DEFAULT_BOOT_LIMIT: u32 = 3;

/// The decoded record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootState {
    /// The slot the boot loader boots (`sphere_slot`).
    pub slot: Slot,
    /// The last committed slot, the fallback (`sphere_good_slot`).
    pub good_slot: Slot,
    /// Try-once flag: `slot` is on trial and not yet committed (`upgrade_available`).
    pub upgrade_available: bool,
    /// Boots of the trial slot so far (`bootcount`).
    pub bootcount: u32,
    /// Boots a trial slot gets (`bootlimit`).
    pub bootlimit: u32,
    /// Per slot (A, B): holds a complete verified image (`sphere_bootable_X`).
    pub bootable: [bool; 2],
    /// Per slot (A, B): version of its image, if known (`sphere_version_X`).
    pub versions: [Option<String>; 2],
    /// The slot the last automatic fallback abandoned (`sphere_failed_slot`).
    pub failed_slot: Option<Slot>,
}

impl Default for BootState {
    fn default() -> Self {
        BootState {
            slot: Slot::A,
            good_slot: Slot::A,
            upgrade_available: false,
            bootcount: 0,
            bootlimit: DEFAULT_BOOT_LIMIT,
            bootable: [true, false],
            versions: [None, None],
            failed_slot: None,
        }
    }
}

/// A record that a CRC-valid environment holds but that makes no sense.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("boot-state variable {name}={value:?} is invalid: {why}")]
    BadVariable { name: &'static str, value: String, why: &'static str },
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error("slot {0} is on trial (not committed yet): commit or let it fall back first")]
    TrialPending(Slot),
    #[error("slot {target} cannot be written: it is the {role} slot")]
    SlotInUse { target: Slot, role: &'static str },
    #[error("slot {0} holds no verified image")]
    NotBootable(Slot),
}

/// What the boot loader does on this boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum BootDecision {
    /// A committed slot: boot it, change nothing.
    Normal { slot: Slot },
    /// A trial slot: boot it; `attempt` of `limit` (already counted in the record).
    Trial { slot: Slot, attempt: u32, limit: u32 },
    /// The trial slot used up its attempts (or is not bootable): boot the good slot instead.
    Fallback { from: Slot, to: Slot },
}

impl BootDecision {
    pub fn slot(self) -> Slot {
        match self {
            BootDecision::Normal { slot } | BootDecision::Trial { slot, .. } => slot,
            BootDecision::Fallback { to, .. } => to,
        }
    }
}

fn get_slot(env: &Env, name: &'static str, default: Slot) -> Result<Slot, StateError> {
    match env.get(name) {
        None => Ok(default),
        Some(value) => Slot::parse(value).ok_or_else(|| StateError::BadVariable {
            name,
            value: value.to_string(),
            why: "expected a or b",
        }),
    }
}

fn get_u32(env: &Env, name: &'static str, default: u32) -> Result<u32, StateError> {
    match env.get(name) {
        None => Ok(default),
        // U-Boot's setenv of a number writes decimal; env_get_ulong also takes decimal here.
        Some(value) => value.trim().parse().map_err(|_| StateError::BadVariable {
            name,
            value: value.to_string(),
            why: "expected a decimal number",
        }),
    }
}

fn get_bool(env: &Env, name: &'static str, default: bool) -> Result<bool, StateError> {
    match env.get(name) {
        None => Ok(default),
        Some("1" | "y" | "yes" | "true") => Ok(true),
        Some("0" | "n" | "no" | "false" | "") => Ok(false),
        Some(value) => Err(StateError::BadVariable { name, value: value.to_string(), why: "expected 0 or 1" }),
    }
}

const BOOTABLE: [&str; 2] = ["sphere_bootable_a", "sphere_bootable_b"];
const VERSION: [&str; 2] = ["sphere_version_a", "sphere_version_b"];

impl BootState {
    /// Reads the record's variables from an environment (defaults for missing ones).
    pub fn from_env(env: &Env) -> Result<Self, StateError> {
        let defaults = BootState::default();
        let bootlimit = get_u32(env, "bootlimit", DEFAULT_BOOT_LIMIT)?;
        if bootlimit == 0 {
            return Err(StateError::BadVariable { name: "bootlimit", value: "0".into(), why: "must be at least 1" });
        }
        let failed_slot = match env.get("sphere_failed_slot") {
            None | Some("") => None,
            Some(_) => Some(get_slot(env, "sphere_failed_slot", Slot::A)?),
        };
        Ok(BootState {
            slot: get_slot(env, "sphere_slot", defaults.slot)?,
            good_slot: get_slot(env, "sphere_good_slot", defaults.good_slot)?,
            upgrade_available: get_bool(env, "upgrade_available", false)?,
            bootcount: get_u32(env, "bootcount", 0)?,
            bootlimit,
            bootable: [
                get_bool(env, BOOTABLE[0], defaults.bootable[0])?,
                get_bool(env, BOOTABLE[1], defaults.bootable[1])?,
            ],
            versions: [env.get(VERSION[0]).map(str::to_string), env.get(VERSION[1]).map(str::to_string)],
            failed_slot,
        })
    }

    /// Writes the record's variables into `env`, leaving every other variable alone (a real
    /// board's environment also holds `bootcmd` and friends).
    pub fn to_env(&self, env: &mut Env) -> Result<(), EnvError> {
        env.set("sphere_slot", self.slot.as_str())?;
        env.set("sphere_good_slot", self.good_slot.as_str())?;
        env.set("upgrade_available", if self.upgrade_available { "1" } else { "0" })?;
        env.set("bootcount", &self.bootcount.to_string())?;
        env.set("bootlimit", &self.bootlimit.to_string())?;
        for slot in Slot::ALL {
            let i = slot.index();
            env.set(BOOTABLE[i], if self.bootable[i] { "1" } else { "0" })?;
            match &self.versions[i] {
                Some(version) => env.set(VERSION[i], version)?,
                None => {
                    env.remove(VERSION[i]);
                }
            }
        }
        match self.failed_slot {
            Some(slot) => env.set("sphere_failed_slot", slot.as_str())?,
            None => {
                env.remove("sphere_failed_slot");
            }
        }
        Ok(())
    }

    /// Committed: not on trial.
    pub fn committed(&self) -> bool {
        !self.upgrade_available
    }

    /// Boots the trial slot has left (0 when committed).
    pub fn attempts_left(&self) -> u32 {
        if self.upgrade_available { self.bootlimit.saturating_sub(self.bootcount) } else { 0 }
    }

    pub fn is_bootable(&self, slot: Slot) -> bool {
        self.bootable[slot.index()]
    }

    pub fn version(&self, slot: Slot) -> Option<&str> {
        self.versions[slot.index()].as_deref()
    }

    /// The boot loader's step: which slot to boot, and the record to persist *before*
    /// booting it (so a hang counts as an attempt). `None` means nothing changes.
    ///
    /// - committed: boot `slot`;
    /// - on trial with attempts left and a bootable slot: count the attempt, boot it;
    /// - on trial with no attempts left (or not bootable): drop the trial, boot `good_slot`.
    pub fn next_boot(&self) -> (BootDecision, Option<BootState>) {
        if !self.upgrade_available {
            return (BootDecision::Normal { slot: self.slot }, None);
        }
        let mut next = self.clone();
        if self.bootcount >= self.bootlimit || !self.is_bootable(self.slot) || self.slot == self.good_slot {
            next.upgrade_available = false;
            next.bootcount = 0;
            next.failed_slot = (self.slot != self.good_slot).then_some(self.slot);
            next.slot = self.good_slot;
            return (BootDecision::Fallback { from: self.slot, to: self.good_slot }, Some(next));
        }
        next.bootcount += 1;
        (BootDecision::Trial { slot: self.slot, attempt: next.bootcount, limit: self.bootlimit }, Some(next))
    }

    /// The health check passed on `booted`: if it is the trial slot, it becomes the good slot.
    /// `None` when there is nothing to commit (already committed, or running the fallback).
    pub fn commit(&self, booted: Slot) -> Option<BootState> {
        if !self.upgrade_available || self.slot != booted {
            return None;
        }
        let mut next = self.clone();
        next.upgrade_available = false;
        next.bootcount = 0;
        next.good_slot = booted;
        next.failed_slot = None;
        Some(next)
    }

    /// The slot an update may write while `booted` runs: the other one, and only when no trial
    /// is pending (during a trial the other slot is the fallback and must stay intact).
    pub fn install_target(&self, booted: Slot) -> Result<Slot, StateError> {
        if self.upgrade_available {
            return Err(StateError::TrialPending(self.slot));
        }
        let target = booted.other();
        if target == self.good_slot {
            return Err(StateError::SlotInUse { target, role: "committed (fallback)" });
        }
        Ok(target)
    }

    /// Before writing `target`: it no longer holds a bootable image.
    pub fn begin_install(&self, target: Slot) -> BootState {
        let mut next = self.clone();
        next.bootable[target.index()] = false;
        next.versions[target.index()] = None;
        next
    }

    /// After writing and verifying `target`: bootable, with `version`, and on trial for the
    /// next boot (try-once with `bootlimit` attempts).
    pub fn finish_install(&self, target: Slot, version: &str) -> Result<BootState, StateError> {
        if self.upgrade_available {
            return Err(StateError::TrialPending(self.slot));
        }
        if target == self.good_slot {
            return Err(StateError::SlotInUse { target, role: "committed (fallback)" });
        }
        let mut next = self.clone();
        next.bootable[target.index()] = true;
        next.versions[target.index()] = Some(version.to_string());
        next.slot = target;
        next.upgrade_available = true;
        next.bootcount = 0;
        next.failed_slot = None;
        Ok(next)
    }

    /// Manual rollback: put the other slot on trial (so a broken old image still falls back).
    pub fn rollback(&self, booted: Slot) -> Result<BootState, StateError> {
        if self.upgrade_available {
            return Err(StateError::TrialPending(self.slot));
        }
        let target = booted.other();
        if !self.is_bootable(target) {
            return Err(StateError::NotBootable(target));
        }
        let mut next = self.clone();
        next.good_slot = booted;
        next.slot = target;
        next.upgrade_available = true;
        next.bootcount = 0;
        Ok(next)
    }
}

/// The boot-state record on its environment store: load → mutate → write.
#[derive(Debug, Clone)]
pub struct BootRecord {
    store: EnvStore,
}

impl BootRecord {
    pub fn new(store: EnvStore) -> Self {
        BootRecord { store }
    }

    pub fn store(&self) -> &EnvStore {
        &self.store
    }

    /// The environment and the record in it. A blank or fully corrupt environment yields the
    /// factory defaults (slot A, committed), as U-Boot falls back to its default environment.
    pub fn load(&self) -> Result<(Env, BootState), StateError> {
        match self.store.read() {
            Ok(loaded) => {
                let state = BootState::from_env(&loaded.env)?;
                Ok((loaded.env, state))
            }
            Err(EnvError::NoValidCopy { .. }) => Ok((Env::new(), BootState::default())),
            Err(err) => Err(err.into()),
        }
    }

    /// Writes `state` into the current environment (keeping its other variables).
    pub fn save(&self, env: &Env, state: &BootState) -> Result<(), StateError> {
        let mut env = env.clone();
        state.to_env(&mut env)?;
        self.store.write(&env)?;
        Ok(())
    }

    /// Loads the record, applies `change` and writes the result if it returned one.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&BootState) -> Result<(Option<BootState>, T), StateError>,
    ) -> Result<T, StateError> {
        let (env, state) = self.load()?;
        let (next, out) = change(&state)?;
        if let Some(next) = next {
            if next != state {
                self.save(&env, &next)?;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_round_trip_keeps_foreign_variables() {
        let mut env = Env::new();
        env.set("bootcmd", "run sphere_boot").unwrap();
        let state = BootState {
            slot: Slot::B,
            upgrade_available: true,
            bootcount: 2,
            bootable: [true, true],
            versions: [Some("1".into()), Some("2".into())],
            failed_slot: Some(Slot::A),
            ..BootState::default()
        };
        state.to_env(&mut env).unwrap();
        assert_eq!(env.get("bootcmd"), Some("run sphere_boot"));
        assert_eq!(env.get("upgrade_available"), Some("1"));
        assert_eq!(BootState::from_env(&env).unwrap(), state);
    }

    #[test]
    fn blank_env_is_factory_state_and_garbage_is_rejected() {
        assert_eq!(BootState::from_env(&Env::new()).unwrap(), BootState::default());
        let mut env = Env::new();
        env.set("sphere_slot", "c").unwrap();
        assert!(BootState::from_env(&env).is_err());
        let mut env = Env::new();
        env.set("bootlimit", "0").unwrap();
        assert!(BootState::from_env(&env).is_err());
    }

    #[test]
    fn trial_counts_attempts_then_falls_back() {
        let base = BootState { bootable: [true, true], ..BootState::default() };
        let mut state = base.finish_install(Slot::B, "2").unwrap();
        assert_eq!(state.attempts_left(), 3);
        for attempt in 1..=3 {
            let (decision, next) = state.next_boot();
            assert_eq!(decision, BootDecision::Trial { slot: Slot::B, attempt, limit: 3 });
            state = next.unwrap();
        }
        let (decision, next) = state.next_boot();
        assert_eq!(decision, BootDecision::Fallback { from: Slot::B, to: Slot::A });
        let next = next.unwrap();
        assert!(next.committed());
        assert_eq!(next.slot, Slot::A);
        assert_eq!(next.failed_slot, Some(Slot::B));
        assert_eq!(next.next_boot(), (BootDecision::Normal { slot: Slot::A }, None));
    }

    #[test]
    fn commit_makes_the_trial_slot_good() {
        let state = BootState::default().finish_install(Slot::B, "2").unwrap();
        let (_, booted) = state.next_boot();
        let booted = booted.unwrap();
        assert_eq!(booted.commit(Slot::A), None, "running the fallback commits nothing");
        let committed = booted.commit(Slot::B).unwrap();
        assert_eq!((committed.slot, committed.good_slot, committed.committed()), (Slot::B, Slot::B, true));
        assert_eq!(committed.commit(Slot::B), None, "second commit is a no-op");
    }

    #[test]
    fn install_never_targets_the_running_or_fallback_slot() {
        let state = BootState::default();
        assert_eq!(state.install_target(Slot::A).unwrap(), Slot::B);
        let trial = state.finish_install(Slot::B, "2").unwrap();
        assert!(matches!(trial.install_target(Slot::B), Err(StateError::TrialPending(Slot::B))));
        assert!(matches!(trial.finish_install(Slot::A, "3"), Err(StateError::TrialPending(_))));
        // Running the fallback A while good_slot is B (e.g. after a manual switch): writing B
        // would destroy the committed image.
        let odd = BootState { slot: Slot::A, good_slot: Slot::B, ..BootState::default() };
        assert!(matches!(odd.install_target(Slot::A), Err(StateError::SlotInUse { .. })));
        assert!(!state.begin_install(Slot::B).is_bootable(Slot::B));
    }

    #[test]
    fn unbootable_trial_slot_falls_back_at_once() {
        let mut state = BootState::default().finish_install(Slot::B, "2").unwrap();
        state.bootable[1] = false;
        assert!(matches!(state.next_boot().0, BootDecision::Fallback { .. }));
    }

    #[test]
    fn record_update_persists_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let location = crate::env::EnvLocation::redundant_default(dir.path().join("bootenv"));
        EnvStore::create_file(&location).unwrap();
        let record = BootRecord::new(EnvStore::new(location).unwrap());
        assert_eq!(record.load().unwrap().1, BootState::default());
        record.update(|s| Ok((Some(s.finish_install(Slot::B, "7")?), ()))).unwrap();
        let (_, state) = record.load().unwrap();
        assert_eq!((state.slot, state.upgrade_available, state.version(Slot::B)), (Slot::B, true, Some("7")));
    }
}
