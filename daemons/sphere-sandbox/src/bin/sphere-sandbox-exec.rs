//! `sphere-sandbox-exec`: the single-threaded launcher and supervisor of one sandboxed app.
//!
//! The app manager is multi-threaded, and creating namespaces and running setup code between
//! clone and exec is only safe in a single-threaded process; so each app is launched through
//! this small binary (see `sphere_sandbox::launcher` for the contract). It stays alive as the
//! app's parent to reap it, classify how it ended and stop it on request.

use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use sphere_sandbox::{SandboxSpec, launcher};
use std::io::Read;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

struct Args {
    spec: Option<PathBuf>,
    report: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { spec: None, report: None };
    let mut iter = std::env::args_os().skip(1);
    while let Some(arg) = iter.next() {
        match arg.to_str() {
            Some("--spec") => args.spec = iter.next().map(PathBuf::from),
            Some("--report") => args.report = iter.next().map(PathBuf::from),
            Some("-h" | "--help") => return Err("usage: sphere-sandbox-exec [--spec FILE] [--report FILE]".into()),
            _ => return Err(format!("unknown argument {arg:?} (see --help)")),
        }
    }
    Ok(args)
}

fn read_spec(path: Option<&PathBuf>) -> Result<SandboxSpec, String> {
    let mut text = String::new();
    match path {
        Some(path) => {
            text = std::fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))?;
        }
        None => {
            std::io::stdin().read_to_string(&mut text).map_err(|error| format!("stdin: {error}"))?;
        }
    }
    serde_json::from_str(&text).map_err(|error| format!("spec: {error}"))
}

fn write_report(path: Option<&PathBuf>, json: &str) {
    if let Some(path) = path {
        if let Err(error) = std::fs::write(path, format!("{json}\n")) {
            eprintln!("sphere-sandbox-exec: cannot write report {}: {error}", path.display());
        }
    }
}

fn fail(report: Option<&PathBuf>, message: &str) -> ExitCode {
    eprintln!("sphere-sandbox-exec: {message}");
    write_report(report, &serde_json::json!({ "error": message }).to_string());
    ExitCode::from(launcher::SETUP_FAILED as u8)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("sphere-sandbox-exec: {message}");
            return ExitCode::from(2);
        }
    };
    let spec = match read_spec(args.spec.as_ref()) {
        Ok(spec) => spec,
        Err(message) => return fail(args.report.as_ref(), &message),
    };
    // Stop requests arrive as signals; block them and read them from a signalfd so they are
    // handled in the wait loop, not in a handler. The child unblocks them before exec.
    let mut stop_signals = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        stop_signals.add(signal);
    }
    if let Err(errno) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&stop_signals), None) {
        return fail(args.report.as_ref(), &format!("sigprocmask: {errno}"));
    }
    let signal_fd = match SignalFd::with_flags(&stop_signals, SfdFlags::SFD_CLOEXEC) {
        Ok(fd) => fd,
        Err(errno) => return fail(args.report.as_ref(), &format!("signalfd: {errno}")),
    };
    let mut child = match sphere_sandbox::spawn(&spec) {
        Ok(child) => child,
        Err(error) => return fail(args.report.as_ref(), &error.to_string()),
    };
    if !child.degradations().is_empty() {
        eprintln!("sphere-sandbox-exec: {}: {}", spec.component_id, child.degradations());
    }
    // Without a deadline, wait_until returns only when the app ended or a stop signal arrived.
    let report = match child.wait_until(None, Some(signal_fd.as_fd())) {
        Ok(Some(report)) => Ok(report),
        Ok(None) => child.stop(Duration::from_millis(spec.stop_grace_ms)),
        Err(error) => Err(error),
    };
    match report {
        Ok(report) => {
            write_report(args.report.as_ref(), &serde_json::to_string(&report).unwrap_or_default());
            ExitCode::from(launcher::exit_status_for(&report).clamp(0, 255) as u8)
        }
        Err(error) => fail(args.report.as_ref(), &error.to_string()),
    }
}
