//! The app store: installs, updates, removal, trust rules, peripheral ownership, and crash safety.

use sha2::{Digest, Sha256};
use sphere_app_format::HardwareDefinitionSet;
use sphere_app_format::keys::SigningKeyPair;
use sphere_app_format::package::{DiscardSink, Limits, Listing, build_package, inspect_package};
use sphere_appd::store::{AppStore, DeviceTrust, StoreError};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const APP_ID: &str = "7f0c2e5a-61d4-4b8e-9a3f-2c51d7e80b14";
const OTHER_ID: &str = "005180bc-402f-4cb3-a662-72937dbcde47";

fn manifest(id: &str, name: &str, gpio: &[&str]) -> String {
    let gpio: Vec<String> = gpio.iter().map(|g| format!("\"{g}\"")).collect();
    format!(
        r#"{{"SchemaVersion":1,"Name":"{name}","ComponentId":"{id}","EntryPoint":"/bin/app","Capabilities":{{"Gpio":[{}]}}}}"#,
        gpio.join(",")
    )
}

/// Build a signed package of an app whose binary is `payload`; returns the package path.
fn package(dir: &Path, key: &SigningKeyPair, manifest: &str, payload: &[u8], name: &str) -> PathBuf {
    let app = dir.join(format!("{name}-src"));
    std::fs::create_dir_all(app.join("bin")).unwrap();
    std::fs::write(app.join("app_manifest.json"), manifest).unwrap();
    std::fs::write(app.join("bin/app"), payload).unwrap();
    std::fs::write(app.join("bin/data"), payload.iter().rev().copied().collect::<Vec<u8>>()).unwrap();
    std::fs::set_permissions(app.join("bin/app"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = dir.join(format!("{name}.sphpkg"));
    build_package(&app, key, &out, &Limits::default()).unwrap();
    out
}

fn trust(key: &SigningKeyPair) -> DeviceTrust {
    let mut trust = DeviceTrust::default();
    trust.release.add(key.public_key());
    trust
}

fn install(
    store: &mut AppStore,
    package: &Path,
    trust: &DeviceTrust,
) -> Result<sphere_appd::store::InstalledApp, StoreError> {
    store.install(std::fs::File::open(package).unwrap(), trust, None)
}

fn board() -> HardwareDefinitionSet {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images/qemu-a7/hardware-definitions");
    HardwareDefinitionSet::load(&root.join("opensphere_qemu_virt_a7.json"), &[]).unwrap()
}

#[test]
fn install_update_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKeyPair::generate();
    let v1 = package(dir.path(), &key, &manifest(APP_ID, "app", &[]), b"version one", "v1");
    let v2 = package(dir.path(), &key, &manifest(APP_ID, "app", &[]), b"version two", "v2");
    let store_dir = dir.path().join("store");
    let mut store = AppStore::open(&store_dir).unwrap();
    let first = install(&mut store, &v1, &trust(&key)).unwrap();
    assert_eq!(std::fs::read(store.app_dir(&first).join("bin/app")).unwrap(), b"version one");
    let mode = std::fs::metadata(store.app_dir(&first).join("bin/app")).unwrap().permissions().mode();
    assert_eq!(mode & 0o222, 0, "installed files are read-only");

    let second = install(&mut store, &v2, &trust(&key)).unwrap();
    assert_eq!(second.uid, first.uid, "an update keeps the app's uid");
    assert_ne!(second.version_digest, first.version_digest);
    assert!(!store.app_dir(&first).exists(), "the old version is gone");
    assert_eq!(std::fs::read(store.app_dir(&second).join("bin/app")).unwrap(), b"version two");

    let reopened = AppStore::open(&store_dir).unwrap();
    assert_eq!(reopened.list().count(), 1);
    let mut store = reopened;
    store.remove(second.component_id).unwrap();
    assert_eq!(store.list().count(), 0);
    assert_eq!(std::fs::read_dir(store_dir.join("apps")).unwrap().count(), 0);
    assert!(matches!(store.remove(second.component_id), Err(StoreError::NotInstalled(_))));
}

#[test]
fn apps_get_distinct_uids() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKeyPair::generate();
    let a = package(dir.path(), &key, &manifest(APP_ID, "a", &[]), b"a", "a");
    let b = package(dir.path(), &key, &manifest(OTHER_ID, "b", &[]), b"b", "b");
    let mut store = AppStore::open(&dir.path().join("store")).unwrap();
    let a = install(&mut store, &a, &trust(&key)).unwrap();
    let b = install(&mut store, &b, &trust(&key)).unwrap();
    assert_ne!(a.uid, b.uid);
}

#[test]
fn untrusted_and_development_signed_packages() {
    let dir = tempfile::tempdir().unwrap();
    let release = SigningKeyPair::generate();
    let dev = SigningKeyPair::generate();
    let pkg = package(dir.path(), &dev, &manifest(APP_ID, "app", &[]), b"x", "dev");
    let mut store = AppStore::open(&dir.path().join("store")).unwrap();

    let error = install(&mut store, &pkg, &trust(&release)).unwrap_err();
    assert!(error.to_string().contains("not in the trusted keys"), "{error}");

    let mut with_dev = trust(&release);
    with_dev.development.add(dev.public_key());
    let error = install(&mut store, &pkg, &with_dev).unwrap_err();
    assert!(matches!(error, StoreError::DevelopmentModeOff(_)), "{error}");
    assert!(error.to_string().contains("development mode is off"));

    with_dev.development_mode = true;
    let app = install(&mut store, &pkg, &with_dev).unwrap();
    assert!(app.development);
    assert_eq!(std::fs::read_dir(dir.path().join("store/staging")).unwrap().count(), 0);
}

#[test]
fn a_peripheral_belongs_to_one_app_only() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKeyPair::generate();
    let first = package(dir.path(), &key, &manifest(APP_ID, "first-app", &["$QEMU_VIRT_GPIO4"]), b"1", "first");
    let second = package(
        dir.path(),
        &key,
        &manifest(OTHER_ID, "second-app", &["$QEMU_VIRT_GPIO5", "$QEMU_VIRT_GPIO4"]),
        b"2",
        "second",
    );
    let board = board();
    let mut store = AppStore::open(&dir.path().join("store")).unwrap();
    let installed = store.install(std::fs::File::open(&first).unwrap(), &trust(&key), Some(&board)).unwrap();
    assert_eq!(installed.devices.len(), 1);
    let error = store.install(std::fs::File::open(&second).unwrap(), &trust(&key), Some(&board)).unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("first-app") && text.contains("second-app") && text.contains("/dev/gpiochip0 line 4"),
        "{text}"
    );
    assert_eq!(store.list().count(), 1, "the refused app is not installed");
}

#[test]
fn a_tampered_update_leaves_the_old_version_running() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKeyPair::generate();
    let v1 = package(dir.path(), &key, &manifest(APP_ID, "app", &[]), b"version one", "v1");
    let v2 = package(dir.path(), &key, &manifest(APP_ID, "app", &[]), b"version two", "v2");
    let mut bytes = std::fs::read(&v2).unwrap();
    let at = bytes.windows(11).position(|w| w == b"version two").unwrap();
    bytes[at] = b'V';
    std::fs::write(&v2, bytes).unwrap();
    let mut store = AppStore::open(&dir.path().join("store")).unwrap();
    let old = install(&mut store, &v1, &trust(&key)).unwrap();
    let error = install(&mut store, &v2, &trust(&key)).unwrap_err();
    assert!(error.to_string().contains("bin/app"), "{error}");
    assert_eq!(store.get(old.component_id), Some(&old));
    assert_eq!(std::fs::read(store.app_dir(&old).join("bin/app")).unwrap(), b"version one");
    assert_eq!(std::fs::read_dir(dir.path().join("store/staging")).unwrap().count(), 0);
}

/// Check that the installed app is exactly the content of one of the candidate listings.
fn assert_whole_version(store_dir: &Path, candidates: &[(String, Listing)]) -> usize {
    let store = AppStore::open(store_dir).expect("the store reopens after a crash");
    let app = store.list().next().expect("an app is installed");
    let index = candidates.iter().position(|(digest, _)| *digest == app.version_digest).expect("a known version");
    let dir = store.app_dir(app);
    for entry in &candidates[index].1.entries {
        if let Some(expected) = entry.sha256 {
            let data = std::fs::read(dir.join(&entry.path)).expect("every listed file exists");
            assert_eq!(<[u8; 32]>::from(Sha256::digest(&data)), expected, "{} is complete", entry.path);
        }
    }
    let versions = std::fs::read_dir(store_dir.join("apps").join(APP_ID)).unwrap().count();
    assert_eq!(versions, 1, "exactly one version on disk after recovery");
    assert_eq!(std::fs::read_dir(store_dir.join("staging")).unwrap().count(), 0, "staging is empty");
    index
}

/// Kill `sphere-appd install` at random moments while it replaces version 1 with version 2,
/// then check the app is wholly one version or the other and the store recovers.
#[test]
fn install_survives_being_killed_at_random_points() {
    const TRIALS: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKeyPair::generate();
    let key_path = dir.path().join("release.pub");
    std::fs::write(&key_path, key.public_pem().unwrap()).unwrap();
    // Large enough (4 MiB, several files) that an install takes long enough to be interrupted.
    let big = |seed: u8| (0..4 * 1024 * 1024).map(|i: u32| (i as u8).wrapping_mul(seed)).collect::<Vec<u8>>();
    let v1 = package(dir.path(), &key, &manifest(APP_ID, "app", &[]), &big(3), "v1");
    let v2 = package(dir.path(), &key, &manifest(APP_ID, "app", &[]), &big(7), "v2");
    let candidates: Vec<(String, Listing)> = [&v1, &v2]
        .iter()
        .map(|p| {
            let summary =
                inspect_package(std::fs::File::open(p).unwrap(), &Limits::default(), &mut DiscardSink).unwrap();
            (hex::encode(summary.listing_sha256), summary.listing)
        })
        .collect();
    let appd = env!("CARGO_BIN_EXE_sphere-appd");
    let run_install = |store: &Path, package: &Path| {
        Command::new(appd)
            .args(["install", "--store"])
            .arg(store)
            .arg("--trust")
            .arg(&key_path)
            .arg(package)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // How long one full install takes here, to spread the kills over it.
    let timing_store = dir.path().join("timing");
    let started = Instant::now();
    assert!(run_install(&timing_store, &v1).wait().unwrap().success());
    let full = started.elapsed().max(Duration::from_millis(5));

    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id());
    let mut outcomes = [0usize; 2];
    for trial in 0..TRIALS {
        let store = dir.path().join(format!("trial-{trial}"));
        assert!(run_install(&store, &v1).wait().unwrap().success());
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = full.mul_f64((seed % 1000) as f64 / 1000.0 * 1.2);
        let mut child = run_install(&store, &v2);
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        outcomes[assert_whole_version(&store, &candidates)] += 1;
        std::fs::remove_dir_all(&store).ok();
    }
    eprintln!(
        "crash trials: {TRIALS}, ended at old version {} times, new version {} times (install takes {full:?})",
        outcomes[0], outcomes[1]
    );
    assert_eq!(outcomes[0] + outcomes[1], TRIALS);
}
