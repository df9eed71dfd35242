//! The initramfs stage (this binary as `/init` in a tiny cpio): find the root disk, mount it
//! read-only, move /dev over, switch_root into it and exec `/sbin/init` (this binary again).
//!
//! Kernel command line: `sphere.root=serial:NAME` (virtio-blk serial, default
//! `serial:sphere-root`) or `sphere.root=/dev/vda`, and `sphere.rootfstype=` (default `erofs`).
//! `sphere.root=ab` boots an A/B disk: this stage then plays the boot loader's part with the
//! boot-state record (see `slots`) and leaves a watchdog behind on a trial boot.

use std::ffi::CString;
use std::path::Path;
use std::time::Duration;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::reboot::{RebootMode, reboot};

use crate::cmdline::Cmdline;
use crate::log::Log;
use crate::mounts;

const NEWROOT: &str = "/newroot";

fn fatal(log: &mut Log, message: &str) -> ! {
    log.warn(format!("FATAL: {message}; rebooting in 3 s"));
    log.milestone("initramfs-failed", &[]);
    crate::milestone::sleep(Duration::from_secs(3));
    let _ = reboot(RebootMode::RB_AUTOBOOT);
    crate::shutdown::halt_forever()
}

pub fn run() -> ! {
    let mut log = Log::new();
    let api = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mounts::mount_fs(
        &mut log,
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755"),
    );
    mounts::ensure_stdio();
    log.milestone("initramfs-start", &[]);
    mounts::mount_fs(&mut log, "proc", "/proc", "proc", api, None);
    mounts::mount_fs(&mut log, "sysfs", "/sys", "sysfs", api, None);

    let cmdline = Cmdline::from_proc();
    let root = cmdline.get("sphere.root").unwrap_or("serial:sphere-root").to_string();
    let fstype = cmdline.get("sphere.rootfstype").unwrap_or("erofs").to_string();
    let mut ab = None;
    let device = if root == "ab" {
        match crate::slots::select(&mut log, Duration::from_secs(10)) {
            Ok(selected) => {
                let fields = crate::slots::decision_fields(selected.decision);
                let refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
                log.milestone("slot-selected", &refs);
                let device = selected.device.clone();
                ab = Some(selected);
                device
            }
            Err(err) => fatal(&mut log, &format!("A/B boot: {err}")),
        }
    } else {
        let Some(device) = mounts::resolve_device(&root, Duration::from_secs(10)) else {
            fatal(&mut log, &format!("root device {root} not found"));
        };
        device
    };
    let _ = std::fs::create_dir_all(NEWROOT);
    let device_str = device.to_string_lossy().into_owned();
    if let Err(err) = mount(
        Some(device_str.as_str()),
        NEWROOT,
        Some(fstype.as_str()),
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        None::<&str>,
    ) {
        fatal(&mut log, &format!("mount {fstype} {device_str} on {NEWROOT}: {err}"));
    }
    if !Path::new(NEWROOT).join("sbin/init").exists() {
        fatal(&mut log, &format!("{device_str} has no /sbin/init"));
    }
    log.milestone("root-mounted", &[("device", &device_str), ("fstype", &fstype)]);

    if mount(Some("/dev"), "/newroot/dev", None::<&str>, MsFlags::MS_MOVE, None::<&str>).is_err() {
        let _ = umount2("/dev", MntFlags::MNT_DETACH);
    }
    let _ = umount2("/proc", MntFlags::MNT_DETACH);
    let _ = umount2("/sys", MntFlags::MNT_DETACH);
    // The initramfs stays in memory after the switch: drop the only big file in it.
    let _ = std::fs::remove_file("/init");

    let switched = std::env::set_current_dir(NEWROOT)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
                .map_err(|e| format!("move {NEWROOT} to /: {e}"))
        })
        .and_then(|()| nix::unistd::chroot(".").map_err(|e| format!("chroot: {e}")))
        .and_then(|()| std::env::set_current_dir("/").map_err(|e| e.to_string()));
    if let Err(err) = switched {
        fatal(&mut log, &format!("switch_root: {err}"));
    }
    log.milestone("switch-root", &[]);
    if let Some(selected) = &ab {
        if let sphere_slots::BootDecision::Trial { slot, .. } = selected.decision {
            let timeout = crate::slots::trial_timeout(&cmdline);
            crate::slots::spawn_trial_watchdog(&mut log, &selected.bootenv, slot, timeout);
        }
    }
    let init = c"/sbin/init";
    let argv: Vec<CString> = vec![CString::from(init)];
    let err = nix::unistd::execv(init, &argv);
    fatal(&mut log, &format!("exec /sbin/init: {err:?}"))
}
