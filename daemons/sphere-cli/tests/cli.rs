//! The `sphere` binary as users and scripts drive it: outputs, `--json`, exit codes.

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sphere(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sphere")).args(args).current_dir(cwd).output().expect("run sphere")
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", String::from_utf8_lossy(&output.stdout)))
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A workspace with a key pair and the sample app laid out for packaging.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    assert!(sphere(&["keys", "new", "dev"], dir.path()).status.success());
    let app = dir.path().join("app");
    std::fs::create_dir_all(app.join("bin")).unwrap();
    std::fs::copy(repo().join("examples/hello-sphere/app/app_manifest.json"), app.join("app_manifest.json")).unwrap();
    std::fs::write(app.join("bin/app"), b"\x7fELF test").unwrap();
    std::fs::set_permissions(app.join("bin/app"), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn hardware_args() -> Vec<String> {
    let root = repo();
    vec![
        "--hardware-definition".into(),
        root.join("examples/hello-sphere/hardware-definitions/sample_appliance.json").display().to_string(),
        "--hardware-definition-dir".into(),
        root.join("images/qemu-a7/hardware-definitions").display().to_string(),
    ]
}

#[test]
fn keys_new_writes_an_owner_only_private_key_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let output = sphere(&["--json", "keys", "new", "release"], dir.path());
    assert!(output.status.success(), "{}", stderr(&output));
    let report = json(&output);
    assert_eq!(report["key_id"].as_str().map(str::len), Some(16));
    let mode = std::fs::metadata(dir.path().join("release.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = sphere(&["keys", "new", "release"], dir.path());
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("--force"));
}

#[test]
fn keys_are_standard_pem_that_openssl_reads() {
    let dir = tempfile::tempdir().unwrap();
    assert!(sphere(&["keys", "new", "k"], dir.path()).status.success());
    let Ok(output) =
        Command::new("openssl").args(["pkey", "-in", "k.key", "-noout", "-text"]).current_dir(dir.path()).output()
    else {
        eprintln!("SKIPPED keys_are_standard_pem_that_openssl_reads: openssl is not installed");
        return;
    };
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("ED25519"));
}

#[test]
fn manifest_check_resolves_the_sample_against_the_qemu_board() {
    let mut args = vec!["--json".to_owned(), "manifest".into(), "check".into()];
    args.push(repo().join("examples/hello-sphere/app/app_manifest.json").display().to_string());
    args.extend(hardware_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = sphere(&args, &repo());
    assert!(output.status.success(), "{}", stderr(&output));
    let report = json(&output);
    assert_eq!(report["ok"], true);
    assert_eq!(report["manifest"]["Name"], "hello-sphere");
    let peripherals = report["peripherals"].as_array().unwrap();
    assert_eq!(peripherals[0]["linux_device"]["Path"], "/dev/gpiochip0");
}

#[test]
fn an_invalid_manifest_exits_1_and_names_each_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.json"), br#"{"SchemaVersion":1,"Name":"x","ComponentId":"nope","EntryPoint":"/bin/app","Capabilities":{"AllowedTcpServerPorts":[70000]}}"#).unwrap();
    let output = sphere(&["manifest", "check", "m.json"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(text.contains("$.ComponentId") && text.contains("$.Capabilities.AllowedTcpServerPorts[0]"), "{text}");
    let output = sphere(&["--json", "manifest", "check", "m.json"], dir.path());
    let report = json(&output);
    assert_eq!(report["ok"], false);
    assert_eq!(report["error"]["details"][0]["field"], "ComponentId");
}

#[test]
fn an_unresolvable_peripheral_exits_1_naming_the_entry() {
    let dir = workspace();
    let manifest = dir.path().join("app/app_manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap().replace("$SAMPLE_BUTTON", "$NO_SUCH_BUTTON");
    std::fs::write(&manifest, text).unwrap();
    let mut args = vec!["manifest".to_owned(), "check".into(), manifest.display().to_string()];
    args.extend(hardware_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = sphere(&args, dir.path());
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(
        text.contains("$NO_SUCH_BUTTON")
            && text.contains("$.Capabilities.Gpio[1]")
            && text.contains("sample_appliance.json"),
        "{text}"
    );
}

#[test]
fn package_verify_and_show_round_trip() {
    let dir = workspace();
    let output = sphere(&["--json", "app", "package", "app", "-o", "app.sphpkg", "--key", "dev.key"], dir.path());
    assert!(output.status.success(), "{}", stderr(&output));
    let packaged = json(&output);
    let verify = sphere(&["--json", "app", "verify", "app.sphpkg", "--trust", "dev.pub"], dir.path());
    assert!(verify.status.success(), "{}", stderr(&verify));
    let verified = json(&verify);
    assert_eq!(verified["summary"]["signature"]["status"], "verified");
    assert_eq!(verified["summary"]["signature"]["key_id"], packaged["signed_by"]);
    let show = sphere(&["app", "show", "app.sphpkg"], dir.path());
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("NOT checked") && text.contains("bin/app"), "{text}");
}

#[test]
fn verify_with_the_wrong_key_exits_1_with_a_reason_code() {
    let dir = workspace();
    assert!(sphere(&["app", "package", "app", "-o", "app.sphpkg", "--key", "dev.key"], dir.path()).status.success());
    assert!(sphere(&["keys", "new", "other"], dir.path()).status.success());
    let output = sphere(&["--json", "app", "verify", "app.sphpkg", "--trust", "other.pub"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(json(&output)["error"]["details"]["reason"], "unknown_key");
}

#[test]
fn a_tampered_package_exits_1() {
    let dir = workspace();
    assert!(sphere(&["app", "package", "app", "-o", "app.sphpkg", "--key", "dev.key"], dir.path()).status.success());
    let path = dir.path().join("app.sphpkg");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(9).position(|w| w == b"\x7fELF test").unwrap();
    bytes[at + 5] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();
    let output = sphere(&["app", "verify", "app.sphpkg", "--trust", "dev.pub"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("bin/app"), "{}", stderr(&output));
}

#[test]
fn usage_problems_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        sphere(&["app", "verify", "missing.sphpkg", "--trust", "missing.pub"], dir.path()).status.code(),
        Some(2)
    );
    assert_eq!(sphere(&["manifest", "check", "missing.json"], dir.path()).status.code(), Some(2));
    assert_eq!(sphere(&["app", "verify", "x"], dir.path()).status.code(), Some(2));
    assert_eq!(sphere(&["no-such-command"], dir.path()).status.code(), Some(2));
}

#[test]
fn help_teaches_with_examples() {
    let output = sphere(&["app", "package", "--help"], &repo());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("Example:") && text.contains("sphere app package"), "{text}");
    let top = sphere(&["--help"], &repo());
    assert!(String::from_utf8_lossy(&top.stdout).contains("Exit codes"));
}

/// Fleet commands refuse, before any connection, what would leak the token or address the
/// wrong resource (the commands against a running sphere-cloud: tests/cloud-cli-test.sh).
#[test]
fn fleet_commands_refuse_unsafe_input_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "t\n").unwrap();
    std::fs::write(dir.path().join("not-a-cert.pem"), "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n")
        .unwrap();
    let cloud = |extra: &[&str], ca: &str| {
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(["--cloud-ca", ca, "--token-file", "token"]);
        sphere(&args, dir.path())
    };
    let cases: [(&[&str], &str, &str); 4] = [
        (&["device", "list", "--cloud", "http://127.0.0.1:1"], "not-a-cert.pem", "must be an https:// URL"),
        (&["device", "list", "--cloud", "https://127.0.0.1:1"], "not-a-cert.pem", "no PEM certificate"),
        (&["device", "show", "../groups"], "not-a-cert.pem", "only letters, digits"),
        (&["errors", "list", "--kind", "explosion"], "not-a-cert.pem", "possible values: crash"),
    ];
    for (args, ca, message) in cases {
        let output = cloud(args, ca);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", stderr(&output));
        assert!(stderr(&output).contains(message), "{args:?}: {}", stderr(&output));
    }
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    // `sphere ... | grep -q X` closes the pipe at the first match: no panic, no error, exit 0.
    // A socket pair with the reading end closed: writes fail with EPIPE, as on a closed pipe.
    let (writer, reader) = std::os::unix::net::UnixStream::pair().expect("socket pair");
    drop(reader);
    let writer = std::os::fd::OwnedFd::from(writer);
    let mut args = vec!["--json".to_owned(), "manifest".into(), "check".into()];
    args.push(repo().join("examples/hello-sphere/app/app_manifest.json").display().to_string());
    args.extend(hardware_args());
    let output = Command::new(env!("CARGO_BIN_EXE_sphere"))
        .args(&args)
        .current_dir(repo())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run sphere");
    assert!(output.status.success(), "exit {:?}: {}", output.status, stderr(&output));
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
}
