//! A/B slots at boot: the initramfs plays the boot loader (reads the boot-state record, picks
//! the slot, counts the trial attempt), and PID 1 runs the health check that commits a trial
//! slot or reboots to use up its attempts. The record and its rules live in `sphere-slots`;
//! this module only applies them at the right moments. See docs/ab-slots.md.
//!
//! Kernel command line (A/B image):
//! - `sphere.root=ab`                 boot from the A/B disk (GPT partitions `bootenv`,
//!   `rootfs_a`, `rootfs_b`, `data`) instead of a single root disk
//! - `sphere.trial_timeout=SECONDS`   a trial boot that has not committed after this long is
//!   rebooted by a watchdog process the initramfs leaves behind (default 120)
//!
//! A hung trial boot therefore costs one attempt too: the watchdog reboots it, the next boot
//! counts the next attempt, and after `bootlimit` attempts the initramfs falls back.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::reboot::{RebootMode, reboot};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{ForkResult, Pid, fork};
use sphere_slots::layout::{BOOTENV_PARTITION, Layout, find_partition};
use sphere_slots::{
    BootDecision, BootRecord, BootState, CommitError, EnvLocation, EnvStore, FileMinVersion, Slot, Slots,
    raise_to_committed,
};

use crate::cmdline::Cmdline;
use crate::config::HealthConfig;
use crate::control::Action;
use crate::log::Log;

/// Default for `sphere.trial_timeout`.
pub const DEFAULT_TRIAL_TIMEOUT: Duration = Duration::from_secs(120);

/// The initramfs's choice: the slot and its device, and the record's decision.
pub struct Selected {
    pub device: PathBuf,
    pub decision: BootDecision,
    pub bootenv: PathBuf,
}

fn record_at(bootenv: &Path) -> Result<BootRecord, String> {
    EnvStore::new(EnvLocation::redundant_default(bootenv)).map(BootRecord::new).map_err(|e| e.to_string())
}

/// The boot loader's step. Waits up to `wait` for the partitions, reads the record, decides,
/// persists the decision (an attempt is counted *before* booting it, so a hang counts), and
/// returns the slot to mount. A record that cannot be read or written never blocks booting:
/// the good slot (or slot A on a blank record) boots instead of a trial.
pub fn select(log: &mut Log, wait: Duration) -> Result<Selected, String> {
    let deadline = std::time::Instant::now() + wait;
    let bootenv = loop {
        if let Some(device) = find_partition(BOOTENV_PARTITION) {
            break device;
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!("no GPT partition named {BOOTENV_PARTITION}"));
        }
        crate::milestone::sleep(Duration::from_millis(20));
    };
    let record = record_at(&bootenv)?;
    let (env, state) = match record.load() {
        Ok(loaded) => loaded,
        Err(err) => {
            log.warn(format!("boot-state record on {}: {err}; booting factory defaults", bootenv.display()));
            (sphere_slots::Env::new(), BootState::default())
        }
    };
    let (mut decision, next) = state.next_boot();
    if let Some(next) = next {
        if let Err(err) = record.save(&env, &next) {
            // Could not count the attempt: trying the slot anyway might loop forever.
            log.warn(format!("cannot update the boot-state record: {err}; booting the good slot"));
            decision = BootDecision::Normal { slot: state.good_slot };
        }
    }
    let slot = decision.slot();
    let device =
        find_partition(slot.partition_name()).ok_or_else(|| format!("no partition {}", slot.partition_name()))?;
    Ok(Selected { device, decision, bootenv })
}

/// Milestone fields describing a decision.
pub fn decision_fields(decision: BootDecision) -> Vec<(&'static str, String)> {
    match decision {
        BootDecision::Normal { slot } => vec![("slot", slot.to_string()), ("mode", "normal".into())],
        BootDecision::Trial { slot, attempt, limit } => vec![
            ("slot", slot.to_string()),
            ("mode", "trial".into()),
            ("attempt", attempt.to_string()),
            ("limit", limit.to_string()),
        ],
        BootDecision::Fallback { from, to } => {
            vec![("slot", to.to_string()), ("mode", "fallback".into()), ("from", from.to_string())]
        }
    }
}

/// The trial timeout from `sphere.trial_timeout` (seconds).
pub fn trial_timeout(cmdline: &Cmdline) -> Duration {
    cmdline
        .get("sphere.trial_timeout")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TRIAL_TIMEOUT)
}

/// Forks the trial watchdog (called in the new root, just before exec'ing /sbin/init): after
/// `timeout`, if `slot` is still on trial, it asks init for an orderly reboot (SIGTERM), and
/// forces one 30 s later. It exits early as soon as the slot is committed. Runs as a plain
/// child of PID 1, so init's shutdown ends it like any other process.
pub fn spawn_trial_watchdog(log: &mut Log, bootenv: &Path, slot: Slot, timeout: Duration) {
    // SAFETY: the initramfs stage is single-threaded; the child only sleeps, reads a file
    // and calls kill/reboot before exiting.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => watchdog(bootenv, slot, timeout),
        Ok(ForkResult::Parent { child }) => {
            log.info(format!("trial watchdog pid {child}: reboot unless slot {slot} commits within {timeout:?}"));
        }
        Err(err) => log.warn(format!("cannot start the trial watchdog: {err}")),
    }
}

fn still_on_trial(record: &BootRecord, slot: Slot) -> bool {
    match record.load() {
        Ok((_, state)) => state.upgrade_available && state.slot == slot,
        // Unreadable record: rebooting lets the initramfs decide with whatever copy is valid.
        Err(_) => true,
    }
}

fn watchdog(bootenv: &Path, slot: Slot, timeout: Duration) -> ! {
    let Ok(record) = record_at(bootenv) else { std::process::exit(0) };
    let step = Duration::from_secs(2);
    let mut waited = Duration::ZERO;
    while waited < timeout {
        crate::milestone::sleep(step.min(timeout - waited));
        waited += step;
        if !still_on_trial(&record, slot) {
            std::process::exit(0);
        }
    }
    let mut log = Log::new();
    log.milestone("trial-timeout", &[("slot", slot.as_str()), ("seconds", &timeout.as_secs().to_string())]);
    let _ = kill(Pid::from_raw(1), Signal::SIGTERM);
    crate::milestone::sleep(Duration::from_secs(30));
    nix::unistd::sync();
    let _ = reboot(RebootMode::RB_AUTOBOOT);
    std::process::exit(1)
}

/// `VERSION_ID` from /etc/os-release, or `-`.
pub fn os_version() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| l.strip_prefix("VERSION_ID=").map(|v| v.trim_matches('"').to_string()))
        })
        .unwrap_or_else(|| "-".to_string())
}

/// PID 1 on an A/B system: the layout, the running slot and the record, when there is one.
pub struct AbSystem {
    slots: Slots,
    booted: Slot,
}

impl AbSystem {
    /// `None` on a single-root image (no `bootenv`/`rootfs_*` partitions).
    pub fn detect(log: &mut Log) -> Option<Self> {
        let layout = Layout::discover().ok()?;
        let booted = match layout.booted_slot() {
            Ok(slot) => slot,
            Err(err) => {
                log.warn(format!("A/B disk present but {err}"));
                return None;
            }
        };
        let slots = match Slots::open(layout) {
            Ok(slots) => slots,
            Err(err) => {
                log.warn(format!("boot-state record: {err}"));
                return None;
            }
        };
        let mut system = AbSystem { slots, booted };
        system.report(log);
        Some(system)
    }

    fn report(&mut self, log: &mut Log) {
        let version = os_version();
        let (state, committed) = match self.slots.record().load() {
            Ok((_, state)) => {
                let committed = if state.committed() { "yes" } else { "no" };
                (state, committed)
            }
            Err(err) => {
                log.warn(format!("boot-state record: {err}"));
                (BootState::default(), "unknown")
            }
        };
        let failed = state.failed_slot.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
        log.milestone(
            "slot-booted",
            &[
                ("slot", self.booted.as_str()),
                ("version", &version),
                ("committed", committed),
                ("good", state.good_slot.as_str()),
                ("failed", &failed),
            ],
        );
    }

    /// Boot is complete: commit a trial slot if `services_ok` and the reachability check pass,
    /// and raise the anti-rollback minimum to its version; otherwise ask for a reboot (the next
    /// boot counts the next attempt). `None` = carry on.
    ///
    /// A boot of an already committed slot re-applies the raise (a no-op unless a power cut
    /// fell between a commit and its raise).
    pub fn boot_complete(&mut self, log: &mut Log, services_ok: bool, health: &HealthConfig) -> Option<Action> {
        let state = match self.slots.record().load() {
            Ok((_, state)) => state,
            Err(err) => {
                log.warn(format!("boot-state record: {err}; not committing"));
                return None;
            }
        };
        let mut store = FileMinVersion::new(&health.min_version);
        if !(state.upgrade_available && state.slot == self.booted) {
            match raise_to_committed(&state, self.booted, &mut store) {
                Ok(Some(version)) => min_version_raised(log, version),
                Ok(None) => {}
                Err(err) => log.warn(format!("anti-rollback minimum: {err}")),
            }
            return None;
        }
        let reachable = match health.reachable {
            None => Ok(()),
            Some(addr) => reach(addr, Duration::from_millis(health.timeout_ms)),
        };
        let failure = match (services_ok, reachable) {
            (false, _) => Some("services-not-ready".to_string()),
            (true, Err(why)) => Some(why),
            (true, Ok(())) => None,
        };
        if let Some(why) = failure {
            log.milestone("health-failed", &[("slot", self.booted.as_str()), ("why", &why)]);
            return Some(Action::Reboot);
        }
        match self.slots.commit_and_raise(self.booted, &mut store) {
            Ok((_, raised)) => {
                log.milestone("slot-committed", &[("slot", self.booted.as_str()), ("version", &os_version())]);
                if let Some(version) = raised {
                    min_version_raised(log, version);
                }
            }
            Err(CommitError::MinVersion(err)) => {
                log.milestone("slot-committed", &[("slot", self.booted.as_str()), ("version", &os_version())]);
                log.warn(format!("anti-rollback minimum not raised: {err}"));
            }
            Err(CommitError::Slots(err)) => log.warn(format!("commit of slot {}: {err}", self.booted)),
        }
        None
    }
}

fn min_version_raised(log: &mut Log, version: u64) {
    log.milestone("min-version-raised", &[("version", &version.to_string())]);
}

fn reach(addr: std::net::SocketAddr, timeout: Duration) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            crate::milestone::sleep(Duration::from_secs(1));
        }
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(_) => return Ok(()),
            Err(err) => last = format!("unreachable-{addr}-{err}"),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trial_timeout_comes_from_the_command_line() {
        assert_eq!(trial_timeout(&Cmdline::parse("sphere.trial_timeout=25")), Duration::from_secs(25));
        assert_eq!(trial_timeout(&Cmdline::parse("sphere.trial_timeout=0")), DEFAULT_TRIAL_TIMEOUT);
        assert_eq!(trial_timeout(&Cmdline::parse("")), DEFAULT_TRIAL_TIMEOUT);
    }

    #[test]
    fn decisions_become_milestone_fields() {
        let fields = decision_fields(BootDecision::Trial { slot: Slot::B, attempt: 2, limit: 3 });
        assert!(fields.contains(&("mode", "trial".to_string())));
        assert!(fields.contains(&("attempt", "2".to_string())));
        let fields = decision_fields(BootDecision::Fallback { from: Slot::B, to: Slot::A });
        assert_eq!(fields[0], ("slot", "a".to_string()));
    }

    /// A scratch directory removed on drop (sphere-init has no tempfile dev-dependency).
    struct TestDir(PathBuf);

    impl TestDir {
        fn new() -> Self {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("sphere-init-slots-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            TestDir(path)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn ab_system(dir: &TestDir, booted: Slot) -> AbSystem {
        let env = EnvLocation::redundant_default(dir.path().join("bootenv"));
        if !env.path.exists() {
            EnvStore::create_file(&env).unwrap();
        }
        let layout = Layout { env, slots: [dir.path().join("a"), dir.path().join("b")] };
        AbSystem { slots: Slots::open(layout).unwrap(), booted }
    }

    fn health_config(dir: &TestDir) -> HealthConfig {
        HealthConfig {
            min_version: dir.path().join("data/sphere/min-version").display().to_string(),
            ..Default::default()
        }
    }

    fn minimum(dir: &TestDir) -> Option<String> {
        std::fs::read_to_string(dir.path().join("data/sphere/min-version")).ok()
    }

    #[test]
    fn health_check_commit_raises_the_anti_rollback_minimum() {
        let dir = TestDir::new();
        let mut log = Log::new();
        let health = health_config(&dir);
        // Slot A (version 4) runs; version 6 was installed into B and is on trial.
        let system = ab_system(&dir, Slot::A);
        let record = system.slots.record();
        record
            .update(|s| {
                let factory = BootState { bootable: [true, false], versions: [Some("4".into()), None], ..s.clone() };
                Ok((Some(factory.finish_install(Slot::B, "6")?), ()))
            })
            .unwrap();
        // The trial boot of B fails its health check: no commit, the minimum stays unset.
        let mut trial = ab_system(&dir, Slot::B);
        assert!(matches!(trial.boot_complete(&mut log, false, &health), Some(Action::Reboot)));
        assert_eq!(minimum(&dir), None);
        assert!(!trial.slots.record().load().unwrap().1.committed());
        // It passes: committed, and the minimum is B's version.
        assert!(trial.boot_complete(&mut log, true, &health).is_none());
        let state = trial.slots.record().load().unwrap().1;
        assert!(state.committed() && state.good_slot == Slot::B);
        assert_eq!(minimum(&dir).as_deref(), Some("6\n"));
        // Every later boot leaves it (never lowered, nothing to commit).
        assert!(trial.boot_complete(&mut log, true, &health).is_none());
        assert_eq!(minimum(&dir).as_deref(), Some("6\n"));
    }

    #[test]
    fn committed_boot_catches_up_a_lost_raise_but_a_fallback_does_not_raise() {
        let dir = TestDir::new();
        let mut log = Log::new();
        let health = health_config(&dir);
        let system = ab_system(&dir, Slot::A);
        system
            .slots
            .record()
            .update(|s| {
                let factory = BootState { bootable: [true, false], versions: [Some("4".into()), None], ..s.clone() };
                Ok((Some(factory.finish_install(Slot::B, "9")?), ()))
            })
            .unwrap();
        // The trial used up its attempts: the boot loader fell back to A.
        system
            .slots
            .record()
            .update(|s| {
                let mut next = s.clone();
                next.bootcount = next.bootlimit;
                Ok((next.next_boot().1, ()))
            })
            .unwrap();
        let mut fallback = ab_system(&dir, Slot::A);
        assert!(fallback.boot_complete(&mut log, true, &health).is_none());
        assert_eq!(minimum(&dir).as_deref(), Some("4\n"), "the fallback's own version, never the failed trial's");
        // A power cut after a commit but before its raise: the next committed boot raises.
        let dir = TestDir::new();
        let system = ab_system(&dir, Slot::A);
        system.slots.record().update(|s| Ok((Some(s.finish_install(Slot::B, "12")?), ()))).unwrap();
        assert!(system.slots.commit(Slot::B).unwrap());
        let mut next_boot = ab_system(&dir, Slot::B);
        assert!(next_boot.boot_complete(&mut log, true, &health_config(&dir)).is_none());
        assert_eq!(minimum(&dir).as_deref(), Some("12\n"));
    }

    #[test]
    fn unreachable_health_target_fails() {
        // Port 9 on localhost: nothing listens there in the test environment.
        let addr: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert!(reach(addr, Duration::from_millis(200)).is_err());
    }
}
