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
use sphere_attestation::api::operator::{
    AttestationRecord, CertificateRecord, DeviceInfo, GroupInfo, StoredErrorReport,
};
use sphere_attestation::api::{ApiError, ErrorKind};
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
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(error_kinds()))]
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

/// The kinds of error report devices send (`ErrorKind` in sphere-attestation). sphere-cloud
/// answers an unknown kind with an empty list, so a typo would look like "no errors": clap
/// refuses it instead.
fn error_kinds() -> [&'static str; 4] {
    [ErrorKind::Crash, ErrorKind::SandboxViolation, ErrorKind::FirewallViolation, ErrorKind::Other]
        .map(ErrorKind::as_str)
}

struct Api {
    agent: ureq::Agent,
    base: String,
    token: String,
    /// Where the CA and the token came from, to name them when the server refuses either.
    ca_file: PathBuf,
    token_source: String,
}

fn usage(message: impl Into<String>) -> CommandError {
    CommandError::Usage(message.into())
}

/// Check a value that goes into a URL path or query (device id, group name, serial, filter).
/// sphere-cloud's names and ids only use these characters; anything else (`/`, `?`, `&`, `..`)
/// would silently address another resource (`device show ../groups` would GET /v1/groups).
fn plain<'a>(what: &str, value: &'a str) -> Result<&'a str, CommandError> {
    let allowed = value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if value.is_empty() || value == "." || value == ".." || !allowed {
        return Err(usage(format!("{what} {value:?}: only letters, digits, '-', '_' and '.'")));
    }
    Ok(value)
}

impl Api {
    fn new(args: &CloudArgs) -> Result<Api, CommandError> {
        // The operator token travels in every request: never over plain HTTP.
        if !args.url.starts_with("https://") {
            return Err(usage(format!(
                "--cloud {}: must be an https:// URL (the operator token is never sent unencrypted)",
                args.url
            )));
        }
        let ca = std::fs::read(&args.ca).map_err(|e| usage(format!("{}: {e}", args.ca.display())))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut ca.as_slice()) {
            let cert = cert.map_err(|e| usage(format!("{}: {e}", args.ca.display())))?;
            roots.add(cert).map_err(|e| usage(format!("{}: {e}", args.ca.display())))?;
        }
        // An empty trust store would fail every handshake with an "unknown issuer" that blames
        // the server; say what is wrong with the file instead.
        if roots.is_empty() {
            return Err(usage(format!(
                "--cloud-ca {}: no PEM certificate in it (give the cloud's ca.crt)",
                args.ca.display()
            )));
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| usage(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (token, token_source) = match (&args.token_file, std::env::var("SPHERE_CLOUD_TOKEN")) {
            (Some(file), _) => (
                std::fs::read_to_string(file).map_err(|e| usage(format!("{}: {e}", file.display())))?,
                file.display().to_string(),
            ),
            (None, Ok(token)) => (token, "SPHERE_CLOUD_TOKEN".to_owned()),
            (None, Err(_)) => {
                return Err(usage("no operator token: give --token-file or set SPHERE_CLOUD_TOKEN(_FILE)"));
            }
        };
        Ok(Api {
            agent: ureq::AgentBuilder::new().tls_config(Arc::new(tls)).timeout(Duration::from_secs(30)).build(),
            base: args.url.trim_end_matches('/').to_owned(),
            token: token.trim().to_owned(),
            ca_file: args.ca.clone(),
            token_source,
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
                if status == 401 {
                    Err(usage(format!(
                        "sphere-cloud refused the operator token from {}: it must be the one in operator.token \
                         in the cloud's data directory ({message})",
                        self.token_source
                    )))
                } else if status >= 500 {
                    Err(usage(format!("sphere-cloud: {message} ({code})")))
                } else {
                    Err(CommandError::invalid_with(format!("sphere-cloud: {message} ({code})"), detail))
                }
            }
            Err(ureq::Error::Transport(transport)) => match rustls_error(&transport) {
                Some(tls) => Err(usage(tls_failure(&self.base, &self.ca_file, tls))),
                None => Err(usage(format!("cannot reach sphere-cloud at {}: {transport}", self.base))),
            },
        }
    }
}

/// The TLS error behind a failed request, if that is what failed. ureq wraps it in an
/// `io::Error`, whose `source()` skips the wrapped error itself, hence `get_ref`.
fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) =
            error.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).and_then(|inner| rustls_error(inner))
        {
            return Some(tls);
        }
        next = error.source();
    }
    None
}

/// Say why the server was not trusted and what to do about it, rather than rustls' enum name.
fn tls_failure(base: &str, ca_file: &std::path::Path, error: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    let ca = ca_file.display();
    let why = match error {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => format!(
            "its certificate is not signed by the CA in {ca}: give the cloud's own ca.crt (its data \
             directory) with --cloud-ca or SPHERE_CLOUD_CA"
        ),
        rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "its certificate is not valid for this host name: use a name or address given to \
             `sphere-cloud init --dns/--ip`"
                .to_owned()
        }
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "its certificate has expired (or this machine's clock is wrong)".to_owned()
        }
        rustls::Error::InvalidCertificate(C::Revoked) => "its certificate is revoked".to_owned(),
        other => format!("TLS failed: {other}"),
    };
    format!("sphere-cloud at {base} is not trusted: {why} ({error})")
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
                Some(g) => format!("/v1/devices?group={}", plain("--group", g)?),
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
            plain("device id", &device_id)?;
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
            plain("device id", &device_id)?;
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
            plain("device id", &device_id)?;
            let api = Api::new(&cloud)?;
            if let Some(serial) = revoke {
                plain("serial", &serial)?;
                // The API revokes by serial alone; check the serial is this device's, so a
                // mistyped device id or a pasted serial of another device revokes nothing.
                let own: Vec<CertificateRecord> =
                    api.call("GET", &format!("/v1/devices/{device_id}/certificates"), None)?;
                if !own.iter().any(|c| c.serial == serial) {
                    return Err(CommandError::invalid_with(
                        format!(
                            "certificate {serial} is not one of device {device_id}'s (list them: \
                             sphere device certificate {device_id})"
                        ),
                        serde_json::json!({"device_id": device_id, "serial": serial}),
                    ));
                }
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
            plain("device id", &device_id)?;
            let d: DeviceInfo = Api::new(&cloud)?.call(
                "POST",
                &format!("/v1/devices/{device_id}/revoke"),
                Some(serde_json::json!({})),
            )?;
            print(output, &d, || format!("revoked device {} and all its certificates", d.id));
        }
        DeviceCloudCommand::SetGroup { device_id, group, none: _, cloud } => {
            plain("device id", &device_id)?;
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
            plain("group", &name)?;
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
            plain("group", &name)?;
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
            query.push(format!("{name}={}", plain(&format!("--{name}"), &value)?));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_refuses_what_would_change_the_url() {
        assert_eq!(plain("device id", "3f2a-b_c.d").ok(), Some("3f2a-b_c.d"));
        for bad in ["", ".", "..", "../groups", "a/b", "a?x=1", "a&b", "a b", "ä", "a%2f"] {
            let error = plain("device id", bad).expect_err(bad);
            assert_eq!(error.exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn error_kinds_are_the_ones_devices_send() {
        // The list clap accepts must parse as the shared ErrorKind, so no valid kind is refused.
        for kind in error_kinds() {
            let parsed: ErrorKind = serde_json::from_value(serde_json::json!(kind)).expect(kind);
            assert_eq!(parsed.as_str(), kind);
        }
    }

    #[test]
    fn a_tls_failure_is_found_inside_the_io_error_ureq_wraps_it_in() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = std::io::Error::new(std::io::ErrorKind::InvalidData, tls.clone());
        assert_eq!(rustls_error(&wrapped), Some(&tls));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(rustls_error(&refused), None);
    }

    #[test]
    fn tls_failures_say_what_to_do() {
        let ca = std::path::Path::new("/etc/other-ca.crt");
        let unknown = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let text = tls_failure("https://cloud:8443", ca, &unknown);
        assert!(text.contains("not signed by the CA in /etc/other-ca.crt") && text.contains("--cloud-ca"), "{text}");
        let name = rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName);
        assert!(tls_failure("https://cloud:8443", ca, &name).contains("--dns/--ip"));
        let expired = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        assert!(tls_failure("https://cloud:8443", ca, &expired).contains("expired"));
    }
}
