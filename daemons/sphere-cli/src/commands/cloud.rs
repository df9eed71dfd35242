//! Fleet commands against sphere-cloud's operator API: `sphere device list|show|attest|
//! certificate|register|revoke|set-group`, `sphere group …`, `sphere errors …`.
//!
//! Where the cloud is comes from flags or the environment, so scripts can set it once:
//! `--cloud URL` / `SPHERE_CLOUD_URL`, `--cloud-ca FILE` / `SPHERE_CLOUD_CA` (the cloud's CA
//! certificate, `ca.crt` in its data directory), and the operator token from
//! `--token-file FILE` / `SPHERE_CLOUD_TOKEN_FILE` or `SPHERE_CLOUD_TOKEN`.

use crate::output::{CommandError, Output};
use clap::{Args, Subcommand};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sphere_attestation::api::ApiError;
use sphere_attestation::api::operator::{
    AttestationRecord, CertificateRecord, DeviceInfo, GroupInfo, StoredErrorReport,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Clone, Debug)]
pub struct CloudArgs {
    /// sphere-cloud's HTTPS address.
    #[arg(long = "cloud", env = "SPHERE_CLOUD_URL", default_value = "https://127.0.0.1:8443")]
    pub url: String,
    /// The cloud's CA certificate (ca.crt in its data directory) to verify the server with.
    #[arg(long = "cloud-ca", env = "SPHERE_CLOUD_CA")]
    pub ca: PathBuf,
    /// File holding the operator token (operator.token in the cloud's data directory).
    #[arg(long, env = "SPHERE_CLOUD_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum GroupCommand {
    /// List device groups with their release and device count.
    List {
        #[command(flatten)]
        cloud: CloudArgs,
    },
    /// Show one group.
    Show {
        name: String,
        #[command(flatten)]
        cloud: CloudArgs,
    },
    /// Create a group, optionally with the release its devices should run.
    #[command(
        after_help = "Example:\n  sphere group create field-units --release 1.4.0 --description 'units in the field'"
    )]
    Create {
        name: String,
        #[arg(long)]
        release: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        cloud: CloudArgs,
    },
    /// Set (or with --none clear) the release a group's devices should run; devices are told
    /// over MQTT (retained message on their `updates` topic).
    #[command(after_help = "Example:\n  sphere group set-release field-units 1.5.0")]
    SetRelease {
        name: String,
        #[arg(required_unless_present = "none")]
        release: Option<String>,
        #[arg(long, conflicts_with = "release")]
        none: bool,
        #[command(flatten)]
        cloud: CloudArgs,
    },
}

#[derive(Subcommand)]
pub enum ErrorsCommand {
    /// Error reports (crashes, sandbox and firewall violations) devices sent, newest first.
    #[command(after_help = "Examples:\n  sphere errors list --kind crash --limit 20\n  \
        sphere errors list --device 3f2a… --since 1767225600 --json")]
    List {
        /// Only this device.
        #[arg(long)]
        device: Option<String>,
        /// crash, sandbox-violation, firewall-violation or other.
        #[arg(long)]
        kind: Option<String>,
        /// Only this app (component id).
        #[arg(long)]
        app: Option<String>,
        /// Only reports received at or after this Unix time.
        #[arg(long)]
        since: Option<i64>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[command(flatten)]
        cloud: CloudArgs,
    },
}

/// The cloud half of `sphere device`.
#[derive(Subcommand)]
pub enum DeviceCloudCommand {
    /// List registered devices with their latest attestation.
    List {
        #[arg(long)]
        group: Option<String>,
        #[command(flatten)]
        cloud: CloudArgs,
    },
    /// Show a device: key, group, OS version, latest attestation and telemetry.
    Show {
        device_id: String,
        #[command(flatten)]
        cloud: CloudArgs,
    },
    /// A device's attestation history (newest first) with the reasons for each failure.
    Attest {
        device_id: String,
        #[arg(long, default_value_t = 10)]
        limit: i64,
        #[command(flatten)]
        cloud: CloudArgs,
    },
    /// A device's certificates; --revoke SERIAL revokes one (the CRL is rewritten at once).
    Certificate {
        device_id: String,
        #[arg(long, value_name = "SERIAL")]
        revoke: Option<String>,
        #[command(flatten)]
        cloud: CloudArgs,
    },
    /// Register a device by its identity public key (PEM, Ed25519 or P-256).
    #[command(after_help = "Example:\n  sphere device register --public-key device.pub --group field-units\n\n\
        The device id is derived from the key (SHA-256 of its SubjectPublicKeyInfo).")]
    Register {
        #[arg(long)]
        public_key: PathBuf,
        #[arg(long)]
        group: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        cloud: CloudArgs,
    },
    /// Revoke a device: no more nonces or certificates, all its certificates revoked.
    Revoke {
        device_id: String,
        #[command(flatten)]
        cloud: CloudArgs,
    },
    /// Move a device to a group (--none: no group).
    SetGroup {
        device_id: String,
        #[arg(required_unless_present = "none")]
        group: Option<String>,
        #[arg(long, conflicts_with = "group")]
        none: bool,
        #[command(flatten)]
        cloud: CloudArgs,
    },
}

struct Api {
    agent: ureq::Agent,
    base: String,
    token: String,
}

fn usage(message: impl Into<String>) -> CommandError {
    CommandError::Usage(message.into())
}

impl Api {
    fn new(args: &CloudArgs) -> Result<Api, CommandError> {
        let ca = std::fs::read(&args.ca).map_err(|e| usage(format!("{}: {e}", args.ca.display())))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut ca.as_slice()) {
            let cert = cert.map_err(|e| usage(format!("{}: {e}", args.ca.display())))?;
            roots.add(cert).map_err(|e| usage(format!("{}: {e}", args.ca.display())))?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| usage(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let token = match (&args.token_file, std::env::var("SPHERE_CLOUD_TOKEN")) {
            (Some(file), _) => std::fs::read_to_string(file).map_err(|e| usage(format!("{}: {e}", file.display())))?,
            (None, Ok(token)) => token,
            (None, Err(_)) => {
                return Err(usage("no operator token: give --token-file or set SPHERE_CLOUD_TOKEN(_FILE)"));
            }
        };
        Ok(Api {
            agent: ureq::AgentBuilder::new().tls_config(Arc::new(tls)).timeout(Duration::from_secs(30)).build(),
            base: args.url.trim_end_matches('/').to_owned(),
            token: token.trim().to_owned(),
        })
    }

    fn call<R: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<R, CommandError> {
        let request = self
            .agent
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.token));
        let response = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        match response {
            Ok(ok) => ok.into_json().map_err(|e| usage(format!("reading sphere-cloud's answer: {e}"))),
            Err(ureq::Error::Status(status, response)) => {
                let error = response.into_json::<ApiError>().ok();
                let (code, message) =
                    error.map(|e| (e.code, e.error)).unwrap_or(("unknown".into(), format!("HTTP {status}")));
                let detail = serde_json::json!({"status": status, "code": code});
                if status == 401 || status >= 500 {
                    Err(usage(format!("sphere-cloud: {message} ({code})")))
                } else {
                    Err(CommandError::invalid_with(format!("sphere-cloud: {message} ({code})"), detail))
                }
            }
            Err(other) => Err(usage(format!("cannot reach sphere-cloud at {}: {other}", self.base))),
        }
    }
}

fn time(t: i64) -> String {
    // Seconds since the epoch and how long ago: no time-zone database needed, unambiguous.
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let ago = now - t;
    let rel = if ago >= 0 {
        match ago {
            0..=119 => format!("{ago} s ago"),
            120..=7199 => format!("{} min ago", ago / 60),
            7200..=172_799 => format!("{} h ago", ago / 3600),
            _ => format!("{} days ago", ago / 86400),
        }
    } else {
        format!("in {} min", (-ago) / 60)
    };
    format!("{t} ({rel})")
}

fn verdict(device: &DeviceInfo) -> String {
    match (device.revoked_at, device.last_attestation_passed, device.last_attestation_at) {
        (Some(_), _, _) => "REVOKED".into(),
        (None, Some(true), Some(at)) => format!("passed {}", time(at)),
        (None, Some(false), Some(at)) => format!("FAILED {}", time(at)),
        _ => "never attested".into(),
    }
}

fn print<T: Serialize>(output: &Output, data: &T, text: impl FnOnce() -> String) {
    output.print(data, text);
}

pub fn device(command: DeviceCloudCommand, output: &Output) -> Result<(), CommandError> {
    match command {
        DeviceCloudCommand::List { group, cloud } => {
            let path = match &group {
                Some(g) => format!("/v1/devices?group={g}"),
                None => "/v1/devices".into(),
            };
            let devices: Vec<DeviceInfo> = Api::new(&cloud)?.call("GET", &path, None)?;
            print(output, &devices, || {
                let mut lines = vec![format!("{:<64}  {:<12} {:<10} {}", "DEVICE", "GROUP", "OS", "ATTESTATION")];
                for d in &devices {
                    lines.push(format!(
                        "{:<64}  {:<12} {:<10} {}",
                        d.id,
                        d.group.as_deref().unwrap_or("-"),
                        d.os_version.as_deref().unwrap_or("-"),
                        verdict(d)
                    ));
                }
                lines.push(format!("{} device(s)", devices.len()));
                lines.join("\n")
            });
        }
        DeviceCloudCommand::Show { device_id, cloud } => {
            let d: DeviceInfo = Api::new(&cloud)?.call("GET", &format!("/v1/devices/{device_id}"), None)?;
            print(output, &d, || {
                format!(
                    "device      {}\nkey         {}\ngroup       {}\ndescription {}\nregistered  {}\nOS version  {}\nattestation {}\ntelemetry   {}",
                    d.id,
                    d.algorithm,
                    d.group.as_deref().unwrap_or("-"),
                    d.description,
                    time(d.created_at),
                    d.os_version.as_deref().unwrap_or("-"),
                    verdict(&d),
                    d.last_telemetry
                        .as_ref()
                        .map(|t| format!("{t} ({})", d.last_telemetry_at.map(time).unwrap_or_default()))
                        .unwrap_or_else(|| "-".into()),
                )
            });
        }
        DeviceCloudCommand::Attest { device_id, limit, cloud } => {
            let records: Vec<AttestationRecord> =
                Api::new(&cloud)?.call("GET", &format!("/v1/devices/{device_id}/attestations?limit={limit}"), None)?;
            print(output, &records, || {
                let mut lines = Vec::new();
                for r in &records {
                    lines.push(format!(
                        "#{} {} {} OS {}",
                        r.id,
                        if r.passed { "passed" } else { "FAILED" },
                        time(r.at),
                        r.os_version.as_deref().unwrap_or("-")
                    ));
                    for reason in &r.reasons {
                        lines.push(format!("    {reason}"));
                    }
                }
                if lines.is_empty() {
                    lines.push("no attestations yet".into());
                }
                lines.join("\n")
            });
        }
        DeviceCloudCommand::Certificate { device_id, revoke, cloud } => {
            let api = Api::new(&cloud)?;
            if let Some(serial) = revoke {
                let record: CertificateRecord =
                    api.call("POST", &format!("/v1/certificates/{serial}/revoke"), Some(serde_json::json!({})))?;
                print(output, &record, || format!("revoked certificate {} of {}", record.serial, record.device_id));
                return Ok(());
            }
            let records: Vec<CertificateRecord> =
                api.call("GET", &format!("/v1/devices/{device_id}/certificates"), None)?;
            print(output, &records, || {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                let mut lines = vec![format!("{:<34} {:<9} {}", "SERIAL", "STATE", "EXPIRES")];
                for c in &records {
                    let state = if c.revoked_at.is_some() {
                        "revoked"
                    } else if c.not_after < now {
                        "expired"
                    } else {
                        "valid"
                    };
                    lines.push(format!("{:<34} {:<9} {}", c.serial, state, time(c.not_after)));
                }
                lines.join("\n")
            });
        }
        DeviceCloudCommand::Register { public_key, group, description, cloud } => {
            let pem =
                std::fs::read_to_string(&public_key).map_err(|e| usage(format!("{}: {e}", public_key.display())))?;
            let d: DeviceInfo = Api::new(&cloud)?.call(
                "POST",
                "/v1/devices",
                Some(serde_json::json!({"public_key_pem": pem, "group": group, "description": description})),
            )?;
            print(output, &d, || format!("registered device {} ({} key)", d.id, d.algorithm));
        }
        DeviceCloudCommand::Revoke { device_id, cloud } => {
            let d: DeviceInfo = Api::new(&cloud)?.call(
                "POST",
                &format!("/v1/devices/{device_id}/revoke"),
                Some(serde_json::json!({})),
            )?;
            print(output, &d, || format!("revoked device {} and all its certificates", d.id));
        }
        DeviceCloudCommand::SetGroup { device_id, group, none: _, cloud } => {
            let d: DeviceInfo = Api::new(&cloud)?.call(
                "PUT",
                &format!("/v1/devices/{device_id}/group"),
                Some(serde_json::json!({ "group": group })),
            )?;
            print(output, &d, || format!("device {} is in group {}", d.id, d.group.as_deref().unwrap_or("(none)")));
        }
    }
    Ok(())
}

pub fn group(command: GroupCommand, output: &Output) -> Result<(), CommandError> {
    let show = |g: &GroupInfo| {
        format!(
            "{:<20} release {:<10} {} device(s)  {}",
            g.name,
            g.release.as_deref().unwrap_or("-"),
            g.devices,
            g.description
        )
    };
    match command {
        GroupCommand::List { cloud } => {
            let groups: Vec<GroupInfo> = Api::new(&cloud)?.call("GET", "/v1/groups", None)?;
            print(output, &groups, || {
                if groups.is_empty() {
                    "no groups".into()
                } else {
                    groups.iter().map(show).collect::<Vec<_>>().join("\n")
                }
            });
        }
        GroupCommand::Show { name, cloud } => {
            let g: GroupInfo = Api::new(&cloud)?.call("GET", &format!("/v1/groups/{name}"), None)?;
            print(output, &g, || show(&g));
        }
        GroupCommand::Create { name, release, description, cloud } => {
            let g: GroupInfo = Api::new(&cloud)?.call(
                "POST",
                "/v1/groups",
                Some(serde_json::json!({"name": name, "release": release, "description": description})),
            )?;
            print(output, &g, || format!("created group {}", show(&g)));
        }
        GroupCommand::SetRelease { name, release, none: _, cloud } => {
            let g: GroupInfo = Api::new(&cloud)?.call(
                "PUT",
                &format!("/v1/groups/{name}/release"),
                Some(serde_json::json!({ "release": release })),
            )?;
            print(output, &g, || show(&g));
        }
    }
    Ok(())
}

pub fn errors(command: ErrorsCommand, output: &Output) -> Result<(), CommandError> {
    let ErrorsCommand::List { device, kind, app, since, limit, cloud } = command;
    let mut query = vec![format!("limit={limit}")];
    for (name, value) in [("device", device), ("kind", kind), ("app", app), ("since", since.map(|s| s.to_string()))] {
        if let Some(value) = value {
            // Values are ids, kinds and numbers; reject anything that would need URL escaping.
            if !value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
                return Err(usage(format!("--{name} {value:?}: only letters, digits, '-', '_' and '.'")));
            }
            query.push(format!("{name}={value}"));
        }
    }
    let reports: Vec<StoredErrorReport> =
        Api::new(&cloud)?.call("GET", &format!("/v1/errors?{}", query.join("&")), None)?;
    print(output, &reports, || {
        let mut lines = Vec::new();
        for r in &reports {
            lines.push(format!(
                "#{} {} {:<18} {}x app {} device {}  {}",
                r.id,
                time(r.received_at),
                r.report.kind.as_str(),
                r.report.count,
                r.report.app_id.as_deref().unwrap_or("-"),
                &r.device_id[..r.device_id.len().min(12)],
                r.report.detail
            ));
        }
        if lines.is_empty() {
            lines.push("no error reports".into());
        }
        lines.join("\n")
    });
    Ok(())
}
