//! The on-device app store.
//!
//! Layout below the store root (on the data partition):
//!
//! ```text
//! registry.json              which version of which app is installed: THE commit point
//! apps/<component-id>/<digest>/   unpacked, read-only app versions, named by listing digest
//! staging/                   packages being unpacked; always empty after recovery
//! ```
//!
//! Install = verify while unpacking into `staging/`, fsync, rename into `apps/`, then atomically
//! replace `registry.json`. Until that last rename the old registry (and so the old app) stands;
//! after it, the new one. [`AppStore::open`] deletes whatever a crash left half-done: staging
//! leftovers and versions the registry does not name. Versions are immutable once renamed into
//! place, so a half-written one can never be mistaken for a complete one.

use serde::{Deserialize, Serialize};
use sphere_app_format::fs_atomic;
use sphere_app_format::hardware_definition::{HardwareDefinitionSet, LinuxDevice};
use sphere_app_format::keys::KeyId;
use sphere_app_format::manifest::AppManifest;
use sphere_app_format::package::{self, Limits, ListingEntry, PackageError, PackageSink, SignatureStatus};
use sphere_app_format::{TrustStore, manifest};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use uuid::Uuid;

const REGISTRY: &str = "registry.json";
/// First uid handed to an app; each app gets its own, kept across updates.
pub const FIRST_APP_UID: u32 = 20_000;

/// Why an app store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("package rejected: {0}")]
    Package(#[from] PackageError),
    #[error("the registry {path} is corrupt: {detail}")]
    CorruptRegistry { path: PathBuf, detail: String },
    #[error("no app with ComponentId {0} is installed")]
    NotInstalled(Uuid),
    #[error("{peripheral} is already used by app \"{owner}\" ({owner_id}); \"{app}\" cannot have it too")]
    PeripheralTaken { peripheral: String, owner: String, owner_id: Uuid, app: String },
    #[error("cannot resolve the app's peripherals: {0}")]
    Peripherals(String),
    #[error("signed by development key {0}, but development mode is off")]
    DevelopmentModeOff(KeyId),
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

/// One installed app, as the registry records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledApp {
    pub component_id: Uuid,
    pub name: String,
    /// Hex listing digest of the installed version; also its directory name.
    pub version_digest: String,
    pub signed_by: String,
    /// Installed with a development key (only possible in development mode).
    pub development: bool,
    pub uid: u32,
    /// Device nodes (and GPIO lines) this app owns exclusively.
    pub devices: Vec<DeviceGrant>,
}

/// A device node, and for GPIO the line, granted to one app.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeviceGrant {
    pub path: String,
    pub line: Option<u32>,
}

impl From<&LinuxDevice> for DeviceGrant {
    fn from(device: &LinuxDevice) -> Self {
        DeviceGrant { path: device.path.clone(), line: device.line }
    }
}

impl std::fmt::Display for DeviceGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} line {line}", self.path),
            None => f.write_str(&self.path),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Registry {
    apps: BTreeMap<Uuid, InstalledApp>,
}

/// Keys a device trusts: release keys always, development keys only in development mode.
#[derive(Clone, Debug, Default)]
pub struct DeviceTrust {
    pub release: TrustStore,
    pub development: TrustStore,
    pub development_mode: bool,
}

/// The app store rooted at a directory on the data partition.
pub struct AppStore {
    root: PathBuf,
    registry: Registry,
}

impl AppStore {
    /// Open (creating if needed) and repair the store: whatever an interrupted install left
    /// behind is removed, so the registry and the files agree again.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        for dir in [root.to_owned(), root.join("apps"), root.join("staging")] {
            fs::create_dir_all(&dir).map_err(io_error(format!("cannot create {}", dir.display())))?;
        }
        let registry = load_registry(&root.join(REGISTRY))?;
        let store = AppStore { root: root.to_owned(), registry };
        store.recover()?;
        Ok(store)
    }

    pub fn list(&self) -> impl Iterator<Item = &InstalledApp> {
        self.registry.apps.values()
    }

    pub fn get(&self, id: Uuid) -> Option<&InstalledApp> {
        self.registry.apps.get(&id)
    }

    /// Directory holding the installed files of an app (read-only).
    pub fn app_dir(&self, app: &InstalledApp) -> PathBuf {
        self.root.join("apps").join(app.component_id.to_string()).join(&app.version_digest)
    }

    /// The installed app's manifest, read back from its (digest-checked at install) files.
    pub fn manifest(&self, app: &InstalledApp) -> Result<AppManifest, StoreError> {
        let path = self.app_dir(app).join(package::MANIFEST_PATH);
        let bytes = fs::read(&path).map_err(io_error(format!("cannot read {}", path.display())))?;
        manifest::parse_manifest(&bytes)
            .map(|loaded| loaded.manifest)
            .map_err(|error| StoreError::CorruptRegistry { path, detail: error.to_string() })
    }

    /// Verify and install a package; replaces an installed version of the same app.
    pub fn install(
        &mut self,
        package: impl Read,
        trust: &DeviceTrust,
        board: Option<&HardwareDefinitionSet>,
    ) -> Result<InstalledApp, StoreError> {
        let staging = tempfile::Builder::new()
            .prefix("install-")
            .tempdir_in(self.root.join("staging"))
            .map_err(io_error("cannot create a staging directory"))?;
        let (summary, development) = verify_into(package, trust, staging.path())?;
        let manifest = &summary.manifest;
        let devices = self.claim_devices(manifest, board)?;
        let app = InstalledApp {
            component_id: manifest.component_id,
            name: manifest.name.clone(),
            version_digest: hex::encode(summary.listing_sha256),
            signed_by: signer(&summary.signature).to_string(),
            development,
            uid: self.uid_for(manifest.component_id),
            devices,
        };
        self.commit_version(staging.path(), &app)?;
        let mut registry = self.registry.clone();
        registry.apps.insert(app.component_id, app.clone());
        self.write_registry(&registry)?;
        self.registry = registry;
        self.recover()?;
        Ok(app)
    }

    /// Remove an app: the registry forgets it first (the commit point), then its files go.
    pub fn remove(&mut self, id: Uuid) -> Result<InstalledApp, StoreError> {
        let mut registry = self.registry.clone();
        let removed = registry.apps.remove(&id).ok_or(StoreError::NotInstalled(id))?;
        self.write_registry(&registry)?;
        self.registry = registry;
        self.recover()?;
        Ok(removed)
    }

    /// Keep the uid an app already has; give a new app the lowest free one.
    fn uid_for(&self, id: Uuid) -> u32 {
        if let Some(app) = self.registry.apps.get(&id) {
            return app.uid;
        }
        let taken: Vec<u32> = self.registry.apps.values().map(|app| app.uid).collect();
        (FIRST_APP_UID..).find(|uid| !taken.contains(uid)).unwrap_or(FIRST_APP_UID)
    }

    /// Resolve the manifest's peripherals and refuse any another app already owns.
    fn claim_devices(
        &self,
        manifest: &AppManifest,
        board: Option<&HardwareDefinitionSet>,
    ) -> Result<Vec<DeviceGrant>, StoreError> {
        let Some(board) = board else { return Ok(Vec::new()) };
        let resolved = board
            .resolve_manifest(manifest)
            .map_err(|errors| StoreError::Peripherals(sphere_app_format::ResolveErrorList(errors).to_string()))?;
        let mut devices: Vec<DeviceGrant> =
            resolved.iter().filter_map(|p| p.linux_device.as_ref()).map(DeviceGrant::from).collect();
        devices.sort();
        devices.dedup();
        for other in self.registry.apps.values().filter(|other| other.component_id != manifest.component_id) {
            if let Some(clash) = devices.iter().find(|device| other.devices.contains(device)) {
                return Err(StoreError::PeripheralTaken {
                    peripheral: clash.to_string(),
                    owner: other.name.clone(),
                    owner_id: other.component_id,
                    app: manifest.name.clone(),
                });
            }
        }
        Ok(devices)
    }

    /// Make the staged files read-only and durable, then move them to their final name.
    fn commit_version(&self, staged: &Path, app: &InstalledApp) -> Result<(), StoreError> {
        let app_root = self.root.join("apps").join(app.component_id.to_string());
        let final_dir = app_root.join(&app.version_digest);
        if final_dir.exists() {
            return Ok(()); // The same version is already complete (versions are immutable).
        }
        fs::create_dir_all(&app_root).map_err(io_error(format!("cannot create {}", app_root.display())))?;
        let content = staged.join("content");
        seal(&content)?;
        fs::rename(&content, &final_dir)
            .map_err(io_error(format!("cannot move the app into {}", final_dir.display())))?;
        sync_dir(&app_root)
    }

    fn write_registry(&self, registry: &Registry) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(registry)
            .map_err(|e| StoreError::CorruptRegistry { path: self.root.join(REGISTRY), detail: e.to_string() })?;
        fs_atomic::write_bytes(&self.root.join(REGISTRY), 0o644, &bytes)
            .map_err(io_error("cannot write the registry"))?;
        Ok(())
    }

    /// Delete staging leftovers and any version the registry does not name.
    fn recover(&self) -> Result<(), StoreError> {
        remove_children(&self.root.join("staging"), |_| true)?;
        let apps_dir = self.root.join("apps");
        for app_dir in read_dir_paths(&apps_dir)? {
            let wanted = app_dir
                .file_name()
                .and_then(|name| name.to_str())
                .and_then(|name| Uuid::try_parse(name).ok())
                .and_then(|id| self.registry.apps.get(&id))
                .map(|app| app.version_digest.clone());
            match wanted {
                Some(digest) => remove_children(&app_dir, |name| name != digest)?,
                None => remove_tree(&app_dir)?,
            }
        }
        Ok(())
    }
}

fn signer(status: &SignatureStatus) -> &KeyId {
    match status {
        SignatureStatus::Verified(id) | SignatureStatus::NotChecked(id) => id,
    }
}

/// Verify against release keys, or development keys in development mode, unpacking as we go.
fn verify_into(
    package: impl Read,
    trust: &DeviceTrust,
    staging: &Path,
) -> Result<(package::PackageSummary, bool), StoreError> {
    // One pass: the package reader cannot be rewound, so verify against one combined store and
    // afterwards record which set the signer came from.
    let mut combined = trust.release.clone();
    if trust.development_mode {
        combined.extend(&trust.development);
    }
    let mut sink = UnpackSink { root: staging.join("content") };
    fs::create_dir(&sink.root).map_err(io_error("cannot create the staging directory"))?;
    let result = package::verify_package(package, &combined, &Limits::default(), &mut sink);
    let summary = match result {
        Ok(summary) => summary,
        Err(PackageError::Untrusted(sphere_app_format::keys::TrustError::UnknownKey(id)))
            if !trust.development_mode && trust.development.contains(&id) =>
        {
            return Err(StoreError::DevelopmentModeOff(id));
        }
        Err(error) => return Err(error.into()),
    };
    let development = !trust.release.contains(signer(&summary.signature));
    Ok((summary, development))
}

/// Writes verified package contents into a staging directory. Paths were validated by the
/// listing (no `..`, no absolute paths, parents are real directories created earlier), and
/// files are created with O_EXCL and O_NOFOLLOW, so nothing can be written outside `root`.
struct UnpackSink {
    root: PathBuf,
}

impl PackageSink for UnpackSink {
    fn directory(&mut self, entry: &ListingEntry) -> io::Result<()> {
        fs::create_dir(self.root.join(&entry.path))
    }

    fn file(&mut self, entry: &ListingEntry, contents: &mut dyn Read) -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(nix_o_nofollow())
            .mode(entry.mode)
            .open(self.root.join(&entry.path))?;
        io::copy(contents, &mut file)?;
        file.sync_all()
    }

    fn symlink(&mut self, entry: &ListingEntry) -> io::Result<()> {
        let target = entry.target.as_deref().unwrap_or_default();
        std::os::unix::fs::symlink(target, self.root.join(&entry.path))
    }
}

/// O_NOFOLLOW without pulling in a libc binding for one constant (same value on arm and x86).
fn nix_o_nofollow() -> i32 {
    0o400000
}

/// Remove write permission everywhere below `dir` and sync it: installed versions are immutable.
fn seal(dir: &Path) -> Result<(), StoreError> {
    for path in read_dir_paths(dir)? {
        let metadata = fs::symlink_metadata(&path).map_err(io_error(format!("cannot inspect {}", path.display())))?;
        if metadata.file_type().is_symlink() {
            continue;
        }
        if metadata.is_dir() {
            seal(&path)?;
        }
        let mode = metadata.permissions().mode() & 0o555;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(io_error(format!("cannot seal {}", path.display())))?;
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(format!("cannot sync {}", dir.display())))
}

fn read_dir_paths(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let entries = fs::read_dir(dir).map_err(io_error(format!("cannot list {}", dir.display())))?;
    entries.map(|entry| entry.map(|e| e.path()).map_err(io_error(format!("cannot list {}", dir.display())))).collect()
}

fn remove_children(dir: &Path, remove: impl Fn(&str) -> bool) -> Result<(), StoreError> {
    for path in read_dir_paths(dir)? {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if remove(&name) {
            remove_tree(&path)?;
        }
    }
    Ok(())
}

/// Delete a tree even though installed versions are read-only (root can always unlink, but
/// directories must be writable to remove their entries for non-root test runs).
fn remove_tree(path: &Path) -> Result<(), StoreError> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(io_error(format!("cannot inspect {}", path.display()))(error)),
    };
    if metadata.is_dir() {
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))
            .map_err(io_error(format!("cannot unseal {}", path.display())))?;
        for child in read_dir_paths(path)? {
            remove_tree(&child)?;
        }
        fs::remove_dir(path).map_err(io_error(format!("cannot remove {}", path.display())))
    } else {
        fs::remove_file(path).map_err(io_error(format!("cannot remove {}", path.display())))
    }
}

fn load_registry(path: &Path) -> Result<Registry, StoreError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::CorruptRegistry { path: path.to_owned(), detail: e.to_string() }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Registry::default()),
        Err(error) => Err(io_error(format!("cannot read {}", path.display()))(error)),
    }
}
