//! `sphere-slots`: inspect and drive the A/B slots on a device (or on disk images on a host).
//!
//! The update daemon uses the library directly; this tool is for people and tests: status,
//! install an image from a file or disk into the inactive slot, commit, roll back, check a
//! record, and a record-writing loop for the host power-cut test.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use sphere_slots::env::DEFAULT_REDUNDANT_OFFSET;
use sphere_slots::{EnvLocation, EnvStore, ExpectedImage, Layout, Slot, Slots};

/// Inspect and drive OpenSphere's A/B root slots and their boot-state record.
///
/// On a device the layout is found by GPT partition name (bootenv, rootfs_a, rootfs_b) and the
/// running slot from the root mount. On a host, point it at image files with --bootenv,
/// --slot-a, --slot-b and say which slot "runs" with --booted.
///
/// Exit status: 0 success, 1 refused or invalid input (bad hash, trial pending, ...), 2 could
/// not run (missing device, I/O error).
#[derive(Parser)]
#[command(
    name = "sphere-slots",
    version,
    after_help = "Examples:\n  sphere-slots status --json\n  \
sphere-slots install --image /data/rootfs.erofs --size 3145728 --sha256 <hex> --version 42\n  \
sphere-slots --bootenv disk.img --bootenv-offset 1048576 check"
)]
struct Cli {
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// File or device holding the record (instead of the `bootenv` partition).
    #[arg(long, global = true)]
    bootenv: Option<PathBuf>,
    /// Byte offset of the record inside --bootenv (e.g. the partition's start in a disk image).
    #[arg(long, global = true, default_value_t = 0)]
    bootenv_offset: u64,
    /// Slot A's file or device (instead of the `rootfs_a` partition).
    #[arg(long, global = true)]
    slot_a: Option<PathBuf>,
    /// Slot B's file or device (instead of the `rootfs_b` partition).
    #[arg(long, global = true)]
    slot_b: Option<PathBuf>,
    /// The running slot (instead of finding which slot is mounted as /).
    #[arg(long, global = true, value_parser = parse_slot)]
    booted: Option<Slot>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the record: slot, good slot, trial, attempts left, versions.
    Status,
    /// Check that the record has a valid copy and print it (exit 1 if none is valid).
    Check,
    /// Stream an image into the inactive slot, verify it, and put it on trial for the next boot.
    Install {
        /// The image: a file, a device, `serial:NAME` (virtio-blk disk by serial) or `-` (stdin).
        #[arg(long)]
        image: String,
        /// Exact image length in bytes.
        #[arg(long)]
        size: Option<u64>,
        /// Expected SHA-256 of the image, hex.
        #[arg(long)]
        sha256: Option<String>,
        /// Version recorded for the slot.
        #[arg(long)]
        version: Option<String>,
        /// Take size, hash and version from the kernel command line word
        /// `sphere.test_update=SIZE:SHA256:VERSION` (QEMU test images).
        #[arg(long)]
        from_cmdline: bool,
        /// First wait up to this many seconds for the running slot to be committed.
        #[arg(long, default_value_t = 0)]
        wait_committed: u64,
        /// Ask init for a reboot (via /run/sphere-init.sock) once the slot is on trial.
        #[arg(long)]
        reboot: bool,
    },
    /// Commit the running slot if it is on trial and raise the anti-rollback minimum to its
    /// version (what init's health check does).
    Commit {
        /// The anti-rollback minimum record. Default on a device: /data/sphere/min-version;
        /// with --bootenv (a host) only when given.
        #[arg(long)]
        min_version: Option<PathBuf>,
    },
    /// Put the other slot on trial for the next boot (manual rollback).
    Rollback,
    /// Write a fresh factory record: slot A committed; a slot is bootable when given a version.
    Factory {
        /// Version of the image in slot A.
        #[arg(long)]
        version_a: String,
        /// Version of the image in slot B (omit when slot B is empty).
        #[arg(long)]
        version_b: Option<String>,
        /// Boots a trial slot gets before the fallback.
        #[arg(long, default_value_t = sphere_slots::state::DEFAULT_BOOT_LIMIT)]
        bootlimit: u32,
    },
    /// Host power-cut test: rewrite the record COUNT times, bumping `sphere_stress` each time.
    StressRecord {
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Sync after every 512-byte sector (a slow writer: kills then land mid-copy).
        #[arg(long)]
        sync_each_sector: bool,
    },
}

fn parse_slot(text: &str) -> Result<Slot, String> {
    Slot::parse(text).ok_or_else(|| format!("'{text}' is not a slot (a or b)"))
}

/// A failure and its exit status (1 refused/invalid, 2 could not run).
struct Failure(u8, String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(err: E) -> Self {
        let text = err.to_string();
        // I/O and missing devices are "could not run"; everything else is a refusal.
        let code = if text.contains("No such file") || text.contains("os error") { 2 } else { 1 };
        Failure(code, text)
    }
}

fn layout(cli: &Cli) -> Result<Layout, Failure> {
    let discovered = || Layout::discover().map_err(|e| Failure(2, e.to_string()));
    let env = match &cli.bootenv {
        Some(path) => EnvLocation {
            path: path.clone(),
            offsets: vec![cli.bootenv_offset, cli.bootenv_offset + DEFAULT_REDUNDANT_OFFSET],
            size: sphere_slots::env::DEFAULT_ENV_SIZE,
        },
        None => discovered()?.env,
    };
    let slots = match (&cli.slot_a, &cli.slot_b) {
        (Some(a), Some(b)) => [a.clone(), b.clone()],
        (None, None) if cli.bootenv.is_some() => ["/nonexistent/rootfs_a".into(), "/nonexistent/rootfs_b".into()],
        (None, None) => discovered()?.slots,
        _ => return Err(Failure(2, "give both --slot-a and --slot-b, or neither".into())),
    };
    Ok(Layout { env, slots })
}

fn booted(cli: &Cli, slots: &Slots) -> Result<Slot, Failure> {
    match cli.booted {
        Some(slot) => Ok(slot),
        None => slots.booted_slot().map_err(|e| Failure(2, format!("{e} (give --booted on a host)"))),
    }
}

fn print_status(cli: &Cli, slots: &Slots) -> Result<(), Failure> {
    let booted = cli.booted.or_else(|| slots.booted_slot().ok());
    let status = slots.status(booted)?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    let s = &status.state;
    let booted = booted.map(|b| b.to_string()).unwrap_or_else(|| "unknown".into());
    println!("booted slot:   {booted}");
    println!("next boot:     {}{}", s.slot, if s.upgrade_available { " (trial)" } else { "" });
    println!("good slot:     {}", s.good_slot);
    println!("committed:     {}", if status.committed { "yes" } else { "no" });
    println!("attempts left: {} of {}", status.attempts_left, s.bootlimit);
    for slot in Slot::ALL {
        println!(
            "slot {slot}:        {} version {}",
            if s.is_bootable(slot) { "bootable" } else { "not bootable" },
            s.version(slot).unwrap_or("-")
        );
    }
    if let Some(failed) = s.failed_slot {
        println!("last fallback: slot {failed} failed its trial");
    }
    Ok(())
}

/// `serial:NAME` → the virtio-blk disk with that serial; anything else is a path.
fn resolve_image(spec: &str) -> Result<PathBuf, Failure> {
    let Some(serial) = spec.strip_prefix("serial:") else { return Ok(PathBuf::from(spec)) };
    let entries = std::fs::read_dir("/sys/block").map_err(|e| Failure(2, format!("/sys/block: {e}")))?;
    for entry in entries.flatten() {
        let found = std::fs::read_to_string(entry.path().join("serial")).map(|s| s.trim() == serial).unwrap_or(false);
        if found {
            return Ok(Path::new("/dev").join(entry.file_name()));
        }
    }
    Err(Failure(2, format!("no disk with serial {serial}")))
}

fn cmdline_update() -> Result<(u64, String, String), Failure> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").map_err(|e| Failure(2, format!("/proc/cmdline: {e}")))?;
    let word = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("sphere.test_update="))
        .ok_or_else(|| Failure(2, "no sphere.test_update= on the kernel command line".into()))?;
    let mut parts = word.splitn(3, ':');
    let (Some(size), Some(sha), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Failure(1, format!("sphere.test_update={word}: want SIZE:SHA256:VERSION")));
    };
    let size = size.parse().map_err(|_| Failure(1, format!("sphere.test_update: bad size {size}")))?;
    Ok((size, sha.to_string(), version.to_string()))
}

fn wait_committed(slots: &Slots, seconds: u64) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if slots.status(None)?.committed {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Failure(1, format!("running slot not committed after {seconds} s")));
        }
        // poll(2) rather than std::thread::sleep: Debian's armhf glibc sleeps with a 32-bit
        // time syscall that the device kernel leaves out (see sphere-init's milestone::sleep).
        // SAFETY: poll with no descriptors only waits.
        unsafe { libc::poll(std::ptr::null_mut(), 0, 200) };
    }
}

fn request_reboot() -> Result<(), Failure> {
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    socket
        .send_to(b"reboot", "/run/sphere-init.sock")
        .map_err(|e| Failure(2, format!("/run/sphere-init.sock: {e}")))?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn install(
    cli: &Cli,
    slots: &Slots,
    image: &str,
    size: Option<u64>,
    sha256: Option<&str>,
    version: Option<&str>,
    from_cmdline: bool,
    wait: u64,
    reboot: bool,
) -> Result<(), Failure> {
    let (size, sha256, version) = if from_cmdline {
        cmdline_update()?
    } else {
        match (size, sha256, version) {
            (Some(size), Some(sha), Some(version)) => (size, sha.to_string(), version.to_string()),
            _ => return Err(Failure(1, "install needs --size, --sha256 and --version (or --from-cmdline)".into())),
        }
    };
    let expected = ExpectedImage::from_hex(size, &sha256)?;
    if wait > 0 {
        wait_committed(slots, wait)?;
    }
    let booted = booted(cli, slots)?;
    let source: Box<dyn Read> = if image == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let path = resolve_image(image)?;
        // A disk holding the image may be bigger than it: read exactly `size` bytes + 1 check.
        let file = std::fs::File::open(&path).map_err(|e| Failure(2, format!("{}: {e}", path.display())))?;
        let is_block = {
            use std::os::unix::fs::FileTypeExt;
            file.metadata().map(|m| m.file_type().is_block_device()).unwrap_or(false)
        };
        if is_block { Box::new(file.take(size)) } else { Box::new(file) }
    };
    let start = Instant::now();
    println!("sphere-slots: install-start booted={booted} size={size} version={version}");
    let mut next_report = 0u64;
    let target = slots.install(booted, source, expected, &version, |done| {
        if done >= next_report || done == size {
            println!("sphere-slots: progress {done}/{size}");
            next_report = done + (1 << 20);
        }
    })?;
    let secs = start.elapsed().as_secs_f64();
    if cli.json {
        println!("{}", serde_json::json!({"target": target, "version": version, "bytes": size, "seconds": secs}));
    }
    println!("sphere-slots: install-done target={target} version={version} seconds={secs:.3}");
    if reboot {
        request_reboot()?;
    }
    Ok(())
}

fn stress(cli: &Cli, count: u64, sync_each_sector: bool) -> Result<(), Failure> {
    let location = layout(cli)?.env;
    let store = EnvStore::new(location)?.sync_each_sector(sync_each_sector);
    let mut env = match store.read() {
        Ok(loaded) => loaded.env,
        Err(_) => sphere_slots::Env::new(),
    };
    let mut value: u64 = env.get("sphere_stress").and_then(|v| v.parse().ok()).unwrap_or(0);
    for _ in 0..count {
        value += 1;
        env.set("sphere_stress", &value.to_string())?;
        // Varying length, so torn copies differ from both old and new in many places.
        env.set("sphere_pad", &"x".repeat((value % 4000) as usize))?;
        store.write(&env)?;
        println!("{value}");
    }
    Ok(())
}

fn run(cli: &Cli) -> Result<(), Failure> {
    if let Command::StressRecord { count, sync_each_sector } = cli.command {
        return stress(cli, count, sync_each_sector);
    }
    let slots = Slots::open(layout(cli)?)?;
    match &cli.command {
        Command::Status => print_status(cli, &slots),
        Command::Check => {
            let loaded = slots.record().store().read()?;
            let state = sphere_slots::BootState::from_env(&loaded.env)?;
            if cli.json {
                let copies: Vec<serde_json::Value> = loaded
                    .copies
                    .iter()
                    .map(|c| match c {
                        Ok(flags) => serde_json::json!({"valid": true, "flags": flags}),
                        Err(why) => serde_json::json!({"valid": false, "error": why}),
                    })
                    .collect();
                let vars: serde_json::Map<String, serde_json::Value> =
                    loaded.env.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(v))).collect();
                let out = serde_json::json!({"current": loaded.current, "copies": copies, "state": state, "env": vars});
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("current copy {} (flags {:?})", loaded.current, loaded.flags);
                for (name, value) in loaded.env.iter() {
                    println!("{name}={value}");
                }
            }
            Ok(())
        }
        Command::Install { image, size, sha256, version, from_cmdline, wait_committed, reboot } => install(
            cli,
            &slots,
            image,
            *size,
            sha256.as_deref(),
            version.as_deref(),
            *from_cmdline,
            *wait_committed,
            *reboot,
        ),
        Command::Commit { min_version } => {
            let booted = booted(cli, &slots)?;
            let store = match (min_version, &cli.bootenv) {
                (Some(path), _) => Some(path.clone()),
                (None, None) => Some(PathBuf::from(sphere_slots::rollback::DEFAULT_MIN_VERSION_PATH)),
                (None, Some(_)) => None,
            };
            let (changed, raised) = match store {
                Some(path) => slots.commit_and_raise(booted, &mut sphere_slots::FileMinVersion::new(path))?,
                None => (slots.commit(booted)?, None),
            };
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"committed": changed, "slot": booted, "min_version_raised_to": raised})
                );
            } else {
                println!("{}", if changed { format!("committed slot {booted}") } else { "nothing to commit".into() });
                if let Some(version) = raised {
                    println!("anti-rollback minimum raised to {version}");
                }
            }
            Ok(())
        }
        Command::Rollback => {
            let booted = booted(cli, &slots)?;
            let target = slots.rollback(booted)?;
            println!("slot {target} is on trial for the next boot");
            Ok(())
        }
        Command::Factory { version_a, version_b, bootlimit } => {
            if *bootlimit == 0 {
                return Err(Failure(1, "--bootlimit must be at least 1".into()));
            }
            let state = sphere_slots::BootState {
                bootlimit: *bootlimit,
                bootable: [true, version_b.is_some()],
                versions: [Some(version_a.clone()), version_b.clone()],
                ..sphere_slots::BootState::default()
            };
            slots.record().save(&sphere_slots::Env::new(), &state)?;
            println!("factory record written: slot a (version {version_a}) committed");
            Ok(())
        }
        Command::StressRecord { .. } => Ok(()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, text)) => {
            eprintln!("sphere-slots: {text}");
            ExitCode::from(code)
        }
    }
}
