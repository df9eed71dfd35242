//! sphere-attestd: proves to sphere-cloud what the device booted, holds the device certificate
//! that proof earns, and keeps the MQTT link to the cloud (see docs/attestation.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sphere_attestation::api::{ErrorKind, ErrorReport};
use sphere_attestd::attest::{self, AttestError};
use sphere_attestd::config::{self, Config};
use sphere_attestd::keystore::{Backend, IdentityKey};
use sphere_attestd::measure::{self, MeasuredState};
use sphere_attestd::queue::Outbox;
use sphere_attestd::{bench, evidence, mqtt, violations};
use tokio::sync::mpsc;

/// Device attestation daemon: identity key (TPM 2.0 or a weaker file key), measured boot,
/// EAT evidence for sphere-cloud, short-lived device certificates, and the MQTT cloud link.
///
/// Exit codes: 0 success, 1 refused or invalid (attestation failed, bad input), 2 could not run
/// (no keystore, cloud unreachable, bad configuration).
#[derive(Parser)]
#[command(name = "sphere-attestd", version)]
struct Cli {
    /// The image's configuration (the provisioned STATE_DIR/config.json and the kernel command
    /// line's sphere.cloud= / sphere.mqtt= are laid over it).
    #[arg(long, global = true, default_value = config::DEFAULT_CONFIG)]
    config: PathBuf,
    /// Kernel command line to read overrides from.
    #[arg(long, global = true, default_value = config::DEFAULT_CMDLINE)]
    cmdline: PathBuf,
    /// Identity keystore, overriding the configuration: auto, tpm:/dev/tpmrm0, unix:SWTPM_SOCKET,
    /// file:PATH.
    #[arg(long, global = true)]
    key: Option<String>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: measure the boot, attest, get a certificate, keep the MQTT link, renew.
    Serve,
    /// Create (or open) the identity key; print the device id, public key and a CSR. What a
    /// factory station records to register the device with sphere-cloud.
    Provision,
    /// Print the event log of this boot (as the daemon measured it; measured now, without
    /// extending PCRs, if the daemon has not run).
    Measure,
    /// Attest once against the configured cloud and print the result (stores the certificate).
    Attest {
        /// Do not ask for a certificate.
        #[arg(long)]
        no_certificate: bool,
    },
    /// Queue an error report in the outbox (sent by the daemon when online).
    Report {
        /// crash, sandbox-violation, firewall-violation or other.
        #[arg(long)]
        kind: String,
        #[arg(long)]
        app: Option<String>,
        #[arg(long, default_value = "")]
        detail: String,
        #[arg(long, default_value_t = 1)]
        count: u64,
    },
    /// Benchmark: publish COUNT telemetry messages (QoS 0) through the device's MQTT client to a
    /// plain-TCP broker and print messages per second (scripts/bench-mqtt.sh uses it).
    BenchPublish {
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long, default_value_t = 1883)]
        port: u16,
        #[arg(long, default_value_t = 100_000)]
        count: u64,
        #[arg(long, default_value = "bench/telemetry")]
        topic: String,
        /// Payload size in bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
}

enum Failure {
    Invalid(String),
    Usage(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = run(&cli);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Invalid(message)) => {
            eprintln!("sphere-attestd: {message}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(message)) => {
            eprintln!("sphere-attestd: {message}");
            ExitCode::from(2)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Usage(format!("tokio runtime: {e}")))
}

fn load_config(cli: &Cli) -> Result<Config, Failure> {
    let mut config = Config::load(&cli.config, &cli.cmdline).map_err(Failure::Usage)?;
    if let Some(key) = &cli.key {
        config.key = key.clone();
    }
    Ok(config)
}

fn open_key(config: &Config) -> Result<IdentityKey, Failure> {
    let backend = config.backend();
    if let Backend::File(path) = &backend {
        eprintln!(
            "sphere-attestd: WARNING: no TPM; the identity key is a FILE ({}), weaker than a TPM key: \
             whoever reads the data partition can impersonate this device, and evidence carries no TPM quote",
            path.display()
        );
    }
    IdentityKey::open(&backend).map_err(|e| Failure::Usage(format!("identity key: {e}")))
}

fn run(cli: &Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Serve => serve(load_config(cli)?),
        Command::Provision => provision(&load_config(cli)?, cli.json),
        Command::Measure => {
            let config = load_config(cli)?;
            let state = match MeasuredState::load(&config.eventlog_path()).map_err(|e| Failure::Usage(e.to_string()))? {
                Some(state) => state,
                None => MeasuredState::measure_boot(&config.measure, None, measure::os_version(&config.os_release))
                    .map_err(|e| Failure::Usage(e.to_string()))?,
            };
            if cli.json {
                let out = serde_json::json!({
                    "in_tpm": state.in_tpm,
                    "event_log": state.log,
                    "event_log_digest": state.log.digest(),
                    "pcrs": state.log.replay(),
                    "os_version": state.os_version,
                });
                println!("{out:#}");
            } else {
                for entry in &state.log.entries {
                    println!(
                        "PCR {:2}  {:<16} {:<40} {}",
                        entry.pcr,
                        entry.stage.as_str(),
                        entry.component,
                        entry.digest
                    );
                }
                println!("event log digest {}", state.log.digest());
            }
            Ok(())
        }
        Command::Attest { no_certificate } => {
            let config = load_config(cli)?;
            let key = open_key(&config)?;
            let state = boot_state(&config, &key)?;
            let result = runtime()?.block_on(attest::attest_once(&config, &key, &state, !no_certificate));
            match result {
                Ok(result) => {
                    if cli.json {
                        println!("{}", serde_json::to_string_pretty(&result).unwrap_or_default());
                    } else if result.passed {
                        println!("attestation {} passed", result.attestation_id);
                        if let Some(cert) = &result.certificate {
                            println!("certificate serial {} valid until {}", cert.serial, cert.not_after);
                        }
                    } else {
                        println!("attestation {} FAILED: {}", result.attestation_id, result.reasons.join("; "));
                    }
                    if result.passed { Ok(()) } else { Err(Failure::Invalid("attestation failed".into())) }
                }
                Err(e @ AttestError::Refused { .. }) => Err(Failure::Invalid(e.to_string())),
                Err(e) => Err(Failure::Usage(e.to_string())),
            }
        }
        Command::Report { kind, app, detail, count } => {
            let config = load_config(cli)?;
            let kind: ErrorKind = serde_json::from_value(serde_json::Value::String(kind.clone())).map_err(|_| {
                Failure::Usage(format!("--kind {kind}: want crash, sandbox-violation, firewall-violation or other"))
            })?;
            let report = ErrorReport {
                kind,
                app_id: app.clone(),
                count: *count,
                detail: detail.clone(),
                occurred_at: attest::now(),
            };
            let outbox = Outbox::open(&config.outbox_dir(), config.queue_max_messages, config.queue_max_bytes)
                .map_err(|e| Failure::Usage(format!("outbox: {e}")))?;
            let payload = serde_json::to_vec(&report).map_err(|e| Failure::Usage(e.to_string()))?;
            outbox.push("errors", &payload).map_err(|e| Failure::Usage(format!("outbox: {e}")))?;
            println!("queued ({} in the outbox)", outbox.len().unwrap_or(0));
            Ok(())
        }
        Command::BenchPublish { host, port, count, topic, size } => {
            let rate =
                runtime()?.block_on(bench::publish(host, *port, topic, *count, *size)).map_err(Failure::Usage)?;
            if cli.json {
                println!("{}", serde_json::json!({"messages": count, "seconds": rate.0, "per_second": rate.1}));
            } else {
                println!("{count} messages in {:.3} s: {:.0} msg/s", rate.0, rate.1);
            }
            Ok(())
        }
    }
}

fn provision(config: &Config, json: bool) -> Result<(), Failure> {
    let key = open_key(config)?;
    let device_id = key.device_id().map_err(|e| Failure::Usage(e.to_string()))?;
    let public = evidence::public_key(&key).map_err(Failure::Usage)?;
    let csr = evidence::certificate_request(&key).map_err(Failure::Usage)?;
    if json {
        let out = serde_json::json!({
            "device_id": device_id,
            "key_storage": key.backend().storage_name(),
            "public_key_pem": public.to_spki_pem(),
            "csr_pem": csr,
        });
        println!("{out:#}");
    } else {
        println!("device id:   {device_id}");
        println!("key storage: {}", key.backend().storage_name());
        print!("{}", public.to_spki_pem());
        print!("{csr}");
    }
    Ok(())
}

/// This boot's measurements: reloaded from /run after a daemon restart, measured otherwise.
fn boot_state(config: &Config, key: &IdentityKey) -> Result<MeasuredState, Failure> {
    let path = config.eventlog_path();
    let fail = |e: measure::MeasureError| Failure::Usage(e.to_string());
    let mut state = match MeasuredState::load(&path).map_err(fail)? {
        Some(state) => {
            if state.in_tpm {
                if let Err(e) = state.check_against_tpm(key) {
                    eprintln!("sphere-attestd: {e}");
                }
            }
            state
        }
        None => MeasuredState::measure_boot(&config.measure, Some(key), measure::os_version(&config.os_release))
            .map_err(fail)?,
    };
    state.measure_apps(&config.measure, Some(key)).map_err(fail)?;
    state.save(&path).map_err(fail)?;
    Ok(state)
}

fn serve(config: Config) -> Result<(), Failure> {
    let key = Arc::new(open_key(&config)?);
    let device_id = key.device_id().map_err(|e| Failure::Usage(e.to_string()))?;
    let public = evidence::public_key(&key).map_err(Failure::Usage)?;
    // What provisioning needs to register the device, kept where the factory station (or
    // `sphere-attestd provision`) can read it.
    let pub_path = config.state_dir.join("device.pub.pem");
    sphere_attestd::fsutil::write_atomic(&pub_path, public.to_spki_pem().as_bytes(), 0o644)
        .map_err(|e| Failure::Usage(format!("{}: {e}", pub_path.display())))?;
    let state = boot_state(&config, &key)?;
    println!(
        "sphere-attestd: device {device_id} key {} measured {} events (event log {})",
        key.backend().storage_name(),
        state.log.entries.len(),
        state.log.digest()
    );
    for line in public.to_spki_pem().lines() {
        println!("sphere-attestd: public-key {line}");
    }
    println!("sphere-attestd: ready");
    let outbox = Outbox::open(&config.outbox_dir(), config.queue_max_messages, config.queue_max_bytes)
        .map_err(|e| Failure::Usage(format!("outbox: {e}")))?;
    runtime()?.block_on(async move {
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Failure::Usage(format!("SIGTERM handler: {e}")))?;
        let (wake_tx, wake_rx) = mpsc::channel(1);
        let poller = tokio::spawn(poll_violations(config.clone(), wake_tx));
        tokio::select! {
            _ = sigterm.recv() => eprintln!("sphere-attestd: stopping"),
            _ = tokio::signal::ctrl_c() => eprintln!("sphere-attestd: stopping"),
            () = cloud_loop(&config, key.clone(), &device_id, state, &outbox, wake_rx) => {}
        }
        poller.abort();
        Ok(())
    })
}

async fn poll_violations(config: Config, wake: mpsc::Sender<()>) {
    let seen_path = config.state_dir.join("violations-reported.json");
    let mut complained = false;
    let Ok(outbox) = Outbox::open(&config.outbox_dir(), config.queue_max_messages, config.queue_max_bytes) else {
        return;
    };
    loop {
        match violations::poll_and_queue(&config.appd_socket, &seen_path, &outbox).await {
            Ok(0) => {}
            Ok(n) => {
                eprintln!("sphere-attestd: queued {n} error report(s) from the app manager");
                let _ = wake.try_send(());
            }
            Err(e) if !complained => {
                eprintln!("sphere-attestd: app manager not reachable yet ({e}); will keep polling");
                complained = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(config.violation_poll_s.max(1))).await;
    }
}

/// Attest → certificate → MQTT session → renew, forever, with backoff on failures.
async fn cloud_loop(
    config: &Config,
    key: Arc<IdentityKey>,
    device_id: &str,
    mut state: MeasuredState,
    outbox: &Outbox,
    mut wake: mpsc::Receiver<()>,
) {
    if config.cloud.url.is_empty() {
        eprintln!("sphere-attestd: no cloud configured (sphere.cloud=); measuring only, reports stay queued");
        std::future::pending::<()>().await;
    }
    let base = Duration::from_secs(config.retry_s.max(1));
    let mut delay = base;
    let mut need_attest = true;
    loop {
        if need_attest {
            if let Ok(added) = state.measure_apps(&config.measure, Some(&key)) {
                if added > 0 {
                    let _ = state.save(&config.eventlog_path());
                }
            }
            match attest::attest_once(config, &key, &state, true).await {
                Ok(result) if result.passed => {
                    need_attest = false;
                    delay = base;
                    match &result.certificate {
                        Some(cert) => println!(
                            "sphere-attestd: attestation {} passed; certificate {} valid until {}",
                            result.attestation_id, cert.serial, cert.not_after
                        ),
                        None => {
                            println!("sphere-attestd: attestation {} passed (no certificate)", result.attestation_id)
                        }
                    }
                }
                Ok(result) => {
                    println!(
                        "sphere-attestd: attestation {} FAILED: {}",
                        result.attestation_id,
                        result.reasons.join("; ")
                    );
                }
                Err(e) => eprintln!("sphere-attestd: attestation: {e}"),
            }
        }
        let cert = attest::load_certificate(config).filter(|c| c.not_after > attest::now() + 60);
        match (&cert, need_attest) {
            (Some(cert), false) if !config.mqtt.host.is_empty() => {
                let renew_at = attest::renew_at(config, cert);
                match mqtt::session(config, key.clone(), device_id, cert, outbox, renew_at, &mut wake).await {
                    mqtt::SessionEnd::Renew => {
                        eprintln!("sphere-attestd: certificate due for renewal");
                        need_attest = true;
                        continue;
                    }
                    mqtt::SessionEnd::AttestRequested => {
                        need_attest = true;
                        continue;
                    }
                    mqtt::SessionEnd::Lost(e) => eprintln!("sphere-attestd: mqtt: {e}"),
                }
            }
            (Some(cert), false) => {
                let wait = (attest::renew_at(config, cert) - attest::now()).max(1) as u64;
                tokio::time::sleep(Duration::from_secs(wait)).await;
                need_attest = true;
                continue;
            }
            _ => need_attest = true,
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(base * 16);
    }
}
