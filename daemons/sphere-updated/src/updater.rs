//! The update logic: verify metadata with TUF, pick the release for this board, refuse
//! anything the device must not take, then download straight into place.
//!
//! Order of checks (each rejects before a byte is written anywhere):
//! 1. TUF (tough): signatures and thresholds of every role, root rotation, expiry (freeze),
//!    version rollback of every role, snapshot consistency (mix-and-match), signed lengths
//!    and hashes of targets.
//! 2. Our metadata ([`sphere_update_format::TargetInfo`]): well formed, made for this board.
//! 3. Anti-rollback: an OS image below the monotonic minimum is refused.
//! 4. While downloading: the signed length bounds the transfer, the hash is checked before
//!    the slot or file may be used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sphere_slots::{ExpectedImage, FileMinVersion, Layout, MinVersionStore, Slot, SlotWriter, Slots};
use sphere_update_format::{Kind, Release, VerifiedTarget, releases_for};
use url::Url;

use crate::config::Config;
use crate::download::{self, DownloadError, Job, PartialStore};
use crate::http::HttpClient;
use crate::transport::UpdateTransport;

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("TUF metadata rejected: {0}")]
    Tuf(String),
    #[error("no release {0:?} for this board in the repository")]
    NoSuchRelease(String),
    #[error("target {target} is for hardware {hardware:?}, this board is {board:?}")]
    WrongHardware { target: String, hardware: Vec<String>, board: String },
    #[error("target {target}: {source}")]
    Format {
        target: String,
        #[source]
        source: sphere_update_format::FormatError,
    },
    #[error("anti-rollback: {0}")]
    Rollback(#[from] sphere_slots::RollbackError),
    #[error("{kind} version {candidate} is not newer than the installed {installed}")]
    NotNewer { kind: Kind, candidate: u64, installed: u64 },
    #[error("slots: {0}")]
    Slots(#[from] sphere_slots::SlotsError),
    #[error("download: {0}")]
    Download(#[from] DownloadError),
    #[error("app manager: {0}")]
    App(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Versions of what is installed outside the slots (the OS version lives in the boot record).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// M4 firmware version per OS slot ("a", "b"): firmware goes with its OS slot, so the two
    /// roll back together.
    #[serde(default)]
    pub m4: BTreeMap<String, u64>,
    /// App packages installed through updates: component id -> version.
    #[serde(default)]
    pub apps: BTreeMap<String, u64>,
}

/// What `check` found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub hardware: String,
    pub booted_slot: String,
    pub os_version: u64,
    /// Newest release for this board with something newer than installed, if any.
    pub available: Option<Release>,
    /// Every release for this board, newest first.
    pub releases: Vec<Release>,
    /// Targets skipped (other boards, cloud-only reference values, or without OpenSphere metadata).
    pub skipped: usize,
}

/// What `install` did.
#[derive(Debug, Clone, Serialize)]
pub struct InstallResult {
    pub release: String,
    /// Slot that boots next on trial, when the release had an OS image.
    pub trial_slot: Option<String>,
    pub installed: Vec<String>,
    pub reboot_required: bool,
}

pub struct Updater {
    pub config: Config,
    http: HttpClient,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> UpdateError + '_ {
    move |source| UpdateError::Io { path: path.to_path_buf(), source }
}

impl Updater {
    pub fn new(config: Config) -> Result<Self, UpdateError> {
        let ca = match &config.ca_certificates {
            Some(path) => std::fs::read(path).map_err(io(path))?,
            None => Vec::new(),
        };
        let mut http = HttpClient::new(&ca, config.allow_plain_http).map_err(|e| UpdateError::Config(e.to_string()))?;
        http.stall_timeout = std::time::Duration::from_secs(config.download.stall_timeout_secs.max(1));
        Ok(Updater { config, http })
    }

    pub fn slots(&self) -> Result<Slots, UpdateError> {
        let layout = match &self.config.slots {
            Some(s) => Layout {
                env: sphere_slots::EnvLocation::redundant_default(&s.bootenv),
                slots: [s.slot_a.clone(), s.slot_b.clone()],
            },
            None => Layout::discover().map_err(sphere_slots::SlotsError::from)?,
        };
        Ok(Slots::open(layout)?)
    }

    pub fn booted_slot(&self, slots: &Slots) -> Result<Slot, UpdateError> {
        if let Some(name) = self.config.slots.as_ref().and_then(|s| s.booted.as_deref()) {
            return Slot::parse(name)
                .ok_or_else(|| UpdateError::Config(format!("slots.booted {name:?} is not a or b")));
        }
        Ok(slots.booted_slot()?)
    }

    pub fn installed(&self) -> Installed {
        std::fs::read(self.config.installed_path())
            .ok()
            .and_then(|d| serde_json::from_slice(&d).ok())
            .unwrap_or_default()
    }

    fn save_installed(&self, installed: &Installed) -> Result<(), UpdateError> {
        let path = self.config.installed_path();
        download::write_atomic(&path, &serde_json::to_vec_pretty(installed).unwrap_or_default()).map_err(io(&path))
    }

    /// OS version of `slot` from the boot record (0 when unknown: a factory image).
    pub fn os_version(&self, slots: &Slots, slot: Slot) -> Result<u64, UpdateError> {
        let (_, state) = slots.record().load().map_err(sphere_slots::SlotsError::from)?;
        Ok(state.version(slot).and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    fn min_version(&self) -> FileMinVersion {
        FileMinVersion::new(&self.config.min_version)
    }

    /// Loads and verifies the repository's metadata (TUF client workflow).
    pub async fn load_repository(&self) -> Result<tough::Repository, UpdateError> {
        let tuf_dir = self.config.tuf_dir();
        std::fs::create_dir_all(&tuf_dir).map_err(io(&tuf_dir))?;
        // Start from the newest complete root this device has verified (key rotations survive
        // reboots and power cuts; see root_store), the image's root only the first time.
        let cached = tuf_dir.join("root.json");
        let ours = self.config.state_dir.join("trusted-root.json");
        let root = match crate::root_store::newest(&[&ours, &cached, &self.config.trusted_root]) {
            Some(r) => r.bytes,
            None => std::fs::read(&self.config.trusted_root).map_err(io(&self.config.trusted_root))?,
        };
        let parse = |u: &str| {
            let with_slash = if u.ends_with('/') { u.to_string() } else { format!("{u}/") };
            Url::parse(&with_slash).map_err(|e| UpdateError::Config(format!("{u}: {e}")))
        };
        let loader =
            tough::RepositoryLoader::new(&root, parse(&self.config.metadata_url)?, parse(&self.config.targets_url)?)
                .transport(UpdateTransport { http: self.http.clone() })
                .datastore(&tuf_dir);
        let repo = loader.load().await.map_err(|e| UpdateError::Tuf(chain(&e)))?;
        crate::root_store::persist(&ours, &cached).map_err(io(&ours))?;
        Ok(repo)
    }

    /// Every target with our metadata, verified by TUF (shared with sphere-cloud).
    pub fn targets(repo: &tough::Repository) -> (Vec<VerifiedTarget>, Vec<(String, UpdateError)>) {
        let (good, bad) = sphere_update_format::tuf::verified_targets(repo);
        let bad = bad
            .into_iter()
            .map(|(name, source)| (name.clone(), UpdateError::Format { target: name, source }))
            .collect();
        (good, bad)
    }

    pub async fn check(&self) -> Result<CheckResult, UpdateError> {
        let repo = self.load_repository().await?;
        let slots = self.slots()?;
        let booted = self.booted_slot(&slots)?;
        let os_version = self.os_version(&slots, booted)?;
        let installed = self.installed();
        let (targets, bad) = Self::targets(&repo);
        let total = targets.len() + bad.len();
        let releases = releases_for(targets, &self.config.hardware);
        let considered: usize = releases.iter().map(|r| r.targets.len()).sum();
        let m4 = installed.m4.get(booted.as_str()).copied().unwrap_or(0);
        let newer = |r: &Release| {
            r.targets.iter().any(|t| match t.info.kind {
                Kind::OsImage => t.info.version > os_version,
                Kind::M4Firmware => t.info.version > m4,
                Kind::AppPackage => installed.apps.get(&t.info.component_id).is_none_or(|v| t.info.version > *v),
                // Cloud-only; releases_for already dropped it.
                Kind::ReferenceValues => false,
            })
        };
        let available = releases.iter().find(|r| newer(r)).cloned();
        Ok(CheckResult {
            hardware: self.config.hardware.clone(),
            booted_slot: booted.to_string(),
            os_version,
            available,
            releases,
            skipped: total - considered,
        })
    }

    /// Installs `release` (None: the newest release newer than what is installed).
    /// `progress(target, done, total)`.
    pub async fn install(
        &self,
        release: Option<&str>,
        mut progress: impl FnMut(&str, u64, u64),
    ) -> Result<InstallResult, UpdateError> {
        let repo = self.load_repository().await?;
        let (targets, _) = Self::targets(&repo);
        // The named release's targets, before board filtering, so a release for another
        // board is an explicit error rather than "nothing to do". Reference values are the
        // cloud's: never downloaded or installed (a release of only those is "no such release").
        let release = match release {
            Some(name) => {
                let targets: Vec<_> =
                    targets.into_iter().filter(|t| t.info.release == name && t.info.kind.installable()).collect();
                if targets.is_empty() {
                    return Err(UpdateError::NoSuchRelease(name.to_string()));
                }
                Release { name: name.to_string(), targets }
            }
            None => {
                let check = self.check().await?;
                match check.available {
                    Some(r) => r,
                    None => {
                        return Ok(InstallResult {
                            release: String::new(),
                            trial_slot: None,
                            installed: Vec::new(),
                            reboot_required: false,
                        });
                    }
                }
            }
        };
        let slots = self.slots()?;
        let booted = self.booted_slot(&slots)?;
        let os_version = self.os_version(&slots, booted)?;
        let mut installed = self.installed();

        // Every check for every target first: a release is taken whole or not at all.
        self.vet_release(&release, booted, os_version, &installed)?;

        let store = PartialStore { path: self.config.partial_path() };
        let targets_base = {
            let u = &self.config.targets_url;
            Url::parse(&if u.ends_with('/') { u.clone() } else { format!("{u}/") })
                .map_err(|e| UpdateError::Config(format!("targets_url: {e}")))?
        };
        // With consistent snapshots (python-tuf's default) target files are stored as
        // `DIR/SHA256.NAME`, so a file can be replaced without a window of mismatch.
        let consistent = repo.root().signed.consistent_snapshot;
        let os = release.target(Kind::OsImage).cloned();
        let m4 = release.target(Kind::M4Firmware).cloned();
        let mut done = Vec::new();

        // Downloads first, then one commit step, so a failure anywhere leaves the device as
        // it was. M4 firmware goes with the OS slot that will boot it: next to the target
        // slot when the release also has an OS image (joint rollback: if the new slot fails
        // its health check the boot loader falls back to the old slot, whose firmware was
        // never touched), else it replaces the running slot's firmware atomically.
        let mut os_done = None;
        if let Some(t) = &os {
            let expected = expected_of(t)?;
            let target_slot = slots
                .record()
                .load()
                .map_err(sphere_slots::SlotsError::from)?
                .1
                .install_target(booted)
                .map_err(sphere_slots::SlotsError::from)?;
            let device = slots.layout().slot_device(target_slot).to_path_buf();
            let offset = store.resume_offset(&t.name, &expected, &device);
            let (slot, writer) = slots.begin_install(booted, expected, offset)?;
            if offset > 0 {
                eprintln!("sphere-updated: resuming {} at byte {offset}", t.name);
            }
            let job = Job {
                url: target_url(&targets_base, &t.name, consistent.then_some(t.sha256.as_str()))?,
                target: &t.name,
                expected,
                destination: device,
            };
            let verified = download::fetch(&self.http, &self.config.download, &store, &job, writer, |d, n| {
                progress(&t.name, d, n)
            })
            .await?;
            os_done = Some((slot, verified, t));
        }
        let m4_slot = os_done.as_ref().map(|(slot, _, _)| *slot).unwrap_or(booted);
        let mut m4_done = None;
        if let Some(t) = &m4 {
            let dir = self.config.downloads_dir();
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let part = dir.join(format!("{}.m4", t.sha256));
            self.fetch_to_file(consistent, &targets_base, &store, t, &part, &mut progress).await?;
            m4_done = Some((part, t));
        }

        // Commit: firmware into place, then the slot on trial (the last, atomic step).
        if let Some((part, t)) = m4_done {
            let dir = self.config.m4_dir.join(format!("slot-{}", m4_slot.as_str()));
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let final_path = dir.join("firmware.bin");
            if os_done.is_none() && final_path.exists() {
                // Keep the previous firmware for a manual rollback.
                std::fs::rename(&final_path, dir.join("firmware.prev")).map_err(io(&final_path))?;
            }
            std::fs::rename(&part, &final_path).map_err(io(&final_path))?;
            installed.m4.insert(m4_slot.as_str().to_string(), t.info.version);
            self.save_installed(&installed)?;
            done.push(t.name.clone());
        }
        let mut trial_slot = None;
        if let Some((slot, verified, t)) = os_done {
            slots.finish_install(slot, &verified, &t.info.version.to_string())?;
            trial_slot = Some(slot.to_string());
            done.push(t.name.clone());
        }

        for t in release.targets.iter().filter(|t| t.info.kind == Kind::AppPackage) {
            let dir = self.config.downloads_dir();
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let path = dir.join(format!("{}.sphpkg", t.sha256));
            self.fetch_to_file(consistent, &targets_base, &store, t, &path, &mut progress).await?;
            self.install_app(&path).await?;
            let _ = std::fs::remove_file(&path);
            installed.apps.insert(t.info.component_id.clone(), t.info.version);
            self.save_installed(&installed)?;
            done.push(t.name.clone());
        }

        Ok(InstallResult {
            release: release.name.clone(),
            reboot_required: trial_slot.is_some(),
            trial_slot,
            installed: done,
        })
    }

    /// Every check a release must pass before a byte is downloaded: each target made for this
    /// board, an OS image not below the anti-rollback minimum and newer than the running
    /// `os_version`, M4 firmware not older than `booted`'s, at most one OS image and one M4
    /// firmware. A release is taken whole or not at all.
    pub fn vet_release(
        &self,
        release: &Release,
        booted: Slot,
        os_version: u64,
        installed: &Installed,
    ) -> Result<(), UpdateError> {
        for t in &release.targets {
            if !t.info.fits(&self.config.hardware) {
                return Err(UpdateError::WrongHardware {
                    target: t.name.clone(),
                    hardware: t.info.hardware.clone(),
                    board: self.config.hardware.clone(),
                });
            }
            match t.info.kind {
                Kind::OsImage => {
                    self.min_version().check(t.info.version)?;
                    if t.info.version <= os_version {
                        return Err(UpdateError::NotNewer {
                            kind: Kind::OsImage,
                            candidate: t.info.version,
                            installed: os_version,
                        });
                    }
                }
                Kind::M4Firmware => {
                    // M4 firmware has its own version line: no downgrade below what the
                    // running slot's firmware is (the OS anti-rollback store is for OS images).
                    let current = installed.m4.get(booted.as_str()).copied().unwrap_or(0);
                    if t.info.version < current {
                        return Err(UpdateError::NotNewer {
                            kind: Kind::M4Firmware,
                            candidate: t.info.version,
                            installed: current,
                        });
                    }
                }
                // Cloud-only (never installed): releases_for drops it; nothing to check.
                Kind::AppPackage | Kind::ReferenceValues => {}
            }
        }
        if release.targets.iter().filter(|t| t.info.kind == Kind::OsImage).count() > 1
            || release.targets.iter().filter(|t| t.info.kind == Kind::M4Firmware).count() > 1
        {
            return Err(UpdateError::Config(format!(
                "release {} has more than one OS image or M4 firmware",
                release.name
            )));
        }
        Ok(())
    }

    async fn fetch_to_file(
        &self,
        consistent: bool,
        base: &Url,
        store: &PartialStore,
        t: &VerifiedTarget,
        path: &Path,
        progress: &mut impl FnMut(&str, u64, u64),
    ) -> Result<(), UpdateError> {
        let expected = expected_of(t)?;
        let offset = store.resume_offset(&t.name, &expected, path);
        let writer = SlotWriter::resume(path, expected, offset).map_err(DownloadError::from)?;
        let job = Job {
            url: target_url(base, &t.name, consistent.then_some(t.sha256.as_str()))?,
            target: &t.name,
            expected,
            destination: path.to_path_buf(),
        };
        download::fetch(&self.http, &self.config.download, store, &job, writer, |d, n| progress(&t.name, d, n)).await?;
        Ok(())
    }

    /// Hands a verified package to the app manager (which verifies its own signature too).
    async fn install_app(&self, path: &Path) -> Result<String, UpdateError> {
        let socket = &self.config.appd_socket;
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| UpdateError::App(format!("{}: {e}", socket.display())))?;
        let conn = zbus::connection::Builder::unix_stream(stream)
            .p2p()
            .build()
            .await
            .map_err(|e| UpdateError::App(e.to_string()))?;
        let proxy = sphere_appd_api::AppManagerProxy::new(&conn).await.map_err(|e| UpdateError::App(e.to_string()))?;
        proxy.install(&path.to_string_lossy()).await.map_err(|e| UpdateError::App(e.to_string()))
    }

    /// After a committed boot: raise the anti-rollback minimum to the running OS version
    /// (never at install time: the fallback slot must stay bootable during the trial). Init's
    /// health check does this when it commits a trial slot; this is the same step for devices
    /// whose commit comes from elsewhere (`sphere-updated commit`, and a catch-up at start).
    pub fn raise_min_version_if_committed(&self) -> Result<Option<u64>, UpdateError> {
        let slots = self.slots()?;
        let booted = self.booted_slot(&slots)?;
        let (_, state) = slots.record().load().map_err(sphere_slots::SlotsError::from)?;
        Ok(sphere_slots::raise_to_committed(&state, booted, &mut self.min_version())?)
    }

    /// Manual rollback: the other slot on trial next boot; M4-only firmware updates restore
    /// the previous firmware.
    pub fn rollback(&self) -> Result<String, UpdateError> {
        let slots = self.slots()?;
        let booted = self.booted_slot(&slots)?;
        let slot = slots.rollback(booted)?;
        Ok(slot.to_string())
    }
}

fn expected_of(t: &VerifiedTarget) -> Result<ExpectedImage, UpdateError> {
    ExpectedImage::from_hex(t.length, &t.sha256).map_err(|e| UpdateError::Download(e.into()))
}

pub fn target_url(base: &Url, name: &str, hash_prefix: Option<&str>) -> Result<Url, UpdateError> {
    // The name comes from signed metadata, but tough keeps a target's raw name, and
    // `a/../../x`, `/etc/x` and `http://host/x` are all valid TUF target names: joined as a
    // relative URL they would leave the targets directory or name another host. So the URL is
    // built segment by segment (each percent-encoded, `/`, `\`, `?`, `#` and `:` included) and
    // `.`, `..` and empty segments are refused.
    let refuse = |why: &str| UpdateError::Config(format!("target name {name:?}: {why}"));
    let mut segments: Vec<&str> = name.split('/').collect();
    if segments.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
        return Err(refuse("not a plain relative path (empty, `.` or `..` segment)"));
    }
    let file = segments.pop().unwrap_or_default();
    // With consistent snapshots (python-tuf's default) the file is `DIR/SHA256.NAME`.
    let file = match hash_prefix {
        Some(hash) => format!("{hash}.{file}"),
        None => file.to_string(),
    };
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| refuse("the targets URL cannot take a path"))?
        .pop_if_empty()
        .extend(segments)
        .push(&file);
    Ok(url)
}

/// An error and its causes on one line (tough's errors nest the interesting part).
pub use sphere_update_format::tuf::error_chain as chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_urls_stay_in_the_targets_directory() {
        let base = Url::parse("https://updates.example/repo/targets/").unwrap();
        let hash = "ab".repeat(32);
        for prefix in [None, Some(hash.as_str())] {
            assert_eq!(
                target_url(&base, "apps/hello.sphpkg", prefix).unwrap().as_str(),
                match prefix {
                    None => "https://updates.example/repo/targets/apps/hello.sphpkg".to_string(),
                    Some(h) => format!("https://updates.example/repo/targets/apps/{h}.hello.sphpkg"),
                }
            );
            // Valid TUF target names (tough keeps the raw name) that a plain URL join would
            // resolve outside the targets directory or onto another host.
            for name in [
                "a/../../x",
                "../x",
                "/etc/passwd",
                "//evil.example/x",
                "http://evil.example/x",
                "https:evil",
                "a\\..\\..\\x",
                "./x",
                "a//b",
            ] {
                if let Ok(url) = target_url(&base, name, prefix) {
                    assert!(url.as_str().starts_with(base.as_str()), "{name:?} -> {url}");
                }
            }
            // Odd but harmless characters are encoded, not interpreted.
            let url = target_url(&base, "os?v=1#frag 2.img", prefix).unwrap();
            assert!(url.query().is_none() && url.fragment().is_none(), "{url}");
            assert!(url.as_str().starts_with(base.as_str()), "{url}");
        }
    }
}
