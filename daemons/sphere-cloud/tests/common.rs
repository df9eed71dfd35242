//! Test environment: a real sphere-cloud server (the built binary), a real mosquitto with TLS,
//! client-certificate auth and per-device ACLs (or sphere-cloud's embedded broker instead), and
//! optionally a real PostgreSQL server, all in a temporary directory and all killed when the
//! environment is dropped.

#![allow(dead_code)]

use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, TlsConfiguration, Transport};
use sphere_cloud::sim::{Client, Profile, SimDevice, reference_file};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NONCE_TTL_SECS: u64 = 3;
pub const CERT_LIFETIME_SECS: u64 = 12;

pub struct Env {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub url: String,
    pub mqtt_port: u16,
    children: Vec<(&'static str, Child)>,
    /// None: the embedded broker of sphere-cloud serves MQTT.
    pub mosquitto_pid: Option<u32>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("no free port")
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on port {port} within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false)
}

impl Env {
    /// Start mosquitto and sphere-cloud; `database` None = SQLite in the data dir.
    pub fn start(database: Option<String>) -> Env {
        Self::start_with(database, false)
    }

    /// Start sphere-cloud with its embedded MQTT broker (the default without --mqtt-broker).
    pub fn start_embedded(database: Option<String>) -> Env {
        Self::start_with(database, true)
    }

    fn start_with(database: Option<String>, embedded: bool) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("cloud");
        let bin = env!("CARGO_BIN_EXE_sphere-cloud");
        let ok = Command::new(bin)
            .args(["init", "--data"])
            .arg(&data)
            .stdout(Stdio::null())
            .status()
            .expect("run sphere-cloud init");
        assert!(ok.success(), "sphere-cloud init failed");

        // Reference values for the simulated device's software, signed by a release key.
        let release = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
        let key_path = data.join("release.key");
        std::fs::write(&key_path, release.to_pkcs8_pem(Default::default()).unwrap().as_bytes()).unwrap();
        std::fs::write(
            data.join("release.pub"),
            release.verifying_key().to_public_key_pem(Default::default()).unwrap(),
        )
        .unwrap();
        let refs = data.join("reference-values.json");
        std::fs::write(&refs, serde_json::to_vec_pretty(&reference_file(&Profile::default())).unwrap()).unwrap();
        let ok = Command::new(bin)
            .args(["sign-reference-values"])
            .arg(&refs)
            .arg("--key")
            .arg(&key_path)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "signing reference values failed");

        let mut children = Vec::new();
        let mqtt_port = free_port();
        let mosquitto_pid = (!embedded).then(|| start_mosquitto(bin, &data, mqtt_port, &mut children));

        let port = free_port();
        let mut serve = Command::new(bin);
        serve
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(&data)
            .arg("--reference-values")
            .arg(&refs)
            .arg("--reference-key")
            .arg(data.join("release.pub"))
            .args([if embedded { "--mqtt-listen" } else { "--mqtt-broker" }, &format!("127.0.0.1:{mqtt_port}")])
            .args(["--nonce-ttl", &format!("{NONCE_TTL_SECS}s")])
            .args(["--certificate-lifetime", &format!("{CERT_LIFETIME_SECS}s")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(data.join("sphere-cloud.log")).unwrap());
        if let Some(db) = database {
            serve.args(["--database", &db]);
        }
        children.push(("sphere-cloud", serve.spawn().expect("start sphere-cloud")));
        wait_for_port(port, "sphere-cloud");
        Env { dir, data, url: format!("https://127.0.0.1:{port}"), mqtt_port, children, mosquitto_pid }
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.data.join(name)).unwrap()
    }

    pub fn operator(&self) -> Client {
        Client::new(&self.url, &self.read("ca.crt"), Some(self.read("operator.token").trim().to_owned())).unwrap()
    }

    pub fn device_client(&self) -> Client {
        Client::new(&self.url, &self.read("ca.crt"), None).unwrap()
    }

    /// A registered simulated device.
    pub fn device(&self, p256: bool, profile: Profile) -> SimDevice {
        let device = SimDevice::new(p256, profile).unwrap();
        device.register(&self.operator(), None).expect("register device");
        device
    }

    /// Tell mosquitto to reload (it re-reads the CRL sphere-cloud rewrote). The embedded broker
    /// needs no reload: it re-reads the CRL at the next connection.
    pub fn reload_mosquitto(&self) {
        let Some(pid) = self.mosquitto_pid else { return };
        let ok = Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap();
        assert!(ok.success());
        std::thread::sleep(Duration::from_millis(500));
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["sphere-cloud.log", "mosquitto.log"] {
            out.push_str(&format!(
                "--- {name}\n{}\n",
                std::fs::read_to_string(self.data.join(name)).unwrap_or_default()
            ));
        }
        out
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// mosquitto as `sphere-cloud mosquitto-config` configures it, on `mqtt_port`; returns its pid.
fn start_mosquitto(bin: &str, data: &Path, mqtt_port: u16, children: &mut Vec<(&'static str, Child)>) -> u32 {
    let ok = Command::new(bin)
        .args(["mosquitto-config", "--port", &mqtt_port.to_string(), "--data"])
        .arg(data)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success(), "mosquitto-config failed");
    let conf = data.join("mosquitto.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    // As root mosquitto would switch to its own user, which cannot read the 0600 keys here.
    if is_root() {
        text.push_str("user root\n");
    }
    text.push_str(&format!("log_dest file {}\npersistence false\n", data.join("mosquitto.log").display()));
    std::fs::write(&conf, text).unwrap();
    let mosquitto = Command::new(mosquitto_binary())
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mosquitto (install it: scripts/install-host-deps.sh cloud)");
    let mosquitto_pid = mosquitto.id();
    children.push(("mosquitto", mosquitto));
    wait_for_port(mqtt_port, "mosquitto");
    mosquitto_pid
}

fn mosquitto_binary() -> &'static str {
    if Path::new("/usr/sbin/mosquitto").exists() { "/usr/sbin/mosquitto" } else { "mosquitto" }
}

/// Connect to the broker with a client certificate; Ok once the broker sent CONNACK.
pub async fn mqtt_connect(
    env: &Env,
    cert_pem: &str,
    key_pem: &str,
    client_id: &str,
) -> Result<(AsyncClient, EventLoop), String> {
    let tls = sphere_cloud::tls::client_config(&env.read("ca.crt"), Some((cert_pem, key_pem)))?;
    mqtt_connect_tls(env, tls, client_id).await
}

/// Connect with any TLS client configuration (e.g. without a client certificate).
pub async fn mqtt_connect_tls(
    env: &Env,
    tls: std::sync::Arc<rustls::ClientConfig>,
    client_id: &str,
) -> Result<(AsyncClient, EventLoop), String> {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", env.mqtt_port);
    options.set_keep_alive(Duration::from_secs(10));
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    let (client, mut events) = AsyncClient::new(options, 16);
    let connected = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    return if ack.code == rumqttc::ConnectReturnCode::Success {
                        Ok(())
                    } else {
                        Err(format!("broker refused: {:?}", ack.code))
                    };
                }
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .map_err(|_| "no CONNACK within 10 s".to_owned())?;
    connected.map(|()| (client, events))
}

/// A PostgreSQL server from Debian's package in a temp dir (as the postgres user when root).
pub struct Postgres {
    dir: tempfile::TempDir,
    child: Child,
    pub url: String,
}

fn pg_bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    versions.sort();
    versions.last().map(|v| v.join("bin").join(name)).filter(|p| p.exists()).unwrap_or_else(|| {
        panic!("PostgreSQL's {name} not found under /usr/lib/postgresql (scripts/install-host-deps.sh cloud)")
    })
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path().join("pgdata");
        let root = is_root();
        // As root, run PostgreSQL as its own user (it refuses root), exec'd directly so that
        // the child we kill at the end is the postmaster itself.
        let ids = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, "postgres"]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().expect("no postgres user")
        };
        let (uid, gid) = if root { (ids("-u"), ids("-g")) } else { (0, 0) };
        let as_user = |program: PathBuf| {
            use std::os::unix::process::CommandExt as _;
            let mut c = Command::new(program);
            c.current_dir(std::env::temp_dir());
            if root {
                c.uid(uid).gid(gid).env("HOME", "/tmp");
            }
            c
        };
        if root {
            let ok = Command::new("chown").args(["postgres:postgres"]).arg(dir.path()).status().unwrap();
            assert!(ok.success(), "chown to postgres failed");
        }
        let out = as_user(pg_bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&pgdata)
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let child = as_user(pg_bin("postgres"))
            .arg("-D")
            .arg(&pgdata)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-k"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port, "postgres");
        // Accepting TCP is not accepting queries: wait for startup to finish.
        std::thread::sleep(Duration::from_millis(500));
        Postgres { dir, child, url: format!("postgres://postgres@127.0.0.1:{port}/postgres") }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown (backends end too, nothing is left running).
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}
