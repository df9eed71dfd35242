//! Blocked attempts per app, aggregated by (app, kind, protocol, destination, port), bounded,
//! and kept on the device in one JSON file replaced atomically.
//!
//! Packets reach us rate-limited already (nft `limit` before `log`, per app and direction), and
//! the table holds at most [`MAX_ENTRIES`] aggregates: when full, the one seen longest ago goes.

use sphere_netd_api::BlockedAttempt;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

pub const MAX_ENTRIES: usize = 1024;

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub struct Telemetry {
    entries: Vec<BlockedAttempt>,
    path: Option<PathBuf>,
    dirty: bool,
}

impl Telemetry {
    /// Load what an earlier run kept (a missing or unreadable file starts empty).
    pub fn load(path: Option<PathBuf>) -> Telemetry {
        let entries = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|bytes| serde_json::from_slice::<Vec<BlockedAttempt>>(&bytes).ok())
            .unwrap_or_default();
        Telemetry { entries, path, dirty: false }
    }

    pub fn record(&mut self, component_id: &str, kind: &str, protocol: &str, destination: &str, port: u16) {
        let at = now();
        if let Some(entry) = self.entries.iter_mut().find(|e| {
            e.component_id == component_id
                && e.kind == kind
                && e.protocol == protocol
                && e.destination == destination
                && e.port == port
        }) {
            entry.count += 1;
            entry.last_seen = at;
        } else {
            if self.entries.len() >= MAX_ENTRIES {
                if let Some(oldest) = self.entries.iter().enumerate().min_by_key(|(_, e)| e.last_seen).map(|(i, _)| i) {
                    self.entries.swap_remove(oldest);
                }
            }
            self.entries.push(BlockedAttempt {
                component_id: component_id.to_owned(),
                kind: kind.to_owned(),
                protocol: protocol.to_owned(),
                destination: destination.to_owned(),
                port,
                count: 1,
                first_seen: at,
                last_seen: at,
            });
        }
        self.dirty = true;
    }

    /// Newest first.
    pub fn list(&self) -> Vec<BlockedAttempt> {
        let mut entries = self.entries.clone();
        entries.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(b.count.cmp(&a.count)));
        entries
    }

    /// Write the file if anything changed since the last save.
    pub fn save(&mut self) -> std::io::Result<()> {
        let Some(path) = self.path.clone() else { return Ok(()) };
        if !self.dirty {
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let bytes = serde_json::to_vec_pretty(&self.entries).map_err(std::io::Error::other)?;
        sphere_app_format::fs_atomic::write_bytes(&path, 0o600, &bytes)?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_bounds_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blocked.json");
        let mut t = Telemetry::load(Some(path.clone()));
        t.record("a", "outbound", "tcp", "192.0.2.12", 80);
        t.record("a", "outbound", "tcp", "192.0.2.12", 80);
        t.record("b", "outbound", "tcp", "192.0.2.12", 80);
        let list = t.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list.iter().find(|e| e.component_id == "a").unwrap().count, 2);
        t.save().unwrap();
        assert_eq!(Telemetry::load(Some(path)).list().len(), 2);
        for port in 0..(MAX_ENTRIES as u16 + 10) {
            t.record("c", "outbound", "udp", "198.51.100.1", port);
        }
        assert_eq!(t.list().len(), MAX_ENTRIES);
    }
}
