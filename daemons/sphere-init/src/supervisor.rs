//! The supervision loop: starts services, restarts them with backoff, logs their output,
//! reaps every zombie, and turns signals and control commands into a shutdown.
//!
//! One thread, one `poll(2)`: a signalfd (SIGCHLD and the shutdown signals, all blocked), the
//! control socket, the virtio-serial control port, and the stdout/stderr pipe of each child.
//! Timers (restart delays, readiness grace, boot and stop deadlines) become the poll timeout.
//!
//! Readiness: a service with `ready_line` is ready when it prints exactly that line on stdout;
//! otherwise when it is still alive `ready_grace_ms` after being spawned. Boot is complete
//! when every enabled service has been ready once (or `boot_timeout_ms` passed).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::backoff::Backoff;
use crate::config::{Config, RestartPolicy, Service};
use crate::control::{self, Action, ControlSocket, VirtioPort};
use crate::linebuf::LineSplitter;
use crate::log::Log;

const PATH: &str = "/usr/bin:/usr/sbin:/bin:/sbin";
const MAX_LINE: usize = 4096;
/// How often to look again for a virtio control port whose host end is not connected.
const PORT_RETRY: Duration = Duration::from_secs(1);

/// The signals init handles; they are blocked and read from a signalfd.
pub fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for sig in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGPWR,
        Signal::SIGHUP,
    ] {
        set.add(sig);
    }
    set
}

enum State {
    Running { pid: Pid, started: Instant },
    Waiting { until: Instant },
    Stopped,
}

struct Svc {
    cfg: Service,
    backoff: Backoff,
    state: State,
    starts: u32,
    ready: bool,
    /// Ready at least once, or finished for good: counts toward boot-complete.
    settled: bool,
}

struct Pipe {
    fd: OwnedFd,
    svc: usize,
    pid: Pid,
    stderr: bool,
    split: LineSplitter,
}

struct Shutdown {
    action: Action,
    kill_at: Instant,
    killed: bool,
    give_up_at: Instant,
}

pub struct Supervisor<'a> {
    log: &'a mut Log,
    services: Vec<Svc>,
    pipes: Vec<Pipe>,
    signals: Option<SignalFd>,
    control: Option<ControlSocket>,
    port_name: Option<String>,
    port: Option<VirtioPort>,
    port_retry_at: Option<Instant>,
    boot_deadline: Instant,
    boot_done: bool,
    after_boot: Option<Action>,
    selftest: bool,
    stop_timeout: Duration,
    shutdown: Option<Shutdown>,
    /// The A/B system (None on a single-root image): boot-complete runs its health check.
    ab: Option<crate::slots::AbSystem>,
    health: crate::config::HealthConfig,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

impl<'a> Supervisor<'a> {
    pub fn new(
        log: &'a mut Log,
        config: &Config,
        services: Vec<Service>,
        after_boot: Option<Action>,
        selftest: bool,
        ab: Option<crate::slots::AbSystem>,
    ) -> Self {
        let signals = match SignalFd::with_flags(&handled_signals(), SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
            Ok(fd) => Some(fd),
            Err(err) => {
                log.warn(format!("signalfd: {err}; signals and zombies are not handled"));
                None
            }
        };
        let control = match ControlSocket::bind(&config.control.socket) {
            Ok(sock) => Some(sock),
            Err(err) => {
                log.warn(format!("control socket {}: {err}", config.control.socket));
                None
            }
        };
        let now = Instant::now();
        let services = services
            .into_iter()
            .map(|cfg| Svc {
                backoff: Backoff::new(ms(cfg.backoff_initial_ms), ms(cfg.backoff_max_ms), ms(cfg.backoff_reset_ms)),
                cfg,
                state: State::Waiting { until: now },
                starts: 0,
                ready: false,
                settled: false,
            })
            .collect();
        Supervisor {
            log,
            services,
            pipes: Vec::new(),
            signals,
            control,
            port_name: config.control.virtio_port.clone(),
            port: None,
            port_retry_at: Some(now),
            boot_deadline: now + ms(config.boot_timeout_ms),
            boot_done: false,
            after_boot,
            selftest,
            stop_timeout: ms(config.stop_timeout_ms),
            shutdown: None,
            ab,
            health: config.health.clone(),
        }
    }

    /// Runs until a shutdown was requested and every service is gone (or was killed).
    pub fn run(mut self) -> Action {
        loop {
            let now = Instant::now();
            self.fire_timers(now);
            if let Some(action) = self.finished(now) {
                self.drain_pipes();
                return action;
            }
            let timeout = self.next_deadline().map(|deadline| {
                let wait = deadline.saturating_duration_since(Instant::now());
                // Round up so we never wake a hair before the deadline and spin.
                i32::try_from(wait.as_millis() + 1).unwrap_or(i32::MAX)
            });
            self.poll_once(timeout.unwrap_or(-1));
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        if self.shutdown.is_none() {
            for i in 0..self.services.len() {
                if let State::Waiting { until } = self.services[i].state {
                    if until <= now {
                        self.spawn(i);
                    }
                }
            }
        }
        for i in 0..self.services.len() {
            let svc = &self.services[i];
            if let State::Running { started, .. } = svc.state {
                if !svc.ready && svc.cfg.ready_line.is_none() && now >= started + svc.cfg.ready_grace() {
                    self.mark_ready(i);
                }
            }
        }
        self.check_boot_complete(now);
        if let Some(at) = self.port_retry_at {
            if at <= now && self.shutdown.is_none() {
                self.port_retry_at = None;
                if self.port.is_none() {
                    self.port = self.port_name.as_deref().and_then(VirtioPort::open);
                    match &self.port {
                        Some(port) => {
                            let path = port.path.display().to_string();
                            self.log.info(format!("control port {path} open"));
                        }
                        // No such port on this machine: stop looking.
                        None => self.port_name = None,
                    }
                }
            }
        }
    }

    fn check_boot_complete(&mut self, now: Instant) {
        if self.boot_done {
            return;
        }
        let pending: Vec<&str> = self.services.iter().filter(|s| !s.settled).map(|s| s.cfg.name.as_str()).collect();
        if !pending.is_empty() && now < self.boot_deadline {
            return;
        }
        self.boot_done = true;
        let count = self.services.len().to_string();
        // The A/B health check wants every daemon up *now*, not merely ready once: a service
        // waiting to be restarted, or one restarted since it started (a crash loop that
        // happened to print its ready line), fails it.
        let down: Vec<&str> = self
            .services
            .iter()
            .filter(|s| s.starts > 1 || (s.starts > 0 && matches!(s.state, State::Waiting { .. })))
            .map(|s| s.cfg.name.as_str())
            .collect();
        let services_ok = pending.is_empty() && down.is_empty();
        if !down.is_empty() && self.ab.is_some() {
            self.log.info(format!("not healthy: {} restarted or down at boot-complete", down.join(",")));
        }
        if pending.is_empty() {
            self.log.milestone("boot-complete", &[("services", &count)]);
        } else {
            let pending = pending.join(",");
            self.log.milestone("boot-complete", &[("services", &count), ("pending", &pending)]);
        }
        if self.selftest {
            crate::selftest::rss_facts(self.log);
        }
        // A/B: commit a trial slot, or reboot so its next attempt (or the fallback) comes.
        if let Some(ab) = self.ab.as_mut() {
            if let Some(action) = ab.boot_complete(self.log, services_ok, &self.health) {
                self.request(action, "health-check");
                return;
            }
        }
        if let Some(action) = self.after_boot {
            self.log.info(format!("sphere.after_boot={}: requesting it now", action.name()));
            self.request(action, "after_boot");
        }
    }

    fn finished(&mut self, now: Instant) -> Option<Action> {
        let shutdown = self.shutdown.as_mut()?;
        let action = shutdown.action;
        let running: Vec<Pid> = self
            .services
            .iter()
            .filter_map(|s| match s.state {
                State::Running { pid, .. } => Some(pid),
                _ => None,
            })
            .collect();
        if running.is_empty() {
            return Some(action);
        }
        if !shutdown.killed && now >= shutdown.kill_at {
            shutdown.killed = true;
            shutdown.give_up_at = now + Duration::from_secs(1);
            let names: Vec<String> = self
                .services
                .iter()
                .filter(|s| matches!(s.state, State::Running { .. }))
                .map(|s| s.cfg.name.clone())
                .collect();
            self.log.warn(format!("stop timeout: sending SIGKILL to {}", names.join(", ")));
            for pid in running {
                signal_group(pid, Signal::SIGKILL);
            }
            return None;
        }
        if shutdown.killed && now >= shutdown.give_up_at {
            self.log.warn("services still not reaped after SIGKILL; shutting down anyway");
            return Some(action);
        }
        None
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for svc in &self.services {
            match svc.state {
                State::Waiting { until } if self.shutdown.is_none() => consider(until),
                State::Running { started, .. } if !svc.ready && svc.cfg.ready_line.is_none() => {
                    consider(started + svc.cfg.ready_grace())
                }
                _ => {}
            }
        }
        if !self.boot_done {
            consider(self.boot_deadline);
        }
        if let Some(at) = self.port_retry_at {
            consider(at);
        }
        if let Some(shutdown) = &self.shutdown {
            consider(if shutdown.killed { shutdown.give_up_at } else { shutdown.kill_at });
        }
        next
    }

    fn poll_once(&mut self, timeout_ms: i32) {
        #[derive(Clone, Copy)]
        enum Source {
            Signals,
            Control,
            Port,
            Pipe(usize),
        }
        let mut sources = Vec::new();
        let mut fds = Vec::new();
        let mut add = |fd: BorrowedFd<'_>, source: Source| {
            fds.push(libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 });
            sources.push(source);
        };
        if let Some(signals) = &self.signals {
            add(signals.as_fd(), Source::Signals);
        }
        if let Some(control) = &self.control {
            add(control.fd(), Source::Control);
        }
        if let (Some(port), None) = (&self.port, self.port_retry_at) {
            add(port.fd(), Source::Port);
        }
        for (i, pipe) in self.pipes.iter().enumerate() {
            add(pipe.fd.as_fd(), Source::Pipe(i));
        }
        let nfds = libc::nfds_t::try_from(fds.len()).unwrap_or(0);
        // SAFETY: `fds` is a valid array of `nfds` pollfd structs for the duration of the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), nfds, timeout_ms) };
        if rc <= 0 {
            return; // timeout, EINTR or (never expected) EINVAL: timers run next
        }
        let mut closed_pipes = Vec::new();
        for (pfd, source) in fds.iter().zip(sources) {
            if pfd.revents == 0 {
                continue;
            }
            match source {
                Source::Signals => self.handle_signals(),
                Source::Control => self.handle_control(),
                Source::Port => self.handle_port(pfd.revents),
                Source::Pipe(i) => {
                    if !self.read_pipe(i) {
                        closed_pipes.push(i);
                    }
                }
            }
        }
        for i in closed_pipes.into_iter().rev() {
            self.pipes.swap_remove(i);
        }
    }

    fn handle_signals(&mut self) {
        let mut got = Vec::new();
        if let Some(signals) = &self.signals {
            while let Ok(Some(info)) = signals.read_signal() {
                got.push(info.ssi_signo);
            }
        }
        for signo in got {
            let signo = i32::try_from(signo).unwrap_or(0);
            match Signal::try_from(signo) {
                Ok(Signal::SIGCHLD) => self.reap(),
                Ok(sig @ (Signal::SIGTERM | Signal::SIGINT)) => self.request(Action::Reboot, sig.as_str()),
                Ok(sig @ (Signal::SIGUSR1 | Signal::SIGUSR2 | Signal::SIGPWR)) => {
                    self.request(Action::Poweroff, sig.as_str())
                }
                Ok(other) => self.log.info(format!("ignoring {}", other.as_str())),
                Err(_) => {}
            }
        }
        // A SIGCHLD can be coalesced with one already pending; reaping is cheap, so always do it.
        self.reap();
    }

    fn handle_control(&mut self) {
        let messages = self.control.as_ref().map(|c| c.receive()).unwrap_or_default();
        for text in messages {
            match control::parse_command(&text) {
                Some(action) => self.request(action, "control-socket"),
                None => self.log.warn(format!("control socket: unknown command {:?}", text.trim())),
            }
        }
    }

    fn handle_port(&mut self, revents: libc::c_short) {
        let Some(port) = self.port.as_mut() else {
            return;
        };
        let lines = port.read_lines();
        let disconnected = lines.is_none() || revents & libc::POLLHUP != 0;
        let mut action = None;
        let mut unknown = Vec::new();
        for line in lines.unwrap_or_default() {
            match control::parse_command(&line) {
                Some(requested) => {
                    port.reply(&format!("ok {}", requested.name()));
                    action = Some(requested);
                    break;
                }
                None if line.trim().is_empty() => {}
                None => {
                    port.reply("error: commands are poweroff, reboot");
                    unknown.push(line);
                }
            }
        }
        for line in unknown {
            self.log.warn(format!("control port: unknown command {:?}", line.trim()));
        }
        if let Some(action) = action {
            self.request(action, "virtio-control-port");
        }
        if disconnected {
            // Host end not connected: poll(2) would report POLLHUP in a loop. Look again later.
            self.port_retry_at = Some(Instant::now() + PORT_RETRY);
        }
    }

    /// Reads what a pipe has; returns false at end of stream.
    fn read_pipe(&mut self, i: usize) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            let pipe = &mut self.pipes[i];
            match nix::unistd::read(&pipe.fd, &mut buf) {
                Ok(0) => {
                    if let Some(rest) = pipe.split.finish() {
                        self.child_line(i, &rest);
                    }
                    return false;
                }
                Ok(n) => {
                    let lines = pipe.split.feed(&buf[..n]);
                    for line in lines {
                        self.child_line(i, &line);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return true,
                Err(_) => return false,
            }
        }
    }

    fn drain_pipes(&mut self) {
        for i in (0..self.pipes.len()).rev() {
            if !self.read_pipe(i) {
                self.pipes.swap_remove(i);
            }
        }
    }

    fn child_line(&mut self, pipe_index: usize, line: &str) {
        let pipe = &self.pipes[pipe_index];
        let (svc_index, pid, stderr) = (pipe.svc, pipe.pid, pipe.stderr);
        let svc = &self.services[svc_index];
        let name = svc.cfg.name.clone();
        let is_ready_line = !stderr
            && !svc.ready
            && matches!(svc.state, State::Running { pid: p, .. } if p == pid)
            && svc.cfg.ready_line.as_deref() == Some(line);
        self.log.line(&format!("[{name}] {line}"));
        if is_ready_line {
            self.mark_ready(svc_index);
        }
    }

    fn mark_ready(&mut self, i: usize) {
        let svc = &mut self.services[i];
        svc.ready = true;
        svc.settled = true;
        let State::Running { pid, .. } = svc.state else {
            return;
        };
        let (name, pid, start) = (svc.cfg.name.clone(), pid.to_string(), svc.starts.to_string());
        self.log.milestone("daemon-ready", &[("name", &name), ("pid", &pid), ("start", &start)]);
    }

    fn spawn(&mut self, i: usize) {
        let svc = &mut self.services[i];
        svc.starts += 1;
        svc.ready = false;
        let mut command = Command::new(&svc.cfg.path);
        command
            .args(&svc.cfg.args)
            .env_clear()
            .env("PATH", PATH)
            .env("SPHERE_SERVICE", &svc.cfg.name)
            .envs(&svc.cfg.env)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: the closure only calls sigprocmask(2), which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                let empty = SigSet::empty();
                empty.thread_set_mask().map_err(std::io::Error::from)
            });
        }
        let name = svc.cfg.name.clone();
        match command.spawn() {
            Ok(mut child) => {
                let raw = i32::try_from(child.id()).unwrap_or(0);
                let pid = Pid::from_raw(raw);
                svc.state = State::Running { pid, started: Instant::now() };
                let start = svc.starts.to_string();
                if let Some(out) = child.stdout.take() {
                    self.add_pipe(OwnedFd::from(out), i, pid, false);
                }
                if let Some(err) = child.stderr.take() {
                    self.add_pipe(OwnedFd::from(err), i, pid, true);
                }
                // `child` is dropped without waiting: SIGCHLD + waitpid(-1) reap it.
                self.log.milestone("daemon-start", &[("name", &name), ("pid", &raw.to_string()), ("start", &start)]);
            }
            Err(err) => {
                let path = svc.cfg.path.clone();
                self.log.warn(format!("cannot start service {name} ({path}): {err}"));
                self.after_exit(i, Duration::ZERO, false);
            }
        }
    }

    fn add_pipe(&mut self, fd: OwnedFd, svc: usize, pid: Pid, stderr: bool) {
        if let Err(err) = set_nonblocking(&fd) {
            self.log.warn(format!("pipe: {err}"));
        }
        self.pipes.push(Pipe { fd, svc, pid, stderr, split: LineSplitter::new(MAX_LINE) });
    }

    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    self.child_exited(pid, code == 0, format!("exited with status {code}"))
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.child_exited(pid, false, format!("killed by {}", sig.as_str()))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    fn child_exited(&mut self, pid: Pid, success: bool, how: String) {
        let Some(i) = self.services.iter().position(|s| matches!(s.state, State::Running { pid: p, .. } if p == pid))
        else {
            return; // an orphan reparented to init: reaped, nothing else to do
        };
        let State::Running { started, .. } = self.services[i].state else {
            return;
        };
        let ran_for = started.elapsed();
        let name = self.services[i].cfg.name.clone();
        self.log.info(format!("service {name} (pid {pid}) {how} after {:.3}s", ran_for.as_secs_f64()));
        self.after_exit(i, ran_for, success);
    }

    fn after_exit(&mut self, i: usize, ran_for: Duration, success: bool) {
        let shutting_down = self.shutdown.is_some();
        let svc = &mut self.services[i];
        svc.ready = false;
        let restart = !shutting_down
            && match svc.cfg.restart {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => !success,
                RestartPolicy::Never => false,
            };
        if !restart {
            svc.state = State::Stopped;
            svc.settled = true;
            return;
        }
        let delay = svc.backoff.on_exit(ran_for);
        svc.state = State::Waiting { until: Instant::now() + delay };
        let (name, failures) = (svc.cfg.name.clone(), svc.backoff.failures());
        self.log.info(format!("restarting {name} in {:.3}s (quick exit #{failures})", delay.as_secs_f64()));
    }

    /// Starts an orderly shutdown: SIGTERM to every service's process group now, SIGKILL after
    /// `stop_timeout_ms`.
    pub fn request(&mut self, action: Action, why: &str) {
        if let Some(shutdown) = &self.shutdown {
            self.log.info(format!("{why}: {} already in progress", shutdown.action.name()));
            return;
        }
        self.log.milestone("shutdown-start", &[("action", action.name()), ("by", why)]);
        let now = Instant::now();
        self.shutdown = Some(Shutdown {
            action,
            kill_at: now + self.stop_timeout,
            killed: false,
            give_up_at: now + self.stop_timeout + Duration::from_secs(1),
        });
        for svc in &mut self.services {
            match svc.state {
                State::Running { pid, .. } => signal_group(pid, Signal::SIGTERM),
                State::Waiting { .. } => svc.state = State::Stopped,
                State::Stopped => {}
            }
        }
    }
}

/// Signals a service's process group (each service leads its own), or just the process.
fn signal_group(pid: Pid, sig: Signal) {
    if kill(Pid::from_raw(-pid.as_raw()), sig).is_err() {
        let _ = kill(pid, sig);
    }
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
