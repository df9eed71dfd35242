//! OpenSphere's app sandbox: each app process gets exactly what its `app_manifest.json` grants.
//!
//! Threat model: the app is hostile. It may run any code its package carries and call any
//! syscall; it must not read or change anything outside what its manifest grants (other apps'
//! storage, the OS, device nodes it was not given), must not raise its privileges, and must not
//! take the device down (memory, processes, CPU). The app manager and the kernel are trusted.
//!
//! Layers, each enough to stop a class of escapes on its own (`docs/sandbox.md` says why each):
//!
//! - its own uid/gid, and user, mount, pid, ipc, uts and cgroup namespaces, and its own network
//!   namespace (pinned per app across restarts, [`netns`]);
//! - a minimal root: the package read-only at `/app`, a private `/tmp`, `/proc` of its own pid
//!   namespace (`subset=pid`, read-only), only the granted `/dev` nodes, and its
//!   `MutableStorage` at `/mnt/config` with a hard quota ([`storage`]);
//! - Landlock for the file system, TCP ports and (ABI ≥ 6) signal/abstract-socket scoping
//!   ([`landlock_rules`]);
//! - a seccomp allow-list that kills on the kernel's attack surface ([`seccomp`]);
//! - no capabilities (bounding and ambient sets cleared), no_new_privs;
//! - cgroup v2 memory/pids/cpu limits ([`cgroup`]).
//!
//! Anything the running kernel cannot enforce is listed in [`Degradations`], never skipped
//! silently.
//!
//! # How the app manager uses it
//!
//! [`spawn`] must run in a single-threaded process (it clones a child that runs launcher code
//! before `execve`). The app manager is a multi-threaded tokio process, so it starts the
//! `sphere-sandbox-exec` launcher binary per app ([`launcher::command`]), passing the
//! [`SandboxSpec`] as JSON; the launcher stays as the app's supervisor (≈1 MB RSS), forwards a
//! stop request (SIGTERM to the launcher → SIGTERM, grace, SIGKILL to the app) and writes an
//! [`ExitReport`] (exit code or signal, seccomp kill, OOM kill, violation counters) when the app
//! ends. Its exit status mirrors the app's.

pub mod cgroup;
mod child;
pub mod features;
pub mod landlock_rules;
pub mod launcher;
pub mod netns;
mod sandbox;
pub mod seccomp;
pub mod spec;
pub mod storage;

pub use features::{Degradation, Degradations, landlock_abi};
pub use sandbox::{ExitCause, ExitReport, SandboxError, SandboxedChild, Violations, classify, probe, spawn};
pub use spec::{
    CgroupLimits, DeviceGrant, LaunchContext, LogTarget, NetworkSpec, SandboxSpec, SpecError, StorageSpec,
    spec_from_manifest,
};
