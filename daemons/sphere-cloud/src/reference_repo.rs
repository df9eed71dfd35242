//! Reference values from the signed release metadata: the update system's TUF repository.
//!
//! A release carries its attestation reference values as a target of kind `reference-values`
//! (`sphere update repo add-target FILE --kind reference-values ...`). With `serve
//! --reference-repo BASE --reference-root root.json`, sphere-cloud is a TUF client of that
//! repository, exactly like a device's `sphere-updated` (same `tough` crate, same target
//! metadata from `sphere-update-format`):
//!
//! 1. tough verifies the metadata: root chain from the trusted root (key rotations followed and
//!    remembered in `DATA/reference-tuf/`), signatures and thresholds of every role, expiry
//!    (freeze attacks), version rollback (against the versions remembered in the same
//!    directory) and snapshot consistency (mix-and-match).
//! 2. Every target whose signed `custom.opensphere.kind` is `reference-values` is read through
//!    tough, which checks its signed length and SHA-256 before we see the bytes.
//! 3. Each file must parse with the shared schema ([`sphere_attestation::reference`]).
//! 4. The union of all of them is the repository's set: every release still listed in the
//!    repository is accepted, so a fleet mid-rollout (old and new release) attests. Retiring a
//!    release is removing its target (`sphere update repo remove-target` or a new targets role).
//!
//! Any failure in 1-3 refuses the whole refresh and keeps the last good set (a half-read
//! repository must not silently drop a release), logged with why. The last good set is kept
//! only while the metadata it came from is unexpired: after that it is TUF-stale (an attacker
//! may be withholding a newer release that retires it) and is dropped, so attestation fails
//! closed until the repository is reachable again.
//!
//! **Both sources.** The operator-signed file (`--reference-values` + `--reference-key`) and
//! the repository can be configured together: the verifier then accepts the union (e.g. the
//! releases from TUF plus a lab's development builds from a file). Each source keeps its own
//! last good set. See docs/cloud.md ("Reference values").

use crate::reference::{ReferenceFile, ReferenceValues};
use crate::service::Cloud;
use sphere_update_format::Kind;
use sphere_update_format::tuf::{error_chain, verified_targets};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tough::{FilesystemTransport, IntoVec as _, TargetName, Transport, TransportError, TransportErrorKind};
use url::Url;

/// Largest file the HTTPS transport reads (tough applies the signed lengths and its own
/// limits on top; this only bounds memory against an endless response).
const MAX_FETCH: u64 = 64 << 20;

/// Where the repository is and what it is trusted with.
#[derive(Clone, Debug)]
pub struct RepoConfig {
    /// `https://host/path/`, `file:///dir/` or a directory: holds `metadata/` and `targets/`
    /// (the layout `sphere update repo publish` writes).
    pub base: String,
    /// The trusted root metadata (the first time; later the newest verified root in `datastore`).
    pub root: PathBuf,
    /// PEM bundle of CAs for an `https://` repository (default: the system's bundle).
    pub ca: Option<PathBuf>,
    /// Persistent TUF state: newest root, and the versions seen (rollback protection).
    pub datastore: PathBuf,
}

/// One successful load of the repository.
#[derive(Clone, Debug)]
pub struct RepoSet {
    pub values: ReferenceValues,
    /// Names of the reference-values targets it came from.
    pub targets: Vec<String>,
    /// Targets metadata version (for the log).
    pub version: u64,
    /// Earliest expiry of the metadata it was verified with: trusted until then.
    pub valid_until: SystemTime,
}

/// The TUF transport: local directories through tough, HTTPS through ureq (rustls, ring).
#[derive(Clone, Debug)]
struct RepoTransport {
    tls: Option<Arc<rustls::ClientConfig>>,
}

#[tough::async_trait]
impl Transport for RepoTransport {
    async fn fetch(&self, url: Url) -> Result<tough::TransportStream, TransportError> {
        match url.scheme() {
            "file" => FilesystemTransport.fetch(url).await,
            "https" => {
                let Some(tls) = self.tls.clone() else {
                    return Err(TransportError::new(TransportErrorKind::UnsupportedUrlScheme, url));
                };
                let text = url.to_string();
                let bytes = tokio::task::spawn_blocking(move || https_get(&tls, &url))
                    .await
                    .map_err(|e| TransportError::new_with_cause(TransportErrorKind::Other, &text, e))??;
                Ok(Box::pin(futures_util::stream::once(async move { Ok(tough::Bytes::from(bytes)) })))
            }
            // Plain HTTP is refused: TUF would catch tampering, but not a passive observer.
            _ => Err(TransportError::new(TransportErrorKind::UnsupportedUrlScheme, url)),
        }
    }
}

fn https_get(tls: &Arc<rustls::ClientConfig>, url: &Url) -> Result<Vec<u8>, TransportError> {
    let agent = ureq::AgentBuilder::new().tls_config(tls.clone()).timeout(Duration::from_secs(60)).build();
    let response = agent.get(url.as_str()).call().map_err(|e| {
        let kind = match &e {
            ureq::Error::Status(404 | 403 | 410, _) => TransportErrorKind::FileNotFound,
            _ => TransportErrorKind::Other,
        };
        TransportError::new_with_cause(kind, url.as_str(), e)
    })?;
    let mut body = Vec::new();
    response
        .into_reader()
        .take(MAX_FETCH + 1)
        .read_to_end(&mut body)
        .map_err(|e| TransportError::new_with_cause(TransportErrorKind::Other, url.as_str(), e))?;
    if body.len() as u64 > MAX_FETCH {
        return Err(TransportError::new(TransportErrorKind::Other, format!("{url}: larger than {MAX_FETCH} bytes")));
    }
    Ok(body)
}

/// `base` as a directory URL (trailing slash, so `join` appends).
fn base_url(base: &str) -> Result<Url, String> {
    if base.contains("://") {
        let with_slash = if base.ends_with('/') { base.to_owned() } else { format!("{base}/") };
        return Url::parse(&with_slash).map_err(|e| format!("--reference-repo {base:?}: {e}"));
    }
    let dir = std::fs::canonicalize(base).map_err(|e| format!("--reference-repo {base}: {e}"))?;
    Url::from_directory_path(&dir)
        .map_err(|()| format!("--reference-repo {}: not an absolute directory", dir.display()))
}

fn client_tls(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let path = ca.unwrap_or(Path::new("/etc/ssl/certs/ca-certificates.crt"));
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut reader = pem.as_slice();
    let certs: Vec<_> = rustls_pemfile::certs(&mut reader).filter_map(Result::ok).collect();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{}: no CA certificate", path.display()));
    }
    let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn to_system_time(seconds: i64) -> SystemTime {
    if seconds <= 0 { UNIX_EPOCH } else { UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs()) }
}

/// Load and verify the repository, and return the union of its reference-values targets.
pub async fn load_repo(config: &RepoConfig) -> Result<RepoSet, String> {
    let base = base_url(&config.base)?;
    let tls = if base.scheme() == "https" { Some(client_tls(config.ca.as_deref())?) } else { None };
    let metadata = base.join("metadata/").map_err(|e| e.to_string())?;
    let targets = base.join("targets/").map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&config.datastore).map_err(|e| format!("{}: {e}", config.datastore.display()))?;
    // The newest root verified before (rotations survive restarts); the configured one first,
    // or again if the remembered copy is unreadable (e.g. cut short by a crash while written):
    // tough then walks the chain of roots from there once more.
    let cached = std::fs::read(config.datastore.join("root.json"))
        .ok()
        .filter(|bytes| serde_json::from_slice::<serde_json::Value>(bytes).is_ok());
    let root = match cached {
        Some(bytes) => bytes,
        None => std::fs::read(&config.root).map_err(|e| format!("{}: {e}", config.root.display()))?,
    };
    let repo = tough::RepositoryLoader::new(&root, metadata, targets)
        .transport(RepoTransport { tls })
        .datastore(&config.datastore)
        .load()
        .await
        .map_err(|e| format!("TUF metadata refused: {}", error_chain(&e)))?;

    let valid_until = [
        &repo.root().signed.expires,
        &repo.timestamp().signed.expires,
        &repo.snapshot().signed.expires,
        &repo.targets().signed.expires,
    ]
    .into_iter()
    .map(|t| t.as_second())
    .min()
    .map_or(UNIX_EPOCH, to_system_time);

    // Targets with malformed OpenSphere metadata are the devices' business (sphere-updated
    // refuses them); they cannot be reference values, whose kind is in that metadata.
    let (good, _) = verified_targets(&repo);
    let mut parts = Vec::new();
    let mut names = Vec::new();
    for target in good.into_iter().filter(|t| t.info.kind == Kind::ReferenceValues) {
        let name = TargetName::new(target.name.clone()).map_err(|e| format!("target {}: {e}", target.name))?;
        let stream = repo
            .read_target(&name)
            .await
            .map_err(|e| format!("target {}: {}", target.name, error_chain(&e)))?
            .ok_or_else(|| format!("target {}: listed but not readable", target.name))?;
        // into_vec fails on a length or SHA-256 mismatch: nothing unverified is parsed.
        let bytes = stream.into_vec().await.map_err(|e| format!("target {}: {}", target.name, error_chain(&e)))?;
        let file = ReferenceFile::parse(&bytes).map_err(|e| format!("target {}: {e}", target.name))?;
        parts.push(ReferenceValues::from_file_contents(file, target.name.clone())?);
        names.push(target.name);
    }
    if parts.is_empty() {
        return Err("the repository lists no reference-values target \
            (publish one: sphere update repo add-target FILE --kind reference-values ...)"
            .into());
    }
    let version = repo.targets().signed.version.get();
    let values = ReferenceValues::union(parts, format!("{} (targets v{version}: {})", config.base, names.join(", ")));
    Ok(RepoSet { values, targets: names, version, valid_until })
}

/// The configured sources and the last good set of each: what the verifier uses is their
/// union. Pure bookkeeping, so the keep-the-last-good rules are unit-tested.
#[derive(Default)]
pub struct Sources {
    pub file: Option<(PathBuf, PathBuf)>,
    pub repo: Option<RepoConfig>,
    last_file: Option<ReferenceValues>,
    last_repo: Option<RepoSet>,
}

/// What one refresh did: the set to use, and what went wrong (each to be logged).
#[derive(Debug)]
pub struct Outcome {
    pub values: ReferenceValues,
    pub problems: Vec<String>,
    /// One line per source that changed, for the log.
    pub changes: Vec<String>,
}

impl Sources {
    pub fn new(file: Option<(PathBuf, PathBuf)>, repo: Option<RepoConfig>) -> Self {
        Sources { file, repo, ..Default::default() }
    }

    /// Reload every configured source.
    pub async fn refresh(&mut self) -> Outcome {
        let file = self.file.as_ref().map(|(file, key)| ReferenceValues::load_signed(file, key));
        let repo = match &self.repo {
            Some(config) => Some(load_repo(config).await),
            None => None,
        };
        self.apply(file, repo, SystemTime::now())
    }

    /// Take the results of loading each source (None: not configured): a success replaces that
    /// source's set, a failure keeps its last good one (the repository's only while unexpired).
    pub fn apply(
        &mut self,
        file: Option<Result<ReferenceValues, String>>,
        repo: Option<Result<RepoSet, String>>,
        now: SystemTime,
    ) -> Outcome {
        let mut problems = Vec::new();
        let mut changes = Vec::new();
        match file {
            Some(Ok(values)) => {
                if self.last_file.as_ref().is_none_or(|old| !same(old, &values)) {
                    changes.push(format!("reference values loaded from {}", values.source));
                }
                self.last_file = Some(values);
            }
            Some(Err(e)) => problems.push(match &self.last_file {
                Some(_) => format!("reference file refused, keeping the previous one: {e}"),
                None => format!("reference file refused (no previous one): {e}"),
            }),
            None => {}
        }
        match repo {
            Some(Ok(set)) => {
                if self.last_repo.as_ref().is_none_or(|old| !same(&old.values, &set.values)) {
                    changes.push(format!("reference values loaded from {}", set.values.source));
                }
                self.last_repo = Some(set);
            }
            Some(Err(e)) => problems.push(match &self.last_repo {
                Some(old) => format!(
                    "reference repository refused, keeping targets v{} ({}): {e}",
                    old.version,
                    old.targets.join(", ")
                ),
                None => format!("reference repository refused (no previous set): {e}"),
            }),
            None => {}
        }
        if let Some(old) = self.last_repo.as_ref().filter(|old| old.valid_until <= now) {
            problems.push(format!(
                "reference values from targets v{} dropped: their TUF metadata has expired and no newer \
                 metadata could be verified (attestations fail until the repository is reachable)",
                old.version
            ));
            self.last_repo = None;
        }
        let parts: Vec<ReferenceValues> =
            self.last_file.iter().cloned().chain(self.last_repo.iter().map(|set| set.values.clone())).collect();
        let source = parts.iter().map(|p| p.source.as_str()).collect::<Vec<_>>().join(" + ");
        Outcome { values: ReferenceValues::union(parts, source), problems, changes }
    }
}

/// Same lookup sets from the same source (a re-signed repository logs its new version once).
fn same(a: &ReferenceValues, b: &ReferenceValues) -> bool {
    a.os_versions == b.os_versions
        && a.measurements == b.measurements
        && a.sandbox == b.sandbox
        && a.firewall == b.firewall
        && a.source == b.source
}

/// `serve`'s options for the repository source (flattened into its command line).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct RepoArgs {
    /// TUF update repository to take reference values from: its base (https://..., file:///...
    /// or a directory) holding metadata/ and targets/. Every target of kind reference-values
    /// is loaded; with --reference-values as well, both sets are accepted.
    #[arg(long, value_name = "URL_OR_DIR", requires = "reference_root")]
    pub reference_repo: Option<String>,
    /// The repository's trusted root metadata (e.g. 1.root.json from `sphere update repo init`).
    #[arg(long, value_name = "ROOT_JSON")]
    pub reference_root: Option<PathBuf>,
    /// CA bundle (PEM) for an https:// repository (default: /etc/ssl/certs/ca-certificates.crt).
    #[arg(long, value_name = "PEM")]
    pub reference_ca: Option<PathBuf>,
    /// Seconds between refreshes of the reference values (SIGHUP refreshes at once); 0: only
    /// on SIGHUP.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub reference_refresh: u64,
}

/// The first load at start-up. A broken operator file stops the server (as before: a typo
/// must not go unnoticed); an unreachable or refused repository is logged and retried on the
/// next refresh, and until then nothing from it is accepted (attestation fails closed).
pub async fn initial(
    data: &Path,
    file: Option<(PathBuf, PathBuf)>,
    args: RepoArgs,
) -> Result<(ReferenceValues, Sources, Option<Duration>), String> {
    let repo = args.reference_repo.map(|base| RepoConfig {
        base,
        root: args.reference_root.unwrap_or_default(),
        ca: args.reference_ca,
        datastore: data.join("reference-tuf"),
    });
    if file.is_none() && repo.is_none() {
        eprintln!(
            "sphere-cloud: warning: neither --reference-values nor --reference-repo: every measured component \
             will fail attestation"
        );
    }
    let mut sources = Sources::new(file, repo);
    let outcome = sources.refresh().await;
    if let Some((path, _)) = sources.file.as_ref().filter(|_| sources.last_file.is_none()) {
        return Err(outcome.problems.first().cloned().unwrap_or_else(|| format!("{}: not loaded", path.display())));
    }
    report("start-up", &outcome);
    let every = (args.reference_refresh > 0).then(|| Duration::from_secs(args.reference_refresh));
    Ok((outcome.values, sources, every))
}

/// Reload on SIGHUP and, with `every`, periodically; log what changed and what was refused.
/// Never returns an error: a bad refresh only leaves the previous sets in place.
pub fn spawn_reloader(cloud: Arc<Cloud>, mut sources: Sources, every: Option<Duration>) -> Result<(), String> {
    let mut hangups =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let mut tick = every.map(|d| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            let why = tokio::select! {
                got = hangups.recv() => match got { Some(()) => "SIGHUP", None => return },
                _ = async {
                    match tick.as_mut() {
                        Some(t) => { t.tick().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => "periodic refresh",
            };
            let outcome = sources.refresh().await;
            report(why, &outcome);
            cloud.set_reference_values(outcome.values);
        }
    });
    Ok(())
}

/// Log a refresh (stderr, like the rest of sphere-cloud).
pub fn report(why: &str, outcome: &Outcome) {
    for line in &outcome.changes {
        eprintln!("sphere-cloud: {why}: {line}");
    }
    for line in &outcome.problems {
        eprintln!("sphere-cloud: {why}: {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sphere_attestation::{Digest, Stage};

    fn values(component: &str, digest: &[u8], os: &[&str], source: &str) -> ReferenceValues {
        let mut v = ReferenceValues {
            os_versions: os.iter().map(|s| s.to_string()).collect(),
            source: source.into(),
            ..Default::default()
        };
        v.measurements.entry((Stage::Daemon, component.into())).or_default().insert(Digest::of(digest));
        v
    }

    fn set(v: ReferenceValues, version: u64, valid_until: SystemTime) -> RepoSet {
        RepoSet { targets: vec![format!("r{version}/reference-values.json")], values: v, version, valid_until }
    }

    fn allows(v: &ReferenceValues, component: &str, digest: &[u8]) -> bool {
        v.measurements.get(&(Stage::Daemon, component.into())).is_some_and(|d| d.contains(&Digest::of(digest)))
    }

    #[test]
    fn union_of_file_and_repository_and_any_os_wins() {
        let now = SystemTime::now();
        let later = now + Duration::from_secs(3600);
        let mut sources = Sources::default();
        let out = sources.apply(
            Some(Ok(values("labd", b"lab", &[], "lab.json"))),
            Some(Ok(set(values("netd", b"r1", &["1.0"], "repo"), 1, later))),
            now,
        );
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(out.changes.len(), 2);
        assert!(allows(&out.values, "labd", b"lab") && allows(&out.values, "netd", b"r1"));
        // The lab file names no OS version ("any"): the union must not restrict it to 1.0.
        assert!(out.values.os_versions.is_empty());
        assert_eq!(out.values.source, "lab.json + repo");

        // Both restricting: the union of their versions.
        let out = sources.apply(
            Some(Ok(values("labd", b"lab", &["0.9"], "lab.json"))),
            Some(Ok(set(values("netd", b"r1", &["1.0"], "repo"), 1, later))),
            now,
        );
        assert_eq!(out.values.os_versions.iter().collect::<Vec<_>>(), ["0.9", "1.0"]);
    }

    #[test]
    fn a_failed_refresh_keeps_the_last_good_set_of_that_source_only() {
        let now = SystemTime::now();
        let later = now + Duration::from_secs(3600);
        let mut sources = Sources::default();
        sources.apply(None, Some(Ok(set(values("netd", b"r1", &[], "repo v1"), 1, later))), now);
        // New release: replaces (the repository's set is the union of its current targets).
        let out = sources.apply(None, Some(Ok(set(values("netd", b"r2", &[], "repo v2"), 2, later))), now);
        assert!(allows(&out.values, "netd", b"r2") && !allows(&out.values, "netd", b"r1"));
        assert_eq!(out.changes, ["reference values loaded from repo v2"]);
        // Unchanged reload: nothing to log.
        let out = sources.apply(None, Some(Ok(set(values("netd", b"r2", &[], "repo v2"), 2, later))), now);
        assert!(out.changes.is_empty() && out.problems.is_empty());
        // Tampered target: refused, v2 kept, and the log says so and why.
        let out = sources.apply(None, Some(Err("target r3: hash mismatch".into())), now);
        assert!(allows(&out.values, "netd", b"r2"));
        assert_eq!(out.problems.len(), 1);
        assert!(out.problems[0].contains("keeping targets v2") && out.problems[0].contains("hash mismatch"));
        // A file failing does not touch the repository's set, and vice versa.
        let out = sources.apply(Some(Err("bad signature".into())), Some(Err("expired".into())), now);
        assert!(allows(&out.values, "netd", b"r2"));
        assert_eq!(out.problems.len(), 2);
        assert!(out.problems[0].contains("no previous one"));
    }

    #[test]
    fn the_kept_set_is_dropped_once_its_metadata_expires() {
        let now = SystemTime::now();
        let mut sources = Sources::default();
        sources.apply(None, Some(Ok(set(values("netd", b"r1", &[], "repo"), 1, now + Duration::from_secs(60)))), now);
        let out = sources.apply(None, Some(Err("unreachable".into())), now + Duration::from_secs(30));
        assert!(allows(&out.values, "netd", b"r1"), "kept while unexpired");
        let out = sources.apply(None, Some(Err("unreachable".into())), now + Duration::from_secs(61));
        assert!(!allows(&out.values, "netd", b"r1"), "stale TUF metadata must not be trusted");
        assert!(out.problems.iter().any(|p| p.contains("expired")), "{:?}", out.problems);
        assert!(out.values.measurements.is_empty());
    }

    #[test]
    fn base_urls() {
        assert_eq!(base_url("https://r.example/repo").unwrap().as_str(), "https://r.example/repo/");
        let dir = tempfile::tempdir().unwrap();
        let url = base_url(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(url.scheme(), "file");
        assert!(url.as_str().ends_with('/'));
        assert!(base_url("/does/not/exist").is_err());
    }
}
