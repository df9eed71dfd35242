//! `sphere-updated`: the update daemon (`serve`), and the same operations one-shot for the
//! device's shell, the boot health check and tests (`check`, `install`, `status`, ...).
//!
//! Exit codes: 0 success, 1 the update was rejected (untrusted, wrong board, downgrade, bad
//! data), 2 could not run (configuration, I/O).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sphere_updated::config::{Config, DEFAULT_CONFIG};
use sphere_updated::updater::{UpdateError, Updater};

#[derive(Parser)]
#[command(
    name = "sphere-updated",
    version,
    about = "OpenSphere's update daemon: TUF-verified A/B updates of the OS, apps and M4 firmware"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Print results as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the D-Bus API (org.opensphere.Update1) on the peer-to-peer socket.
    Serve,
    /// Verify the repository's metadata and show the newest release for this board.
    Check,
    /// Install a release (default: the newest newer one) into the inactive slot.
    Install {
        #[arg(long)]
        release: Option<String>,
        /// First wait up to SECS seconds until the running slot is committed (a trial boot's
        /// health check commits it; an install is refused while a trial is pending). For
        /// unattended runs at boot, e.g. tests/update-qemu-download.py's service.
        #[arg(long, value_name = "SECS", default_value_t = 0)]
        wait_committed: u64,
        /// When a slot was put on trial, ask init for a reboot (/run/sphere-init.sock).
        #[arg(long)]
        reboot: bool,
    },
    /// Boot record, versions, anti-rollback minimum.
    Status,
    /// After a committed boot: raise the anti-rollback minimum to the running version.
    Commit,
    /// Put the other slot on trial for the next boot.
    Rollback,
    /// Create a fresh boot-state record at the configured `slots.bootenv` file (file-backed
    /// slots for tests and benchmarks; refuses to overwrite an existing record).
    InitRecord,
    /// Measure SHA-256 throughput of the hasher the installer uses (for scripts/bench-update.sh).
    #[command(hide = true)]
    BenchHash {
        #[arg(long, default_value_t = 256)]
        mib: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::BenchHash { mib } = cli.command {
        // The same hasher sphere-slots' SlotWriter uses, over 1 MiB pieces as installs feed it.
        use sphere_slots::hash::Sha256Stream;
        let buf = vec![0x5au8; 1 << 20];
        // CPU time of this thread, as `openssl speed` divides by CPU user time by default:
        // on a loaded machine wall time would measure the scheduler, not the hasher.
        fn cpu_seconds() -> f64 {
            let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: clock_gettime writes one timespec into the valid pointer given.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
            ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
        }
        let mut best = 0.0f64;
        for _ in 0..3 {
            let start = cpu_seconds();
            let mut h = Sha256Stream::new();
            for _ in 0..mib {
                h.update(&buf);
            }
            std::hint::black_box(h.finish());
            best = best.max(mib as f64 * 1048576.0 / (cpu_seconds() - start).max(1e-9));
        }
        println!("{:.0}", best);
        return ExitCode::SUCCESS;
    }
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sphere-updated: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sphere-updated: tokio: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli.command, config, cli.json)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = exit_code(&e);
            let text = sphere_updated::updater::chain(&e);
            eprintln!("sphere-updated: error: {text}");
            if cli.json {
                println!("{}", serde_json::json!({"ok": false, "error": text, "exit": code}));
            }
            ExitCode::from(code)
        }
    }
}

fn exit_code(e: &UpdateError) -> u8 {
    match e {
        UpdateError::Config(_) | UpdateError::Io { .. } | UpdateError::App(_) => 2,
        UpdateError::Download(sphere_updated::download::DownloadError::GaveUp { .. }) => 2,
        _ => 1,
    }
}

fn print(json: bool, value: &impl serde::Serialize, text: String) {
    if json {
        println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
    } else {
        println!("{text}");
    }
}

async fn run(command: Command, config: Config, json: bool) -> Result<(), UpdateError> {
    let updater = Updater::new(config)?;
    match command {
        Command::Serve => sphere_updated::server::serve(updater).await,
        Command::Check => {
            let check = updater.check().await?;
            let text = match &check.available {
                Some(r) => format!("release {} (version {}) is available for {}", r.name, r.version(), check.hardware),
                None => format!("up to date (OS version {} on slot {})", check.os_version, check.booted_slot),
            };
            print(json, &check, text);
            Ok(())
        }
        Command::Install { release, wait_committed, reboot } => {
            if wait_committed > 0 {
                wait_until_committed(&updater, wait_committed).await?;
            }
            let mut last_pct = u64::MAX;
            let result = updater
                .install(release.as_deref(), |target, done, total| {
                    let pct = (done * 100).checked_div(total).unwrap_or(100);
                    if pct != last_pct && (pct % 10 == 0 || done == total) {
                        eprintln!("sphere-updated: {target}: {pct}% ({done}/{total} bytes)");
                        last_pct = pct;
                    }
                })
                .await?;
            let text = if result.installed.is_empty() {
                "nothing to install: up to date".to_string()
            } else {
                format!(
                    "installed release {}: {}{}",
                    result.release,
                    result.installed.join(", "),
                    result.trial_slot.as_ref().map(|s| format!("; slot {s} boots next on trial")).unwrap_or_default()
                )
            };
            print(json, &result, text);
            if reboot && result.reboot_required {
                request_reboot()?;
            }
            Ok(())
        }
        Command::Status => {
            let status = sphere_updated::server::status(&updater)?;
            let text = format!(
                "slot {} running OS version {} ({}); M4 firmware version {}",
                status.booted_slot, status.os_version, status.boot_state, status.m4_version
            );
            // For tools and tests: the whole boot record, the anti-rollback minimum and the
            // versions installed outside the slots.
            let slots = updater.slots()?;
            let (_, record) = slots.record().load().map_err(sphere_slots::SlotsError::from)?;
            let minimum = sphere_slots::MinVersionStore::minimum(&sphere_slots::FileMinVersion::new(
                &updater.config.min_version,
            ))?;
            let value = serde_json::json!({
                "status": status,
                "record": record,
                "min_version": minimum,
                "installed": updater.installed(),
            });
            print(json, &value, text);
            Ok(())
        }
        Command::Commit => {
            let raised = updater.raise_min_version_if_committed()?;
            let text = match raised {
                Some(v) => format!("anti-rollback minimum raised to {v}"),
                None => "anti-rollback minimum unchanged".to_string(),
            };
            print(json, &serde_json::json!({"raised_to": raised}), text);
            Ok(())
        }
        Command::InitRecord => {
            let slots = updater
                .config
                .slots
                .clone()
                .ok_or_else(|| UpdateError::Config("init-record needs an explicit slots.bootenv".into()))?;
            if slots.bootenv.exists() {
                return Err(UpdateError::Config(format!(
                    "{} exists; not overwriting a boot record",
                    slots.bootenv.display()
                )));
            }
            let location = sphere_slots::EnvLocation::redundant_default(&slots.bootenv);
            sphere_slots::EnvStore::create_file(&location)
                .map_err(|e| UpdateError::Slots(sphere_slots::SlotsError::from(e)))?;
            print(json, &serde_json::json!({"created": slots.bootenv}), format!("created {}", slots.bootenv.display()));
            Ok(())
        }
        Command::BenchHash { .. } => Ok(()),
        Command::Rollback => {
            let slot = updater.rollback()?;
            print(json, &serde_json::json!({"next_slot": slot}), format!("slot {slot} boots next on trial"));
            Ok(())
        }
    }
}

/// Polls the boot record until the running slot is committed, at most `seconds`.
async fn wait_until_committed(updater: &Updater, seconds: u64) -> Result<(), UpdateError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if updater.slots()?.status(None)?.committed {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(UpdateError::Config(format!("running slot not committed after {seconds} s")));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Asks sphere-init for a clean reboot (the same datagram `sphere-slots install --reboot` sends).
fn request_reboot() -> Result<(), UpdateError> {
    let path = std::path::Path::new("/run/sphere-init.sock");
    let io = |source| UpdateError::Io { path: path.to_path_buf(), source };
    std::os::unix::net::UnixDatagram::unbound().map_err(io)?.send_to(b"reboot", path).map_err(io)?;
    eprintln!("sphere-updated: reboot requested");
    Ok(())
}
