//! The contract between the app manager and the `sphere-sandbox-exec` launcher binary.
//!
//! ```text
//! sphere-sandbox-exec --spec SPEC.json [--report REPORT.json]     (or the spec on stdin)
//! ```
//!
//! - The app's stdout/stderr are the launcher's (unless the spec names other fds); its stdin is
//!   /dev/null.
//! - SIGTERM, SIGINT or SIGHUP to the launcher stops the app: SIGTERM, then SIGKILL after the
//!   spec's `stop_grace_ms`.
//! - When the app has ended the launcher writes the [`ExitReport`] as one JSON line to
//!   `--report` (if given) and exits with [`exit_status_for`] of it; 125 means the sandbox could
//!   not be set up (the reason is on stderr and in the report file as `{"error": ...}`).
//!
//! An app manager using tokio does: `tokio::process::Command::from(launcher::command(..))`,
//! `child.wait().await`, `kill(SIGTERM)` on stop, then [`read_report`].

use crate::sandbox::{ExitCause, ExitReport};
use std::path::Path;
use std::process::Command;

/// Exit status of the launcher when the sandbox could not be set up.
pub const SETUP_FAILED: i32 = 125;

/// The command that launches one app (spawn it; nothing else to set).
pub fn command(exec_binary: &Path, spec_file: &Path, report_file: &Path) -> Command {
    let mut command = Command::new(exec_binary);
    command.arg("--spec").arg(spec_file).arg("--report").arg(report_file);
    command
}

/// The launcher's exit status for an ended app: its exit code, or 128 + signal like a shell.
pub fn exit_status_for(report: &ExitReport) -> i32 {
    match report.cause {
        ExitCause::Exited { code } => code,
        ExitCause::Stopped { signal }
        | ExitCause::SeccompKill { signal }
        | ExitCause::OomKill { signal }
        | ExitCause::Crashed { signal }
        | ExitCause::Killed { signal } => 128 + signal,
    }
}

/// Read the report a launcher wrote.
pub fn read_report(report_file: &Path) -> std::io::Result<ExitReport> {
    let text = std::fs::read_to_string(report_file)?;
    serde_json::from_str(text.trim()).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Violations;

    fn report(cause: ExitCause) -> ExitReport {
        ExitReport {
            component_id: "x".into(),
            cause,
            violations: Violations::default(),
            runtime_ms: 0,
            degradations: Default::default(),
        }
    }

    #[test]
    fn status_mirrors_the_app() {
        assert_eq!(exit_status_for(&report(ExitCause::Exited { code: 0 })), 0);
        assert_eq!(exit_status_for(&report(ExitCause::Exited { code: 7 })), 7);
        assert_eq!(exit_status_for(&report(ExitCause::SeccompKill { signal: 31 })), 159);
    }

    #[test]
    fn report_round_trips_through_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.json");
        let original = report(ExitCause::OomKill { signal: 9 });
        std::fs::write(&path, serde_json::to_string(&original).expect("json")).expect("write");
        assert_eq!(read_report(&path).expect("read"), original);
    }
}
