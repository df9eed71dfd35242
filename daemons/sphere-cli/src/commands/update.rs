//! `sphere update`: the update repository (TUF) for fleet operators, and the device's update
//! daemon (`sphere-updated`) for people at a device.
//!
//! Repository layout (a static site: any web server or CDN can serve it):
//!
//! ```text
//! REPO/metadata/  1.root.json, 2.root.json, ... root.json, targets.json, snapshot.json, timestamp.json
//! REPO/targets/   the files (OS images, .sphpkg packages, M4 firmware)
//! KEYS/           root*.pem, targets*.pem, snapshot*.pem, timestamp*.pem (Ed25519, PKCS#8 PEM)
//! ```
//!
//! Signing uses tough's editor (the same library the device verifies with); root changes
//! (key rotation, ownership transfer, root expiry) write a new `N.root.json` signed by both
//! the old root keys (so devices accept it) and the new ones (so it is self-consistent), as
//! the TUF specification's root rotation requires.

use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::json;
use sphere_update_format::{Kind, TargetInfo};
use sphere_updated::api::{UpdateProxy, UpdateStatus};
use tough::editor::RepositoryEditor;
use tough::key_source::KeySource;
use tough::schema::{RoleType, Signed, Target};
use tough::sign::Sign;

use crate::output::{CommandError, Output};

#[derive(Subcommand)]
pub enum UpdateCommand {
    /// Build and sign the update repository (TUF metadata and targets).
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Boot slots, versions and what the update daemon is doing.
    Status(DeviceArgs),
    /// Ask the device to check the repository for a newer release.
    Check(DeviceArgs),
    /// Install a release on the device (default: the newest), showing progress.
    #[command(after_help = "Example:\n  sphere update install --release 2026.12.0\n\n\
        Apps with SoftwareUpdateDeferral may defer an OS update by up to 24 h. After an OS image is installed, \
        reboot: the new slot boots on trial and commits once its health check passes, else the device falls back.")]
    Install {
        /// Release name (see `sphere update check`); default: the newest newer release.
        #[arg(long)]
        release: Option<String>,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Boot the other slot next (on trial): undo an update by hand.
    Rollback(DeviceArgs),
}

#[derive(Args)]
pub struct DeviceArgs {
    /// sphere-updated's peer-to-peer D-Bus socket.
    #[arg(long, value_name = "PATH", default_value = sphere_updated::api::P2P_SOCKET)]
    pub socket: PathBuf,
}

#[derive(Args)]
pub struct RepoArgs {
    /// Repository directory (metadata/ and targets/).
    pub repo: PathBuf,
    /// Directory of signing keys (ROLE*.pem).
    #[arg(long, value_name = "DIR")]
    pub keys: PathBuf,
}

#[derive(Subcommand)]
pub enum RepoCommand {
    /// Create keys (unless present) and an empty, signed repository.
    #[command(after_help = "Example:\n  sphere update repo init repo --keys keys --threshold 1\n\n\
        Keep keys/root*.pem offline; the device image ships repo/metadata/1.root.json as its trusted root.")]
    Init {
        #[command(flatten)]
        repo: RepoArgs,
        /// Keys generated per role (when KEYS has none for the role).
        #[arg(long, default_value_t = 1)]
        keys_per_role: u32,
        /// Signatures each role needs.
        #[arg(long, default_value_t = 1)]
        threshold: u64,
        /// Root expiry, e.g. 365d.
        #[arg(long, default_value = "365d")]
        root_expires: String,
    },
    /// Add a file as a target with its OpenSphere metadata, and re-sign.
    #[command(
        after_help = "Example:\n  sphere update repo add-target repo rootfs-8.img --keys keys --kind os-image \\\n    \
        --version 8 --hardware qemu-a7 --release 2026.12.0\n\n\
        A release's attestation reference values (read by sphere-cloud, never installed by a device):\n  \
        sphere update repo add-target repo reference-values.json --name 2026.12.0/reference-values.json \\\n    \
        --keys keys --kind reference-values --version 8 --hardware '*' --release 2026.12.0"
    )]
    AddTarget {
        #[command(flatten)]
        repo: RepoArgs,
        file: PathBuf,
        /// os-image, app-package, m4-firmware or reference-values (the file is checked
        /// against the reference-values schema before it is signed).
        #[arg(long)]
        kind: String,
        /// Monotonic version (OS images: also the anti-rollback version).
        #[arg(long)]
        version: u64,
        /// Compatible board id (repeatable; `*` for any).
        #[arg(long, required = true)]
        hardware: Vec<String>,
        /// Release the target belongs to (targets of one release install together).
        #[arg(long)]
        release: String,
        /// Name in the repository (default: the file name).
        #[arg(long)]
        name: Option<String>,
        /// App packages: the app's ComponentId.
        #[arg(long, default_value = "")]
        component_id: String,
        #[arg(long, default_value = "")]
        version_name: String,
    },
    /// Re-sign targets, snapshot and timestamp with new versions (e.g. to refresh expiry).
    Sign {
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Set a role's expiry (`30d`, `12h`, `-1h` for tests, or RFC 3339) and re-sign.
    SetExpiry {
        #[command(flatten)]
        repo: RepoArgs,
        /// root, targets, snapshot or timestamp.
        role: String,
        #[arg(allow_hyphen_values = true)]
        when: String,
    },
    /// Replace a role's keys with new ones (revoking the old); root changes get a new root version.
    #[command(
        after_help = "Example:\n  sphere update repo rotate-key repo --keys keys timestamp --new-key new/timestamp.pem\n\n\
        The old key is revoked: metadata it signs is rejected by devices once they saw the new root."
    )]
    RotateKey {
        #[command(flatten)]
        repo: RepoArgs,
        role: String,
        /// New key file(s) (PKCS#8 PEM); generated into KEYS as ROLE-vN.pem when absent.
        #[arg(long)]
        new_key: Vec<PathBuf>,
        /// Signatures the role needs from now on.
        #[arg(long)]
        threshold: Option<u64>,
    },
    /// Hand the whole repository to a new owner's keys (every role, root included).
    #[command(
        after_help = "Example:\n  sphere update repo transfer-ownership repo --keys vendor-keys --new-keys customer-keys\n\n\
        Devices follow the chain of roots: the new root is signed by the vendor's and the customer's root keys; \
        afterwards only the customer's keys are trusted."
    )]
    TransferOwnership {
        #[command(flatten)]
        repo: RepoArgs,
        /// The new owner's keys (ROLE*.pem; generated when absent).
        #[arg(long, value_name = "DIR")]
        new_keys: PathBuf,
    },
    /// Copy metadata and targets to a directory a web server serves.
    Publish { repo: PathBuf, out: PathBuf },
}

const ROLES: [RoleType; 4] = [RoleType::Root, RoleType::Targets, RoleType::Snapshot, RoleType::Timestamp];

fn role_name(role: RoleType) -> &'static str {
    match role {
        RoleType::Root => "root",
        RoleType::Targets => "targets",
        RoleType::Snapshot => "snapshot",
        RoleType::Timestamp => "timestamp",
        _ => "delegated",
    }
}

fn parse_role(text: &str) -> Result<RoleType, CommandError> {
    ROLES
        .into_iter()
        .find(|r| role_name(*r) == text)
        .ok_or_else(|| CommandError::Usage(format!("unknown role {text:?} (root, targets, snapshot, timestamp)")))
}

fn usage(e: impl std::fmt::Display) -> CommandError {
    CommandError::Usage(e.to_string())
}

fn invalid(e: impl std::fmt::Display) -> CommandError {
    CommandError::invalid(e.to_string())
}

/// An Ed25519 key in a PKCS#8 PEM file (tough's own file source wants DER for Ed25519).
#[derive(Debug, Clone)]
struct PemKey {
    path: PathBuf,
}

impl PemKey {
    fn der(&self) -> Result<Vec<u8>, CommandError> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| usage(format!("{}: {e}", self.path.display())))?;
        let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .map_err(|e| invalid(format!("{}: not PEM: {e}", self.path.display())))
    }

    fn signer(&self) -> Result<Box<dyn Sign>, CommandError> {
        let der = self.der()?;
        tough::sign::parse_keypair(&der)
            .map(|k| Box::new(k) as Box<dyn Sign>)
            .map_err(|e| invalid(format!("{}: {e}", self.path.display())))
    }
}

#[async_trait::async_trait]
impl KeySource for PemKey {
    async fn as_sign(&self) -> Result<Box<dyn Sign>, Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.signer().map_err(|e| match e {
            CommandError::Usage(m) | CommandError::Invalid { message: m, .. } => m.into(),
        })
    }

    async fn write(
        &self,
        _value: &str,
        _key_id_hex: &str,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        Err("writing keys back is not supported".into())
    }
}

/// Writes a new Ed25519 key as PKCS#8 PEM (mode 0600).
fn generate_key(path: &Path) -> Result<(), CommandError> {
    use aws_lc_rs::signature::Ed25519KeyPair;
    use base64::Engine;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).map_err(usage)?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(doc.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| usage(format!("{}: {e}", dir.display())))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| usage(format!("{}: {e}", path.display())))?;
    file.write_all(pem.as_bytes()).map_err(|e| usage(format!("{}: {e}", path.display())))
}

/// Keys for `role` in `dir`: files named ROLE.pem or ROLE-*.pem.
fn role_keys(dir: &Path, role: RoleType) -> Vec<PemKey> {
    let name = role_name(role);
    let mut keys: Vec<PemKey> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let f = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    f.ends_with(".pem") && (f == format!("{name}.pem") || f.starts_with(&format!("{name}-")))
                })
                .map(|path| PemKey { path })
                .collect()
        })
        .unwrap_or_default();
    keys.sort_by(|a, b| a.path.cmp(&b.path));
    keys
}

fn all_keys(dir: &Path) -> Vec<Box<dyn KeySource>> {
    ROLES.into_iter().flat_map(|r| role_keys(dir, r)).map(|k| Box::new(k) as Box<dyn KeySource>).collect()
}

/// `30d`, `12h`, `45m`, `-1h` (relative to now) or an RFC 3339 time.
fn parse_when(text: &str) -> Result<jiff::Timestamp, CommandError> {
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    let (num, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = num.parse().map_err(|_| usage(format!("expiry {text:?}: use 30d, 12h, 45m, -1h or RFC 3339")))?;
    let secs = match unit {
        "d" => n * 86_400,
        "h" => n * 3_600,
        "m" => n * 60,
        "s" => n,
        _ => return Err(usage(format!("expiry {text:?}: unit must be d, h, m or s"))),
    };
    jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .map(|t| t.round(jiff::Unit::Second).unwrap_or(t))
        .map_err(usage)
}

fn nz(v: u64) -> NonZeroU64 {
    NonZeroU64::new(v).unwrap_or(NonZeroU64::MIN)
}

fn metadata_dir(repo: &Path) -> PathBuf {
    repo.join("metadata")
}

fn read_root(repo: &Path) -> Result<Signed<tough::schema::Root>, CommandError> {
    let path = metadata_dir(repo).join("root.json");
    let data = std::fs::read(&path)
        .map_err(|e| usage(format!("{}: {e} (run `sphere update repo init` first)", path.display())))?;
    serde_json::from_slice(&data).map_err(|e| invalid(format!("{}: {e}", path.display())))
}

/// Signs `root` with every key given and writes it as N.root.json and root.json.
async fn write_root(
    repo: &Path,
    mut root: Signed<tough::schema::Root>,
    signers: &[PemKey],
) -> Result<(), CommandError> {
    let canonical = {
        let mut buf = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(&mut buf, olpc_cjson::CanonicalFormatter::new());
        serde::Serialize::serialize(&root.signed, &mut ser).map_err(usage)?;
        buf
    };
    root.signatures.clear();
    let rng = aws_lc_rs::rand::SystemRandom::new();
    for key in signers {
        let signer = key.signer()?;
        let keyid = signer.tuf_key().key_id().map_err(usage)?;
        if root.signatures.iter().any(|s| s.keyid == keyid) {
            continue;
        }
        let sig = signer.sign(&canonical, &rng).await.map_err(|e| usage(e.to_string()))?;
        root.signatures.push(tough::schema::Signature { keyid, sig: sig.into() });
    }
    let text = serde_json::to_vec_pretty(&root).map_err(usage)?;
    let dir = metadata_dir(repo);
    std::fs::create_dir_all(&dir).map_err(|e| usage(format!("{}: {e}", dir.display())))?;
    for name in [format!("{}.root.json", root.signed.version), "root.json".to_string()] {
        std::fs::write(dir.join(&name), &text).map_err(|e| usage(format!("{name}: {e}")))?;
    }
    Ok(())
}

/// Loads the repository as it is on disk (expiry not enforced: the tooling must be able to
/// re-sign an expired repository).
async fn load_repo(repo: &Path) -> Result<tough::Repository, CommandError> {
    let root = std::fs::read(metadata_dir(repo).join("root.json")).map_err(usage)?;
    let url = |p: PathBuf| {
        let abs = std::fs::canonicalize(&p).map_err(|e| usage(format!("{}: {e}", p.display())))?;
        url::Url::from_directory_path(abs).map_err(|_| usage(format!("{}: not a directory path", p.display())))
    };
    let targets_dir = repo.join("targets");
    std::fs::create_dir_all(&targets_dir).map_err(usage)?;
    let datastore = tempfile::tempdir().map_err(usage)?;
    // The first root is the trust anchor for loading; tough then follows N.root.json.
    let first = std::fs::read(metadata_dir(repo).join("1.root.json")).unwrap_or(root);
    tough::RepositoryLoader::new(&first, url(metadata_dir(repo))?, url(targets_dir)?)
        .expiration_enforcement(tough::ExpirationEnforcement::Unsafe)
        .datastore(datastore.path())
        .load()
        .await
        .map_err(|e| invalid(format!("loading {}: {}", repo.display(), sphere_updated::updater::chain(&e))))
}

/// Versions for the next signing: one above the current ones.
async fn editor_for(repo: &Path) -> Result<(RepositoryEditor, [u64; 3]), CommandError> {
    editor_from(repo, load_repo(repo).await?).await
}

/// [`editor_for`] from a repository loaded earlier (before a root change that the current
/// targets/snapshot/timestamp signatures do not satisfy yet); signs against the root.json on disk.
async fn editor_from(repo: &Path, loaded: tough::Repository) -> Result<(RepositoryEditor, [u64; 3]), CommandError> {
    let versions = [
        loaded.targets().signed.version.get() + 1,
        loaded.snapshot().signed.version.get() + 1,
        loaded.timestamp().signed.version.get() + 1,
    ];
    let expires =
        [loaded.targets().signed.expires, loaded.snapshot().signed.expires, loaded.timestamp().signed.expires];
    let mut editor = RepositoryEditor::from_repo(metadata_dir(repo).join("root.json"), loaded)
        .await
        .map_err(|e| invalid(e.to_string()))?;
    editor.targets_version(nz(versions[0])).map_err(usage)?;
    editor.targets_expires(expires[0]).map_err(usage)?;
    editor.snapshot_version(nz(versions[1])).snapshot_expires(expires[1]);
    editor.timestamp_version(nz(versions[2])).timestamp_expires(expires[2]);
    Ok((editor, versions))
}

async fn sign_and_write(repo: &Path, editor: RepositoryEditor, keys: &Path) -> Result<(), CommandError> {
    let signed = editor
        .sign(&all_keys(keys))
        .await
        .map_err(|e| invalid(format!("signing: {}", sphere_updated::updater::chain(&e))))?;
    signed.write(metadata_dir(repo)).await.map_err(|e| usage(format!("writing metadata: {e}")))
}

pub fn run(command: UpdateCommand, output: &Output) -> Result<(), CommandError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::Usage(format!("cannot start the client runtime: {e}")))?
        .block_on(dispatch(command, output))
}

async fn dispatch(command: UpdateCommand, output: &Output) -> Result<(), CommandError> {
    match command {
        UpdateCommand::Repo(command) => repo_command(command, output).await,
        UpdateCommand::Status(device) => {
            let proxy = connect(&device).await?;
            let status = proxy.status().await.map_err(refused)?;
            print_status(&status, output);
            Ok(())
        }
        UpdateCommand::Check(device) => {
            let proxy = connect(&device).await?;
            let release = proxy.check().await.map_err(refused)?;
            output.print(&json!({"ok": true, "available": release}), || {
                if release.is_empty() { "up to date".into() } else { format!("release {release} is available") }
            });
            Ok(())
        }
        UpdateCommand::Install { release, device } => install(release, &device, output).await,
        UpdateCommand::Rollback(device) => {
            let proxy = connect(&device).await?;
            let slot = proxy.rollback().await.map_err(refused)?;
            output.print(&json!({"ok": true, "next_slot": slot}), || {
                format!("slot {slot} boots next (on trial); reboot to use it")
            });
            Ok(())
        }
    }
}

fn print_status(s: &UpdateStatus, output: &Output) {
    output.print(s, || {
        let mut text = format!(
            "OS version {} on slot {} ({}); M4 firmware {}; update: {}",
            s.os_version, s.booted_slot, s.boot_state, s.m4_version, s.state
        );
        if s.deferred_until > 0 {
            // Apps deferred the pending update (bounded; see docs/update-deferral.md).
            text.push_str(&format!(" until {} (Unix time, deferred by apps)", s.deferred_until));
        }
        if s.total_bytes > 0 {
            text.push_str(&format!(" {} {}/{} bytes", s.target, s.done_bytes, s.total_bytes));
        }
        if !s.message.is_empty() {
            text.push_str(&format!(" ({})", s.message));
        }
        text
    });
}

async fn install(release: Option<String>, device: &DeviceArgs, output: &Output) -> Result<(), CommandError> {
    use futures_util::StreamExt;
    let proxy = connect(device).await?;
    let mut progress = proxy.receive_progress().await.map_err(refused)?;
    proxy.install(release.as_deref().unwrap_or("")).await.map_err(refused)?;
    let mut last_pct = u64::MAX;
    loop {
        let status = match tokio::time::timeout(std::time::Duration::from_secs(5), progress.next()).await {
            Ok(Some(signal)) => signal.args().map(|a| a.status).map_err(refused)?,
            Ok(None) => return Err(CommandError::Usage("the update daemon went away".into())),
            // No signal for a while (deferred, or nothing to do): ask.
            Err(_) => proxy.status().await.map_err(refused)?,
        };
        if status.total_bytes > 0 && !output.json {
            let pct = (status.done_bytes * 100).checked_div(status.total_bytes).unwrap_or(100);
            if pct != last_pct {
                output
                    .note(&format!("{}: {pct}% ({} / {} bytes)", status.target, status.done_bytes, status.total_bytes));
                last_pct = pct;
            }
        }
        match status.state.as_str() {
            "installed" | "idle" => {
                // The signal carries the transfer; the full picture (slots, versions) is in Status.
                let full = proxy.status().await.map_err(refused)?;
                print_status(&full, output);
                return Ok(());
            }
            "failed" => return Err(CommandError::invalid_with(format!("update failed: {}", status.message), &status)),
            _ => {}
        }
    }
}

async fn connect(device: &DeviceArgs) -> Result<UpdateProxy<'static>, CommandError> {
    let unreachable = |e: String| {
        CommandError::Usage(format!(
            "cannot reach the update daemon at {}: {e} (run on the device as root, or pass --socket)",
            device.socket.display()
        ))
    };
    let stream = tokio::net::UnixStream::connect(&device.socket).await.map_err(|e| unreachable(e.to_string()))?;
    let connection =
        zbus::connection::Builder::unix_stream(stream).p2p().build().await.map_err(|e| unreachable(e.to_string()))?;
    UpdateProxy::new(&connection).await.map_err(|e| unreachable(e.to_string()))
}

fn refused(e: zbus::Error) -> CommandError {
    CommandError::invalid(format!("the update daemon refused: {e}"))
}

async fn repo_command(command: RepoCommand, output: &Output) -> Result<(), CommandError> {
    match command {
        RepoCommand::Init { repo, keys_per_role, threshold, root_expires } => {
            if metadata_dir(&repo.repo).join("root.json").exists() {
                return Err(CommandError::Usage(format!("{} already has a root.json", repo.repo.display())));
            }
            let mut root = tough::schema::Root {
                spec_version: "1.0.0".into(),
                consistent_snapshot: false,
                version: NonZeroU64::MIN,
                expires: parse_when(&root_expires)?,
                keys: Default::default(),
                roles: Default::default(),
                _extra: Default::default(),
            };
            let mut root_signers = Vec::new();
            for role in ROLES {
                if role_keys(&repo.keys, role).is_empty() {
                    for i in 1..=keys_per_role {
                        let name = if keys_per_role == 1 {
                            format!("{}.pem", role_name(role))
                        } else {
                            format!("{}-{i}.pem", role_name(role))
                        };
                        generate_key(&repo.keys.join(name))?;
                    }
                }
                let keys = role_keys(&repo.keys, role);
                set_role_keys(&mut root, role, &keys, threshold)?;
                if role == RoleType::Root {
                    root_signers = keys;
                }
            }
            write_root(&repo.repo, Signed { signed: root, signatures: Vec::new() }, &root_signers).await?;
            std::fs::create_dir_all(repo.repo.join("targets")).map_err(usage)?;
            // Empty targets, snapshot and timestamp, version 1.
            let mut editor = RepositoryEditor::new(metadata_dir(&repo.repo).join("root.json"))
                .await
                .map_err(|e| invalid(e.to_string()))?;
            let week = parse_when("7d")?;
            editor
                .targets_version(NonZeroU64::MIN)
                .map_err(usage)?
                .targets_expires(parse_when("90d")?)
                .map_err(usage)?;
            editor.snapshot_version(NonZeroU64::MIN).snapshot_expires(week);
            editor.timestamp_version(NonZeroU64::MIN).timestamp_expires(parse_when("1d")?);
            sign_and_write(&repo.repo, editor, &repo.keys).await?;
            output.print(&json!({"ok": true, "repo": repo.repo, "keys": repo.keys}), || {
                format!(
                    "created {} (trusted root: {}); keys in {}",
                    repo.repo.display(),
                    metadata_dir(&repo.repo).join("1.root.json").display(),
                    repo.keys.display()
                )
            });
            Ok(())
        }
        RepoCommand::AddTarget { repo, file, kind, version, hardware, release, name, component_id, version_name } => {
            let kind = Kind::parse(&kind).ok_or_else(|| {
                usage(format!("kind {kind:?}: os-image, app-package, m4-firmware or reference-values"))
            })?;
            let info = TargetInfo { kind, version, version_name, hardware, release, component_id };
            info.validate().map_err(usage)?;
            if kind == Kind::ReferenceValues {
                // Refuse a malformed file before it is signed into a release: the cloud would
                // refuse the whole repository at load.
                let bytes = std::fs::read(&file).map_err(|e| usage(format!("{}: {e}", file.display())))?;
                sphere_attestation::reference::ReferenceFile::parse(&bytes)
                    .map_err(|e| usage(format!("{}: not a reference-values file: {e}", file.display())))?;
            }
            let name = match name {
                Some(n) => n,
                None => file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_string)
                    .ok_or_else(|| usage("file has no name"))?,
            };
            let (mut target, _) =
                (Target::from_path(&file).await.map_err(|e| usage(format!("{}: {e}", file.display())))?, ());
            target.custom = info.to_custom().into_iter().collect();
            let (mut editor, versions) = editor_for(&repo.repo).await?;
            editor.add_target(name.as_str(), target.clone()).map_err(|e| invalid(e.to_string()))?;
            let dest = repo.repo.join("targets").join(&name);
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir).map_err(usage)?;
            }
            std::fs::copy(&file, &dest).map_err(|e| usage(format!("{} -> {}: {e}", file.display(), dest.display())))?;
            sign_and_write(&repo.repo, editor, &repo.keys).await?;
            output.print(&json!({"ok": true, "target": name, "length": target.length, "info": info, "targets_version": versions[0]}), || {
                format!("added {name} ({} bytes, {kind} version {version}); targets version {}", target.length, versions[0])
            });
            Ok(())
        }
        RepoCommand::Sign { repo } => {
            let (editor, versions) = editor_for(&repo.repo).await?;
            sign_and_write(&repo.repo, editor, &repo.keys).await?;
            output.print(&json!({"ok": true, "versions": {"targets": versions[0], "snapshot": versions[1], "timestamp": versions[2]}}), || {
                format!("signed: targets {}, snapshot {}, timestamp {}", versions[0], versions[1], versions[2])
            });
            Ok(())
        }
        RepoCommand::SetExpiry { repo, role, when } => {
            let role = parse_role(&role)?;
            let at = parse_when(&when)?;
            if role == RoleType::Root {
                let mut root = read_root(&repo.repo)?;
                root.signed.expires = at;
                root.signed.version = nz(root.signed.version.get() + 1);
                let signers = role_keys(&repo.keys, RoleType::Root);
                write_root(&repo.repo, root, &signers).await?;
            } else {
                let (mut editor, _) = editor_for(&repo.repo).await?;
                match role {
                    RoleType::Targets => {
                        editor.targets_expires(at).map_err(usage)?;
                    }
                    RoleType::Snapshot => {
                        editor.snapshot_expires(at);
                    }
                    _ => {
                        editor.timestamp_expires(at);
                    }
                }
                sign_and_write(&repo.repo, editor, &repo.keys).await?;
            }
            output.print(&json!({"ok": true, "role": role_name(role), "expires": at.to_string()}), || {
                format!("{} expires {at}", role_name(role))
            });
            Ok(())
        }
        RepoCommand::RotateKey { repo, role, new_key, threshold } => {
            let role = parse_role(&role)?;
            let loaded = load_repo(&repo.repo).await?;
            let mut root = read_root(&repo.repo)?;
            let version = root.signed.version.get() + 1;
            let old_root_keys = role_keys(&repo.keys, RoleType::Root);
            let mut new_keys: Vec<PemKey> = new_key.into_iter().map(|path| PemKey { path }).collect();
            if new_keys.is_empty() {
                let path = repo.keys.join(format!("{}-v{version}.pem", role_name(role)));
                generate_key(&path)?;
                new_keys.push(PemKey { path });
            }
            let threshold =
                threshold.unwrap_or_else(|| root.signed.roles.get(&role).map(|r| r.threshold.get()).unwrap_or(1));
            set_role_keys(&mut root.signed, role, &new_keys, threshold)?;
            root.signed.version = nz(version);
            // Old root keys vouch for the new root; for a root rotation the new keys sign too.
            let mut signers = old_root_keys.clone();
            if role == RoleType::Root {
                signers.extend(new_keys.iter().cloned());
            }
            write_root(&repo.repo, root, &signers).await?;
            // Retire the old key files of the role so signing uses only the new ones.
            let retired = retire_keys(&repo.keys, role, &new_keys)?;
            for (i, key) in new_keys.iter().enumerate() {
                if key.path.parent() != Some(repo.keys.as_path()) {
                    let dest = repo.keys.join(format!("{}-v{version}-{}.pem", role_name(role), i + 1));
                    std::fs::copy(&key.path, &dest).map_err(usage)?;
                }
            }
            let (editor, _) = editor_from(&repo.repo, loaded).await?;
            sign_and_write(&repo.repo, editor, &repo.keys).await?;
            output.print(
                &json!({"ok": true, "role": role_name(role), "root_version": version, "retired": retired}),
                || {
                    format!(
                        "{} keys rotated; root version {version}; old keys moved to {}",
                        role_name(role),
                        repo.keys.join("retired").display()
                    )
                },
            );
            Ok(())
        }
        RepoCommand::TransferOwnership { repo, new_keys } => {
            let loaded = load_repo(&repo.repo).await?;
            let mut root = read_root(&repo.repo)?;
            let version = root.signed.version.get() + 1;
            let mut signers = role_keys(&repo.keys, RoleType::Root);
            for role in ROLES {
                if role_keys(&new_keys, role).is_empty() {
                    generate_key(&new_keys.join(format!("{}.pem", role_name(role))))?;
                }
                let keys = role_keys(&new_keys, role);
                let threshold =
                    root.signed.roles.get(&role).map(|r| r.threshold.get()).unwrap_or(1).min(keys.len() as u64).max(1);
                set_role_keys(&mut root.signed, role, &keys, threshold)?;
                if role == RoleType::Root {
                    signers.extend(keys);
                }
            }
            // Drop keys no role uses any more (the old owner's).
            let used: std::collections::HashSet<_> =
                root.signed.roles.values().flat_map(|r| r.keyids.clone()).collect();
            root.signed.keys.retain(|id, _| used.contains(id));
            root.signed.version = nz(version);
            write_root(&repo.repo, root, &signers).await?;
            let (editor, _) = editor_from(&repo.repo, loaded).await?;
            sign_and_write(&repo.repo, editor, &new_keys).await?;
            output.print(&json!({"ok": true, "root_version": version, "keys": new_keys}), || {
                format!("ownership transferred: root version {version} trusts only the keys in {}", new_keys.display())
            });
            Ok(())
        }
        RepoCommand::Publish { repo, out } => {
            let mut files = 0u64;
            for sub in ["metadata", "targets"] {
                files += copy_tree(&repo.join(sub), &out.join(sub))?;
            }
            output.print(&json!({"ok": true, "out": out, "files": files}), || {
                format!("published {files} files to {} (serve it as static files over HTTPS)", out.display())
            });
            Ok(())
        }
    }
}

fn set_role_keys(
    root: &mut tough::schema::Root,
    role: RoleType,
    keys: &[PemKey],
    threshold: u64,
) -> Result<(), CommandError> {
    if (keys.len() as u64) < threshold {
        return Err(CommandError::Usage(format!(
            "{} has {} keys, fewer than its threshold {threshold}",
            role_name(role),
            keys.len()
        )));
    }
    let mut ids = Vec::new();
    for key in keys {
        let tuf_key = key.signer()?.tuf_key();
        let id = tuf_key.key_id().map_err(usage)?;
        root.keys.insert(id.clone(), tuf_key);
        ids.push(id);
    }
    root.roles
        .insert(role, tough::schema::RoleKeys { keyids: ids, threshold: nz(threshold), _extra: Default::default() });
    let used: std::collections::HashSet<_> = root.roles.values().flat_map(|r| r.keyids.clone()).collect();
    root.keys.retain(|id, _| used.contains(id));
    Ok(())
}

/// Moves ROLE*.pem files that are not among `keep` to KEYS/retired/.
fn retire_keys(dir: &Path, role: RoleType, keep: &[PemKey]) -> Result<Vec<PathBuf>, CommandError> {
    let keep: Vec<_> = keep.iter().filter_map(|k| std::fs::canonicalize(&k.path).ok()).collect();
    let mut moved = Vec::new();
    for key in role_keys(dir, role) {
        if keep.contains(&std::fs::canonicalize(&key.path).unwrap_or_default()) {
            continue;
        }
        let retired = dir.join("retired");
        std::fs::create_dir_all(&retired).map_err(usage)?;
        let dest = retired.join(key.path.file_name().unwrap_or_default());
        std::fs::rename(&key.path, &dest).map_err(usage)?;
        moved.push(dest);
    }
    Ok(moved)
}

fn copy_tree(from: &Path, to: &Path) -> Result<u64, CommandError> {
    std::fs::create_dir_all(to).map_err(|e| usage(format!("{}: {e}", to.display())))?;
    let mut n = 0;
    for entry in std::fs::read_dir(from).map_err(|e| usage(format!("{}: {e}", from.display())))?.flatten() {
        let path = entry.path();
        let dest = to.join(entry.file_name());
        if path.is_dir() {
            n += copy_tree(&path, &dest)?;
        } else {
            std::fs::copy(&path, &dest).map_err(|e| usage(format!("{}: {e}", path.display())))?;
            n += 1;
        }
    }
    Ok(n)
}
