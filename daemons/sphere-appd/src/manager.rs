//! The running side of the app manager: install, start, stop, supervise, and remember.
//!
//! Each running app has one supervisor task. It builds the app's sandbox from its manifest,
//! starts it through the single-threaded `sphere-sandbox-exec` launcher (this process runs tokio,
//! and namespaces need a single-threaded parent), keeps the last lines of its output, reads the
//! launcher's exit report, counts violations, and restarts the app with exponential backoff:
//! high-level apps run forever on Azure Sphere and are restarted if they exit.

use crate::config::{Config, key_files};
use crate::intercore::Broker;
use crate::store::{AppStore, DeviceTrust, InstalledApp, StoreError};
use sphere_app_format::HardwareDefinitionSet;
use sphere_app_format::fs_atomic;
use sphere_app_format::manifest::{AppManifest, ApplicationType};
use sphere_appd_api::{AppStatus, Violation};
use sphere_sandbox::{CgroupLimits, ExitCause, ExitReport, LaunchContext, launcher, spec_from_manifest, storage};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{Notify, broadcast};
use uuid::Uuid;

const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A run this long counts as healthy: the next crash starts the backoff from the beginning.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Runtime facts about one app (the store holds the durable ones).
#[derive(Default)]
struct Runtime {
    state: &'static str,
    pid: u32,
    restarts: u32,
    last_exit: String,
    logs: VecDeque<String>,
    violations: BTreeMap<&'static str, Violation>,
    wanted_running: bool,
    supervised: bool,
}

/// The app manager; shared by the D-Bus service and the supervisor tasks.
pub struct Manager {
    config: Config,
    store: Mutex<AppStore>,
    board: Option<HardwareDefinitionSet>,
    runtimes: Arc<Mutex<HashMap<Uuid, Runtime>>>,
    stop_requests: Mutex<HashMap<Uuid, Arc<Notify>>>,
    events: broadcast::Sender<(String, String)>,
    /// The inter-core link, when this device has one.
    intercore: Option<Arc<Broker>>,
    /// System events (update ready, ...) relayed to apps, and their deferral requests.
    sysevents: crate::sysevent::SystemEvents,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking holder cannot leave these maps inconsistent (every update is one insert or
    // field write), so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Manager {
    pub fn open(config: Config) -> Result<Arc<Manager>, String> {
        let store = AppStore::open(&config.store_dir).map_err(|e| e.to_string())?;
        let board = match &config.board {
            Some(path) => {
                Some(HardwareDefinitionSet::load(path, &config.board_search_dirs).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        let (events, _) = broadcast::channel(64);
        prepare_cgroup_parent(&config.cgroup_parent);
        let intercore = open_intercore(&config);
        Ok(Arc::new(Manager {
            config,
            store: Mutex::new(store),
            board,
            runtimes: Arc::new(Mutex::new(HashMap::new())),
            stop_requests: Mutex::new(HashMap::new()),
            events,
            intercore,
            sysevents: crate::sysevent::SystemEvents::default(),
        }))
    }

    /// State changes as (ComponentId, state), for D-Bus signals.
    pub fn subscribe(&self) -> broadcast::Receiver<(String, String)> {
        self.events.subscribe()
    }

    fn trust(&self) -> Result<DeviceTrust, String> {
        let mut trust =
            DeviceTrust { development_mode: self.config.development_mode_flag.exists(), ..Default::default() };
        for path in key_files(&self.config.trusted_keys_dir) {
            trust.release.add_pem_file(&path).map_err(|e| e.to_string())?;
        }
        for path in key_files(&self.config.development_keys_dir) {
            trust.development.add_pem_file(&path).map_err(|e| e.to_string())?;
        }
        Ok(trust)
    }

    /// Install (or update) from a package file, then (re)start the app.
    pub async fn install(self: &Arc<Self>, package: PathBuf) -> Result<InstalledApp, String> {
        let trust = self.trust()?;
        let manager = Arc::clone(self);
        let installed = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&package).map_err(|e| format!("cannot read {}: {e}", package.display()))?;
            let mut store = lock(&manager.store);
            store.install(std::io::BufReader::new(file), &trust, manager.board.as_ref()).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??;
        self.stop(installed.component_id).await;
        self.start(installed.component_id)?;
        Ok(installed)
    }

    /// Install from package bytes received over D-Bus: spooled to a file on the data partition
    /// (bounded by the message size limit), installed like any package, then deleted.
    pub async fn install_bytes(self: &Arc<Self>, package: Vec<u8>) -> Result<InstalledApp, String> {
        let spool = self.config.store_dir.join("staging");
        let file = tempfile::Builder::new()
            .prefix("upload-")
            .tempfile_in(&spool)
            .map_err(|e| format!("cannot spool the package: {e}"))?;
        std::fs::write(file.path(), &package).map_err(|e| format!("cannot spool the package: {e}"))?;
        self.install(file.path().to_owned()).await
    }

    /// Install every package waiting in the inbox (deleting each, installed or refused).
    pub async fn install_inbox(self: &Arc<Self>) {
        let Ok(entries) = std::fs::read_dir(&self.config.inbox_dir) else { return };
        let mut packages: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        packages.sort();
        for package in packages {
            match self.install(package.clone()).await {
                Ok(app) => eprintln!("sphere-appd: installed {} {} from the inbox", app.name, app.component_id),
                Err(error) => eprintln!("sphere-appd: refused {}: {error}", package.display()),
            }
            let _ = std::fs::remove_file(&package);
        }
    }

    pub async fn remove(self: &Arc<Self>, id: Uuid) -> Result<(), String> {
        self.stop(id).await;
        lock(&self.store).remove(id).map_err(|e| e.to_string())?;
        lock(&self.runtimes).remove(&id);
        self.release_sandbox(id);
        let _ = std::fs::remove_file(self.storage_image(id));
        self.emit(id, "removed");
        Ok(())
    }

    /// Undo what the launcher keeps between runs of a removed app: its storage mount, pinned
    /// network namespace and cgroup. Failures are reported; the app is already gone.
    fn release_sandbox(&self, id: Uuid) {
        let runtime_dir = &self.config.runtime_dir;
        let mount = runtime_dir.join("storage").join(id.to_string());
        if storage::is_mounted(&mount) {
            let path = std::ffi::CString::new(mount.as_os_str().as_encoded_bytes()).unwrap_or_default();
            // SAFETY: a NUL-terminated path; MNT_DETACH only detaches the mount.
            if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
                eprintln!("sphere-appd: cannot unmount {}: {}", mount.display(), std::io::Error::last_os_error());
            }
        }
        let _ = std::fs::remove_dir(&mount);
        let cid = id.to_string();
        if let Err(error) = sphere_sandbox::netns::remove(&runtime_dir.join("sandbox"), &cid) {
            eprintln!("sphere-appd: cannot remove the network namespace of {cid}: {error}");
        }
        let (support, _) = sphere_sandbox::cgroup::detect();
        if let Err(error) = sphere_sandbox::cgroup::remove_app(&support, &self.config.cgroup_parent, &cid) {
            eprintln!("sphere-appd: cannot remove the cgroup of {cid}: {error}");
        }
    }

    /// Start every installed high-level app (at daemon start).
    pub fn start_all(self: &Arc<Self>) {
        let ids: Vec<Uuid> = lock(&self.store).list().map(|app| app.component_id).collect();
        for id in ids {
            if let Err(error) = self.start(id) {
                eprintln!("sphere-appd: cannot start {id}: {error}");
            }
        }
    }

    /// Stop every app (daemon shutdown): each gets SIGTERM and its grace period, in parallel.
    pub async fn stop_all(&self) {
        let ids: Vec<Uuid> = lock(&self.runtimes).keys().copied().collect();
        for id in &ids {
            if let Some(runtime) = lock(&self.runtimes).get_mut(id) {
                runtime.wanted_running = false;
            }
            self.stop_notify(*id).notify_one();
        }
        for id in ids {
            self.stop(id).await;
        }
    }

    pub fn development_mode(&self) -> bool {
        self.config.development_mode_flag.exists()
    }

    /// Switch development mode by creating or deleting its flag file on the data partition.
    pub fn set_development_mode(&self, enabled: bool) -> Result<(), String> {
        let flag = &self.config.development_mode_flag;
        let result = if enabled {
            flag.parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| fs_atomic::write_bytes(flag, 0o600, b"on\n").map(drop))
        } else {
            match std::fs::remove_file(flag) {
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        };
        result.map_err(|e| format!("cannot switch development mode ({}): {e}", flag.display()))
    }

    pub fn start(self: &Arc<Self>, id: Uuid) -> Result<(), String> {
        let manifest = {
            let store = lock(&self.store);
            let app = store.get(id).ok_or_else(|| StoreError::NotInstalled(id).to_string())?;
            store.manifest(app).map_err(|e| e.to_string())?
        };
        if manifest.application_type == ApplicationType::RealTimeCapable {
            return self.deploy_real_time(id, &manifest);
        }
        let mut runtimes = lock(&self.runtimes);
        let runtime = runtimes.entry(id).or_default();
        runtime.wanted_running = true;
        if runtime.supervised {
            return Ok(());
        }
        runtime.supervised = true;
        drop(runtimes);
        let manager = Arc::clone(self);
        tokio::spawn(async move { manager.supervise(id).await });
        Ok(())
    }

    /// A real-time app does not run on this core: its firmware (the package's entry point) is
    /// handed to the real-time core's loader, `rt_firmware_dir/<ComponentId>.elf`, and listed in
    /// `deployed.json` there. On the QEMU board the M4 machine is started by the runner from the
    /// same signed package (scripts/run-qemu.sh --m4-package); on hardware a remoteproc driver
    /// would load the file.
    fn deploy_real_time(&self, id: Uuid, manifest: &AppManifest) -> Result<(), String> {
        let source = {
            let store = lock(&self.store);
            let app = store.get(id).ok_or_else(|| StoreError::NotInstalled(id).to_string())?;
            store.app_dir(app).join(manifest.entry_point.trim_start_matches('/'))
        };
        let dir = &self.config.rt_firmware_dir;
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let target = dir.join(format!("{id}.elf"));
        let image = std::fs::read(&source).map_err(|e| format!("cannot read {}: {e}", source.display()))?;
        fs_atomic::write_bytes(&target, 0o644, &image)
            .map_err(|e| format!("cannot write {}: {e}", target.display()))?;
        let mut deployed: BTreeMap<String, String> = std::fs::read(dir.join("deployed.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        deployed.insert(id.to_string(), manifest.name.clone());
        let json = serde_json::to_vec_pretty(&deployed).map_err(|e| e.to_string())?;
        fs_atomic::write_bytes(&dir.join("deployed.json"), 0o644, &json).map_err(|e| e.to_string())?;
        lock(&self.runtimes).entry(id).or_default();
        self.set_state(id, "deployed", 0);
        eprintln!("sphere-appd: real-time app {} {id} deployed ({} bytes of firmware)", manifest.name, image.len());
        Ok(())
    }

    /// May high-level app `app` connect to real-time app `rt`? Only when both manifests list
    /// each other in `AllowedApplicationConnections` (read from the installed, verified
    /// manifests at the time of the request). A refusal is counted as an `intercore-refused`
    /// violation of the requesting app.
    /// The update daemon's announcement of a system event (D-Bus `AnnounceUpdate`): relayed
    /// to registered apps; returns the apps' live deferral requests.
    pub fn announce_system_event(&self, info: sphere_applibs::sysevent::EventInfo) -> Vec<(Uuid, u64)> {
        self.sysevents.announce(info, unix_now())
    }

    /// One `sysevent-*` request from `app` on its API socket (anything else is unknown):
    /// checks the manifest's capabilities (`SystemEventNotifications` for all of them,
    /// `SoftwareUpdateDeferral` too to defer or resume; a refusal is recorded as a
    /// `sysevent-refused` violation) and answers in `sphere_applibs::wire` terms.
    pub fn sysevent_request(&self, app: Uuid, request: &str) -> (String, Option<std::os::fd::OwnedFd>) {
        use sphere_applibs::sysevent::Event;
        use sphere_applibs::wire;
        let error = |why: String| (format!("{}{why}", wire::ERROR), None);
        enum Request {
            Register(u32),
            Defer(Event, u64),
            Resume(Event),
        }
        let parsed = if let Some(mask) = request.strip_prefix(wire::SYSEVENT_REGISTER) {
            mask.trim().parse().map(Request::Register).map_err(|_| format!("bad event mask {mask:?}"))
        } else if let Some(rest) = request.strip_prefix(wire::SYSEVENT_DEFER) {
            let mut parts = rest.split_whitespace();
            match (parts.next().and_then(Event::parse), parts.next().and_then(|s| s.parse().ok())) {
                (Some(event), Some(seconds)) => Ok(Request::Defer(event, seconds)),
                _ => Err(format!("bad defer request {rest:?}")),
            }
        } else if let Some(rest) = request.strip_prefix(wire::SYSEVENT_RESUME) {
            Event::parse(rest.trim()).map(Request::Resume).ok_or_else(|| format!("bad resume request {rest:?}"))
        } else {
            Err("unknown request".to_owned())
        };
        let request = match parsed {
            Ok(r) => r,
            Err(why) => return error(why),
        };
        let (notifications, deferral, name) = {
            let store = lock(&self.store);
            match store.get(app).map(|a| store.manifest(a)) {
                Some(Ok(m)) => {
                    (m.capabilities.system_event_notifications, m.capabilities.software_update_deferral, m.name)
                }
                Some(Err(e)) => return error(e.to_string()),
                None => return error(format!("app {app} is not installed")),
            }
        };
        let needs_deferral = !matches!(request, Request::Register(_));
        let missing = if !notifications {
            Some("SystemEventNotifications")
        } else if needs_deferral && !deferral {
            Some("SoftwareUpdateDeferral")
        } else {
            None
        };
        if let Some(capability) = missing {
            let why = format!("{name} does not have the {capability} capability");
            eprintln!("sphere-appd: system-event request of {app} refused: {why}");
            self.record_violation(app, "sysevent-refused", why.clone());
            return (format!("{}{why}", wire::REFUSED), None);
        }
        match request {
            Request::Register(mask) => match self.sysevents.register(app, mask) {
                Ok(fd) => (wire::OK.to_owned(), Some(fd)),
                Err(e) => error(e.to_string()),
            },
            Request::Defer(event, seconds) => match self.sysevents.defer(app, event, seconds, unix_now()) {
                Ok(until) => {
                    eprintln!("sphere-appd: {name} ({app}) defers {} by {seconds} s: until {until}", event.as_str());
                    (format!("{} {until}", wire::OK), None)
                }
                Err(why) => error(why),
            },
            Request::Resume(event) => match self.sysevents.resume(app, event) {
                Ok(()) => {
                    eprintln!("sphere-appd: {name} ({app}) resumes {}", event.as_str());
                    (wire::OK.to_owned(), None)
                }
                Err(why) => error(why),
            },
        }
    }

    pub fn intercore_policy(&self, app: Uuid, rt: Uuid) -> Result<(), String> {
        let verdict = {
            let store = lock(&self.store);
            let manifest_of = |id: Uuid| store.get(id).map(|a| store.manifest(a));
            match (manifest_of(app), manifest_of(rt)) {
                (Some(Ok(ours)), _) if !ours.capabilities.allowed_application_connections.contains(&rt) => {
                    Err(format!("{} does not list {rt} in AllowedApplicationConnections", ours.name))
                }
                (Some(Ok(_)), None) => Err(format!("no app {rt} is installed")),
                (Some(Ok(_)), Some(Ok(theirs))) if theirs.application_type != ApplicationType::RealTimeCapable => {
                    Err(format!("{} is not a real-time app", theirs.name))
                }
                (Some(Ok(_)), Some(Ok(theirs)))
                    if !theirs.capabilities.allowed_application_connections.contains(&app) =>
                {
                    Err(format!("{} ({rt}) does not list {app} in AllowedApplicationConnections", theirs.name))
                }
                (Some(Ok(_)), Some(Ok(_))) => Ok(()),
                (None, _) => Err(format!("app {app} is not installed")),
                (Some(Err(e)), _) | (_, Some(Err(e))) => Err(e.to_string()),
            }
        };
        if let Err(why) = &verdict {
            eprintln!("sphere-appd: inter-core connection {app} -> {rt} refused: {why}");
            self.record_violation(app, "intercore-refused", why.clone());
        } else {
            eprintln!("sphere-appd: inter-core connection {app} -> {rt} opened");
        }
        verdict
    }

    fn record_violation(&self, id: Uuid, kind: &'static str, detail: String) {
        let now = unix_now();
        let mut runtimes = lock(&self.runtimes);
        let runtime = runtimes.entry(id).or_default();
        add_violations(&mut runtime.violations, kind, 1, now, detail);
    }

    /// Ask the app to stop (SIGTERM, then SIGKILL after its grace period) and wait until it has.
    pub async fn stop(&self, id: Uuid) {
        let supervised = {
            let mut runtimes = lock(&self.runtimes);
            match runtimes.get_mut(&id) {
                Some(runtime) => {
                    runtime.wanted_running = false;
                    runtime.supervised
                }
                None => false,
            }
        };
        if !supervised {
            return;
        }
        self.stop_notify(id).notify_one();
        while lock(&self.runtimes).get(&id).is_some_and(|r| r.supervised) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stop_notify(&self, id: Uuid) -> Arc<Notify> {
        Arc::clone(lock(&self.stop_requests).entry(id).or_insert_with(|| Arc::new(Notify::new())))
    }

    pub fn status(&self, id: Uuid) -> Result<AppStatus, String> {
        let store = lock(&self.store);
        let app = store.get(id).ok_or_else(|| StoreError::NotInstalled(id).to_string())?;
        Ok(self.status_of(app))
    }

    pub fn list(&self) -> Vec<AppStatus> {
        let store = lock(&self.store);
        store.list().map(|app| self.status_of(app)).collect()
    }

    fn status_of(&self, app: &InstalledApp) -> AppStatus {
        let runtimes = lock(&self.runtimes);
        let runtime = runtimes.get(&app.component_id);
        AppStatus {
            component_id: app.component_id.to_string(),
            name: app.name.clone(),
            version: app.version_digest.chars().take(16).collect(),
            state: runtime.map_or("stopped", |r| if r.state.is_empty() { "stopped" } else { r.state }).to_owned(),
            pid: runtime.map_or(0, |r| r.pid),
            restarts: runtime.map_or(0, |r| r.restarts),
            development: app.development,
            last_exit: runtime.map(|r| r.last_exit.clone()).unwrap_or_default(),
        }
    }

    pub fn logs(&self, id: Uuid, max_lines: usize) -> Vec<String> {
        let runtimes = lock(&self.runtimes);
        let Some(runtime) = runtimes.get(&id) else { return Vec::new() };
        let skip = runtime.logs.len().saturating_sub(max_lines);
        runtime.logs.iter().skip(skip).cloned().collect()
    }

    pub fn violations(&self, id: Uuid) -> Vec<Violation> {
        lock(&self.runtimes).get(&id).map(|r| r.violations.values().cloned().collect()).unwrap_or_default()
    }

    fn set_state(&self, id: Uuid, state: &'static str, pid: u32) {
        if let Some(runtime) = lock(&self.runtimes).get_mut(&id) {
            runtime.state = state;
            runtime.pid = pid;
        }
        self.emit(id, state);
    }

    fn emit(&self, id: Uuid, state: &str) {
        let _ = self.events.send((id.to_string(), state.to_owned()));
    }

    fn storage_image(&self, id: Uuid) -> PathBuf {
        self.config.storage_dir.join(format!("{id}.ext4"))
    }

    /// Run the app until it is stopped, restarting it after every exit with backoff.
    async fn supervise(self: Arc<Self>, id: Uuid) {
        let stop = self.stop_notify(id);
        let mut quick_failures: u32 = 0;
        // The firewall sets up the app's network compartment before its first launch.
        let manifest = {
            let store = lock(&self.store);
            store.get(id).map(|app| store.app_dir(app).join(sphere_app_format::package::MANIFEST_PATH))
        };
        crate::network::app_starting(&self.config.runtime_dir.join("sandbox"), id, manifest).await;
        while lock(&self.runtimes).get(&id).is_some_and(|r| r.wanted_running) {
            self.set_state(id, "starting", 0);
            let started = Instant::now();
            let ended = Arc::clone(&self).run_once(id, &stop).await;
            let stopped = !lock(&self.runtimes).get(&id).is_some_and(|r| r.wanted_running);
            self.record_exit(id, &ended);
            if stopped {
                break;
            }
            quick_failures = if started.elapsed() >= HEALTHY_RUN { 1 } else { quick_failures + 1 };
            let delay = Duration::from_millis(500 * 2u64.saturating_pow(quick_failures.min(8))).min(MAX_BACKOFF);
            self.set_state(id, "backoff", 0);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.notified() => break,
            }
            if let Some(runtime) = lock(&self.runtimes).get_mut(&id) {
                runtime.restarts += 1;
            }
        }
        if let Some(runtime) = lock(&self.runtimes).get_mut(&id) {
            runtime.supervised = false;
            runtime.state = "stopped";
            runtime.pid = 0;
        }
        crate::network::app_stopped(id).await;
        self.emit(id, "stopped");
    }

    /// One run of the app in its sandbox.
    async fn run_once(self: Arc<Self>, id: Uuid, stop: &Notify) -> Result<ExitReport, String> {
        // The app's private API socket (Application_Connect): our end is served by a thread,
        // theirs goes through the launcher to fd 4 of the app.
        let (api_ours, api_theirs) =
            sphere_applibs::seqpacket_pair().map_err(|e| format!("cannot create the app's API socket: {e}"))?;
        let api_fd = api_theirs.as_raw_fd();
        let (spec_file, report_file) = self.prepare(id, Some(api_fd))?;
        let mut command =
            tokio::process::Command::from(launcher::command(&self.config.launcher, &spec_file, &report_file));
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // SAFETY: runs in the forked child before exec; fcntl is async-signal-safe and only
        // clears close-on-exec on the one fd the launcher must inherit.
        unsafe {
            command.pre_exec(move || {
                if libc::fcntl(api_fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| format!("cannot start {}: {e}", self.config.launcher.display()))?;
        drop(api_theirs);
        {
            let manager = Arc::clone(&self);
            let broker = self.intercore.clone();
            let spawned = std::thread::Builder::new().name("app-api".into()).spawn(move || {
                crate::intercore::serve_app_api(
                    api_ours,
                    id,
                    broker,
                    |app, rt| manager.intercore_policy(app, rt),
                    |request| manager.sysevent_request(id, request),
                );
            });
            if let Err(error) = spawned {
                eprintln!("sphere-appd: cannot serve the API of {id}: {error}");
            }
        }
        let pid = child.id().unwrap_or(0);
        self.set_state(id, "running", pid);
        let name = lock(&self.store).get(id).map(|a| a.name.clone()).unwrap_or_default();
        let out = child.stdout.take().map(|pipe| self.collect_output(id, name.clone(), pipe));
        let err = child.stderr.take().map(|pipe| self.collect_output(id, name, pipe));
        let status = tokio::select! {
            status = child.wait() => status,
            () = stop.notified() => {
                // SIGTERM to the launcher makes it stop the app: SIGTERM, grace, SIGKILL.
                if pid != 0 {
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
                }
                child.wait().await
            }
        }
        .map_err(|e| e.to_string())?;
        for task in [out, err].into_iter().flatten() {
            let _ = task.await;
        }
        // A stopped or crashed app's registrations and deferrals end with its run.
        self.sysevents.app_stopped(id);
        if status.code() == Some(launcher::SETUP_FAILED) {
            let reason = self.logs(id, 1).pop().unwrap_or_default();
            return Err(format!("the sandbox could not be set up: {reason}"));
        }
        launcher::read_report(&report_file).map_err(|e| format!("launcher ended with {status} and no report ({e})"))
    }

    /// Write the app's sandbox spec (and create its storage on first start).
    fn prepare(&self, id: Uuid, app_api_fd: Option<i32>) -> Result<(PathBuf, PathBuf), String> {
        let (app, manifest, app_root) = {
            let store = lock(&self.store);
            let app = store.get(id).cloned().ok_or_else(|| StoreError::NotInstalled(id).to_string())?;
            let manifest = store.manifest(&app).map_err(|e| e.to_string())?;
            let root = store.app_dir(&app);
            (app, manifest, root)
        };
        let peripherals = match &self.board {
            Some(board) => {
                board.resolve_manifest(&manifest).map_err(|e| sphere_app_format::ResolveErrorList(e).to_string())?
            }
            None => Vec::new(),
        };
        let runtime_dir = &self.config.runtime_dir;
        let context = LaunchContext {
            app_root,
            uid: app.uid,
            gid: app.uid,
            storage_image: self.storage_image(id),
            storage_host_mount: runtime_dir.join("storage").join(id.to_string()),
            limits: CgroupLimits::default(),
            requested_limits: None,
            cgroup_parent: self.config.cgroup_parent.clone(),
            runtime_dir: runtime_dir.join("sandbox"),
        };
        let mut spec = spec_from_manifest(&manifest, &peripherals, &context).map_err(|e| e.to_string())?;
        spec.app_api_fd = app_api_fd;
        spec.resolv_conf = crate::network::resolv_conf(id);
        if let Some(storage) = &spec.storage {
            if !storage.image.exists() {
                std::fs::create_dir_all(&self.config.storage_dir).map_err(|e| e.to_string())?;
                storage::create_image(&storage.image, storage.quota_bytes, app.uid, app.uid)
                    .map_err(|e| format!("cannot create the app's storage: {e}"))?;
            }
        }
        let specs = runtime_dir.join("specs");
        std::fs::create_dir_all(&specs).map_err(|e| e.to_string())?;
        let spec_file = specs.join(format!("{id}.json"));
        let report_file = specs.join(format!("{id}.report.json"));
        let _ = std::fs::remove_file(&report_file);
        let json = serde_json::to_vec(&spec).map_err(|e| e.to_string())?;
        fs_atomic::write_bytes(&spec_file, 0o600, &json).map_err(|e| e.to_string())?;
        Ok((spec_file, report_file))
    }

    /// Keep an app's output lines (bounded) and echo them to our log with the app's name.
    fn collect_output(
        &self,
        id: Uuid,
        name: String,
        pipe: impl AsyncRead + Unpin + Send + 'static,
    ) -> tokio::task::JoinHandle<Vec<String>> {
        let limit = self.config.log_lines;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[{name}] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
            Vec::new()
        });
        // Output collectors outlive a borrow of `self`; they share the map through its Arc.
        let runtimes = Arc::clone(&self.runtimes);
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                if let Some(runtime) = lock(&runtimes).get_mut(&id) {
                    runtime.logs.push_back(line);
                    while runtime.logs.len() > limit {
                        runtime.logs.pop_front();
                    }
                }
            }
        });
        reader
    }

    fn record_exit(&self, id: Uuid, ended: &Result<ExitReport, String>) {
        let mut runtimes = lock(&self.runtimes);
        let Some(runtime) = runtimes.get_mut(&id) else { return };
        let now = unix_now();
        let mut count = |kind: &'static str, n: u64, detail: String| {
            if n == 0 {
                return;
            }
            add_violations(&mut runtime.violations, kind, n, now, detail);
        };
        match ended {
            Ok(report) => {
                let v = &report.violations;
                count("seccomp-kill", v.seccomp_kills, "killed by the seccomp filter".into());
                count("landlock-denied", v.landlock_denials_reported, "reported by the app's wrapper".into());
                count("oom-kill", v.oom_kills, "memory limit reached".into());
                count("pids-max", v.pids_max_hits, "process limit reached".into());
                count("crash", v.crashes, format!("{:?}", report.cause));
                runtime.last_exit = describe_cause(&report.cause);
            }
            Err(error) => runtime.last_exit = format!("launch failed: {error}"),
        }
    }
}

/// The inter-core link named by the configuration, if this device has it. A missing link is not
/// fatal: apps run, and their connect requests are answered "no link".
fn open_intercore(config: &Config) -> Option<Arc<Broker>> {
    let device = match (&config.intercore_device, &config.intercore_port) {
        (Some(device), _) => device.clone(),
        (None, Some(name)) => crate::intercore::find_virtio_port(name)?,
        (None, None) => return None,
    };
    let opened = std::fs::OpenOptions::new().read(true).write(true).open(&device).and_then(|mut link| {
        if config.development_mode_flag.exists() {
            raw_echo_bench_if_asked(config, &mut link);
        }
        Broker::start(link)
    });
    match opened {
        Ok(broker) => {
            eprintln!("sphere-appd: inter-core link on {}", device.display());
            Some(broker)
        }
        Err(error) => {
            eprintln!("sphere-appd: cannot open the inter-core link {}: {error}", device.display());
            None
        }
    }
}

/// The raw-echo baseline of scripts/bench-intercore.sh, when its flag file (on the data
/// partition, development mode only) asks for it: "COUNT SIZE". Figures go to our log.
fn raw_echo_bench_if_asked(config: &Config, link: &mut std::fs::File) {
    let Ok(text) = std::fs::read_to_string(&config.intercore_bench_flag) else { return };
    let mut words = text.split_whitespace().map(|w| w.parse::<usize>().ok());
    let (Some(Some(count)), Some(Some(size))) = (words.next(), words.next()) else {
        eprintln!("sphere-appd: {}: want \"COUNT SIZE\"", config.intercore_bench_flag.display());
        return;
    };
    let (count, size) = (count.clamp(1, 10_000), size.clamp(1, 1024));
    // The other daemons are still starting (TCG runs them on the same emulated CPU): let them
    // settle first, or the baselines would be timed on a busier guest than the framed echo
    // that the app runs later, which flatters the framed figure.
    std::thread::sleep(std::time::Duration::from_secs(8));
    // Both baselines: bytes echoed as they arrive, then whole messages echoed once complete.
    for (name, per_message) in [("raw-echo", false), ("raw-message-echo", true)] {
        match crate::intercore::raw_echo_bench(link, count, size, per_message) {
            Ok(mut times) => {
                times.sort();
                let at = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)].as_micros();
                eprintln!(
                    "sphere-appd: intercore {name} ok={}/{count} size={size} median_us={} p99_us={}",
                    times.len(),
                    at(50),
                    at(99)
                );
            }
            Err(error) => eprintln!("sphere-appd: intercore {name} failed: {error}"),
        }
    }
}

fn describe_cause(cause: &ExitCause) -> String {
    match cause {
        ExitCause::Exited { code } => format!("exit {code}"),
        ExitCause::Stopped { signal } => format!("stopped (signal {signal})"),
        ExitCause::SeccompKill { .. } => "seccomp kill".to_owned(),
        ExitCause::OomKill { .. } => "oom kill".to_owned(),
        ExitCause::Crashed { signal } => format!("crash (signal {signal})"),
        ExitCause::Killed { signal } => format!("signal {signal}"),
    }
}

/// Create the cgroup every app's cgroup lives in, with the memory, pids and cpu controllers
/// delegated down to it from the root. Failures are reported, not fatal: the launcher then
/// reports the limits it cannot enforce as degradations instead of starting apps unlimited.
fn prepare_cgroup_parent(parent: &std::path::Path) {
    if let Err(error) = std::fs::create_dir_all(parent) {
        eprintln!("sphere-appd: cannot create {}: {error}", parent.display());
        return;
    }
    let mut ancestors: Vec<&std::path::Path> = parent.ancestors().skip(1).collect();
    ancestors.reverse();
    for ancestor in ancestors.into_iter().filter(|a| a.join("cgroup.subtree_control").exists()) {
        let control = ancestor.join("cgroup.subtree_control");
        if let Err(error) = std::fs::write(&control, "+memory +pids +cpu") {
            eprintln!("sphere-appd: cannot enable controllers in {}: {error}", control.display());
        }
    }
}

/// Count `n` more violations of `kind` at `now`, keeping the first time seen and the latest detail.
fn add_violations(
    violations: &mut BTreeMap<&'static str, Violation>,
    kind: &'static str,
    n: u64,
    now: u64,
    detail: String,
) {
    let entry = violations.entry(kind).or_insert_with(|| Violation {
        kind: kind.to_owned(),
        count: 0,
        first_seen: now,
        last_seen: now,
        detail: String::new(),
    });
    entry.count += n;
    entry.last_seen = now;
    entry.detail = detail;
}

#[cfg(test)]
mod sysevent_tests {
    use super::*;
    use sphere_app_format::keys::SigningKeyPair;
    use sphere_app_format::package::{Limits, build_package};
    use sphere_applibs::sysevent::{Event, EventInfo, Status, UpdateType};
    use std::path::Path;

    const NONE: Uuid = Uuid::from_u128(0x5b0d7c1e_2a4f_4e8b_9c3d_1f2e3a4b5c70);
    const NOTIFY: Uuid = Uuid::from_u128(0x5b0d7c1e_2a4f_4e8b_9c3d_1f2e3a4b5c71);
    const BOTH: Uuid = Uuid::from_u128(0x5b0d7c1e_2a4f_4e8b_9c3d_1f2e3a4b5c72);

    fn package(dir: &Path, key: &SigningKeyPair, id: Uuid, capabilities: &str) -> PathBuf {
        let app = dir.join(id.to_string());
        std::fs::create_dir_all(app.join("bin")).expect("mkdir");
        std::fs::write(app.join("bin/app"), b"not run in this test").expect("app");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(app.join("bin/app"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let manifest = format!(
            r#"{{"SchemaVersion":1,"Name":"app-{id}","ComponentId":"{id}","EntryPoint":"/bin/app","Capabilities":{capabilities}}}"#
        );
        std::fs::write(app.join("app_manifest.json"), manifest).expect("manifest");
        let out = dir.join(format!("{id}.sphpkg"));
        build_package(&app, key, &out, &Limits::default()).expect("package");
        out
    }

    #[test]
    fn system_event_requests_need_the_manifest_capabilities() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let config = Config {
            store_dir: root.join("store"),
            storage_dir: root.join("storage"),
            trusted_keys_dir: root.join("keys"),
            development_keys_dir: root.join("dev-keys"),
            development_mode_flag: root.join("devmode"),
            inbox_dir: root.join("inbox"),
            runtime_dir: root.join("run"),
            cgroup_parent: root.join("cgroup"),
            dev_port: None,
            intercore_port: None,
            intercore_device: None,
            ..Config::default()
        };
        let manager = Manager::open(config).expect("open");
        let key = SigningKeyPair::generate();
        let mut trust = DeviceTrust::default();
        trust.release.add(key.public_key());
        for (id, capabilities) in [
            (NONE, "{}"),
            (NOTIFY, r#"{"SystemEventNotifications":true}"#),
            (BOTH, r#"{"SystemEventNotifications":true,"SoftwareUpdateDeferral":true}"#),
        ] {
            let file = std::fs::File::open(package(root, &key, id, capabilities)).expect("open package");
            lock(&manager.store).install(file, &trust, None).expect("install");
        }
        let register = format!("{}{}", sphere_applibs::wire::SYSEVENT_REGISTER, Event::UpdateReadyForInstall.bit());
        let defer = format!("{}update-ready-for-install 864000", sphere_applibs::wire::SYSEVENT_DEFER);
        let resume = format!("{}update-ready-for-install", sphere_applibs::wire::SYSEVENT_RESUME);

        // No SystemEventNotifications: not even registering.
        let (reply, fd) = manager.sysevent_request(NONE, &register);
        assert!(reply.starts_with("refused ") && reply.contains("SystemEventNotifications"), "{reply}");
        assert!(fd.is_none());
        let (reply, fd) = manager.sysevent_request(NOTIFY, &register);
        assert_eq!((reply.as_str(), fd.is_some()), ("ok", true));

        let now = unix_now();
        let deadline = now + 86_400;
        manager.announce_system_event(EventInfo {
            event: Event::UpdateReadyForInstall,
            status: Status::Pending,
            update_type: Some(UpdateType::System),
            release: "r2".into(),
            deferred_until: 0,
            deadline,
        });
        // SystemEventNotifications alone: defer and resume are refused and counted.
        for request in [&defer, &resume] {
            let (reply, _) = manager.sysevent_request(NOTIFY, request);
            assert!(reply.starts_with("refused ") && reply.contains("SoftwareUpdateDeferral"), "{reply}");
        }
        let refused = manager.violations(NOTIFY);
        assert_eq!(refused.iter().find(|v| v.kind == "sysevent-refused").map(|v| v.count), Some(2), "{refused:?}");
        // Both capabilities: ten days asked, the deadline granted, reported to the updater.
        let (reply, _) = manager.sysevent_request(BOTH, &defer);
        assert_eq!(reply, format!("ok {deadline}"));
        let pending = EventInfo {
            event: Event::UpdateReadyForInstall,
            status: Status::Deferred,
            update_type: Some(UpdateType::System),
            release: "r2".into(),
            deferred_until: deadline,
            deadline,
        };
        assert_eq!(manager.announce_system_event(pending.clone()), vec![(BOTH, deadline)]);
        assert_eq!(manager.sysevent_request(BOTH, &resume).0, "ok");
        assert!(manager.announce_system_event(pending).is_empty());
        // Malformed requests are errors, not refusals.
        let (reply, _) = manager.sysevent_request(BOTH, "sysevent-defer soon");
        assert!(reply.starts_with("error "), "{reply}");
        assert!(manager.sysevent_request(BOTH, "sysevent-register x").0.starts_with("error "));
    }
}
