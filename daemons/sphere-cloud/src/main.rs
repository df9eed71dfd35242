//! `sphere-cloud`: OpenSphere's cloud service. See `docs/cloud.md`.

use clap::{Parser, Subcommand};
use sphere_cloud::ca::{Ca, write_private};
use sphere_cloud::reference::{self, ReferenceValues};
use sphere_cloud::service::{Cloud, Settings};
use sphere_cloud::store::Store;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "sphere-cloud",
    version,
    about = "OpenSphere cloud: device registry, attestation verifier, device CA, groups, error reports",
    after_help = "Quick start:\n  \
        sphere-cloud init --data /var/lib/sphere-cloud --dns cloud.example.com\n  \
        sphere-cloud serve --data /var/lib/sphere-cloud \\\n    \
        --reference-repo https://updates.example.com/ --reference-root 1.root.json\n\n\
        Reference values come from the releases' reference-values targets (sphere update repo add-target\n\
        --kind reference-values); --reference-values/--reference-key add an operator-signed file.\n\n\
        Operator guide: docs/cloud.md"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the data directory: CA (ca.key, ca.crt), HTTPS and MQTT-broker server certificates,
    /// sphere-cloud's MQTT client certificate, the operator token and an empty CRL.
    Init {
        #[arg(long)]
        data: PathBuf,
        /// CA common name.
        #[arg(long, default_value = "OpenSphere device CA")]
        name: String,
        /// DNS names for the HTTPS and MQTT server certificates (repeatable).
        #[arg(long = "dns", default_value = "localhost")]
        dns: Vec<String>,
        /// IP addresses for the server certificates (repeatable).
        #[arg(long = "ip", default_value = "127.0.0.1")]
        ips: Vec<IpAddr>,
    },
    /// Run the HTTPS API and MQTT: the embedded broker on --mqtt-listen (default), or a link to
    /// an external broker (--mqtt-broker), or none (--no-mqtt).
    Serve {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// `postgres://user@host/db` or a SQLite path (default: DATA/sphere-cloud.db).
        #[arg(long)]
        database: Option<String>,
        /// Signed reference values (JSON; the signature is FILE.sig). Re-read on SIGHUP.
        #[arg(long, requires = "reference_key")]
        reference_values: Option<PathBuf>,
        /// Ed25519 public key (PEM) that signs the reference values.
        #[arg(long)]
        reference_key: Option<PathBuf>,
        #[command(flatten)]
        reference_repo: Box<sphere_cloud::reference_repo::RepoArgs>,
        /// External MQTT broker HOST:PORT (TLS, client certificates), e.g. mosquitto configured by
        /// `sphere-cloud mosquitto-config`, instead of the embedded broker.
        #[arg(long, conflicts_with_all = ["mqtt_listen", "no_mqtt"])]
        mqtt_broker: Option<String>,
        /// Where the embedded MQTT broker listens (TLS; client certificates from this CA only, each
        /// device confined to its own topics). Devices elsewhere need e.g. 0.0.0.0:8883.
        #[arg(long, default_value = "127.0.0.1:8883")]
        mqtt_listen: SocketAddr,
        /// No MQTT at all (HTTPS API only).
        #[arg(long, conflicts_with = "mqtt_listen")]
        no_mqtt: bool,
        /// How long a nonce stays usable (e.g. 60s, 5m).
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        nonce_ttl: Duration,
        /// Device certificate lifetime (e.g. 24h).
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        certificate_lifetime: Duration,
        /// How recent a passed attestation must be to re-issue a certificate from it.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        attestation_validity: Duration,
        /// Refuse evidence that carries no TPM quote. Set it when every device has a TPM:
        /// without a quote the PCR claims rest on the device's OS alone.
        #[arg(long)]
        require_tpm_quote: bool,
    },
    /// Write mosquitto.conf and mosquitto.acl for a TLS listener with client-certificate auth
    /// and per-device topic ACLs into the data directory.
    MosquittoConfig {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 8883)]
        port: u16,
    },
    /// Sign a reference-values file with an Ed25519 private key (PKCS#8 PEM): writes FILE.sig.
    SignReferenceValues {
        file: PathBuf,
        #[arg(long)]
        key: PathBuf,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().map_err(|_| format!("{text:?}: expected e.g. 30s, 10m, 24h, 7d"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("{text:?}: unit must be s, m, h or d")),
    };
    if seconds == 0 {
        return Err("duration must be positive".into());
    }
    Ok(Duration::from_secs(seconds))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init { data, name, dns, ips } => init(&data, &name, &dns, &ips),
        Command::MosquittoConfig { data, port } => {
            let (conf, acl) = sphere_cloud::mqtt::mosquitto_config(&data, port);
            std::fs::write(data.join("mosquitto.conf"), conf)
                .and_then(|()| std::fs::write(data.join("mosquitto.acl"), acl))
                .map(|()| println!("{}", data.join("mosquitto.conf").display()))
                .map_err(|e| format!("{}: {e}", data.display()))
        }
        Command::SignReferenceValues { file, key } => sign_reference_values(&file, &key),
        Command::Serve {
            data,
            listen,
            database,
            reference_values,
            reference_key,
            reference_repo,
            mqtt_broker,
            mqtt_listen,
            no_mqtt,
            nonce_ttl,
            certificate_lifetime,
            attestation_validity,
            require_tpm_quote,
        } => {
            let settings = Settings { nonce_ttl, certificate_lifetime, attestation_validity, require_tpm_quote };
            match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(runtime) => runtime.block_on(serve(
                    data,
                    listen,
                    database,
                    (reference_values.zip(reference_key), *reference_repo),
                    match (mqtt_broker, no_mqtt) {
                        (Some(broker), _) => Mqtt::External(broker),
                        (None, true) => Mqtt::Off,
                        (None, false) => Mqtt::Embedded(mqtt_listen),
                    },
                    settings,
                )),
                Err(e) => Err(format!("starting the runtime: {e}")),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sphere-cloud: {message}");
            ExitCode::from(1)
        }
    }
}

fn init(data: &Path, name: &str, dns: &[String], ips: &[IpAddr]) -> Result<(), String> {
    if data.join("ca.key").exists() {
        return Err(format!("{} already holds a CA; refusing to replace it", data.display()));
    }
    std::fs::create_dir_all(data).map_err(|e| format!("{}: {e}", data.display()))?;
    let ca = Ca::create(data, name).map_err(|e| e.to_string())?;
    let year = Duration::from_secs(365 * 24 * 3600);
    for (file, cn, server) in [
        ("https", "sphere-cloud-https", true),
        ("mqtt-server", "sphere-mqtt", true),
        ("mqtt-client", "sphere-cloud", false),
    ] {
        let (cert, key) = ca.issue_service(cn, dns, ips, server, year).map_err(|e| e.to_string())?;
        std::fs::write(data.join(format!("{file}.crt")), cert.pem).map_err(|e| e.to_string())?;
        write_private(&data.join(format!("{file}.key")), &key).map_err(|e| e.to_string())?;
    }
    use rand_core::RngCore as _;
    let mut token = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut token);
    write_private(&data.join("operator.token"), &format!("{}\n", hex::encode(token))).map_err(|e| e.to_string())?;
    let crl = ca.crl_pem(&[], 1, Duration::from_secs(7 * 24 * 3600)).map_err(|e| e.to_string())?;
    std::fs::write(data.join("crl.pem"), crl).map_err(|e| e.to_string())?;
    println!("sphere-cloud: initialised {} (CA {name:?}); operator token in operator.token", data.display());
    Ok(())
}

fn sign_reference_values(file: &Path, key: &Path) -> Result<(), String> {
    use base64::Engine as _;
    use ed25519_dalek::Signer as _;
    use ed25519_dalek::pkcs8::DecodePrivateKey as _;
    let pem = std::fs::read_to_string(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).map_err(|e| format!("{}: {e}", key.display()))?;
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    // Refuse to sign something the server would refuse to load.
    let parsed: reference::ReferenceFile =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", file.display()))?;
    ReferenceValues::from_file_contents(parsed, String::new())?;
    let signature = base64::engine::general_purpose::STANDARD.encode(key.sign(&bytes).to_bytes());
    let out = reference::signature_path(file);
    std::fs::write(&out, format!("{signature}\n")).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("{}", out.display());
    Ok(())
}

enum Mqtt {
    External(String),
    Embedded(SocketAddr),
    Off,
}

async fn serve(
    data: PathBuf,
    listen: SocketAddr,
    database: Option<String>,
    reference: (Option<(PathBuf, PathBuf)>, sphere_cloud::reference_repo::RepoArgs),
    mqtt: Mqtt,
    settings: Settings,
) -> Result<(), String> {
    let read = |name: &str| {
        std::fs::read_to_string(data.join(name))
            .map_err(|e| format!("{}: {e} (run `sphere-cloud init` first)", data.join(name).display()))
    };
    let ca = Ca::load(&data).map_err(|e| e.to_string())?;
    let database = database.unwrap_or_else(|| data.join("sphere-cloud.db").display().to_string());
    let store = Store::open(&database).await.map_err(|e| format!("opening the database: {e}"))?;
    // Operator-signed file and/or the update repository's signed release metadata.
    let (refs, sources, refresh) = sphere_cloud::reference_repo::initial(&data, reference.0, reference.1).await?;
    let token = read("operator.token")?.trim().to_owned();
    let tls = sphere_cloud::tls::server_config(&read("https.crt")?, &read("https.key")?)?;
    let cloud = Arc::new(Cloud::new(store, ca, settings, data.clone(), refs));
    cloud.write_crl().await.map_err(|e| e.to_string())?;

    if let Mqtt::Embedded(address) = mqtt {
        let (broker, address) = sphere_cloud::broker::start(&data, address).await?;
        eprintln!("sphere-cloud: embedded MQTT broker on {address} (TLS, device certificates, per-device ACL)");
        tokio::spawn(sphere_cloud::mqtt::run_embedded(cloud.clone(), broker));
    } else if let Mqtt::External(broker) = mqtt {
        let (host, port) = broker
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| format!("--mqtt-broker {broker:?}: expected HOST:PORT"))?;
        let client_tls = sphere_cloud::tls::client_config(
            &read("ca.crt")?,
            Some((&read("mqtt-client.crt")?, &read("mqtt-client.key")?)),
        )?;
        tokio::spawn(sphere_cloud::mqtt::run(
            cloud.clone(),
            sphere_cloud::mqtt::BrokerSettings { host, port, tls: client_tls, client_id: "sphere-cloud".into() },
        ));
    }

    // Housekeeping: expired nonces go, the CRL is refreshed well before its next-update.
    let housekeeping = cloud.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        let mut minutes = 0u64;
        loop {
            tick.tick().await;
            if let Err(e) = housekeeping.purge_nonces().await {
                eprintln!("sphere-cloud: purging nonces: {e}");
            }
            minutes += 1;
            if minutes % (24 * 60) == 0 {
                if let Err(e) = housekeeping.write_crl().await {
                    eprintln!("sphere-cloud: refreshing the CRL: {e}");
                }
            }
        }
    });

    // SIGHUP (and every --reference-refresh seconds) reloads the reference values: new
    // release metadata without a restart; a refused reload keeps the last good set.
    sphere_cloud::reference_repo::spawn_reloader(cloud.clone(), sources, refresh)?;

    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("{listen}: {e}"))?;
    eprintln!(
        "sphere-cloud: serving https://{} ({} storage)",
        listener.local_addr().map_err(|e| e.to_string())?,
        cloud.store.engine()
    );
    let router = sphere_cloud::http::router(cloud, token);
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
    tokio::select! {
        result = sphere_cloud::http::serve_tls(listener, tls, router) => result.map_err(|e| e.to_string()),
        _ = terminate.recv() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
