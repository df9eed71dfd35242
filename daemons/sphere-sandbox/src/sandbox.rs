//! Launching an app into its sandbox, and what the launcher learns when it ends.

use crate::cgroup::{self, AppCgroup};
use crate::child::{self, ChildPlan};
use crate::features::{self, CgroupSupport, Degradations};
use crate::seccomp;
use crate::spec::{APP_MOUNT, STORAGE_MOUNT, SandboxSpec, SpecError};
use crate::storage;
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why an app could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid sandbox spec: {0}")]
    Spec(#[from] SpecError),
    #[error("spawn needs a single-threaded caller (found {0} threads); run sphere-sandbox-exec instead")]
    NotSingleThreaded(usize),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("seccomp policy: {0}")]
    Seccomp(#[from] seccomp::PolicyError),
    #[error("sandbox setup failed in the child: {0}")]
    Setup(String),
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> SandboxError {
    let context = context.into();
    move |source| SandboxError::Io { context, source }
}

/// How an app process ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum ExitCause {
    /// It exited by itself.
    Exited { code: i32 },
    /// It ended after we asked it to stop (SIGTERM honoured, or SIGKILL after the grace period).
    Stopped { signal: i32 },
    /// seccomp killed it (a syscall on the kill list): SIGSYS.
    SeccompKill { signal: i32 },
    /// The kernel's OOM killer ended it at its cgroup's memory limit.
    OomKill { signal: i32 },
    /// A fault signal: SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP.
    Crashed { signal: i32 },
    /// Any other signal.
    Killed { signal: i32 },
}

/// Denials observed during one run, for the app manager's per-app telemetry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violations {
    /// The app's main process was killed by seccomp (children killed by seccomp are visible
    /// only in the kernel audit log).
    pub seccomp_kills: u64,
    /// Landlock denials the app's wrapper reported on its telemetry pipe.
    pub landlock_denials_reported: u64,
    /// OOM kills in the app's cgroup (any of its processes).
    pub oom_kills: u64,
    /// Forks refused at `pids.max`.
    pub pids_max_hits: u64,
    /// The main process crashed (fault signal).
    pub crashes: u64,
}

/// What the launcher reports when an app process has ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitReport {
    pub component_id: String,
    #[serde(flatten)]
    pub cause: ExitCause,
    pub violations: Violations,
    pub runtime_ms: u64,
    pub degradations: Degradations,
}

/// Classify a wait status (`si_code`, `si_status`) given what we know.
pub fn classify(code: i32, status: i32, stop_requested: bool, oom_kills: u64) -> ExitCause {
    if code == libc::CLD_EXITED {
        return ExitCause::Exited { code: status };
    }
    let signal = status;
    match signal {
        libc::SIGSYS => ExitCause::SeccompKill { signal },
        libc::SIGKILL if oom_kills > 0 => ExitCause::OomKill { signal },
        libc::SIGTERM | libc::SIGKILL if stop_requested => ExitCause::Stopped { signal },
        libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE | libc::SIGABRT | libc::SIGTRAP => {
            ExitCause::Crashed { signal }
        }
        _ => ExitCause::Killed { signal },
    }
}

/// A running sandboxed app process.
#[derive(Debug)]
pub struct SandboxedChild {
    component_id: String,
    pid: i32,
    pidfd: OwnedFd,
    cgroup: Option<AppCgroup>,
    telemetry: Option<File>,
    telemetry_buffer: Vec<u8>,
    landlock_reports: u64,
    stop_requested: bool,
    started: Instant,
    degradations: Degradations,
    report: Option<ExitReport>,
}

/// What the kernel offers, probed once per launcher.
pub fn probe() -> (Degradations, CgroupSupport) {
    let (support, _) = cgroup::detect();
    (Degradations::for_kernel(features::landlock_abi(), &support), support)
}

fn thread_count() -> usize {
    fs::read_dir("/proc/self/task").map(|dir| dir.count()).unwrap_or(0)
}

fn pipe_cloexec() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|errno| SandboxError::Io { context: "pipe".into(), source: errno.into() })
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Make the host-side directories of a sandbox: the root's mount points and the device nodes.
///
/// The sandbox root is a directory of empty mount points on the host (owned by root, mode 0700:
/// no other app can reach it), bind-mounted read-only as the app's `/`. Device nodes are made
/// here, by the launcher, because a user namespace may not create device nodes: a per-app
/// directory on a `dev`-capable tmpfs holds `null zero full random urandom` (0666) and the granted
/// nodes (owner the app's uid, mode 0600), so a granted node is openable by that app only.
fn prepare_host_dirs(spec: &SandboxSpec) -> Result<(PathBuf, PathBuf), SandboxError> {
    let runtime = &spec.runtime_dir;
    if !runtime.is_dir() {
        fs::create_dir_all(runtime).map_err(io_error(format!("create {}", runtime.display())))?;
    }
    // Only root may traverse it: it holds every app's root, devices and network namespace.
    let mode = fs::metadata(runtime).map_err(io_error("stat runtime dir"))?.permissions().mode();
    if mode & 0o777 != 0o700 {
        fs::set_permissions(runtime, fs::Permissions::from_mode(0o700)).map_err(io_error("chmod runtime dir"))?;
    }
    let root = runtime.join("root").join(&spec.component_id);
    for sub in ["app", "dev", "tmp", "proc", &STORAGE_MOUNT[1..]] {
        let dir = root.join(sub);
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(io_error(format!("create {}", dir.display())))?;
        }
    }
    if spec.resolv_conf.is_some() {
        // The mount point of the app's /etc/resolv.conf (an empty file the bind covers).
        let etc = root.join("etc");
        fs::create_dir_all(&etc).map_err(io_error("create etc mount point"))?;
        let target = etc.join("resolv.conf");
        if !target.exists() {
            File::create(&target).map_err(io_error("create resolv.conf mount point"))?;
        }
    }
    debug_assert_eq!(&APP_MOUNT[1..], "app");
    let devices = runtime.join("dev");
    fs::create_dir_all(&devices).map_err(io_error("create device dir"))?;
    // Launchers of different apps may start together (at boot): the first mounts the shared
    // device tmpfs, under a lock so no other mounts a second one over it.
    let lock = File::create(runtime.join("lock")).map_err(io_error("open runtime lock"))?;
    // SAFETY: flock on a file we own; released when `lock` is dropped at the end of this function.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io_error("lock runtime dir")(io::Error::last_os_error()));
    }
    if !storage::is_mounted(&devices) {
        // Our own small tmpfs: /run is usually nodev, and these nodes must open.
        nix::mount::mount(
            Some("tmpfs"),
            &devices,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NOEXEC,
            Some("mode=0700,size=256k"),
        )
        .map_err(|errno| SandboxError::Io { context: "mount device tmpfs".into(), source: errno.into() })?;
    }
    let dev_dir = devices.join(&spec.component_id);
    let mut nodes = Vec::new();
    for path in crate::landlock_rules::STANDARD_DEVICES {
        nodes.push(DeviceNode::of(Path::new(path), 0o666, None)?);
    }
    for grant in &spec.devices {
        nodes.push(DeviceNode::of(&grant.path, 0o600, Some((spec.uid, spec.gid)))?);
    }
    // Rebuilt only when the grants (or a host node's numbers) changed since the last launch:
    // the stamp, outside the app's directory, records what the directory holds.
    let stamp_path = devices.join(format!("{}.stamp", spec.component_id));
    let stamp: String = nodes.iter().map(DeviceNode::describe).collect();
    if dev_dir.is_dir() && fs::read_to_string(&stamp_path).is_ok_and(|old| old == stamp) {
        return Ok((root, dev_dir));
    }
    if dev_dir.exists() {
        fs::remove_dir_all(&dev_dir).map_err(io_error("clear device dir"))?;
    }
    fs::create_dir(&dev_dir).map_err(io_error("create app device dir"))?;
    fs::set_permissions(&dev_dir, fs::Permissions::from_mode(0o755)).map_err(io_error("chmod app device dir"))?;
    for node in &nodes {
        node.make_in(&dev_dir)?;
    }
    fs::write(&stamp_path, stamp).map_err(io_error("write device stamp"))?;
    Ok((root, dev_dir))
}

/// A host device node to copy into an app's `/dev`, with the owner and mode the app gets.
struct DeviceNode<'a> {
    host: &'a Path,
    kind: libc::mode_t,
    rdev: u64,
    mode: u32,
    owner: Option<(u32, u32)>,
}

impl<'a> DeviceNode<'a> {
    fn of(host: &'a Path, mode: u32, owner: Option<(u32, u32)>) -> Result<Self, SandboxError> {
        let metadata = fs::metadata(host).map_err(io_error(format!("granted device {}", host.display())))?;
        let file_type = metadata.file_type();
        let kind = if file_type.is_char_device() {
            libc::S_IFCHR
        } else if file_type.is_block_device() {
            libc::S_IFBLK
        } else {
            return Err(SandboxError::Io {
                context: format!("granted device {}", host.display()),
                source: io::Error::other("not a device node"),
            });
        };
        Ok(DeviceNode { host, kind, rdev: metadata.rdev(), mode, owner })
    }

    fn describe(&self) -> String {
        format!("{} {} {} {:o} {:?}\n", self.host.display(), self.kind, self.rdev, self.mode, self.owner)
    }

    /// mknod the copy (same path below /dev) with our owner and mode.
    fn make_in(&self, dev_dir: &Path) -> Result<(), SandboxError> {
        let relative = self.host.strip_prefix("/dev").unwrap_or(self.host);
        let target = dev_dir.join(relative);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_error("create device subdir"))?;
        }
        let c_target = CString::new(target.as_os_str().as_encoded_bytes())
            .map_err(|_| SandboxError::Io { context: "device path".into(), source: io::Error::other("NUL in path") })?;
        // SAFETY: mknod with a valid NUL-terminated path.
        if unsafe { libc::mknod(c_target.as_ptr(), self.kind | self.mode, self.rdev as libc::dev_t) } != 0 {
            return Err(io_error(format!("mknod {}", target.display()))(io::Error::last_os_error()));
        }
        // The umask may have narrowed the mode given to mknod.
        fs::set_permissions(&target, fs::Permissions::from_mode(self.mode)).map_err(io_error("chmod device"))?;
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(&target, Some(uid), Some(gid)).map_err(io_error("chown device"))?;
        }
        Ok(())
    }
}

fn cstring(text: &str, what: &str) -> Result<CString, SandboxError> {
    CString::new(text)
        .map_err(|_| SandboxError::Spec(SpecError::Invalid { field: "args/env", reason: format!("NUL in {what}") }))
}

/// Start the app described by `spec` in its sandbox.
///
/// The caller must be single-threaded (checked): the child runs launcher code between `clone3`
/// and `execve`, which is only safe when no other thread can hold a lock at the time of the
/// clone. A multi-threaded app manager (tokio) runs the `sphere-sandbox-exec` launcher instead.
/// Must run as root (it writes id maps, cgroups and mounts).
pub fn spawn(spec: &SandboxSpec) -> Result<SandboxedChild, SandboxError> {
    spec.validate()?;
    let threads = thread_count();
    if threads != 1 {
        return Err(SandboxError::NotSingleThreaded(threads));
    }
    let (degradations, support) = probe();
    if let Some(storage) = &spec.storage {
        storage::ensure_mounted(&storage.image, &storage.host_mount)
            .map_err(io_error(format!("mount storage {}", storage.image.display())))?;
    }
    let (root_dir, dev_dir) = prepare_host_dirs(spec)?;
    let app_cgroup = AppCgroup::create(&support, &spec.cgroup_parent, &spec.component_id, &spec.limits)
        .map_err(io_error("create cgroup"))?;
    let policy = seccomp::build_policy()?;
    let entry_point = cstring(&spec.sandbox_entry_point(), "entry point")?;
    let mut argv = vec![entry_point.clone()];
    for arg in &spec.args {
        argv.push(cstring(arg, "args")?);
    }
    let mut envp = Vec::new();
    for (key, value) in &spec.env {
        envp.push(cstring(&format!("{key}={value}"), "env")?);
    }
    let (telemetry_read, telemetry_write) = if spec.telemetry {
        let (read, write) = pipe_cloexec()?;
        envp.push(cstring(&format!("SPHERE_TELEMETRY_FD={}", crate::spec::TELEMETRY_FD), "env")?);
        (Some(read), Some(write))
    } else {
        (None, None)
    };
    if spec.app_api_fd.is_some() {
        envp.push(cstring(&format!("SPHERE_APP_API_FD={}", crate::spec::APP_API_FD), "env")?);
    }
    let (sync_read, sync_write) = pipe_cloexec()?;
    let (error_read, error_write) = pipe_cloexec()?;
    let cgroup_dir = match app_cgroup.as_ref().and_then(AppCgroup::v2_dir) {
        Some(dir) => Some(File::open(dir).map_err(io_error("open cgroup"))?),
        None => None,
    };
    let plan = ChildPlan {
        spec,
        root_dir: &root_dir,
        dev_dir: &dev_dir,
        landlock_abi: degradations.landlock_abi,
        seccomp: &policy,
        entry_point,
        argv,
        envp,
        sync_read: sync_read.as_raw_fd(),
        v1_task_files: app_cgroup.as_ref().map(AppCgroup::v1_task_files).unwrap_or_default(),
        error_write: error_write.as_raw_fd(),
        telemetry_write: telemetry_write.as_ref().map(AsRawFd::as_raw_fd),
    };

    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: (libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWCGROUP
            | libc::CLONE_PIDFD) as u64,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    if let Some(dir) = &cgroup_dir {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = dir.as_raw_fd() as u64;
    }
    // Join the app's pinned network namespace (created on its first start); the child inherits it.
    crate::netns::enter(&spec.runtime_dir, &spec.component_id).map_err(io_error("network namespace"))?;
    let started = Instant::now();
    // SAFETY: clone3 without a new stack behaves like fork: the child continues on a copy of our
    // (single-threaded, checked above) address space and never returns from `child::run`.
    let pid = unsafe { libc::syscall(libc::SYS_clone3, &mut args as *mut CloneArgs, std::mem::size_of::<CloneArgs>()) };
    if pid == 0 {
        child::run(&plan);
    }
    if pid < 0 {
        let error = io::Error::last_os_error();
        return Err(io_error("clone3")(error));
    }
    let pid = pid as i32;
    // SAFETY: CLONE_PIDFD stored a fresh pidfd that we now own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop(sync_read);
    drop(error_write);
    drop(telemetry_write);
    let mut child = SandboxedChild {
        component_id: spec.component_id.clone(),
        pid,
        pidfd,
        cgroup: app_cgroup,
        telemetry: telemetry_read.map(File::from),
        telemetry_buffer: Vec::new(),
        landlock_reports: 0,
        stop_requested: false,
        started,
        degradations,
        report: None,
    };
    if let Err(error) = finish_launch(&child, spec, sync_write, error_read) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(error);
    }
    if let Some(telemetry) = &child.telemetry {
        set_nonblocking(telemetry.as_raw_fd());
    }
    Ok(child)
}

/// The launcher's half of the handshake: id maps, release the child, then wait
/// until it has exec'ed (the error pipe closes) or report why it could not.
fn finish_launch(
    child: &SandboxedChild,
    spec: &SandboxSpec,
    sync_write: OwnedFd,
    error_read: OwnedFd,
) -> Result<(), SandboxError> {
    let proc_dir = PathBuf::from(format!("/proc/{}", child.pid));
    // The app's ids map to themselves and nothing else: host root is unmapped inside, so files
    // of host root show as nobody and no id inside can become root outside.
    fs::write(proc_dir.join("uid_map"), format!("{0} {0} 1\n", spec.uid)).map_err(io_error("write uid_map"))?;
    fs::write(proc_dir.join("gid_map"), format!("{0} {0} 1\n", spec.gid)).map_err(io_error("write gid_map"))?;
    // A failed write means the child is gone; the error pipe then says why.
    let released = io::Write::write_all(&mut File::from(sync_write), b"g");
    let mut message = String::new();
    File::from(error_read).read_to_string(&mut message).map_err(io_error("read child status"))?;
    match (message.is_empty(), released) {
        (true, Ok(())) => Ok(()),
        (true, Err(error)) => Err(SandboxError::Setup(format!("the child exited during setup ({error})"))),
        (false, _) => Err(SandboxError::Setup(message)),
    }
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl flag manipulation on an fd we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

const P_PIDFD: libc::idtype_t = 3;

impl SandboxedChild {
    /// Host pid of the app's main process (pid 1 in its own pid namespace).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A pidfd of the app's main process: readable once it has exited.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    pub fn degradations(&self) -> &Degradations {
        &self.degradations
    }

    /// Send a signal through the pidfd (never hits a recycled pid).
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        // SAFETY: pidfd_send_signal with our pidfd and no siginfo.
        let result = unsafe {
            libc::syscall(libc::SYS_pidfd_send_signal, self.pidfd.as_raw_fd(), signal, std::ptr::null::<u8>(), 0u32)
        };
        if result == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }

    fn kill(&self) -> io::Result<()> {
        self.signal(libc::SIGKILL)
    }

    /// Read whatever the app's wrapper reported on the telemetry pipe (bounded).
    fn drain_telemetry(&mut self) {
        let Some(pipe) = self.telemetry.as_mut() else { return };
        let mut chunk = [0u8; 4096];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.telemetry_buffer.extend_from_slice(&chunk[..n]),
            }
        }
        while let Some(end) = self.telemetry_buffer.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = self.telemetry_buffer.drain(..=end).collect();
            if line.starts_with(b"landlock-denied") {
                self.landlock_reports = self.landlock_reports.saturating_add(1);
            }
        }
        // A line without newline longer than this is garbage: an app cannot make us buffer more.
        if self.telemetry_buffer.len() > 4096 {
            self.telemetry_buffer.clear();
        }
    }

    /// Wait until the app exits, or `deadline` passes (`None`: still running), or `stop_fd`
    /// becomes readable (returns `None` too; the caller then calls [`Self::stop`]).
    pub fn wait_until(
        &mut self,
        deadline: Option<Instant>,
        stop_fd: Option<BorrowedFd<'_>>,
    ) -> Result<Option<ExitReport>, SandboxError> {
        if let Some(report) = &self.report {
            return Ok(Some(report.clone()));
        }
        loop {
            let timeout = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    i32::try_from(left.as_millis()).unwrap_or(i32::MAX)
                }
                None => -1,
            };
            let mut fds = vec![libc::pollfd { fd: self.pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
            if let Some(telemetry) = &self.telemetry {
                fds.push(libc::pollfd { fd: telemetry.as_raw_fd(), events: libc::POLLIN, revents: 0 });
            }
            let stop_index = stop_fd.map(|fd| {
                fds.push(libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 });
                fds.len() - 1
            });
            // SAFETY: fds is a valid array of pollfd for the duration of the call.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if ready < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(io_error("poll")(error));
            }
            if fds.len() > 1 && fds[1].revents != 0 && self.telemetry.is_some() {
                self.drain_telemetry();
                if fds[1].revents & libc::POLLHUP != 0 {
                    self.telemetry = None; // Every writer closed it; nothing more will come.
                }
            }
            if fds[0].revents != 0 {
                return self.reap().map(Some);
            }
            if stop_index.is_some_and(|index| fds[index].revents != 0) {
                return Ok(None);
            }
            if ready == 0 && deadline.is_some() {
                return Ok(None);
            }
        }
    }

    /// Wait for the app to exit.
    pub fn wait(&mut self) -> Result<ExitReport, SandboxError> {
        loop {
            if let Some(report) = self.wait_until(None, None)? {
                return Ok(report);
            }
        }
    }

    /// Stop the app the Azure Sphere way: SIGTERM, then SIGKILL after `grace`.
    ///
    /// The app is pid 1 of its pid namespace, and the kernel never delivers a signal to a
    /// namespace's init that it has no handler for, except SIGKILL: an app without a SIGTERM
    /// handler therefore ends only at the SIGKILL, `grace` later.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitReport, SandboxError> {
        self.stop_requested = true;
        if self.report.is_none() {
            let _ = self.signal(libc::SIGTERM);
            if let Some(report) = self.wait_until(Some(Instant::now() + grace), None)? {
                return Ok(report);
            }
            let _ = self.kill();
        }
        self.wait()
    }

    fn reap(&mut self) -> Result<ExitReport, SandboxError> {
        // SAFETY: zeroed siginfo is valid; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our pidfd with a valid siginfo pointer.
        let result = unsafe { libc::waitid(P_PIDFD, self.pidfd.as_raw_fd() as libc::id_t, &mut info, libc::WEXITED) };
        if result != 0 {
            return Err(io_error("waitid")(io::Error::last_os_error()));
        }
        self.drain_telemetry();
        // SAFETY: for a CLD_* siginfo from waitid, si_status is the valid union member.
        let status = unsafe { info.si_status() };
        let oom_kills = self.cgroup.as_ref().map_or(0, AppCgroup::oom_kills);
        let pids_max_hits = self.cgroup.as_ref().map_or(0, AppCgroup::pids_max_hits);
        let cause = classify(info.si_code, status, self.stop_requested, oom_kills);
        let violations = Violations {
            seccomp_kills: u64::from(matches!(cause, ExitCause::SeccompKill { .. })),
            landlock_denials_reported: self.landlock_reports,
            oom_kills,
            pids_max_hits,
            crashes: u64::from(matches!(cause, ExitCause::Crashed { .. })),
        };
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill_leftovers();
        }
        let report = ExitReport {
            component_id: self.component_id.clone(),
            cause,
            violations,
            runtime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            degradations: self.degradations.clone(),
        };
        self.report = Some(report.clone());
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_causes_are_told_apart() {
        assert_eq!(classify(libc::CLD_EXITED, 3, false, 0), ExitCause::Exited { code: 3 });
        assert_eq!(classify(libc::CLD_KILLED, libc::SIGSYS, false, 0), ExitCause::SeccompKill { signal: libc::SIGSYS });
        assert_eq!(classify(libc::CLD_DUMPED, libc::SIGSYS, false, 0), ExitCause::SeccompKill { signal: libc::SIGSYS });
        assert_eq!(classify(libc::CLD_KILLED, libc::SIGKILL, false, 1), ExitCause::OomKill { signal: libc::SIGKILL });
        assert_eq!(classify(libc::CLD_KILLED, libc::SIGKILL, true, 0), ExitCause::Stopped { signal: libc::SIGKILL });
        assert_eq!(classify(libc::CLD_KILLED, libc::SIGTERM, true, 0), ExitCause::Stopped { signal: libc::SIGTERM });
        assert_eq!(classify(libc::CLD_KILLED, libc::SIGTERM, false, 0), ExitCause::Killed { signal: libc::SIGTERM });
        assert_eq!(classify(libc::CLD_DUMPED, libc::SIGSEGV, false, 0), ExitCause::Crashed { signal: libc::SIGSEGV });
    }

    #[test]
    fn reports_serialize_flat() {
        let report = ExitReport {
            component_id: "x".into(),
            cause: ExitCause::SeccompKill { signal: 31 },
            violations: Violations::default(),
            runtime_ms: 5,
            degradations: Degradations::default(),
        };
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["cause"], "seccomp_kill");
        assert_eq!(json["signal"], 31);
    }
}
