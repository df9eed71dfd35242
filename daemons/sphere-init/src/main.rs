//! sphere-init: OpenSphere's PID 1 and initramfs stage.
//!
//! One static binary, three roles chosen at start:
//! - `/init` in the initramfs (argv[0] is `/init`): mount the read-only root and switch into it
//!   (see `initramfs`).
//! - `/sbin/init` as PID 1 in the root filesystem: mount the API filesystems, /run, /tmp and the
//!   data partition, set the host name, configure the network, then supervise the services of
//!   /etc/sphere/init.json until a poweroff or reboot request (see `supervisor`, `shutdown`).
//! - Host/diagnostic modes: `--check-config FILE` (used by scripts/build-image.sh) and the
//!   self-test services `--diag-service` / `--diag-flaky`.
//!
//! Design rules: never panic and never exit as PID 1 (a failed mount or a bad config is logged
//! and boot continues with what is safe); one thread; no allocation-heavy dependencies.
//! Boot progress is printed as `sphere-init: milestone NAME ... t=SECONDS` lines (see
//! `milestone`). Signals: SIGUSR1/SIGUSR2/SIGPWR = poweroff, SIGTERM/SIGINT = reboot.

mod backoff;
mod cmdline;
mod config;
mod control;
mod diag;
mod initramfs;
mod linebuf;
mod log;
mod milestone;
mod mounts;
mod net;
mod ringlog;
mod selftest;
mod shutdown;
mod slots;
mod supervisor;

use std::path::Path;

use cmdline::Cmdline;
use config::Config;
use control::Action;
use log::Log;

const USAGE: &str = "\
usage: sphere-init                       (as PID 1: /sbin/init, or /init in the initramfs)
       sphere-init --check-config FILE   validate an init.json and print a summary
       sphere-init --diag-service        self-test service: print READY=1, then idle
       sphere-init --diag-flaky [MARKER] self-test service: fail once, then like --diag-service
       sphere-init --version";

fn check_config(path: Option<&String>) -> ! {
    let Some(path) = path else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    match Config::load(path) {
        Ok(config) => {
            let names: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
            println!(
                "{path}: ok: hostname {}, {} interface(s), {} service(s): {}",
                config.hostname,
                config.network.len(),
                config.services.len(),
                names.join(", ")
            );
            for svc in &config.services {
                println!("service {} {}", svc.name, svc.path);
            }
            std::process::exit(0);
        }
        Err(err) => {
            eprintln!("{err}");
            std::process::exit(1);
        }
    }
}

fn pid1() -> ! {
    // Signals are read from a signalfd by the supervisor; block them before anything can fork.
    let _ = supervisor::handled_signals().thread_block();
    let mut log = Log::new();
    log.milestone("init-start", &[]);
    // Ctrl-Alt-Del becomes SIGINT to init (an orderly reboot) instead of an instant reset.
    let _ = nix::sys::reboot::set_cad_enabled(false);
    mounts::early_mounts(&mut log);
    mounts::ensure_stdio();

    let cmdline = Cmdline::from_proc();
    let config = match Config::load(config::DEFAULT_PATH) {
        Ok(config) => config,
        Err(err) => {
            log.warn(format!("{err}; continuing without services"));
            Config::default()
        }
    };
    log.attach(Path::new(&config.log.path), config.log.max_bytes);
    if let Err(err) = nix::unistd::sethostname(&config.hostname) {
        log.warn(format!("sethostname {}: {err}", config.hostname));
    }
    let data_mountpoint =
        config.data.as_ref().filter(|data| mounts::mount_data(&mut log, data)).map(|data| data.mountpoint.clone());
    log.milestone("mounts-done", &[]);
    let up = net::configure(&mut log, &config.network);
    log.milestone("network-up", &[("interfaces", &up.to_string())]);

    let selftest = cmdline.flag("sphere.selftest");
    if selftest {
        selftest::early_facts(&mut log, &cmdline, data_mountpoint.as_deref().map(Path::new));
    }
    let after_boot = match cmdline.get("sphere.after_boot") {
        Some(text) => {
            let action = control::parse_command(text);
            if action.is_none() {
                log.warn(format!("sphere.after_boot={text}: expected poweroff or reboot"));
            }
            action
        }
        None => None,
    };
    let services = config.enabled_services(&cmdline);
    let ab = slots::AbSystem::detect(&mut log);
    let action: Action = supervisor::Supervisor::new(&mut log, &config, services, after_boot, selftest, ab).run();
    shutdown::finish(&mut log, action, data_mountpoint.as_deref())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--check-config") => check_config(args.get(2)),
        Some("--diag-service") => diag::service("diag"),
        Some("--diag-flaky") => diag::flaky(args.get(2).map(String::as_str)),
        Some("--initramfs") => initramfs::run(),
        Some("--version") => {
            println!("sphere-init {}", env!("CARGO_PKG_VERSION"));
            return;
        }
        Some("--help" | "-h") => {
            println!("{USAGE}");
            return;
        }
        _ => {}
    }
    if std::process::id() != 1 {
        eprintln!("sphere-init: not PID 1\n{USAGE}");
        std::process::exit(2);
    }
    if args.first().map(String::as_str) == Some("/init") { initramfs::run() } else { pid1() }
}
