//! `sphere-cloud-sim`: simulated OpenSphere devices with software keys, for tests and
//! `scripts/bench-cloud.sh`. Not for production devices (they run `sphere-attestd`).

use clap::{Parser, Subcommand};
use sphere_cloud::sim::{Client, Profile, SimDevice, reference_file};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "sphere-cloud-sim",
    version,
    about = "Simulated OpenSphere devices (software keys) for tests and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Server {
    /// sphere-cloud's base URL.
    #[arg(long, default_value = "https://127.0.0.1:8443")]
    url: String,
    /// sphere-cloud's data directory (for ca.crt and operator.token).
    #[arg(long)]
    data: PathBuf,
}

impl Server {
    fn client(&self, operator: bool) -> Result<Client, String> {
        let ca = std::fs::read_to_string(self.data.join("ca.crt")).map_err(|e| format!("ca.crt: {e}"))?;
        let token = if operator {
            Some(
                std::fs::read_to_string(self.data.join("operator.token"))
                    .map_err(|e| format!("operator.token: {e}"))?
                    .trim()
                    .to_owned(),
            )
        } else {
            None
        };
        Client::new(&self.url, &ca, token)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Print the reference values (JSON) that accept the simulated device's software.
    ReferenceValues,
    /// Register one device, attest, and write its key, certificate and id into DIR.
    Device {
        #[command(flatten)]
        server: Server,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        group: Option<String>,
        /// Use ECDSA P-256 (as a TPM does) instead of Ed25519.
        #[arg(long)]
        p256: bool,
    },
    /// Attestations + certificate issuance per second with N devices, each in its own thread.
    Bench {
        #[command(flatten)]
        server: Server,
        #[arg(long, default_value_t = 8)]
        devices: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long)]
        p256: bool,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::ReferenceValues => serde_json::to_string_pretty(&reference_file(&Profile::default()))
            .map(|json| println!("{json}"))
            .map_err(|e| e.to_string()),
        Command::Device { server, out, group, p256 } => device(&server, &out, group.as_deref(), p256),
        Command::Bench { server, devices, seconds, p256 } => bench(&server, devices, seconds, p256),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sphere-cloud-sim: {message}");
            ExitCode::from(1)
        }
    }
}

fn device(server: &Server, out: &std::path::Path, group: Option<&str>, p256: bool) -> Result<(), String> {
    let device = SimDevice::new(p256, Profile::default())?;
    device.register(&server.client(true)?, group).map_err(|e| e.to_string())?;
    let result = device.attest(&server.client(false)?).map_err(|e| e.to_string())?;
    let certificate = result.certificate.ok_or_else(|| format!("attestation failed: {}", result.reasons.join("; ")))?;
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    let write = |name: &str, text: &str| std::fs::write(out.join(name), text).map_err(|e| format!("{name}: {e}"));
    write("device.crt", &certificate.certificate_pem)?;
    write("device.key", &device.tls_key_pem)?;
    write("ca.crt", &certificate.ca_certificate_pem)?;
    write("device-id", &device.id)?;
    println!("{}", device.id);
    Ok(())
}

fn bench(server: &Server, devices: usize, seconds: u64, p256: bool) -> Result<(), String> {
    let operator = server.client(true)?;
    let mut fleet = Vec::with_capacity(devices);
    for _ in 0..devices.max(1) {
        let device = SimDevice::new(p256, Profile::default())?;
        device.register(&operator, None).map_err(|e| e.to_string())?;
        fleet.push(device);
    }
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let threads: Vec<_> = fleet
        .into_iter()
        .map(|device| {
            let client = server.client(false);
            let (done, failed, stop) = (done.clone(), failed.clone(), stop.clone());
            std::thread::spawn(move || -> Result<(), String> {
                let client = client?;
                while !stop.load(Ordering::Relaxed) {
                    match device.attest(&client) {
                        Ok(result) if result.passed && result.certificate.is_some() => {
                            done.fetch_add(1, Ordering::Relaxed)
                        }
                        Ok(_) | Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().map_err(|_| "a device thread panicked".to_owned())??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ok = done.load(Ordering::Relaxed);
    let bad = failed.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({
            "devices": devices,
            "algorithm": if p256 { "p256" } else { "ed25519" },
            "seconds": (elapsed * 100.0).round() / 100.0,
            "attestations_with_certificate": ok,
            "failed": bad,
            "per_second": ((ok as f64 / elapsed) * 10.0).round() / 10.0,
        })
    );
    if bad > 0 {
        return Err(format!("{bad} attestations failed"));
    }
    Ok(())
}
