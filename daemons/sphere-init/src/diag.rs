//! Diagnostic services for the self-test image: modes of this same binary, so the test image
//! needs no extra files. `--diag-service` stays up; `--diag-flaky MARKER` fails its first run
//! (to exercise restart + backoff), then behaves like `--diag-service`.

use std::io::Write;

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub fn service(name: &str) -> ! {
    say(&format!("{name}: up, pid {} landlock-abi {}", std::process::id(), crate::selftest::landlock_abi()));
    say("READY=1");
    loop {
        // SAFETY: pause(2) only waits for a signal (not std::thread::sleep: see milestone::sleep).
        unsafe { libc::pause() };
    }
}

pub fn flaky(marker: Option<&str>) -> ! {
    let marker = marker.unwrap_or("/run/diag-flaky.marker");
    if std::fs::metadata(marker).is_err() {
        let _ = std::fs::write(marker, b"1\n");
        let _ = writeln!(std::io::stderr(), "diag-flaky: first run, failing on purpose");
        std::process::exit(3);
    }
    service("diag-flaky")
}
