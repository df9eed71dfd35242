//! Error reports from the app manager: crashes and sandbox/firewall violations.
//!
//! sphere-appd counts denials per app and kind on its D-Bus API (`Violations`). We poll those
//! counters, turn each increase into one aggregated [`ErrorReport`] (count = the increase) and
//! queue it in the outbox, so reports made while offline are sent when the link is back. The
//! counts already reported are kept on the data partition, so a restart does not report twice.

use std::collections::BTreeMap;
use std::path::Path;

use sphere_appd_api::AppManagerProxy;
use sphere_attestation::api::{ErrorKind, ErrorReport};

use crate::fsutil::write_atomic;
use crate::queue::Outbox;

/// How an app manager violation kind maps to an error report kind.
pub fn classify(kind: &str) -> ErrorKind {
    match kind {
        "crash" | "oom-kill" => ErrorKind::Crash,
        k if k.contains("firewall") || k.contains("net-denied") => ErrorKind::FirewallViolation,
        "seccomp-kill" | "landlock-denied" | "intercore-refused" | "pids-max" => ErrorKind::SandboxViolation,
        k if k.contains("denied") || k.contains("seccomp") => ErrorKind::SandboxViolation,
        _ => ErrorKind::Other,
    }
}

/// Counts already reported, by `app-id/kind`.
pub type Seen = BTreeMap<String, u64>;

pub fn load_seen(path: &Path) -> Seen {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// Compare the current counters with what was reported; queue a report per increase.
/// Returns the number of reports queued.
pub fn queue_increases(
    current: &[(String, sphere_appd_api::Violation)],
    seen: &mut Seen,
    outbox: &Outbox,
) -> std::io::Result<usize> {
    let mut queued = 0;
    for (app_id, violation) in current {
        let key = format!("{app_id}/{}", violation.kind);
        let before = seen.get(&key).copied().unwrap_or(0);
        // A counter below what we saw means the app manager's counters were reset (the app was
        // reinstalled): everything it shows now is new.
        let increase = if violation.count >= before { violation.count - before } else { violation.count };
        if increase == 0 {
            continue;
        }
        let report = ErrorReport {
            kind: classify(&violation.kind),
            app_id: Some(app_id.clone()),
            count: increase,
            detail: format!("{}: {}", violation.kind, violation.detail),
            occurred_at: violation.last_seen as i64,
        };
        let payload = serde_json::to_vec(&report).map_err(std::io::Error::other)?;
        outbox.push("errors", &payload)?;
        seen.insert(key, violation.count);
        queued += 1;
    }
    Ok(queued)
}

/// One poll of the app manager over its peer-to-peer socket.
pub async fn poll_appd(socket: &Path) -> Result<Vec<(String, sphere_appd_api::Violation)>, String> {
    let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| format!("{}: {e}", socket.display()))?;
    let connection = zbus::connection::Builder::unix_stream(stream)
        .p2p()
        .build()
        .await
        .map_err(|e| format!("D-Bus to the app manager: {e}"))?;
    let proxy = AppManagerProxy::new(&connection).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for app in proxy.list().await.map_err(|e| e.to_string())? {
        for violation in proxy.violations(&app.component_id).await.map_err(|e| e.to_string())? {
            out.push((app.component_id.clone(), violation));
        }
    }
    Ok(out)
}

/// Poll once and queue reports; the seen-counts file is updated atomically.
pub async fn poll_and_queue(socket: &Path, seen_path: &Path, outbox: &Outbox) -> Result<usize, String> {
    let current = poll_appd(socket).await?;
    let mut seen = load_seen(seen_path);
    let queued = queue_increases(&current, &mut seen, outbox).map_err(|e| format!("outbox: {e}"))?;
    if queued > 0 {
        let json = serde_json::to_vec(&seen).map_err(|e| e.to_string())?;
        write_atomic(seen_path, &json, 0o600).map_err(|e| format!("{}: {e}", seen_path.display()))?;
    }
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violation(kind: &str, count: u64) -> sphere_appd_api::Violation {
        sphere_appd_api::Violation {
            kind: kind.into(),
            count,
            first_seen: 1,
            last_seen: 2,
            detail: "openat /etc/shadow".into(),
        }
    }

    #[test]
    fn only_increases_are_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path(), 100, 1 << 20).unwrap();
        let mut seen = Seen::new();
        let current =
            vec![("app".to_string(), violation("landlock-denied", 3)), ("app".to_string(), violation("crash", 1))];
        assert_eq!(queue_increases(&current, &mut seen, &outbox).unwrap(), 2);
        assert_eq!(queue_increases(&current, &mut seen, &outbox).unwrap(), 0, "nothing new");
        let more = vec![("app".to_string(), violation("landlock-denied", 5))];
        assert_eq!(queue_increases(&more, &mut seen, &outbox).unwrap(), 1);
        let mut reports = Vec::new();
        while let Some(message) = outbox.peek().unwrap() {
            reports.push(serde_json::from_slice::<ErrorReport>(&message.payload).unwrap());
            outbox.ack(message.seq).unwrap();
        }
        assert_eq!(reports.len(), 3);
        assert_eq!((reports[0].kind, reports[0].count), (ErrorKind::SandboxViolation, 3));
        assert_eq!(reports[1].kind, ErrorKind::Crash);
        assert_eq!(reports[2].count, 2, "the increase, not the total");
    }
}
