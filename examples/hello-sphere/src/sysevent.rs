//! `hello-sphere update-deferral [--resume-after SECONDS]`: the update-deferral example, in the
//! spirit of Azure Sphere's DeferredUpdate sample (and the app tests/update-deferral-test.sh
//! runs in the real sandbox).
//!
//! It registers for `UpdateReadyForInstall` (manifest: `SystemEventNotifications`), prints
//! every event, and defers each newly announced update by an hour (manifest:
//! `SoftwareUpdateDeferral`); the system clamps that to its bound (24 h from the first
//! announcement for an OS update). With `--resume-after N` it resumes the update N seconds
//! later, as an appliance would once its critical work is done. A refusal (a missing capability)
//! is printed, and the app goes on running.

use sphere_applibs::sysevent::{self, Event, Status};
use std::collections::HashSet;
use std::time::Duration;

use crate::say;

/// How long the example asks for: more than the OS bound, to show the clamp.
const DEFER_MINUTES: u32 = 60;

pub fn run(resume_after: Option<u64>) {
    let registration = match sysevent::register_for_event_notifications(&[Event::UpdateReadyForInstall]) {
        Ok(r) => {
            say("sysevent: registered for update-ready-for-install");
            r
        }
        Err(e) => {
            say(&format!("sysevent: register refused: {e}"));
            idle();
        }
    };
    let mut deferred = HashSet::new();
    loop {
        let info = match registration.recv() {
            Ok(info) => info,
            Err(e) => {
                say(&format!("sysevent: no more events: {e}"));
                idle();
            }
        };
        say(&format!("sysevent: event {}", info.to_wire()));
        if info.status != Status::Pending || !deferred.insert(info.release.clone()) {
            continue;
        }
        match sysevent::defer_event(Event::UpdateReadyForInstall, DEFER_MINUTES) {
            Ok(until) => say(&format!("sysevent: deferred {} until {until}", info.release)),
            Err(e) => {
                say(&format!("sysevent: defer refused: {e}"));
                continue;
            }
        }
        if let Some(seconds) = resume_after {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(seconds));
                match sysevent::resume_event(Event::UpdateReadyForInstall) {
                    Ok(()) => say("sysevent: resumed"),
                    Err(e) => say(&format!("sysevent: resume refused: {e}")),
                }
            });
        }
    }
}

/// Apps run forever (the app manager restarts one that exits).
fn idle() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
