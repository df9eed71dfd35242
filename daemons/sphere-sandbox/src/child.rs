//! The sandboxed child between `clone3` and `execve`: it builds its own root and drops
//! everything, in an order where each step still has the rights it needs.
//!
//! The child runs in a copy of the single-threaded launcher, so allocating is safe here. Every
//! failure is written to the error pipe (as "stage: error") and ends the child with status 125;
//! a successful `execve` closes the pipe (close-on-exec), which is how the launcher knows the app
//! is running.

use crate::landlock_rules;
use crate::seccomp::Policy;
use crate::spec::{APP_API_FD, APP_MOUNT, LogTarget, STORAGE_MOUNT, SandboxSpec, TELEMETRY_FD};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::path::Path;

/// Everything the child needs, prepared by the launcher before `clone3`.
pub(crate) struct ChildPlan<'a> {
    pub spec: &'a SandboxSpec,
    /// Host directory holding the sandbox root's mount points (app, dev, tmp, proc, mnt/config).
    pub root_dir: &'a Path,
    /// Host directory with this app's device nodes.
    pub dev_dir: &'a Path,
    pub landlock_abi: u32,
    pub seccomp: &'a Policy,
    pub entry_point: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// Read end: one byte once the launcher has written the id maps.
    pub sync_read: RawFd,
    /// v1 hosts only: `tasks` files to move ourselves into (v2 clones us into our cgroup).
    pub v1_task_files: Vec<std::path::PathBuf>,
    /// Write end (close-on-exec): setup errors.
    pub error_write: RawFd,
    /// Write end of the telemetry pipe, moved to TELEMETRY_FD.
    pub telemetry_write: Option<RawFd>,
}

type Step = Result<(), String>;

fn errno(context: &str) -> impl Fn(nix::errno::Errno) -> String + '_ {
    move |error| format!("{context}: {error}")
}

/// Run the child's setup and exec the app. Never returns.
pub(crate) fn run(plan: &ChildPlan<'_>) -> ! {
    let outcome = setup(plan);
    let message = match outcome {
        Ok(()) => exec(plan),
        Err(message) => message,
    };
    // SAFETY: error_write is our open pipe end; a short or failed write only loses the message.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(plan.error_write) };
    let _ = pipe.write_all(message.as_bytes());
    // SAFETY: _exit ends the child without running the launcher's atexit handlers or destructors.
    unsafe { libc::_exit(125) }
}

fn setup(plan: &ChildPlan<'_>) -> Step {
    let spec = plan.spec;
    // Die with the launcher: an app must never outlive its supervisor unobserved.
    die_with_launcher(plan.error_write)?;
    wait_for_launcher(plan.sync_read)?;
    // Before anything else runs in this process: no app code outside the app's cgroup.
    for tasks in &plan.v1_task_files {
        std::fs::write(tasks, "0").map_err(|error| format!("enrol in {}: {error}", tasks.display()))?;
    }
    build_root(plan)?;
    // SAFETY: sethostname with a valid buffer; the UTS namespace is the app's own.
    let hostname = b"opensphere-app";
    if unsafe { libc::sethostname(hostname.as_ptr().cast(), hostname.len()) } != 0 {
        return Err(format!("sethostname: {}", std::io::Error::last_os_error()));
    }
    set_stdio(plan)?;
    set_rlimits(spec)?;
    drop_ids(spec)?;
    // Changing the effective ids cleared the parent-death signal: set it again.
    die_with_launcher(plan.error_write)?;
    // no_new_privs before Landlock: a Landlock domain may only be entered with it (or CAP_SYS_ADMIN,
    // which we are about to drop).
    // SAFETY: plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err("prctl(NO_NEW_PRIVS)".into());
    }
    landlock_rules::restrict(spec, plan.landlock_abi).map_err(|error| error.to_string())?;
    drop_capabilities()?;
    reset_signals()?;
    Ok(())
}

/// Set PR_SET_PDEATHSIG, then make sure the launcher did not die before that took effect: the
/// launcher holds the only read end of the error pipe, so POLLERR on our write end means it is
/// gone (getppid cannot tell: as pid 1 of a new pid namespace our parent pid reads 0).
fn die_with_launcher(error_write: RawFd) -> Step {
    // SAFETY: plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err("prctl(PDEATHSIG)".into());
    }
    let mut pipe = libc::pollfd { fd: error_write, events: libc::POLLOUT, revents: 0 };
    // SAFETY: poll on one valid pollfd, without waiting.
    let ready = unsafe { libc::poll(&mut pipe, 1, 0) };
    if ready < 0 || pipe.revents & libc::POLLERR != 0 {
        return Err("the launcher is gone".into());
    }
    Ok(())
}

fn wait_for_launcher(sync_read: RawFd) -> Step {
    let mut byte = [0u8; 1];
    // SAFETY: reading one byte into a local buffer.
    let read = unsafe { libc::read(sync_read, byte.as_mut_ptr().cast(), 1) };
    // SAFETY: the fd is ours and used only here.
    unsafe { libc::close(sync_read) };
    if read != 1 {
        return Err("launcher went away before writing the id maps".into());
    }
    Ok(())
}

/// Mount flags that are locked on a bind mount must be kept when remounting it from a user
/// namespace (else EPERM): carry over the atime mode and the flags the source already has.
fn kept_flags(path: &Path) -> MsFlags {
    let mut flags = MsFlags::empty();
    if let Ok(stat) = nix::sys::statvfs::statvfs(path) {
        use nix::sys::statvfs::FsFlags;
        let f = stat.flags();
        for (have, keep) in [
            (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if f.contains(have) {
                flags |= keep;
            }
        }
    }
    flags
}

fn bind(source: &Path, target: &Path, extra: MsFlags, recursive: bool) -> Step {
    let context = format!("bind {} -> {}", source.display(), target.display());
    let rec = if recursive { MsFlags::MS_REC } else { MsFlags::empty() };
    mount(Some(source), target, None::<&str>, MsFlags::MS_BIND | rec, None::<&str>).map_err(errno(&context))?;
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | extra | kept_flags(target);
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(errno(&format!("remount {context}")))
}

fn build_root(plan: &ChildPlan<'_>) -> Step {
    let spec = plan.spec;
    let root = plan.root_dir;
    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // Nothing we mount may propagate back to the host.
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(errno("make / private"))?;
    mount(Some(root), root, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(errno("bind root"))?;
    bind(
        &spec.app_root,
        &root.join(&APP_MOUNT[1..]),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        true,
    )?;
    // Device nodes need dev; they are the only ones, and the directory is read-only.
    bind(plan.dev_dir, &root.join("dev"), MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, false)?;
    if let Some(storage) = &spec.storage {
        bind(&storage.host_mount, &root.join(&STORAGE_MOUNT[1..]), hardened, false)?;
    }
    if let Some(resolv_conf) = &spec.resolv_conf {
        bind(resolv_conf, &root.join("etc/resolv.conf"), MsFlags::MS_RDONLY | hardened, false)?;
    }
    let tmp_options = format!("mode=0700,size=4m,nr_inodes=1024,uid={},gid={}", spec.uid, spec.gid);
    mount(Some("tmpfs"), &root.join("tmp"), Some("tmpfs"), hardened, Some(tmp_options.as_str()))
        .map_err(errno("mount /tmp"))?;
    // subset=pid: only process directories, no /proc/sys, /proc/kcore, /proc/sysrq-trigger.
    // Read-only besides. Kernels before 5.8 lack subset=pid; then the read-only flag and
    // Landlock (no write rule under /proc) remain.
    let proc_dir = root.join("proc");
    let proc_flags = hardened | MsFlags::MS_RDONLY;
    mount(Some("proc"), &proc_dir, Some("proc"), proc_flags, Some("subset=pid"))
        .or_else(|_| mount(Some("proc"), &proc_dir, Some("proc"), proc_flags, None::<&str>))
        .map_err(errno("mount /proc"))?;
    // pivot_root(".", ".") stacks the old root under the new one; detaching it leaves only ours.
    nix::unistd::chdir(root).map_err(errno("chdir new root"))?;
    nix::unistd::pivot_root(".", ".").map_err(errno("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(errno("detach old root"))?;
    nix::unistd::chdir("/").map_err(errno("chdir /"))?;
    let root_flags =
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | hardened | kept_flags(Path::new("/"));
    mount(None::<&str>, "/", None::<&str>, root_flags, None::<&str>).map_err(errno("remount / read-only"))?;
    nix::unistd::chdir(APP_MOUNT).map_err(errno("chdir /app"))?;
    Ok(())
}

fn dup_to(from: RawFd, to: RawFd) -> Step {
    // SAFETY: dup2 on fds we own; the target number is replaced atomically.
    if unsafe { libc::dup2(from, to) } < 0 {
        return Err(format!("dup2 {from} -> {to}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn set_stdio(plan: &ChildPlan<'_>) -> Step {
    let null = nix::fcntl::open("/dev/null", nix::fcntl::OFlag::O_RDWR, nix::sys::stat::Mode::empty())
        .map_err(errno("open /dev/null"))?;
    dup_to(null.as_raw_fd(), 0)?;
    for (target, fd) in [(plan.spec.stdout, 1), (plan.spec.stderr, 2)] {
        match target {
            LogTarget::Inherit => {}
            LogTarget::Fd(from) => dup_to(from, fd)?,
            LogTarget::Null => dup_to(null.as_raw_fd(), fd)?,
        }
    }
    // Move the kept fds above every low number first, so that moving one to its target
    // cannot overwrite another that happens to sit there.
    let high = |fd: RawFd| -> Result<RawFd, String> {
        // SAFETY: F_DUPFD_CLOEXEC duplicates an fd we own; no memory is touched.
        let moved = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64) };
        if moved < 0 { Err(format!("fcntl F_DUPFD {fd}: {}", std::io::Error::last_os_error())) } else { Ok(moved) }
    };
    let telemetry = plan.telemetry_write.map(high).transpose()?;
    let app_api = plan.spec.app_api_fd.map(high).transpose()?;
    // dup2 clears close-on-exec on the target; a number not kept stays marked below.
    let mut first_closed = TELEMETRY_FD;
    if let Some(write) = telemetry {
        dup_to(write, TELEMETRY_FD)?;
        first_closed = TELEMETRY_FD + 1;
    }
    if let Some(api) = app_api {
        if telemetry.is_none() {
            // SAFETY: marks one fd close-on-exec (CLOSE_RANGE_CLOEXEC = 4); no memory is touched.
            unsafe { libc::syscall(libc::SYS_close_range, TELEMETRY_FD as u32, TELEMETRY_FD as u32, 4u32) };
        }
        dup_to(api, APP_API_FD)?;
        first_closed = APP_API_FD + 1;
    }
    // Everything else the launcher had open is closed at exec (the error pipe must live until
    // then). CLOSE_RANGE_CLOEXEC = 4.
    // SAFETY: marks fds close-on-exec; no memory is touched.
    if unsafe { libc::syscall(libc::SYS_close_range, first_closed as u32, u32::MAX, 4u32) } != 0 {
        return Err(format!("close_range: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn set_rlimits(spec: &SandboxSpec) -> Step {
    use nix::sys::resource::{Resource, setrlimit};
    // No core dumps (they would land in the app's cwd and can hold secrets); a bounded fd table;
    // RLIMIT_NPROC backs pids.max on kernels without a pids controller (each app has its own uid);
    // a little above pids.max, so that where the cgroup exists it is what refuses (and counts).
    let pids = spec.limits.pids_max;
    let nproc = libc::rlim_t::from(pids.saturating_add(pids / 4).saturating_add(4));
    for (resource, limit) in
        [(Resource::RLIMIT_CORE, 0), (Resource::RLIMIT_NOFILE, 1024), (Resource::RLIMIT_NPROC, nproc)]
    {
        setrlimit(resource, limit, limit).map_err(errno("setrlimit"))?;
    }
    Ok(())
}

fn drop_ids(spec: &SandboxSpec) -> Step {
    nix::unistd::setgroups(&[]).map_err(errno("setgroups"))?;
    let gid = nix::unistd::Gid::from_raw(spec.gid);
    let uid = nix::unistd::Uid::from_raw(spec.uid);
    nix::unistd::setresgid(gid, gid, gid).map_err(errno("setresgid"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(errno("setresuid"))?;
    Ok(())
}

fn drop_capabilities() -> Step {
    use caps::{CapSet, Capability};
    let all = caps::all();
    caps::clear(None, CapSet::Ambient).map_err(|error| format!("clear ambient capabilities: {error}"))?;
    for capability in &all {
        // Dropping from the bounding set needs CAP_SETPCAP, which is why it comes first.
        if *capability != Capability::CAP_SETPCAP {
            caps::drop(None, CapSet::Bounding, *capability)
                .map_err(|error| format!("drop bounding {capability}: {error}"))?;
        }
    }
    caps::drop(None, CapSet::Bounding, Capability::CAP_SETPCAP).map_err(|error| format!("drop bounding: {error}"))?;
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        caps::clear(None, set).map_err(|error| format!("clear {set:?} capabilities: {error}"))?;
    }
    Ok(())
}

fn reset_signals() -> Step {
    use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, signal, sigprocmask};
    // The launcher blocks its stop signals (to read them from a signalfd) and Rust ignores
    // SIGPIPE; both would otherwise be inherited by the app through execve.
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None).map_err(errno("sigprocmask"))?;
    // SAFETY: setting the default disposition installs no handler code.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }.map_err(errno("signal(SIGPIPE)"))?;
    Ok(())
}

/// Install seccomp and exec; only returns the error message if exec failed.
fn exec(plan: &ChildPlan<'_>) -> String {
    // Last: from here on the app's own policy applies, and execve is on the allow-list.
    if let Err(error) = crate::seccomp::apply(plan.seccomp) {
        return format!("seccomp: {error}");
    }
    let argv: Vec<*const libc::c_char> =
        plan.argv.iter().map(|arg| arg.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    let envp: Vec<*const libc::c_char> =
        plan.envp.iter().map(|var| var.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    // SAFETY: NULL-terminated arrays of pointers to NUL-terminated strings that outlive the call.
    unsafe { libc::execve(plan.entry_point.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    format!("execve {}: {}", plan.entry_point.to_string_lossy(), std::io::Error::last_os_error())
}
