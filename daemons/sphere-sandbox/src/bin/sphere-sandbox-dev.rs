//! `sphere-sandbox-dev`: install and run apps in the sandbox without the app manager, for the
//! escape suite, the benchmark and bring-up on a board.
//!
//! ```text
//! sphere-sandbox-dev install PKG --trust KEY.pub --apps DIR --storage DIR --uid N
//!     verify the signed package, unpack it to DIR/<component-id>, create its storage image;
//!     prints {"component_id", "app_root", "storage_image"} as JSON
//! sphere-sandbox-dev spec --app-root DIR --uid N --storage-image IMG --storage-mount DIR
//!     [--hardware-definition HW.json] [--cgroup-parent P] [--runtime-dir D]
//!     [--arg A]... [--device PATH]... [--memory-max BYTES]
//!     prints the SandboxSpec JSON built by spec_from_manifest (extra args/devices appended)
//! ```

use sphere_app_format::TrustStore;
use sphere_app_format::package::{self, Limits, ListingEntry, PackageSink};
use sphere_sandbox::spec::{CgroupLimits, DEFAULT_RUNTIME_DIR, DeviceGrant, LaunchContext};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Unpacks a package into a fresh directory; trusted only once verify_package returns Ok.
struct UnpackSink {
    root: PathBuf,
}

impl UnpackSink {
    fn target(&self, entry: &ListingEntry) -> io::Result<PathBuf> {
        // The package format already restricts paths to a plain alphabet without `..`; check
        // again here because this is where a bad path would write outside the directory.
        package::check_package_path(&entry.path).map_err(io::Error::other)?;
        Ok(self.root.join(&entry.path))
    }
}

impl PackageSink for UnpackSink {
    fn directory(&mut self, entry: &ListingEntry) -> io::Result<()> {
        let path = self.target(entry)?;
        fs::create_dir(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
    }

    fn file(&mut self, entry: &ListingEntry, contents: &mut dyn Read) -> io::Result<()> {
        let path = self.target(entry)?;
        // Packages carry no set-id bits (the format refuses them); keep only rwx.
        let mode = if entry.is_executable_file() { 0o755 } else { 0o644 };
        let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&path)?;
        io::copy(contents, &mut file)?;
        Ok(())
    }

    fn symlink(&mut self, entry: &ListingEntry) -> io::Result<()> {
        let path = self.target(entry)?;
        let target = entry.target.as_deref().ok_or_else(|| io::Error::other("symlink without target"))?;
        std::os::unix::fs::symlink(target, path)
    }
}

fn value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().position(|arg| arg == flag).and_then(|index| args.get(index + 1)).map(String::as_str)
}

fn values<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
    args.windows(2).filter(|pair| pair[0] == flag).map(|pair| pair[1].as_str()).collect()
}

fn required<'a>(args: &'a [String], flag: &str) -> Result<&'a str, String> {
    value(args, flag).ok_or_else(|| format!("{flag} is required"))
}

fn number(args: &[String], flag: &str) -> Result<u32, String> {
    required(args, flag)?.parse().map_err(|_| format!("{flag} must be a number"))
}

fn install(package_path: &str, args: &[String]) -> Result<(), String> {
    let mut trust = TrustStore::new();
    trust.add_pem_file(Path::new(required(args, "--trust")?)).map_err(|error| error.to_string())?;
    let apps = PathBuf::from(required(args, "--apps")?);
    let storage = PathBuf::from(required(args, "--storage")?);
    let uid = number(args, "--uid")?;
    fs::create_dir_all(&apps).map_err(|error| format!("{}: {error}", apps.display()))?;
    let staging = apps.join(format!(".staging-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir(&staging).map_err(|error| error.to_string())?;
    let file = fs::File::open(package_path).map_err(|error| format!("{package_path}: {error}"))?;
    let mut sink = UnpackSink { root: staging.clone() };
    let summary = match package::verify_package(io::BufReader::new(file), &trust, &Limits::default(), &mut sink) {
        Ok(summary) => summary,
        Err(error) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(format!("{package_path}: {error}"));
        }
    };
    let component_id = summary.manifest.component_id.to_string();
    let app_root = apps.join(&component_id);
    let _ = fs::remove_dir_all(&app_root);
    fs::rename(&staging, &app_root).map_err(|error| error.to_string())?;
    let image = storage.join(format!("{component_id}.img"));
    if let Some(mutable) = summary.manifest.capabilities.mutable_storage {
        if !image.exists() {
            sphere_sandbox::storage::create_image(&image, u64::from(mutable.size_kb) * 1024, uid, uid)
                .map_err(|error| error.to_string())?;
        }
    }
    let report = serde_json::json!({
        "component_id": component_id,
        "app_root": app_root,
        "storage_image": image,
        "signed_by": format!("{:?}", summary.signature),
    });
    println!("{report}");
    Ok(())
}

fn spec(args: &[String]) -> Result<(), String> {
    let app_root = PathBuf::from(required(args, "--app-root")?);
    let manifest_bytes = fs::read(app_root.join(package::MANIFEST_PATH)).map_err(|error| error.to_string())?;
    let manifest =
        sphere_app_format::manifest::parse_manifest(&manifest_bytes).map_err(|error| error.to_string())?.manifest;
    let peripherals = match value(args, "--hardware-definition") {
        Some(path) => sphere_app_format::HardwareDefinitionSet::load(Path::new(path), &[])
            .map_err(|error| error.to_string())?
            .resolve_manifest(&manifest)
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))?,
        None => Vec::new(),
    };
    let uid = number(args, "--uid")?;
    let mut limits = CgroupLimits::default();
    if let Some(memory) = value(args, "--memory-max") {
        limits.memory_max_bytes = memory.parse().map_err(|_| "--memory-max must be a number")?;
    }
    let context = LaunchContext {
        app_root,
        uid,
        gid: uid,
        storage_image: PathBuf::from(required(args, "--storage-image")?),
        storage_host_mount: PathBuf::from(required(args, "--storage-mount")?),
        limits,
        requested_limits: None,
        cgroup_parent: PathBuf::from(value(args, "--cgroup-parent").unwrap_or("/sys/fs/cgroup/opensphere-apps")),
        runtime_dir: PathBuf::from(value(args, "--runtime-dir").unwrap_or(DEFAULT_RUNTIME_DIR)),
    };
    let mut spec =
        sphere_sandbox::spec_from_manifest(&manifest, &peripherals, &context).map_err(|error| error.to_string())?;
    spec.args.extend(values(args, "--arg").into_iter().map(str::to_owned));
    for device in values(args, "--device") {
        spec.devices.push(DeviceGrant {
            path: device.into(),
            gpio_line: None,
            granted_by: "sphere-sandbox-dev --device".into(),
        });
    }
    spec.validate().map_err(|error| error.to_string())?;
    println!("{}", serde_json::to_string_pretty(&spec).map_err(|error| error.to_string())?);
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("install") if args.len() >= 2 => install(&args[1], &args[2..]),
        Some("spec") => spec(&args[1..]),
        _ => Err("usage: sphere-sandbox-dev install PKG ... | spec ... (see the source header)".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sphere-sandbox-dev: {message}");
            ExitCode::from(1)
        }
    }
}
