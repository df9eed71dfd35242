//! hello-sphere: the sample high-level app.
//!
//! It does what a first app on a new board does: says hello, reports which of the resources its
//! manifest asked for it can actually reach, and then beats a heartbeat until it is told to stop.
//! The report makes a sandbox visible: granted paths open, everything else is refused.
//! It also talks to the real-time echo app on the M4 core through `Application_Connect`
//! (`sphere-applibs`): one message there and its reply back, as Azure Sphere's inter-core
//! samples do. `hello-sphere intercore-test` runs the longer exercise that
//! tests/intercore-qemu-test.sh and scripts/bench-intercore.sh read from its output.
//! `hello-sphere update-deferral` is the update-deferral example (`sysevent.rs`).
//! Standard library and sphere-applibs only, so the binary stays small on a 16 MB-flash device.

mod intercore;
mod sysevent;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// Where the app manager mounts `MutableStorage` inside the sandbox.
const STORAGE_DIR: &str = "/mnt/config";
/// Peripherals the manifest asks for, as the app manager exposes them in the sandbox.
const PROBED_PATHS: [&str; 3] = ["/dev/gpiochip0", "/etc/shadow", "/proc/1/environ"];

fn main() {
    if std::env::args().nth(1).as_deref() == Some("intercore-test") {
        intercore::exercise();
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("update-deferral") {
        let args: Vec<String> = std::env::args().collect();
        let resume_after = match args.get(2).map(String::as_str) {
            Some("--resume-after") => args.get(3).and_then(|s| s.parse().ok()),
            _ => None,
        };
        sysevent::run(resume_after);
    }
    if std::env::args().nth(1).as_deref() == Some("intercore-bench") {
        intercore::bench();
    }
    let beats = std::env::args().nth(1).and_then(|arg| arg.parse::<u64>().ok());
    say(&format!("hello-sphere: started, pid {}", std::process::id()));
    for path in PROBED_PATHS {
        let verdict = match std::fs::File::open(path) {
            Ok(_) => "open".to_owned(),
            Err(error) => format!("refused ({error})"),
        };
        say(&format!("hello-sphere: access {path}: {verdict}"));
    }
    say(&format!("hello-sphere: storage: {}", storage_report(Path::new(STORAGE_DIR))));
    say(&format!("hello-sphere: real-time echo app: {}", intercore::hello()));
    let mut beat: u64 = 0;
    while beats.is_none_or(|limit| beat < limit) {
        beat += 1;
        say(&format!("hello-sphere: heartbeat {beat}"));
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Count boots in mutable storage, so a restart (or reboot) is visible.
fn storage_report(dir: &Path) -> String {
    let counter = dir.join("boots");
    let boots =
        std::fs::read_to_string(&counter).ok().and_then(|text| text.trim().parse::<u64>().ok()).unwrap_or(0) + 1;
    match std::fs::write(&counter, boots.to_string()) {
        Ok(()) => format!("start number {boots} recorded in {}", counter.display()),
        Err(error) => format!("not available ({error})"),
    }
}

pub(crate) fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout must not kill the app; the heartbeat goes on.
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}
