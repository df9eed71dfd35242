//! Reference values taken from the signed release metadata: a real TUF repository made by our
//! own tooling (`sphere update repo ...`), served as a directory, and the real sphere-cloud
//! (`serve --reference-repo`) verifying simulated devices (software keys) against it.
//!
//! (a) a device whose measurements are in the release's reference values passes;
//! (b) a new release adds values: after SIGHUP a device with the new measurements passes;
//! (c) a tampered reference-values target (hash mismatch), metadata changed without being
//!     re-signed, and expired metadata are each refused, the previous set is kept, and a device
//!     measured with values only in the tampered file is refused;
//! (d) a measurement in no release is refused;
//! and the periodic refresh (`--reference-refresh`) picks up a release without a signal.

use sphere_cloud::sim::{Client, Profile, SimDevice, reference_file};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("no free port")
}

/// The `sphere` CLI: $SPHERE_BIN, else next to the sphere-cloud binary (same target dir).
fn sphere_bin() -> PathBuf {
    let path = std::env::var_os("SPHERE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_BIN_EXE_sphere-cloud")).with_file_name("sphere"));
    assert!(path.exists(), "{} missing: cargo build -p sphere-cli (tests/cloud-test.sh does)", path.display());
    path
}

fn run(program: &Path, args: &[&str]) {
    let out = Command::new(program).args(args).output().expect("run");
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Repo {
    sphere: PathBuf,
    dir: PathBuf,
    keys: PathBuf,
    /// What the "CDN" serves (`sphere update repo publish`); sphere-cloud reads this.
    web: PathBuf,
}

impl Repo {
    fn init(work: &Path) -> Repo {
        let repo =
            Repo { sphere: sphere_bin(), dir: work.join("repo"), keys: work.join("keys"), web: work.join("web") };
        repo.sphere(&["update", "repo", "init", s(&repo.dir), "--keys", s(&repo.keys)]);
        repo
    }

    fn sphere(&self, args: &[&str]) {
        run(&self.sphere, args);
    }

    /// Add `profile`'s reference values as release `release`'s target (signed), and publish.
    fn release(&self, release: &str, version: u64, profile: &Profile) {
        let file = self.dir.with_file_name(format!("{release}-reference-values.json"));
        std::fs::write(&file, serde_json::to_vec_pretty(&reference_file(profile)).unwrap()).unwrap();
        let name = format!("{release}/reference-values.json");
        self.sphere(&[
            "update",
            "repo",
            "add-target",
            s(&self.dir),
            s(&file),
            "--keys",
            s(&self.keys),
            "--kind",
            "reference-values",
            "--version",
            &version.to_string(),
            "--hardware",
            "*",
            "--release",
            release,
            "--name",
            &name,
        ]);
        self.publish();
    }

    fn publish(&self) {
        let _ = std::fs::remove_dir_all(&self.web);
        self.sphere(&["update", "repo", "publish", s(&self.dir), s(&self.web)]);
    }

    fn root(&self) -> PathBuf {
        self.dir.join("metadata/1.root.json")
    }

    /// Published files whose name ends with `suffix` (consistent snapshots prefix hashes or versions).
    fn published(&self, sub: &str, suffix: &str) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![self.web.join(sub)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.to_string_lossy().ends_with(suffix) {
                    found.push(path);
                }
            }
        }
        assert!(!found.is_empty(), "no published {sub}/*{suffix}");
        found
    }
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

struct Cloud {
    child: Child,
    data: PathBuf,
    url: String,
    log: PathBuf,
}

impl Cloud {
    fn start(work: &Path, repo: &Repo, refresh_secs: u64, name: &str) -> Cloud {
        Cloud::start_with(work, s(&repo.web), &repo.root(), refresh_secs, &[], name)
    }

    fn start_with(work: &Path, base: &str, root: &Path, refresh_secs: u64, extra: &[&str], name: &str) -> Cloud {
        let bin = env!("CARGO_BIN_EXE_sphere-cloud");
        let data = work.join("cloud");
        if !data.exists() {
            run(Path::new(bin), &["init", "--data", s(&data)]);
        }
        let port = free_port();
        let log = work.join(format!("{name}.log"));
        let mut serve = Command::new(bin);
        serve
            .args(["serve", "--data", s(&data), "--listen", &format!("127.0.0.1:{port}")])
            .args(["--reference-repo", base, "--reference-root", s(root)])
            .args(["--reference-refresh", &refresh_secs.to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        // No MQTT: this test is about attestation (servers with an embedded broker by default
        // would otherwise bind its port).
        let help = Command::new(bin).args(["serve", "--help"]).output().unwrap();
        if String::from_utf8_lossy(&help.stdout).contains("--no-mqtt") {
            serve.arg("--no-mqtt");
        }
        let mut child = serve.spawn().expect("start sphere-cloud");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("sphere-cloud exited ({status}):\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "sphere-cloud did not listen within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Cloud { child, data, url: format!("https://127.0.0.1:{port}"), log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn client(&self, operator: bool) -> Client {
        let ca = std::fs::read_to_string(self.data.join("ca.crt")).unwrap();
        let token =
            operator.then(|| std::fs::read_to_string(self.data.join("operator.token")).unwrap().trim().to_owned());
        Client::new(&self.url, &ca, token).unwrap()
    }

    /// Send SIGHUP and wait until the log has one more line containing `expect`.
    fn hangup_and_wait(&self, expect: &str) -> String {
        let before = self.log().matches(expect).count();
        let ok = Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
        self.wait_for_log(expect, before + 1, Duration::from_secs(20))
    }

    fn wait_for_log(&self, expect: &str, count: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.matches(expect).count() >= count {
                return log.lines().rfind(|l| l.contains(expect)).unwrap_or_default().to_owned();
            }
            assert!(Instant::now() < deadline, "no log line with {expect:?} within {timeout:?}:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Register a fresh device measuring `profile` and attest; (passed, reasons).
    fn attest(&self, profile: &Profile) -> (bool, Vec<String>) {
        let device = SimDevice::new(false, profile.clone()).unwrap();
        device.register(&self.client(true), None).expect("register");
        let result = device.attest(&self.client(false)).expect("attestation answered");
        assert_eq!(result.passed, result.certificate.is_some(), "a certificate exactly when passed");
        (result.passed, result.reasons)
    }

    fn passes(&self, profile: &Profile, what: &str) {
        let (passed, reasons) = self.attest(profile);
        assert!(passed, "{what}: refused: {reasons:?}\n{}", self.log());
        eprintln!("ok: {what}");
    }

    fn refused(&self, profile: &Profile, daemon: &str, what: &str) {
        let (passed, reasons) = self.attest(profile);
        assert!(!passed, "{what}: PASSED");
        let expected = format!("not in the reference values: daemon {daemon}");
        assert!(reasons.iter().any(|r| r.contains(&expected)), "{what}: refused for another reason: {reasons:?}");
        eprintln!("ok: {what} ({})", reasons[0]);
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn with_daemon(name: &str) -> Profile {
    let mut p = Profile::default();
    p.daemons.push(name.into());
    p
}

#[test]
#[ignore = "needs the sphere CLI built and starts the server: run by tests/cloud-test.sh"]
fn reference_values_from_the_update_repository() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let repo = Repo::init(work);
    let base = Profile::default();
    let newer = with_daemon("sphere-newd");
    let evil = with_daemon("sphere-evild");
    let rogue = with_daemon("cryptominer");

    // Release r1 carries the reference values of the software it ships.
    repo.release("r1", 1, &base);
    let cloud = Cloud::start(work, &repo, 0, "serve-1");
    let line = cloud.wait_for_log("start-up: reference values loaded from", 1, Duration::from_secs(5));
    assert!(line.contains("r1/reference-values.json"), "{line}");

    // (a) and (d)
    cloud.passes(&base, "(a) device running release r1 attests");
    cloud.refused(&rogue, "cryptominer", "(d) measurement in no release refused");
    cloud.refused(&newer, "sphere-newd", "(b, before) device running the unpublished r2 refused");

    // (b) r2 is published; SIGHUP; both releases are accepted (mid-rollout fleet).
    repo.release("r2", 2, &newer);
    let line = cloud.hangup_and_wait("SIGHUP: reference values loaded from");
    assert!(line.contains("r1/reference-values.json") && line.contains("r2/reference-values.json"), "{line}");
    cloud.passes(&newer, "(b) after r2 + SIGHUP, a device running r2 attests");
    cloud.passes(&base, "(b) a device still on r1 attests too");
    let shown: serde_json::Value = cloud.client(true).get("/v1/reference-values").expect("operator API");
    let source = shown["source"].as_str().unwrap_or_default();
    assert!(source.contains("r1/reference-values.json") && source.contains("r2/reference-values.json"), "{shown}");

    // (c1) r3 is signed with values for sphere-goodd, then its published bytes are swapped for
    // a file that would allow sphere-evild (an attacker on the CDN): same length, other hash;
    // then a longer file (more than the signed length).
    let good = with_daemon("sphere-goodd");
    repo.release("r3", 3, &good);
    let tampered = serde_json::to_vec_pretty(&reference_file(&evil)).unwrap();
    let mut longer = tampered.clone();
    longer.extend_from_slice(b"\n\n");
    for (bytes, why) in [(&tampered, "hash mismatch"), (&longer, "maximum size")] {
        let mut swapped = 0;
        for path in repo.published("targets", "reference-values.json") {
            if path.strip_prefix(&repo.web).is_ok_and(|p| p.to_string_lossy().contains("r3/")) {
                assert_eq!(std::fs::read(&path).unwrap().len(), tampered.len(), "the swap keeps the length");
                std::fs::write(&path, bytes).unwrap();
                swapped += 1;
            }
        }
        assert_eq!(swapped, 1, "exactly r3's published file is swapped");
        let line = cloud.hangup_and_wait("SIGHUP: reference repository refused");
        assert!(line.contains("keeping targets v") && line.contains("r3/reference-values.json"), "{line}");
        assert!(line.to_lowercase().contains(why), "refused, but not for {why:?}: {line}");
        eprintln!("ok: (c) tampered target refused: {line}");
        cloud.refused(&evil, "sphere-evild", "(c) device measured as in the tampered file refused");
        cloud.refused(&good, "sphere-goodd", "(c) the whole refresh is refused, r3's real values too");
        cloud.passes(&newer, "(c) previous set kept after the tampered target");
        repo.publish();
    }

    // (c2) Metadata changed without the targets key: an extra target slipped into targets.json.
    for path in repo.published("metadata", "targets.json") {
        let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let targets = doc["signed"]["targets"].as_object_mut().unwrap();
        let r2 = targets["r2/reference-values.json"].clone();
        targets.insert("r9/reference-values.json".into(), r2);
        std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    }
    let line = cloud.hangup_and_wait("SIGHUP: reference repository refused");
    assert!(line.contains("keeping targets v"), "{line}");
    eprintln!("ok: (c) unsigned metadata refused: {line}");
    cloud.passes(&newer, "(c) previous set kept after unsigned metadata");
    // …and a role whose own body was edited without its key: the timestamp's expiry extended
    // (what a freeze attacker would like to do), so its signature no longer verifies.
    repo.publish();
    for path in repo.published("metadata", "timestamp.json") {
        let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        doc["signed"]["expires"] = "2099-01-01T00:00:00Z".into();
        std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    }
    let line = cloud.hangup_and_wait("SIGHUP: reference repository refused");
    assert!(line.contains("keeping targets v") && line.to_lowercase().contains("signature"), "{line}");
    eprintln!("ok: (c) metadata with a broken signature refused: {line}");
    cloud.passes(&newer, "(c) previous set kept after a broken signature");

    // (c3) Expired metadata (a freeze attack: a stale timestamp replayed forever).
    repo.sphere(&["update", "repo", "set-expiry", s(&repo.dir), "timestamp", "-1h", "--keys", s(&repo.keys)]);
    repo.publish();
    let line = cloud.hangup_and_wait("SIGHUP: reference repository refused");
    assert!(line.contains("expired"), "refused for another reason: {line}");
    eprintln!("ok: (c) expired metadata refused: {line}");
    cloud.passes(&newer, "(c) previous set kept after expired metadata");
    cloud.refused(&evil, "sphere-evild", "(c) still refused");
    drop(cloud);

    // Periodic refresh: a new server refreshing every second picks up r4 without a signal.
    repo.sphere(&["update", "repo", "set-expiry", s(&repo.dir), "timestamp", "1d", "--keys", s(&repo.keys)]);
    repo.publish();
    // The remembered root cut short (a crash while tough wrote it) must not lock the cloud out:
    // it starts again from the configured root.
    let remembered = work.join("cloud/reference-tuf/root.json");
    assert!(remembered.exists(), "tough keeps the newest verified root in DATA/reference-tuf");
    std::fs::write(&remembered, b"{\"signed\": {\"_type\": \"ro").unwrap();
    let cloud = Cloud::start(work, &repo, 1, "serve-2");
    cloud.wait_for_log("start-up: reference values loaded from", 1, Duration::from_secs(5));
    let fourth = with_daemon("sphere-fourthd");
    cloud.refused(&fourth, "sphere-fourthd", "device running the unpublished r4 refused");
    repo.release("r4", 4, &fourth);
    let line = cloud.wait_for_log("periodic refresh: reference values loaded from", 1, Duration::from_secs(20));
    assert!(line.contains("r4/reference-values.json"), "{line}");
    cloud.passes(&fourth, "periodic refresh: after r4 is published, a device running r4 attests");
    drop(cloud);

    // Over HTTPS (the transport a real deployment uses): the repository served by
    // tests/update-server.py with a server certificate from the cloud's own CA.
    let data = work.join("cloud");
    let port_file = work.join("https-port");
    let _server = Reaped(
        Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/update-server.py"))
            .arg(&repo.web)
            .args(["--cert", s(&data.join("https.crt")), "--key", s(&data.join("https.key")), "--port", "0"])
            .args(["--port-file", s(&port_file)])
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 tests/update-server.py"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !port_file.exists() {
        assert!(Instant::now() < deadline, "update-server.py wrote no port");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("https://127.0.0.1:{}/", std::fs::read_to_string(&port_file).unwrap().trim());
    // Untrusted server certificate (system CAs): nothing is accepted, the server still runs.
    let cloud = Cloud::start_with(work, &url, &repo.root(), 0, &[], "serve-3");
    let line = cloud.wait_for_log("reference repository refused (no previous set)", 1, Duration::from_secs(10));
    assert!(line.to_lowercase().contains("certificate"), "refused for another reason: {line}");
    eprintln!("ok: https repository with an untrusted certificate refused: {line}");
    cloud.refused(&fourth, "sphere-fourthd", "nothing accepted while the repository is not trusted");
    drop(cloud);
    let cloud = Cloud::start_with(work, &url, &repo.root(), 0, &["--reference-ca", s(&data.join("ca.crt"))], "serve-4");
    let line = cloud.wait_for_log("start-up: reference values loaded from https://", 1, Duration::from_secs(10));
    assert!(line.contains("r4/reference-values.json"), "{line}");
    cloud.passes(&fourth, "over HTTPS: a device running r4 attests");
}

/// A child process ended when the test ends, passed or not.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
