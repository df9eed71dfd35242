//! The end of PID 1: stop stragglers, flush, unmount the data partition, power off or reboot.

use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::reboot::{RebootMode, reboot};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::control::Action;
use crate::log::Log;

/// Reaps children until none are left or `timeout` passes.
fn reap_all(timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {
                if Instant::now() >= deadline {
                    return;
                }
                crate::milestone::sleep(Duration::from_millis(10));
            }
            Ok(_) => {}
            Err(_) => return, // ECHILD: nobody left
        }
    }
}

pub fn finish(log: &mut Log, action: Action, data_mountpoint: Option<&str>) -> ! {
    // Everything that is not a supervised service (orphans, their children).
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    reap_all(Duration::from_millis(500));
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    reap_all(Duration::from_millis(500));
    nix::unistd::sync();
    if let Some(mountpoint) = data_mountpoint {
        match umount2(mountpoint, MntFlags::empty()) {
            Ok(()) => log.info(format!("unmounted {mountpoint}")),
            Err(err) => {
                let remount = mount(
                    None::<&str>,
                    mountpoint,
                    None::<&str>,
                    MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None::<&str>,
                );
                match remount {
                    Ok(()) => log.info(format!("{mountpoint} busy ({err}); remounted read-only")),
                    Err(err2) => {
                        log.warn(format!("cannot unmount {mountpoint} ({err}) nor remount it read-only ({err2})"))
                    }
                }
            }
        }
    }
    log.sync();
    nix::unistd::sync();
    log.milestone("shutdown-complete", &[("action", action.name())]);
    let mode = match action {
        Action::Poweroff => RebootMode::RB_POWER_OFF,
        Action::Reboot => RebootMode::RB_AUTOBOOT,
    };
    let Err(err) = reboot(mode);
    log.warn(format!("reboot({}) failed: {err}", action.name()));
    halt_forever()
}

/// PID 1 must never exit (the kernel would panic); park instead.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: pause(2) only waits for a signal.
        unsafe { libc::pause() };
    }
}
