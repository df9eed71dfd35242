//! escape-artist: a hostile OpenSphere app. Run in the sandbox, it tries to break out in as many
//! distinct ways as we know and reports each attempt on one line:
//!
//! ```text
//! ATTEMPT name=read_etc_shadow result=blocked detail=ENOENT
//! CONTROL name=storage_write result=ok detail=...
//! SUMMARY attempts=62 escaped=0 errors=0
//! ```
//!
//! `blocked`: the kernel refused (an errno, or seccomp killed the attempt with SIGSYS).
//! `ESCAPED`: the operation succeeded. `ERROR`: no verdict (treated as a failure by the suite).
//! `CONTROL` lines check things the app *is* granted, so "everything fails" cannot pass as
//! "everything is blocked".
//!
//! Each attempt runs in a forked child, so an attempt that seccomp kills does not end the run.
//! The app is single-threaded on purpose (fork is then safe). Modes (first argument):
//! `attack [--victim-pid N] [--victim-storage PATH] [--host-port P] [--host-abstract NAME]
//! [--quota-kb N] [--allowed-port P]`, `victim [--secret S] [--device PATH]`, `first-byte`
//! (benchmark: write one byte, exit), `first-byte-wait` (then wait to be stopped), `die-by-seccomp` (telemetry check),
//! `net-attack` and `net-peer` (the network firewall's escapes, see `net`).

mod net;

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::time::{Duration, Instant};

/// The abstract unix socket the victim listens on (`@` is the leading NUL).
const VICTIM_SOCKET: &str = "opensphere-escape-victim";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("first-byte") => {
            // The benchmark's "first instruction": one byte on stdout, before anything else.
            // SAFETY: writing a static byte to fd 1.
            unsafe { libc::write(1, b"x".as_ptr().cast(), 1) };
        }
        Some("first-byte-wait") => {
            // The benchmark's memory probe: the first byte, then wait to be stopped.
            // SAFETY: writing a static byte to fd 1, then sleeping until a signal ends us.
            unsafe {
                libc::write(1, b"x".as_ptr().cast(), 1);
                loop {
                    libc::pause();
                }
            }
        }
        Some("victim") => victim(&Options::parse(&args[2..])),
        Some("die-by-seccomp") => {
            // SAFETY: an invalid ptrace request; seccomp kills us before the kernel looks at it.
            unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
            println!("still alive after ptrace: seccomp did not kill");
            std::process::exit(3);
        }
        Some("attack") => std::process::exit(attack(&Options::parse(&args[2..]))),
        Some("net-attack") => std::process::exit(net::attack()),
        Some("net-peer") => std::process::exit(net::peer()),
        _ => {
            eprintln!("usage: escape-artist attack|victim|net-attack|net-peer|first-byte|die-by-seccomp [options]");
            std::process::exit(2);
        }
    }
}

#[derive(Default)]
struct Options {
    victim_pid: Option<i32>,
    victim_storage: Option<String>,
    host_port: Option<u16>,
    host_abstract: Option<String>,
    quota_kb: Option<u64>,
    allowed_port: Option<u16>,
    secret: Option<String>,
    device: Option<String>,
    pid_max: Option<i32>,
}

impl Options {
    fn parse(args: &[String]) -> Options {
        let mut options = Options::default();
        let mut iter = args.iter();
        while let Some(flag) = iter.next() {
            let value = iter.next().cloned();
            match flag.as_str() {
                "--victim-pid" => options.victim_pid = value.and_then(|v| v.parse().ok()),
                "--victim-storage" => options.victim_storage = value,
                "--host-port" => options.host_port = value.and_then(|v| v.parse().ok()),
                "--host-abstract" => options.host_abstract = value,
                "--quota-kb" => options.quota_kb = value.and_then(|v| v.parse().ok()),
                "--allowed-port" => options.allowed_port = value.and_then(|v| v.parse().ok()),
                "--secret" => options.secret = value,
                "--device" => options.device = value,
                "--pid-max" => options.pid_max = value.and_then(|v| v.parse().ok()),
                other => eprintln!("escape-artist: ignoring unknown option {other}"),
            }
        }
        options
    }
}

// ---------------------------------------------------------------------------------------------
// Victim

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

extern "C" fn victim_signal(signal: libc::c_int) {
    // Async-signal-safe report: a fixed message with the number spliced in.
    let mut message = *b"VICTIM got signal 00\n";
    message[18] = b'0' + (signal / 10) as u8;
    message[19] = b'0' + (signal % 10) as u8;
    // SAFETY: write(2) is async-signal-safe; the buffer is local.
    unsafe { libc::write(1, message.as_ptr().cast(), message.len()) };
}

/// A normal app with something worth stealing: a secret in its storage, an abstract socket,
/// a granted device; it logs every signal and connection it receives.
fn victim(options: &Options) {
    let secret = options.secret.clone().unwrap_or_else(|| "SECRET-victim".into());
    match std::fs::write("/mnt/config/secret", &secret) {
        Ok(()) => say("VICTIM storage secret written"),
        Err(error) => say(&format!("VICTIM storage write failed: {error}")),
    }
    if let Some(device) = &options.device {
        match std::fs::OpenOptions::new().read(true).write(true).open(device) {
            Ok(_) => say(&format!("VICTIM granted device {device} opens")),
            Err(error) => say(&format!("VICTIM granted device {device} failed: {error}")),
        }
    }
    for signal in [libc::SIGTERM, libc::SIGUSR1, libc::SIGUSR2, libc::SIGHUP, libc::SIGINT, libc::SIGCONT] {
        // SAFETY: installing a handler that only calls write(2).
        unsafe { libc::signal(signal, victim_signal as *const () as libc::sighandler_t) };
    }
    let listener = abstract_socket(VICTIM_SOCKET, true);
    match listener {
        Ok(fd) => {
            say("VICTIM ready");
            loop {
                // SAFETY: accept on our listening socket; no address wanted.
                let client = unsafe { libc::accept(fd, std::ptr::null_mut(), std::ptr::null_mut()) };
                if client >= 0 {
                    say("VICTIM accepted a connection");
                    // SAFETY: closing the fd accept returned.
                    unsafe { libc::close(client) };
                }
            }
        }
        Err(error) => {
            say(&format!("VICTIM cannot listen: {error}"));
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Attempt machinery

enum Verdict {
    Blocked(String),
    Escaped(String),
}
use Verdict::{Blocked, Escaped};

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn errno_name(code: i32) -> String {
    let name = match code {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EACCES => "EACCES",
        libc::EROFS => "EROFS",
        libc::ENOSYS => "ENOSYS",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EDQUOT => "EDQUOT",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::ENOTTY => "ENOTTY",
        libc::EXDEV => "EXDEV",
        libc::EBADF => "EBADF",
        libc::ENXIO => "ENXIO",
        _ => return format!("errno{code}"),
    };
    name.to_owned()
}

/// Report a Landlock-style denial the way an applibs wrapper would (telemetry pipe, fd 3).
fn report_denial(what: &str) {
    if std::env::var("SPHERE_TELEMETRY_FD").is_ok() {
        let line = format!("landlock-denied {what}\n");
        // SAFETY: writing a local buffer to the telemetry fd the sandbox gave us (or EBADF).
        unsafe { libc::write(3, line.as_ptr().cast(), line.len()) };
    }
}

/// `result` < 0 means refused: Blocked with the errno; otherwise Escaped with `what`.
fn refused(result: i64, what: &str) -> Verdict {
    if result < 0 {
        let code = errno();
        if code == libc::EACCES {
            report_denial(what);
        }
        Blocked(errno_name(code))
    } else {
        Escaped(format!("{what} succeeded ({result})"))
    }
}

fn c(text: &str) -> CString {
    CString::new(text).unwrap_or_default()
}

fn open_path(path: &str, flags: i32) -> i64 {
    // SAFETY: open with a NUL-terminated path.
    let fd = unsafe { libc::open(c(path).as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    fd as i64
}

fn read_file(path: &str) -> Verdict {
    match std::fs::read(path) {
        Ok(bytes) => Escaped(format!("read {} bytes of {path}", bytes.len())),
        Err(error) => {
            if error.raw_os_error() == Some(libc::EACCES) {
                report_denial(path);
            }
            Blocked(errno_name(error.raw_os_error().unwrap_or(0)))
        }
    }
}

fn write_file(path: &str) -> Verdict {
    refused(open_path(path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC), &format!("open {path} for writing"))
}

fn syscall6(number: libc::c_long, args: [libc::c_long; 6]) -> i64 {
    // SAFETY: the attempts call syscalls with junk or harmless arguments on purpose; the kernel
    // validates them (or seccomp kills first). No memory of ours is handed out except where noted.
    unsafe { libc::syscall(number, args[0], args[1], args[2], args[3], args[4], args[5]) as i64 }
}

struct Runner {
    attempts: u32,
    escaped: u32,
    errors: u32,
}

impl Runner {
    /// Run `attempt` in a forked child; seccomp killing the child counts as blocked.
    fn attempt(&mut self, name: &str, timeout: Duration, attempt: impl FnOnce() -> Verdict) {
        self.attempts += 1;
        let (result, detail) = run_forked(timeout, attempt);
        match result {
            "blocked" => {}
            "ESCAPED" => self.escaped += 1,
            _ => self.errors += 1,
        }
        say(&format!("ATTEMPT name={name} result={result} detail={}", detail.replace(char::is_whitespace, "_")));
    }

    /// An attempt that needs the victim's host pid; without it (inside the device image, where
    /// the app manager starts both apps) it is reported as skipped and not counted.
    fn attempt_on_victim(&mut self, name: &str, victim_pid: i32, attempt: impl FnOnce(i32) -> Verdict) {
        if victim_pid <= 1 {
            say(&format!("SKIP name={name} reason=no_--victim-pid_given"));
            return;
        }
        self.attempt(name, Duration::from_secs(10), || attempt(victim_pid));
    }

    fn control(&mut self, name: &str, ok: Result<String, String>) {
        let (result, detail) = match ok {
            Ok(detail) => ("ok", detail),
            Err(detail) => {
                self.errors += 1;
                ("FAILED", detail)
            }
        };
        say(&format!("CONTROL name={name} result={result} detail={}", detail.replace(char::is_whitespace, "_")));
    }
}

fn run_forked(timeout: Duration, attempt: impl FnOnce() -> Verdict) -> (&'static str, String) {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return ("ERROR", format!("pipe: {}", errno_name(errno())));
    }
    // SAFETY: we are single-threaded, so the child may run arbitrary code after fork.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: closing the read end in the child.
        unsafe { libc::close(fds[0]) };
        let line = match attempt() {
            Blocked(detail) => format!("B {detail}"),
            Escaped(detail) => format!("E {detail}"),
        };
        // SAFETY: fds[1] is our pipe end.
        let mut pipe = unsafe { std::fs::File::from_raw_fd(fds[1]) };
        let _ = pipe.write_all(line.as_bytes());
        drop(pipe);
        // SAFETY: leave without running the parent's destructors twice.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: closing the write end in the parent.
    unsafe { libc::close(fds[1]) };
    if pid < 0 {
        // SAFETY: closing our read end.
        unsafe { libc::close(fds[0]) };
        return ("ERROR", format!("fork: {}", errno_name(errno())));
    }
    // SAFETY: the read end is ours from here on.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let deadline = Instant::now() + timeout;
    let mut status = 0;
    loop {
        // SAFETY: non-blocking wait for our child.
        let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if done == pid {
            break;
        }
        if Instant::now() > deadline {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return ("ERROR", "timed out".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut message = String::new();
    let _ = pipe.read_to_string(&mut message);
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        if signal == libc::SIGSYS {
            return ("blocked", "seccomp_killed_(SIGSYS)".into());
        }
        // A verdict written before the signal still counts (e.g. the memory hog reports its
        // progress, then the OOM killer ends it).
        if let Some(rest) = message.strip_prefix("B ") {
            return ("blocked", format!("{rest}; then signal {signal}"));
        }
        return ("ERROR", format!("killed by signal {signal}: {message}"));
    }
    match message.split_once(' ') {
        Some(("B", detail)) => ("blocked", detail.to_owned()),
        Some(("E", detail)) => ("ESCAPED", detail.to_owned()),
        _ if message == "B" => ("blocked", String::new()),
        _ => ("ESCAPED", format!("no verdict (exec may have succeeded): {message}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers for attempts

fn abstract_socket(name: &str, listen: bool) -> std::io::Result<RawFd> {
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: zeroed sockaddr_un is valid; we fill the abstract name after the leading NUL.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = name.as_bytes();
    let length = bytes.len().min(address.sun_path.len() - 1);
    for (slot, byte) in address.sun_path[1..=length].iter_mut().zip(bytes) {
        *slot = *byte as libc::c_char;
    }
    let size = (std::mem::size_of::<libc::sa_family_t>() + 1 + length) as libc::socklen_t;
    let pointer = &address as *const libc::sockaddr_un as *const libc::sockaddr;
    // SAFETY: address is a valid sockaddr_un of `size` bytes.
    let result = unsafe {
        if listen {
            if libc::bind(fd, pointer, size) == 0 { libc::listen(fd, 16) } else { -1 }
        } else {
            libc::connect(fd, pointer, size)
        }
    };
    if result != 0 {
        let error = std::io::Error::last_os_error();
        // SAFETY: closing our socket.
        unsafe { libc::close(fd) };
        return Err(error);
    }
    Ok(fd)
}

fn tcp(address: [u8; 4], port: u16, bind: bool) -> Verdict {
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return refused(-1, "socket");
    }
    let sockaddr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(address) },
        sin_zero: [0; 8],
    };
    let pointer = &sockaddr as *const libc::sockaddr_in as *const libc::sockaddr;
    let size = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: sockaddr is a valid sockaddr_in.
    let result = unsafe { if bind { libc::bind(fd, pointer, size) } else { libc::connect(fd, pointer, size) } };
    let what = if bind { format!("bind port {port}") } else { format!("connect to port {port}") };
    refused(result as i64, &what)
}

fn socket_of(domain: i32, kind: i32, protocol: i32) -> Verdict {
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(domain, kind, protocol) };
    refused(fd as i64, &format!("socket({domain}, {kind}, {protocol})"))
}

/// A sibling process to attack: sleeps until killed.
fn spawn_sibling() -> i32 {
    // SAFETY: single-threaded fork; the child only sleeps.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        loop {
            // SAFETY: pause until a signal ends us.
            unsafe { libc::pause() };
        }
    }
    pid
}

fn exec_verdict(path: &str) -> Verdict {
    let argv = [c(path), c("first-byte")];
    let pointers = [argv[0].as_ptr(), argv[1].as_ptr(), std::ptr::null()];
    let env: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: NULL-terminated argv/envp of valid C strings; returns only on failure.
    unsafe { libc::execve(argv[0].as_ptr(), pointers.as_ptr(), env.as_ptr()) };
    refused(-1, &format!("execve {path}"))
}

/// Copy our own binary somewhere writable, optionally setuid, and try to execute it.
fn exec_copy(dir: &str, mode: u32) -> Verdict {
    let target = format!("{dir}/copied-app");
    let _ = std::fs::remove_file(&target);
    if let Err(error) = std::fs::copy("/app/bin/app", &target) {
        // Not a verdict: the copy must exist for the exec to mean anything.
        return Escaped(format!("no verdict: could not copy the binary: {error}"));
    }
    exec_with_mode(&target, mode)
}

/// A two-line script whose interpreter is our own (executable) package binary: tiny enough for
/// any writable place, and executable only if that place allows exec.
fn exec_script(dir: &str) -> Verdict {
    let target = format!("{dir}/run-me");
    if let Err(error) = std::fs::write(&target, b"#!/app/bin/app first-byte\n") {
        return Escaped(format!("no verdict: could not write the script: {error}"));
    }
    exec_with_mode(&target, 0o755)
}

fn exec_with_mode(target: &str, mode: u32) -> Verdict {
    // SAFETY: chmod with a NUL-terminated path (the setuid bit on our own file is allowed; the
    // question is whether it means anything).
    unsafe { libc::chmod(c(target).as_ptr(), mode) };
    exec_verdict(target)
}

fn own_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|dir| dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The attack

fn attack(options: &Options) -> i32 {
    let mut run = Runner { attempts: 0, escaped: 0, errors: 0 };
    let quick = Duration::from_secs(10);
    let victim_pid = options.victim_pid.unwrap_or(0);
    let victim_storage = options.victim_storage.clone().unwrap_or_else(|| "/nonexistent".into());

    controls(&mut run, options);

    // --- Other apps' data and the OS's files
    let path = format!("{victim_storage}/secret");
    run.attempt("read_victim_storage_host_path", quick, || read_file(&path));
    run.attempt("write_victim_storage_host_path", quick, || write_file(&format!("{victim_storage}/planted")));
    run.attempt_on_victim("read_victim_storage_via_proc_root", victim_pid, |pid| {
        read_file(&format!("/proc/{pid}/root/mnt/config/secret"))
    });
    run.attempt_on_victim("read_victim_environ", victim_pid, |pid| read_file(&format!("/proc/{pid}/environ")));
    run.attempt("read_etc_shadow", quick, || read_file("/etc/shadow"));
    run.attempt("list_etc", quick, || match std::fs::read_dir("/etc") {
        Ok(_) => Escaped("/etc is listable".into()),
        Err(error) => Blocked(errno_name(error.raw_os_error().unwrap_or(0))),
    });
    run.attempt("proc1_is_host_init", quick, || match std::fs::read_link("/proc/1/exe") {
        Ok(target) if target.to_string_lossy().starts_with("/app/") => {
            Blocked(format!("pid 1 is ourselves ({target:?})"))
        }
        Ok(target) => Escaped(format!("/proc/1/exe is {target:?}")),
        Err(error) => Blocked(errno_name(error.raw_os_error().unwrap_or(0))),
    });
    run.attempt("read_proc1_root_shadow", quick, || read_file("/proc/1/root/etc/shadow"));
    run.attempt("read_dev_kmsg", quick, || read_file("/dev/kmsg"));
    run.attempt("read_proc_kmsg", quick, || read_file("/proc/kmsg"));
    run.attempt("syslog_read_all", quick, || {
        let mut buffer = [0u8; 256];
        // SAFETY: SYSLOG_ACTION_READ_ALL (3) into a local buffer.
        let result = unsafe { libc::klogctl(3, buffer.as_mut_ptr().cast(), buffer.len() as i32) };
        refused(result as i64, "klogctl(READ_ALL)")
    });
    run.attempt("read_proc_kallsyms", quick, || read_file("/proc/kallsyms"));
    run.attempt("read_proc_kcore", quick, || read_file("/proc/kcore"));
    run.attempt("read_sysfs", quick, || read_file("/sys/kernel/notes"));
    run.attempt("symlink_to_host_shadow", quick, || {
        let link = "/tmp/shadow-link";
        let _ = std::fs::remove_file(link);
        let _ = std::os::unix::fs::symlink("/etc/shadow", link);
        read_file(link)
    });

    // --- Writing where it must not
    run.attempt("write_root_dir", quick, || write_file("/escape-marker"));
    run.attempt("write_app_package", quick, || {
        refused(open_path("/app/bin/app", libc::O_WRONLY), "open package binary for writing")
    });
    run.attempt("write_dev_dir", quick, || write_file("/dev/planted"));
    run.attempt("write_proc_sys_hostname", quick, || write_file("/proc/sys/kernel/hostname"));
    run.attempt("write_proc_sys_core_pattern", quick, || write_file("/proc/sys/kernel/core_pattern"));
    run.attempt("write_proc_sysrq_trigger", quick, || write_file("/proc/sysrq-trigger"));
    run.attempt("lower_oom_score_adj", quick, || {
        let fd = open_path("/proc/self/oom_score_adj", libc::O_WRONLY);
        if fd < 0 {
            return refused(fd, "open oom_score_adj");
        }
        // SAFETY: writing a literal to the fd we just opened.
        let result = unsafe { libc::write(fd as i32, b"-1000".as_ptr().cast(), 5) };
        refused(result as i64, "write oom_score_adj -1000")
    });
    run.attempt("cgroup_escape_procs", quick, || write_file("/sys/fs/cgroup/cgroup.procs"));
    run.attempt("exceed_storage_quota", Duration::from_secs(30), || {
        fill("/mnt/config/fill", options.quota_kb.unwrap_or(64) * 1024, 64 * 1024)
    });
    run.attempt("exhaust_tmp", Duration::from_secs(30), || fill("/tmp/fill", 4 * 1024 * 1024, 64 * 1024));

    // --- Mounts, roots and namespaces
    run.attempt("mount_tmpfs", quick, || {
        // SAFETY: mount with NUL-terminated strings.
        let result =
            unsafe { libc::mount(c("none").as_ptr(), c("/tmp").as_ptr(), c("tmpfs").as_ptr(), 0, std::ptr::null()) };
        refused(result as i64, "mount tmpfs")
    });
    run.attempt("mount_new_api_fsopen", quick, || {
        refused(syscall6(libc::SYS_fsopen, [c("tmpfs").as_ptr() as _, 0, 0, 0, 0, 0]), "fsopen")
    });
    run.attempt("pivot_root", quick, || {
        refused(
            syscall6(libc::SYS_pivot_root, [c("/tmp").as_ptr() as _, c("/tmp").as_ptr() as _, 0, 0, 0, 0]),
            "pivot_root",
        )
    });
    run.attempt("chroot", quick, || {
        // SAFETY: chroot with a NUL-terminated path.
        refused(unsafe { libc::chroot(c("/tmp").as_ptr()) } as i64, "chroot")
    });
    run.attempt("unshare_user_ns", quick, || {
        // SAFETY: unshare with flags only.
        refused(unsafe { libc::unshare(libc::CLONE_NEWUSER) } as i64, "unshare(CLONE_NEWUSER)")
    });
    run.attempt("clone_new_net_ns", quick, || {
        let flags = (libc::CLONE_NEWNET | libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_long;
        let result = syscall6(libc::SYS_clone, [flags, 0, 0, 0, 0, 0]);
        if result == 0 {
            // SAFETY: the (escaped) child leaves at once.
            unsafe { libc::_exit(0) };
        }
        refused(result, "clone(CLONE_NEWNET|CLONE_NEWUSER)")
    });
    run.attempt("clone3_namespaces", quick, || {
        let mut args = [0u64; 11];
        args[0] = (libc::CLONE_NEWUSER | libc::CLONE_NEWNS) as u64;
        args[4] = libc::SIGCHLD as u64;
        let result = syscall6(libc::SYS_clone3, [args.as_mut_ptr() as _, 88, 0, 0, 0, 0]);
        if result == 0 {
            // SAFETY: the (escaped) child leaves at once.
            unsafe { libc::_exit(0) };
        }
        refused(result, "clone3 with namespaces")
    });
    run.attempt("setns_own_user_ns", quick, || {
        let fd = open_path("/proc/self/ns/user", libc::O_RDONLY);
        if fd < 0 {
            return refused(fd, "open ns/user");
        }
        // SAFETY: setns with an fd we opened.
        refused(unsafe { libc::setns(fd as i32, 0) } as i64, "setns")
    });
    run.attempt_on_victim("setns_victim_net_ns", victim_pid, |pid| read_file(&format!("/proc/{pid}/ns/net")));

    // --- Other processes
    let sibling = spawn_sibling();
    run.attempt("ptrace_attach_sibling", quick, || {
        // SAFETY: ptrace on a pid; no memory passed.
        refused(unsafe { libc::ptrace(libc::PTRACE_ATTACH, sibling, 0, 0) } as i64, "ptrace(ATTACH) sibling")
    });
    run.attempt_on_victim("ptrace_attach_victim", victim_pid, |pid| {
        // SAFETY: ptrace on a pid; no memory passed.
        refused(unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) } as i64, "ptrace(ATTACH) victim")
    });
    run.attempt("process_vm_readv_sibling", quick, || {
        let mut buffer = [0u8; 8];
        let local = libc::iovec { iov_base: buffer.as_mut_ptr().cast(), iov_len: 8 };
        let remote = libc::iovec { iov_base: 0x1000 as *mut libc::c_void, iov_len: 8 };
        // SAFETY: reads at most 8 bytes into our local buffer.
        refused(unsafe { libc::process_vm_readv(sibling, &local, 1, &remote, 1, 0) } as i64, "process_vm_readv")
    });
    run.attempt("write_sibling_proc_mem", quick, || write_file(&format!("/proc/{sibling}/mem")));
    run.attempt_on_victim("kill_victim_host_pid", victim_pid, |pid| {
        // SAFETY: kill with integers.
        refused(unsafe { libc::kill(pid, libc::SIGUSR1) } as i64, "kill(victim, SIGUSR1)")
    });
    run.attempt_on_victim("pidfd_open_victim", victim_pid, |pid| {
        refused(syscall6(libc::SYS_pidfd_open, [pid as _, 0, 0, 0, 0, 0]), "pidfd_open victim")
    });
    run.attempt("signal_scan_host_pids", Duration::from_secs(60), || {
        let ours = own_pids();
        let max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(1 << 22);
        let mut reached = Vec::new();
        for pid in 2..=max.min(1 << 22) {
            // SAFETY: signal 0 only checks whether the pid can be signalled.
            if unsafe { libc::kill(pid, 0) } == 0 && !ours.contains(&pid) {
                reached.push(pid);
            }
        }
        if reached.is_empty() {
            Blocked(format!("no pid outside our {} can be signalled", ours.len()))
        } else {
            Escaped(format!("signalled outside pids {:?}", &reached[..reached.len().min(5)]))
        }
    });
    // SAFETY: ending and reaping our sibling.
    unsafe {
        libc::kill(sibling, libc::SIGKILL);
        libc::waitpid(sibling, std::ptr::null_mut(), 0);
    }

    // --- Privileges
    run.attempt("setuid_root", quick, || {
        // SAFETY: setuid with an integer.
        refused(unsafe { libc::setuid(0) } as i64, "setuid(0)")
    });
    run.attempt("setgid_root", quick, || {
        // SAFETY: setgid with an integer.
        refused(unsafe { libc::setgid(0) } as i64, "setgid(0)")
    });
    run.attempt("capset_all", quick, || {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        let mut header = Header { version: 0x2008_0522, pid: 0 };
        let data = [u32::MAX; 6];
        refused(
            syscall6(libc::SYS_capset, [&mut header as *mut Header as _, data.as_ptr() as _, 0, 0, 0, 0]),
            "capset(all)",
        )
    });
    run.attempt("ambient_raise_sys_admin", quick, || {
        // SAFETY: prctl with integers.
        let result = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE, 21, 0, 0) };
        refused(result as i64, "PR_CAP_AMBIENT_RAISE CAP_SYS_ADMIN")
    });
    run.attempt("setuid_binary_in_tmp", quick, || exec_copy("/tmp", 0o4755));
    run.attempt("exec_script_from_storage", quick, || exec_script("/mnt/config"));
    run.attempt("exec_script_from_tmp", quick, || exec_script("/tmp"));
    run.attempt("exec_host_shell", quick, || exec_verdict("/bin/sh"));
    run.attempt("raise_rlimit_nproc", quick, || {
        let limit = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
        // SAFETY: setrlimit with a valid struct.
        refused(unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &limit) } as i64, "raise RLIMIT_NPROC")
    });
    run.attempt("personality_read_implies_exec", quick, || {
        refused(syscall6(libc::SYS_personality, [0x0040_0000, 0, 0, 0, 0, 0]), "personality(READ_IMPLIES_EXEC)")
    });

    // --- Devices
    let device = options.device.clone().unwrap_or_else(|| "/dev/opensphere-test-gpio".into());
    run.attempt("open_victims_granted_device", quick, || {
        refused(open_path(&device, libc::O_RDWR), "open victim's device")
    });
    run.attempt("open_dev_mem", quick, || refused(open_path("/dev/mem", libc::O_RDONLY), "open /dev/mem"));
    run.attempt("open_block_device", quick, || {
        for disk in ["/dev/vda", "/dev/sda", "/dev/mmcblk0", "/dev/loop0", "/dev/nvme0n1"] {
            if open_path(disk, libc::O_RDONLY) >= 0 {
                return Escaped(format!("opened {disk}"));
            }
        }
        Blocked(errno_name(errno()))
    });
    run.attempt("open_dev_tty", quick, || refused(open_path("/dev/tty", libc::O_RDWR), "open /dev/tty"));
    run.attempt("mknod_dev_mem", quick, || {
        // SAFETY: mknod with a NUL-terminated path.
        let result = unsafe { libc::mknod(c("/tmp/mem").as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 1)) };
        refused(result as i64, "mknod /dev/mem twin")
    });
    run.attempt("tiocsti_inject", quick, || {
        let byte = b'x';
        // SAFETY: TIOCSTI with a pointer to one local byte.
        let result = unsafe { libc::ioctl(1, libc::TIOCSTI, &byte) };
        refused(result as i64, "ioctl(TIOCSTI)")
    });

    // --- Network
    run.attempt("raw_socket", quick, || socket_of(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP));
    run.attempt("packet_socket", quick, || socket_of(libc::AF_PACKET, libc::SOCK_RAW, 0x0300));
    run.attempt("netlink_uevent_socket", quick, || {
        socket_of(libc::AF_NETLINK, libc::SOCK_DGRAM, libc::NETLINK_KOBJECT_UEVENT)
    });
    run.attempt("abstract_unix_to_victim", quick, || match abstract_socket(VICTIM_SOCKET, false) {
        Ok(_) => Escaped("connected to the victim's abstract socket".into()),
        Err(error) => Blocked(errno_name(error.raw_os_error().unwrap_or(0))),
    });
    let host_abstract = options.host_abstract.clone().unwrap_or_else(|| "opensphere-escape-host".into());
    run.attempt("abstract_unix_to_host", quick, || match abstract_socket(&host_abstract, false) {
        Ok(_) => Escaped("connected to a host abstract socket".into()),
        Err(error) => Blocked(errno_name(error.raw_os_error().unwrap_or(0))),
    });
    let host_port = options.host_port.unwrap_or(22);
    run.attempt("tcp_connect_host_loopback", quick, || tcp([127, 0, 0, 1], host_port, false));
    run.attempt("tcp_connect_internet", quick, || tcp([192, 0, 2, 10], 443, false));
    run.attempt("tcp_bind_unlisted_port", quick, || tcp([0, 0, 0, 0], 8080, true));

    // --- Kernel attack surface (seccomp kill list)
    let junk = [0 as libc::c_long; 6];
    for (name, number) in [
        ("io_uring_setup", libc::SYS_io_uring_setup),
        ("bpf_prog_load", libc::SYS_bpf),
        ("keyctl", libc::SYS_keyctl),
        ("add_key", libc::SYS_add_key),
        ("init_module", libc::SYS_init_module),
        ("finit_module", libc::SYS_finit_module),
        ("delete_module", libc::SYS_delete_module),
        ("kexec_load", libc::SYS_kexec_load),
        ("perf_event_open", libc::SYS_perf_event_open),
        ("userfaultfd", libc::SYS_userfaultfd),
        ("open_by_handle_at", libc::SYS_open_by_handle_at),
        ("fanotify_init", libc::SYS_fanotify_init),
        ("swapon", libc::SYS_swapon),
        ("reboot", libc::SYS_reboot),
        ("clock_settime", libc::SYS_clock_settime),
        ("sethostname", libc::SYS_sethostname),
        ("acct", libc::SYS_acct),
    ] {
        run.attempt(name, quick, || refused(syscall6(number, junk), name));
    }

    // --- Resources
    run.attempt("fork_bomb", Duration::from_secs(30), fork_bomb);
    run.attempt("memory_hog", Duration::from_secs(60), memory_hog);

    say(&format!("SUMMARY attempts={} escaped={} errors={}", run.attempts, run.escaped, run.errors));
    if run.escaped == 0 && run.errors == 0 { 0 } else { 1 }
}

/// Things the manifest does grant must work, or "blocked" would prove nothing.
fn controls(run: &mut Runner, options: &Options) {
    run.control(
        "storage_write",
        std::fs::write("/mnt/config/control", b"ok")
            .map(|_| "wrote /mnt/config/control".into())
            .map_err(|e| e.to_string()),
    );
    run.control(
        "tmp_write",
        std::fs::write("/tmp/control", b"ok").map(|_| "wrote /tmp/control".into()).map_err(|e| e.to_string()),
    );
    run.control(
        "dev_null_write",
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .map(|_| "opened /dev/null".into())
            .map_err(|e| e.to_string()),
    );
    if let Some(port) = options.allowed_port {
        run.control(
            "tcp_bind_allowed_port",
            match tcp([127, 0, 0, 1], port, true) {
                Escaped(_) => Ok(format!("bound manifest port {port}")),
                Blocked(detail) => Err(detail),
            },
        );
    }
    run.control(
        "threads_work",
        std::thread::spawn(|| 42)
            .join()
            .map(|_| "a thread ran (clone3 falls back to clone)".into())
            .map_err(|_| "thread panicked".into()),
    );
    run.control(
        "pid_namespace",
        if std::process::id() == 1 { Ok("we are pid 1".into()) } else { Err(format!("pid {}", std::process::id())) },
    );
}

/// Write until refused: blocked if refused with ENOSPC/EDQUOT within `limit` + `slack` bytes.
fn fill(path: &str, limit: u64, slack: u64) -> Verdict {
    let mut file = match std::fs::File::create(path) {
        Ok(file) => file,
        Err(error) => return Escaped(format!("cannot even create {path}: {error} (control failure)")),
    };
    let chunk = vec![0x5a_u8; 4096];
    let mut written: u64 = 0;
    let verdict = loop {
        match file.write(&chunk) {
            Ok(n) => written += n as u64,
            Err(error) => {
                let code = error.raw_os_error().unwrap_or(0);
                if (code == libc::ENOSPC || code == libc::EDQUOT) && written <= limit + slack {
                    break Blocked(format!("{} after {written} bytes (limit {limit})", errno_name(code)));
                }
                break Escaped(format!("{} after {written} bytes (limit {limit})", errno_name(code)));
            }
        }
        if written > limit + slack {
            break Escaped(format!("wrote {written} bytes, limit {limit}"));
        }
    };
    let _ = file.sync_all();
    drop(file);
    let _ = std::fs::remove_file(path);
    verdict
}

/// Fork until refused; the pids limit (pids.max / RLIMIT_NPROC) must stop us early.
fn fork_bomb() -> Verdict {
    // SAFETY: own process group, so all bomb children can be killed at once.
    unsafe { libc::setpgid(0, 0) };
    let mut children = 0;
    let verdict = loop {
        // SAFETY: single-threaded fork; children only sleep.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            loop {
                // SAFETY: sleep until killed.
                unsafe { libc::pause() };
            }
        }
        if pid < 0 {
            break Blocked(format!("{} after {children} processes", errno_name(errno())));
        }
        children += 1;
        if children >= 2000 {
            break Escaped(format!("{children} processes and counting"));
        }
    };
    // SAFETY: SIGTERM to our process group (we ignore it ourselves), then reap every child
    // (blocking until none is left, so no zombie keeps counting against pids.max).
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::kill(0, libc::SIGTERM);
        while libc::waitpid(-1, std::ptr::null_mut(), 0) > 0 {}
    }
    verdict
}

/// Allocate and touch memory until refused; the memory limit must stop us (ENOMEM or the OOM
/// killer). The hog is a child that reports every MiB on a pipe, so an OOM kill still leaves a
/// verdict: how far it got.
fn memory_hog() -> Verdict {
    const STEP: usize = 1 << 20;
    const ESCAPE_AT_MIB: u32 = 512;
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Escaped("pipe failed (no verdict)".into());
    }
    // SAFETY: single-threaded fork.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        loop {
            let mib = blocks.len() as u32;
            // SAFETY: writing 4 local bytes to our pipe end.
            unsafe { libc::write(fds[1], mib.to_le_bytes().as_ptr().cast(), 4) };
            if mib >= ESCAPE_AT_MIB {
                // SAFETY: leave with the "escaped" status.
                unsafe { libc::_exit(42) };
            }
            let mut block = Vec::new();
            if block.try_reserve_exact(STEP).is_err() {
                // SAFETY: leave with the ENOMEM status.
                unsafe { libc::_exit(12) };
            }
            block.resize(STEP, 0xa5);
            blocks.push(block);
        }
    }
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(fds[1]) };
    // SAFETY: the read end is ours.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut bytes = Vec::new();
    let _ = pipe.read_to_end(&mut bytes);
    let reached = bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).max().unwrap_or(0);
    let mut status = 0;
    // SAFETY: reaping our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 42 {
        return Escaped(format!("allocated {reached} MiB"));
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 12 {
        return Blocked(format!("ENOMEM after {reached} MiB"));
    }
    if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL {
        return Blocked(format!("OOM-killed after {reached} MiB"));
    }
    Escaped(format!("hog ended oddly (status {status}) after {reached} MiB"))
}
