//! Update deferral: the policy and its power-cut-safe record.
//!
//! As on Azure Sphere, apps whose manifest grants both `SystemEventNotifications` and
//! `SoftwareUpdateDeferral` are told that an update is ready to install and may defer it. The
//! bound is counted from the moment the update was FIRST announced, whatever the number of
//! requests, apps or restarts of this daemon: at most [`MAX_OS_DEFERRAL`] for a release that
//! carries an OS image, [`MAX_APP_DEFERRAL`] for one that carries only apps or M4 firmware
//! (Azure Sphere's limits: 24 h for OS updates, 167 h for application updates). A security fix
//! can therefore be held back by a day at most, never forever.
//!
//! The record (`state_dir/deferral.json`) is replaced atomically (temp file, fsync, rename,
//! fsync dir) whenever it changes, so a power cut or a killed daemon leaves either the old or
//! the new record and the first-announced time survives: restarting the daemon, or the
//! device, does not restart the clock. The record is deleted once the release is installed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Longest an OS update can be deferred, counted from its first announcement (Azure Sphere: 24 h).
pub const MAX_OS_DEFERRAL: Duration = Duration::from_secs(24 * 3600);
/// Longest an app (or M4 firmware) update can be deferred (Azure Sphere: 167 h for app updates).
pub const MAX_APP_DEFERRAL: Duration = Duration::from_secs(167 * 3600);

/// TEST ONLY: a number of seconds that SHORTENS both bounds (never lengthens them), so a host
/// test can watch a deferral expire. Shortening is the safe direction: it can only make
/// updates install sooner.
pub const TEST_MAX_DEFERRAL_ENV: &str = "SPHERE_UPDATED_TEST_MAX_DEFERRAL_SECONDS";

/// What an update replaces, as apps are told (Azure Sphere's `SysEvent_UpdateType`: `System` or `App`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateKind {
    /// The release carries an OS image (the device reboots into it).
    Os,
    /// Apps and/or M4 firmware only.
    App,
}

impl UpdateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateKind::Os => "os",
            UpdateKind::App => "app",
        }
    }

    /// The bound for this kind, shortened by [`TEST_MAX_DEFERRAL_ENV`] when set.
    pub fn max_deferral(self) -> Duration {
        let real = match self {
            UpdateKind::Os => MAX_OS_DEFERRAL,
            UpdateKind::App => MAX_APP_DEFERRAL,
        };
        match std::env::var(TEST_MAX_DEFERRAL_ENV).ok().and_then(|v| v.trim().parse::<u64>().ok()) {
            Some(test) => real.min(Duration::from_secs(test)),
            None => real,
        }
    }
}

/// One announced release and the deferrals requested for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingUpdate {
    pub release: String,
    pub kind: UpdateKind,
    /// Unix seconds of the first announcement: the bound counts from here.
    pub announced_at: u64,
    /// Unix seconds after which nobody can defer any more (`announced_at` + the bound).
    pub deadline: u64,
    /// Per requester (an app's ComponentId): Unix seconds it deferred the update until.
    pub deferrals: BTreeMap<String, u64>,
}

impl PendingUpdate {
    pub fn new(release: &str, kind: UpdateKind, now: u64) -> PendingUpdate {
        PendingUpdate {
            release: release.to_string(),
            kind,
            announced_at: now,
            deadline: now.saturating_add(kind.max_deferral().as_secs()),
            deferrals: BTreeMap::new(),
        }
    }

    /// The record for `release`: the stored one when it is the same release (its clock keeps
    /// running across restarts), else a new one starting `now`. A stored record whose bound is
    /// longer than today's (a test bound removed, say) is never lengthened.
    pub fn resume_or_new(stored: Option<PendingUpdate>, release: &str, kind: UpdateKind, now: u64) -> PendingUpdate {
        match stored {
            Some(mut p) if p.release == release => {
                p.kind = kind;
                let bound = p.announced_at.saturating_add(kind.max_deferral().as_secs());
                p.deadline = p.deadline.min(bound);
                p
            }
            _ => PendingUpdate::new(release, kind, now),
        }
    }

    /// `who` asks to defer by `seconds` at `now`. Its request replaces its earlier one (so an
    /// app can shorten its own deferral) and is clamped to the deadline. Returns the time the
    /// update now waits until (every requester counted).
    pub fn defer(&mut self, who: &str, seconds: u64, now: u64) -> u64 {
        let until = now.saturating_add(seconds).min(self.deadline);
        if until > now {
            self.deferrals.insert(who.to_string(), until);
        } else {
            self.deferrals.remove(who);
        }
        self.deferred_until(now)
    }

    /// `who` withdraws its deferral (Azure Sphere's `SysEvent_ResumeEvent`).
    pub fn resume(&mut self, who: &str, now: u64) -> u64 {
        self.deferrals.remove(who);
        self.deferred_until(now)
    }

    /// Replaces the app manager's requesters with what it reports now (apps' current
    /// requests, each clamped here again: the app manager is not the authority on the bound).
    /// Requesters that are not ComponentIds reported by the app manager (root's `Defer` on our
    /// own API) are kept. Returns whether anything changed.
    pub fn merge_app_deferrals(&mut self, apps: &[(String, u64)], now: u64) -> bool {
        let before = self.deferrals.clone();
        self.deferrals.retain(|who, _| !is_component_id(who));
        for (who, until) in apps {
            let until = (*until).min(self.deadline);
            if until > now && is_component_id(who) {
                self.deferrals.insert(who.clone(), until);
            }
        }
        before != self.deferrals
    }

    /// Unix seconds the update waits until; `now` or earlier means it may proceed.
    pub fn deferred_until(&self, now: u64) -> u64 {
        let latest = self.deferrals.values().copied().max().unwrap_or(0).min(self.deadline);
        if latest > now { latest } else { 0 }
    }

    /// Whether the install may start: no deferral active, or the bound reached.
    pub fn may_proceed(&self, now: u64) -> bool {
        now >= self.deadline || self.deferred_until(now) == 0
    }

    /// Reads the record; a missing or unreadable one is no record (the worst outcome of a
    /// corrupt file is an update that installs without waiting, never one that waits longer).
    pub fn load(path: &Path) -> Option<PendingUpdate> {
        let bytes = std::fs::read(path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("sphere-updated: ignoring unreadable {}: {e}", path.display());
                None
            }
        }
    }

    /// Replaces the record atomically (power-cut safe).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::download::write_atomic(path, &bytes)
    }

    /// Forgets the record (the release is installed).
    pub fn clear(path: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn is_component_id(text: &str) -> bool {
    // A GUID: 36 characters, hex digits and four dashes in the 8-4-4-4-12 places.
    text.len() == 36
        && text.char_indices().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP1: &str = "7f0c2e5a-61d4-4b8e-9a3f-2c51d7e80b14";
    const APP2: &str = "6a1f0e2c-3b4d-4e5f-8a9b-0c1d2e3f4a51";
    const DAY: u64 = 24 * 3600;

    #[test]
    fn a_deferral_is_clamped_to_24_hours_from_the_first_announcement_for_an_os_update() {
        let mut p = PendingUpdate::new("r2", UpdateKind::Os, 1000);
        assert_eq!(p.deadline, 1000 + DAY);
        assert_eq!(p.defer(APP1, 3600, 1000), 4600);
        // Asking again near the end cannot go past the deadline.
        assert_eq!(p.defer(APP1, 10 * DAY, 80_000), 1000 + DAY);
        assert!(!p.may_proceed(80_000));
        // Once the deadline is reached the update proceeds whatever was asked.
        assert!(p.may_proceed(1000 + DAY));
        assert_eq!(p.defer(APP1, 3600, 1000 + DAY), 0);
    }

    #[test]
    fn app_updates_may_be_deferred_longer_than_os_updates_but_still_bounded() {
        let mut p = PendingUpdate::new("r3", UpdateKind::App, 0);
        assert_eq!(p.deadline, 167 * 3600);
        assert_eq!(p.defer(APP1, 1000 * 3600, 0), 167 * 3600);
    }

    #[test]
    fn with_several_apps_the_latest_deferral_holds_and_each_resume_counts() {
        let mut p = PendingUpdate::new("r2", UpdateKind::Os, 0);
        p.defer(APP1, 600, 0);
        assert_eq!(p.defer(APP2, 60, 0), 600);
        // APP1 resumes: APP2's shorter deferral remains.
        assert_eq!(p.resume(APP1, 10), 60);
        assert!(!p.may_proceed(10));
        assert_eq!(p.resume(APP2, 10), 0);
        assert!(p.may_proceed(10));
        // A deferral that ran out no longer holds anything back.
        p.defer(APP1, 30, 10);
        assert!(!p.may_proceed(39));
        assert!(p.may_proceed(40));
    }

    #[test]
    fn an_app_can_shorten_its_own_request() {
        let mut p = PendingUpdate::new("r2", UpdateKind::Os, 0);
        assert_eq!(p.defer(APP1, 600, 0), 600);
        assert_eq!(p.defer(APP1, 5, 0), 5);
        assert_eq!(p.defer(APP1, 0, 0), 0);
    }

    #[test]
    fn the_app_managers_report_replaces_app_requests_and_is_clamped_here() {
        let mut p = PendingUpdate::new("r2", UpdateKind::Os, 0);
        p.defer("root", 100, 0);
        assert!(p.merge_app_deferrals(&[(APP1.into(), 10 * DAY), ("not-an-id".into(), 500)], 0));
        assert_eq!(p.deferrals.get(APP1), Some(&DAY));
        assert!(!p.deferrals.contains_key("not-an-id"));
        assert_eq!(p.deferrals.get("root"), Some(&100));
        // The same report again changes nothing; an app gone from it is forgotten.
        assert!(!p.merge_app_deferrals(&[(APP1.into(), 10 * DAY)], 0));
        assert!(p.merge_app_deferrals(&[], 0));
        assert_eq!(p.deferred_until(0), 100);
    }

    #[test]
    fn a_restart_keeps_the_first_announcement_and_the_deferrals() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state/deferral.json");
        let mut p = PendingUpdate::new("r2", UpdateKind::Os, 1000);
        p.defer(APP1, 3600, 1000);
        p.save(&path).expect("save");
        // The daemon restarts 20 h later and announces the same release again.
        let again = PendingUpdate::resume_or_new(PendingUpdate::load(&path), "r2", UpdateKind::Os, 1000 + 20 * 3600);
        assert_eq!(again.announced_at, 1000);
        assert_eq!(again.deadline, 1000 + DAY);
        assert_eq!(again.deferrals.get(APP1), Some(&4600));
        // A different release starts its own clock.
        let other = PendingUpdate::resume_or_new(PendingUpdate::load(&path), "r3", UpdateKind::Os, 90_000);
        assert_eq!(other.announced_at, 90_000);
        assert!(other.deferrals.is_empty());
        // No temporary file is left beside the record; clearing removes it (twice is fine).
        let names: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("deferral.json")]);
        PendingUpdate::clear(&path).expect("clear");
        PendingUpdate::clear(&path).expect("clear again");
        assert!(PendingUpdate::load(&path).is_none());
    }

    #[test]
    fn a_corrupt_record_is_no_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("deferral.json");
        std::fs::write(&path, b"{\"release\": tru").expect("write");
        assert!(PendingUpdate::load(&path).is_none());
    }

    #[test]
    fn component_ids_are_recognised() {
        assert!(is_component_id(APP1));
        assert!(!is_component_id("root"));
        assert!(!is_component_id("7f0c2e5a-61d4-4b8e-9a3f-2c51d7e80b1z"));
    }
}
