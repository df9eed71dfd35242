//! The seccomp policy: an allow-list, with the kernel attack surface apps never need killed.
//!
//! Two filters are stacked (the kernel runs both and the strictest answer wins:
//! KILL_PROCESS > ERRNO > ALLOW; between two ERRNO answers the filter installed last wins):
//!
//! 1. **arguments** (built with seccompiler): allowed syscalls whose arguments matter — `clone`
//!    without namespace flags, `socket` only for unix, inet/inet6 stream and datagram and netlink
//!    route (no raw, no packet), `ioctl` without TIOCSTI/TIOCLINUX/TIOCSETD, `personality` only
//!    as a query — answer EPERM otherwise.
//! 2. **syscall table** ([`syscall_table_filter`], installed last):
//!    - the kill list — syscalls that only exist to administer the machine or that are the usual
//!      kernel-exploit entry points (ptrace, mount, bpf, io_uring, keyctl, module loading, kexec,
//!      perf_event_open, userfaultfd, …) — kills the whole process with SIGSYS. A killed process
//!      is visible to the launcher (exit cause `seccomp_kill`), so attempts become telemetry;
//!    - the allow-list is allowed;
//!    - everything else answers ENOSYS: libraries probe newer syscalls and fall back on ENOSYS
//!      (the armv7 `*_time64` calls), and an unknown syscall is never allowed. `clone3` is
//!      deliberately not listed: its flags sit behind a pointer seccomp cannot read, and on
//!      ENOSYS glibc falls back to `clone`, whose flags filter 1 checks.
//!
//! seccompiler (rust-vmm) knows x86_64, aarch64 and riscv64 but not 32-bit arm; its programs are
//! arch-independent apart from the audit-arch check in the first instructions, so for armv7 we
//! build with a placeholder arch and patch that one constant ([`patch_audit_arch`]), with a test
//! that the patch hits exactly the arch check.

// libc's syscall numbers and ioctl constants are i64/u64 on x86_64 but i32/u32 on armv7: the
// casts are needed on one architecture and redundant on the other.
#![allow(clippy::unnecessary_cast)]

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};
use std::collections::BTreeMap;

/// A syscall by name and number on the architecture this crate is built for.
pub type Syscall = (&'static str, i64);

macro_rules! syscalls {
    ($($name:ident),* $(,)?) => { &[$((stringify!($name), libc::$name as i64)),*] };
}

/// Syscalls of the allow-list present on every supported architecture.
/// (`#[rustfmt::skip]`: one name per line would make the list 250 lines long.)
#[rustfmt::skip]
const ALLOW_COMMON: &[Syscall] = syscalls![
    SYS_read, SYS_write, SYS_readv, SYS_writev, SYS_pread64, SYS_pwrite64, SYS_preadv, SYS_pwritev,
    SYS_openat, SYS_close, SYS_close_range, SYS_lseek, SYS_statx, SYS_fstatfs, SYS_statfs,
    SYS_faccessat, SYS_faccessat2, SYS_readlinkat, SYS_getdents64, SYS_getcwd, SYS_chdir,
    SYS_fchdir, SYS_mkdirat, SYS_unlinkat, SYS_renameat, SYS_renameat2, SYS_linkat, SYS_symlinkat,
    SYS_fchmod, SYS_fchmodat, SYS_fchownat, SYS_umask, SYS_utimensat, SYS_fsync, SYS_fdatasync,
    SYS_ftruncate, SYS_truncate, SYS_fallocate, SYS_flock, SYS_fcntl, SYS_dup, SYS_dup3, SYS_pipe2,
    SYS_copy_file_range, SYS_splice, SYS_tee, SYS_readahead, SYS_sync, SYS_syncfs, SYS_getxattr,
    SYS_fgetxattr, SYS_lgetxattr, SYS_listxattr, SYS_flistxattr, SYS_mprotect, SYS_munmap, SYS_brk,
    SYS_mremap, SYS_madvise, SYS_msync, SYS_mincore, SYS_mlock, SYS_munlock, SYS_memfd_create,
    SYS_membarrier, SYS_rt_sigaction, SYS_rt_sigprocmask, SYS_rt_sigreturn, SYS_rt_sigpending,
    SYS_rt_sigsuspend, SYS_rt_sigtimedwait, SYS_rt_sigqueueinfo, SYS_sigaltstack, SYS_kill,
    SYS_tkill, SYS_tgkill, SYS_pidfd_open, SYS_pidfd_send_signal, SYS_execve,
    SYS_execveat, SYS_exit, SYS_exit_group, SYS_wait4, SYS_waitid, SYS_set_tid_address,
    SYS_set_robust_list, SYS_get_robust_list, SYS_futex, SYS_rseq, SYS_gettid, SYS_getpid,
    SYS_getppid, SYS_getpgid, SYS_setpgid, SYS_getsid, SYS_setsid, SYS_getuid, SYS_geteuid,
    SYS_getgid, SYS_getegid, SYS_getresuid, SYS_getresgid, SYS_getgroups, SYS_capget, SYS_prctl,
    SYS_prlimit64, SYS_getrusage, SYS_getpriority, SYS_setpriority, SYS_sched_yield,
    SYS_sched_getaffinity, SYS_sched_setaffinity, SYS_sched_getparam, SYS_sched_getscheduler,
    SYS_sched_get_priority_max, SYS_sched_get_priority_min, SYS_uname, SYS_sysinfo, SYS_times,
    SYS_getrandom, SYS_clock_gettime, SYS_clock_getres, SYS_clock_nanosleep, SYS_nanosleep,
    SYS_gettimeofday, SYS_getitimer, SYS_setitimer, SYS_timer_create, SYS_timer_settime,
    SYS_timer_gettime, SYS_timer_getoverrun, SYS_timer_delete, SYS_timerfd_create,
    SYS_timerfd_settime, SYS_timerfd_gettime, SYS_eventfd2, SYS_signalfd4, SYS_epoll_create1,
    SYS_epoll_ctl, SYS_epoll_pwait, SYS_epoll_pwait2, SYS_ppoll, SYS_pselect6, SYS_inotify_init1,
    SYS_inotify_add_watch, SYS_inotify_rm_watch, SYS_socket, SYS_socketpair, SYS_bind, SYS_listen,
    SYS_accept4, SYS_connect, SYS_getsockname, SYS_getpeername, SYS_sendto, SYS_recvfrom,
    SYS_sendmsg, SYS_recvmsg, SYS_sendmmsg, SYS_recvmmsg, SYS_shutdown, SYS_setsockopt,
    SYS_getsockopt, SYS_ioctl, SYS_restart_syscall, SYS_mq_open, SYS_mq_unlink, SYS_mq_timedsend,
    SYS_mq_timedreceive, SYS_mq_notify, SYS_mq_getsetattr, SYS_shmget, SYS_shmat, SYS_shmdt,
    SYS_shmctl, SYS_semget, SYS_semop, SYS_semctl, SYS_msgget, SYS_msgsnd, SYS_msgrcv, SYS_msgctl,
    SYS_landlock_create_ruleset, SYS_landlock_add_rule, SYS_landlock_restrict_self, SYS_seccomp,
    SYS_setresuid, SYS_setresgid, SYS_personality, SYS_clone,
    // Harmless without capabilities (EPERM); apps call them to drop ids or make FIFOs.
    SYS_capset, SYS_mknodat,
];

#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
const ALLOW_ARCH: &[Syscall] = syscalls![
    SYS_arch_prctl, SYS_mmap, SYS_fstat, SYS_stat, SYS_lstat, SYS_newfstatat, SYS_open, SYS_creat,
    SYS_access, SYS_pipe, SYS_poll, SYS_select, SYS_fork, SYS_vfork, SYS_dup2, SYS_readlink,
    SYS_rename, SYS_mkdir, SYS_rmdir, SYS_unlink, SYS_symlink, SYS_link, SYS_chmod, SYS_getdents,
    SYS_alarm, SYS_pause, SYS_time, SYS_epoll_wait, SYS_epoll_create, SYS_eventfd, SYS_signalfd,
    SYS_inotify_init, SYS_getrlimit, SYS_sendfile, SYS_fadvise64, SYS_accept, SYS_utimes,
    SYS_getpgrp, SYS_sync_file_range, SYS_sched_rr_get_interval, SYS_setuid, SYS_setgid,
    SYS_setreuid, SYS_setregid, SYS_setgroups, SYS_setfsuid, SYS_setfsgid, SYS_mknod,
];

/// armv7 EABI: the 32-bit variants, the `*_time64` calls of 32-bit userlands built with 64-bit
/// time (their numbers are missing from `libc` 0.2, so they are spelled out), and ARM's private
/// calls glibc uses (`set_tls`, `cacheflush`).
#[cfg(target_arch = "arm")]
const ALLOW_ARCH: &[Syscall] = &[
    ("SYS_mmap2", libc::SYS_mmap2 as i64),
    ("SYS_fstat64", libc::SYS_fstat64 as i64),
    ("SYS_fstatat64", libc::SYS_fstatat64 as i64),
    ("SYS_stat64", libc::SYS_stat64 as i64),
    ("SYS_lstat64", libc::SYS_lstat64 as i64),
    ("SYS_fstat", libc::SYS_fstat as i64),
    ("SYS_statfs64", libc::SYS_statfs64 as i64),
    ("SYS_fstatfs64", libc::SYS_fstatfs64 as i64),
    ("SYS__llseek", libc::SYS__llseek as i64),
    ("SYS_fcntl64", libc::SYS_fcntl64 as i64),
    ("SYS_ftruncate64", libc::SYS_ftruncate64 as i64),
    ("SYS_truncate64", libc::SYS_truncate64 as i64),
    ("SYS_getuid32", libc::SYS_getuid32 as i64),
    ("SYS_getgid32", libc::SYS_getgid32 as i64),
    ("SYS_geteuid32", libc::SYS_geteuid32 as i64),
    ("SYS_getegid32", libc::SYS_getegid32 as i64),
    ("SYS_getresuid32", libc::SYS_getresuid32 as i64),
    ("SYS_getresgid32", libc::SYS_getresgid32 as i64),
    ("SYS_getgroups32", libc::SYS_getgroups32 as i64),
    ("SYS_setresuid32", libc::SYS_setresuid32 as i64),
    ("SYS_setresgid32", libc::SYS_setresgid32 as i64),
    ("SYS_setuid32", libc::SYS_setuid32 as i64),
    ("SYS_setgid32", libc::SYS_setgid32 as i64),
    ("SYS_setreuid32", libc::SYS_setreuid32 as i64),
    ("SYS_setregid32", libc::SYS_setregid32 as i64),
    ("SYS_setgroups32", libc::SYS_setgroups32 as i64),
    ("SYS_setfsuid32", libc::SYS_setfsuid32 as i64),
    ("SYS_setfsgid32", libc::SYS_setfsgid32 as i64),
    ("SYS_mknod", libc::SYS_mknod as i64),
    ("SYS_ugetrlimit", libc::SYS_ugetrlimit as i64),
    ("SYS_sigreturn", libc::SYS_sigreturn as i64),
    ("SYS_send", libc::SYS_send as i64),
    ("SYS_recv", libc::SYS_recv as i64),
    ("SYS_open", libc::SYS_open as i64),
    ("SYS_access", libc::SYS_access as i64),
    ("SYS_pipe", libc::SYS_pipe as i64),
    ("SYS_poll", libc::SYS_poll as i64),
    ("SYS__newselect", libc::SYS__newselect as i64),
    ("SYS_fork", libc::SYS_fork as i64),
    ("SYS_vfork", libc::SYS_vfork as i64),
    ("SYS_dup2", libc::SYS_dup2 as i64),
    ("SYS_readlink", libc::SYS_readlink as i64),
    ("SYS_rename", libc::SYS_rename as i64),
    ("SYS_mkdir", libc::SYS_mkdir as i64),
    ("SYS_rmdir", libc::SYS_rmdir as i64),
    ("SYS_unlink", libc::SYS_unlink as i64),
    ("SYS_symlink", libc::SYS_symlink as i64),
    ("SYS_link", libc::SYS_link as i64),
    ("SYS_chmod", libc::SYS_chmod as i64),
    ("SYS_getdents", libc::SYS_getdents as i64),
    ("SYS_pause", libc::SYS_pause as i64),
    ("SYS_epoll_wait", libc::SYS_epoll_wait as i64),
    ("SYS_epoll_create", libc::SYS_epoll_create as i64),
    ("SYS_eventfd", libc::SYS_eventfd as i64),
    ("SYS_signalfd", libc::SYS_signalfd as i64),
    ("SYS_inotify_init", libc::SYS_inotify_init as i64),
    ("SYS_sendfile", libc::SYS_sendfile as i64),
    ("SYS_sendfile64", libc::SYS_sendfile64 as i64),
    ("SYS_arm_fadvise64_64", libc::SYS_arm_fadvise64_64 as i64),
    ("SYS_arm_sync_file_range", libc::SYS_arm_sync_file_range as i64),
    ("SYS_accept", libc::SYS_accept as i64),
    ("SYS_utimes", libc::SYS_utimes as i64),
    ("SYS_getpgrp", libc::SYS_getpgrp as i64),
    ("SYS_sched_rr_get_interval", libc::SYS_sched_rr_get_interval as i64),
    ("clock_gettime64", 403),
    ("clock_getres_time64", 406),
    ("clock_nanosleep_time64", 407),
    ("timer_gettime64", 408),
    ("timer_settime64", 409),
    ("timerfd_gettime64", 410),
    ("timerfd_settime64", 411),
    ("utimensat_time64", 412),
    ("pselect6_time64", 413),
    ("ppoll_time64", 414),
    ("recvmmsg_time64", 417),
    ("mq_timedsend_time64", 418),
    ("mq_timedreceive_time64", 419),
    ("semtimedop_time64", 420),
    ("rt_sigtimedwait_time64", 421),
    ("futex_time64", 422),
    ("sched_rr_get_interval_time64", 423),
    ("ARM_cacheflush", 0x0f_0002),
    ("ARM_set_tls", 0x0f_0005),
    ("ARM_get_tls", 0x0f_0006),
];

/// Killed on sight: never needed by an app, and the usual ways into the kernel or out of a box.
#[rustfmt::skip]
const KILL_COMMON: &[Syscall] = syscalls![
    SYS_ptrace, SYS_process_vm_readv, SYS_process_vm_writev, SYS_kcmp, SYS_pidfd_getfd, SYS_mount,
    SYS_umount2, SYS_pivot_root, SYS_chroot, SYS_unshare, SYS_setns, SYS_move_mount, SYS_open_tree,
    SYS_fsopen, SYS_fsconfig, SYS_fsmount, SYS_fspick, SYS_mount_setattr, SYS_open_by_handle_at,
    SYS_name_to_handle_at, SYS_bpf, SYS_keyctl, SYS_add_key, SYS_request_key, SYS_kexec_load,
    SYS_init_module, SYS_finit_module, SYS_delete_module, SYS_io_uring_setup, SYS_io_uring_enter,
    SYS_io_uring_register, SYS_perf_event_open, SYS_userfaultfd, SYS_swapon, SYS_swapoff,
    SYS_reboot, SYS_syslog, SYS_acct, SYS_settimeofday, SYS_clock_settime, SYS_clock_adjtime,
    SYS_adjtimex, SYS_quotactl, SYS_fanotify_init, SYS_vhangup, SYS_sethostname, SYS_setdomainname,
];

#[cfg(target_arch = "x86_64")]
const KILL_ARCH: &[Syscall] =
    syscalls![SYS_kexec_file_load, SYS_iopl, SYS_ioperm, SYS_uselib, SYS_lookup_dcookie, SYS_modify_ldt];

#[cfg(target_arch = "arm")]
const KILL_ARCH: &[Syscall] = &[
    ("SYS_kexec_file_load", libc::SYS_kexec_file_load as i64),
    ("SYS_uselib", libc::SYS_uselib as i64),
    ("clock_settime64", 404),
    ("clock_adjtime64", 405),
];

/// Audit-arch value of the architecture this crate is built for (`AUDIT_ARCH_*`).
#[cfg(target_arch = "x86_64")]
pub const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "arm")]
pub const AUDIT_ARCH: u32 = 0x4000_0028;
/// seccompiler's arch we build with; on arm its audit constant is patched to [`AUDIT_ARCH`].
const BUILD_ARCH: TargetArch = TargetArch::x86_64;
const BUILD_ARCH_AUDIT: u32 = 0xC000_003E;

/// Every syscall the allow-list names (both lists), for reports and tests.
pub fn allowed_syscalls() -> impl Iterator<Item = &'static Syscall> {
    ALLOW_COMMON.iter().chain(ALLOW_ARCH)
}

/// Every syscall that kills the process.
pub fn killed_syscalls() -> impl Iterator<Item = &'static Syscall> {
    KILL_COMMON.iter().chain(KILL_ARCH)
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("seccompiler: {0}")]
    Build(#[from] seccompiler::BackendError),
    #[error("the audit-arch check of the generated filter was not where expected")]
    ArchPatch,
}

/// The compiled filters, in installation order.
pub struct Policy {
    pub filters: Vec<BpfProgram>,
}

/// The obsolete SOCK_PACKET type (10), still accepted by the kernel for AF_INET sockets; libc
/// deprecates the constant, we only need its value to refuse it.
const SOCK_PACKET: i32 = 10;

fn rule(conditions: Vec<Cond>) -> Result<SeccompRule, PolicyError> {
    Ok(SeccompRule::new(conditions)?)
}

fn cond(arg: u8, op: Op, value: u64) -> Result<Cond, PolicyError> {
    // Dword: the kernel reads these arguments as 32-bit ints, so only the low half may decide
    // (a 64-bit compare of ioctl's request would let TIOCSTI|1<<32 through).
    Ok(Cond::new(arg, Len::Dword, op, value)?)
}

/// The argument rules: a call matching any rule answers EPERM. Written as refusals so the filter
/// holds only these few syscalls (a smaller filter is cheaper to install; the allow-list filter
/// still refuses everything unlisted). Each refusal is the complement of what is allowed:
/// `clone` without namespace flags; `socket` for unix, inet/inet6 stream and datagram, and
/// netlink route; `socketpair` for unix; `ioctl` except TIOCSTI/TIOCLINUX/TIOCSETD; `personality`
/// only as a query or PER_LINUX.
fn argument_rules() -> Result<BTreeMap<i64, Vec<SeccompRule>>, PolicyError> {
    let mut rules = BTreeMap::new();
    let mut clone = Vec::new();
    for flag in [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWCGROUP,
    ] {
        clone.push(rule(vec![cond(0, Op::MaskedEq(flag as u64), flag as u64)?])?);
    }
    rules.insert(libc::SYS_clone as i64, clone);
    let sock_type_mask = 0xf; // SOCK_NONBLOCK/SOCK_CLOEXEC live above the type bits.
    let mut socket = vec![rule(vec![
        cond(0, Op::Ne, libc::AF_UNIX as u64)?,
        cond(0, Op::Ne, libc::AF_INET as u64)?,
        cond(0, Op::Ne, libc::AF_INET6 as u64)?,
        cond(0, Op::Ne, libc::AF_NETLINK as u64)?,
    ])?];
    // Every inet type but stream and datagram (the kernel refuses the type values not listed).
    for family in [libc::AF_INET, libc::AF_INET6] {
        for kind in [libc::SOCK_RAW, libc::SOCK_RDM, libc::SOCK_SEQPACKET, libc::SOCK_DCCP, SOCK_PACKET] {
            socket.push(rule(vec![
                cond(0, Op::Eq, family as u64)?,
                cond(1, Op::MaskedEq(sock_type_mask), kind as u64)?,
            ])?);
        }
    }
    // getifaddrs() and AI_ADDRCONFIG ask the routing table; in the app's own network namespace
    // that reveals only its own interfaces. Every other netlink family is refused.
    socket.push(rule(vec![cond(0, Op::Eq, libc::AF_NETLINK as u64)?, cond(2, Op::Ne, libc::NETLINK_ROUTE as u64)?])?);
    rules.insert(libc::SYS_socket as i64, socket);
    rules.insert(libc::SYS_socketpair as i64, vec![rule(vec![cond(0, Op::Ne, libc::AF_UNIX as u64)?])?]);
    let mut ioctl = Vec::new();
    for request in [libc::TIOCSTI as u64, libc::TIOCLINUX as u64, libc::TIOCSETD as u64] {
        ioctl.push(rule(vec![cond(1, Op::Eq, request)?])?);
    }
    rules.insert(libc::SYS_ioctl as i64, ioctl);
    // Only the query (0xffffffff) and plain Linux: no READ_IMPLIES_EXEC, no ADDR_NO_RANDOMIZE.
    rules.insert(libc::SYS_personality as i64, vec![rule(vec![cond(0, Op::Ne, 0xffff_ffff)?, cond(0, Op::Ne, 0)?])?]);
    Ok(rules)
}

// Classic BPF opcodes (linux/bpf_common.h): class | size/op | mode/source.
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS (0x20)
const BPF_JMP_JA: u16 = 0x05; // BPF_JMP | BPF_JA (0)
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// A balanced decision tree over sorted `(syscall, action)` pairs; anything else gets `default`.
fn decision_tree(entries: &[(u32, u32)], default: u32) -> Vec<sock_filter> {
    if entries.len() <= 4 {
        let mut leaf = Vec::with_capacity(entries.len() * 2 + 1);
        for (number, action) in entries {
            leaf.push(jump(BPF_JMP_JEQ_K, *number, 0, 1));
            leaf.push(stmt(BPF_RET_K, *action));
        }
        leaf.push(stmt(BPF_RET_K, default));
        return leaf;
    }
    let middle = entries.len() / 2;
    let below = decision_tree(&entries[..middle], default);
    let above = decision_tree(&entries[middle..], default);
    // `JGE` has 8-bit jump offsets; the long jump over the lower half is a 32-bit `JA`.
    let mut node = vec![jump(BPF_JMP_JGE_K, entries[middle].0, 0, 1), stmt(BPF_JMP_JA, below.len() as u32)];
    node.extend(below);
    node.extend(above);
    node
}

/// The syscall table as one filter: the kill list kills, the allow-list allows, the rest ENOSYS.
///
/// Built here rather than with seccompiler because seccompiler emits a linear chain (about five
/// instructions per syscall, 1500 for this table) and the kernel emulates every filter once per
/// syscall number when it is installed, to fill its action cache: a chain that long cost ≈0.5 ms
/// per launch. The tree answers any syscall in about nine comparisons.
pub fn syscall_table_filter() -> BpfProgram {
    let mut entries: Vec<(u32, u32)> = killed_syscalls()
        .map(|(_, number)| (*number as u32, libc::SECCOMP_RET_KILL_PROCESS))
        .chain(allowed_syscalls().map(|(_, number)| (*number as u32, libc::SECCOMP_RET_ALLOW)))
        .collect();
    entries.sort_unstable();
    let mut program = vec![
        stmt(BPF_LD_W_ABS, SECCOMP_DATA_ARCH),
        jump(BPF_JMP_JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR),
    ];
    program.extend(decision_tree(&entries, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32));
    program
}

/// Build the filters for this architecture: the argument filter (seccompiler), then the
/// syscall table (installed last, so its ENOSYS wins over another filter's ERRNO).
pub fn build_policy() -> Result<Policy, PolicyError> {
    let arguments = SeccompFilter::new(
        argument_rules()?,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        BUILD_ARCH,
    )?;
    let mut arguments: BpfProgram = arguments.try_into()?;
    patch_audit_arch(&mut arguments, BUILD_ARCH_AUDIT, AUDIT_ARCH)?;
    Ok(Policy { filters: vec![arguments, syscall_table_filter()] })
}

/// Point the arch check of a seccompiler program at `to` (see the module docs for why).
pub fn patch_audit_arch(program: &mut BpfProgram, from: u32, to: u32) -> Result<(), PolicyError> {
    // seccompiler's program starts: load arch; jeq ARCH; ret kill.
    match program.get_mut(1) {
        Some(jump) if jump.code == BPF_JMP_JEQ_K && jump.k == from => {
            jump.k = to;
            Ok(())
        }
        _ => Err(PolicyError::ArchPatch),
    }
}

/// Install the filters on the calling thread (no_new_privs is set by seccompiler first).
pub fn apply(policy: &Policy) -> Result<(), seccompiler::Error> {
    for filter in &policy.filters {
        seccompiler::apply_filter(filter)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// A classic-BPF interpreter for the instructions our filters use.
    fn run(program: &[sock_filter], arch: u32, number: u32) -> u32 {
        let mut pc = 0;
        let mut accumulator = 0u32;
        loop {
            let instruction = &program[pc];
            pc += 1;
            match instruction.code {
                BPF_LD_W_ABS => {
                    accumulator = match instruction.k {
                        SECCOMP_DATA_NR => number,
                        SECCOMP_DATA_ARCH => arch,
                        _ => 0, // Arguments: zero in these probes.
                    }
                }
                BPF_JMP_JA => pc += instruction.k as usize,
                BPF_JMP_JEQ_K | BPF_JMP_JGE_K => {
                    let taken = if instruction.code == BPF_JMP_JEQ_K {
                        accumulator == instruction.k
                    } else {
                        accumulator >= instruction.k
                    };
                    pc += usize::from(if taken { instruction.jt } else { instruction.jf });
                }
                BPF_RET_K => return instruction.k,
                code => panic!("instruction {code:#x} not interpreted"),
            }
        }
    }

    #[test]
    fn syscall_table_answers_every_syscall_as_listed() {
        let table = syscall_table_filter();
        assert!(table.len() < 4096, "BPF_MAXINSNS is 4096, got {}", table.len());
        let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        let allowed: HashSet<u32> = allowed_syscalls().map(|(_, n)| *n as u32).collect();
        let killed: HashSet<u32> = killed_syscalls().map(|(_, n)| *n as u32).collect();
        for number in (0..1024).chain(0x0f_0000..0x0f_0010).chain([0x4000_0000, u32::MAX]) {
            let expected = if allowed.contains(&number) {
                libc::SECCOMP_RET_ALLOW
            } else if killed.contains(&number) {
                libc::SECCOMP_RET_KILL_PROCESS
            } else {
                enosys
            };
            assert_eq!(run(&table, AUDIT_ARCH, number), expected, "syscall {number}");
        }
        assert_eq!(run(&table, 0x4000_0003, 0), libc::SECCOMP_RET_KILL_PROCESS, "other arch (i386) is killed");
    }

    #[test]
    fn policy_builds_within_kernel_limits() {
        let policy = build_policy().expect("policy");
        assert_eq!(policy.filters.len(), 2);
        for filter in &policy.filters {
            assert!(filter.len() < 4096, "BPF_MAXINSNS is 4096, got {}", filter.len());
            assert_eq!(filter[1].k, AUDIT_ARCH, "arch check points at this architecture");
        }
    }

    #[test]
    fn killed_and_allowed_do_not_overlap() {
        // (Also checked per number by the table test: an overlap would be allowed there.)
        let allowed: HashSet<i64> = allowed_syscalls().map(|(_, n)| *n).collect();
        for (name, number) in killed_syscalls() {
            assert!(!allowed.contains(number), "{name} is both allowed and killed");
        }
    }

    #[test]
    fn the_escape_primitives_are_killed() {
        let killed: HashSet<&str> = killed_syscalls().map(|(name, _)| *name).collect();
        for name in [
            "SYS_ptrace",
            "SYS_mount",
            "SYS_pivot_root",
            "SYS_chroot",
            "SYS_unshare",
            "SYS_setns",
            "SYS_bpf",
            "SYS_keyctl",
            "SYS_kexec_load",
            "SYS_init_module",
            "SYS_finit_module",
            "SYS_io_uring_setup",
            "SYS_perf_event_open",
            "SYS_userfaultfd",
            "SYS_open_by_handle_at",
        ] {
            assert!(killed.contains(name), "{name} must kill");
        }
    }

    #[test]
    fn no_duplicate_names_or_numbers() {
        let mut seen = HashSet::new();
        for (name, number) in allowed_syscalls().chain(killed_syscalls()) {
            assert!(seen.insert(*number), "{name} ({number}) listed twice");
        }
    }

    #[test]
    fn patch_refuses_an_unexpected_program() {
        let mut program: BpfProgram = Vec::new();
        assert!(patch_audit_arch(&mut program, BUILD_ARCH_AUDIT, AUDIT_ARCH).is_err());
    }

    #[test]
    fn argument_rules_cover_the_filtered_syscalls() {
        let rules = argument_rules().expect("rules");
        for number in [libc::SYS_clone, libc::SYS_socket, libc::SYS_ioctl, libc::SYS_personality] {
            assert!(!rules[&(number as i64)].is_empty());
        }
        assert!(!rules.contains_key(&(libc::SYS_read as i64)), "plain syscalls are not in the argument filter");
        assert!(!rules.contains_key(&(libc::SYS_clone3 as i64)), "clone3 must answer ENOSYS");
    }
}

#[cfg(test)]
mod live {
    use super::*;

    /// Install the policy in a forked child and report what a few syscalls answer.
    fn in_child(probe: fn() -> i64) -> (i32, i64) {
        let policy = build_policy().expect("policy");
        let mut fds = [0; 2];
        // SAFETY: pipe + fork in a test; the child only runs async-signal-safe-ish code and _exits.
        unsafe {
            assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
            let pid = libc::fork();
            if pid == 0 {
                if apply(&policy).is_err() {
                    libc::_exit(99);
                }
                let result = probe();
                let value = if result < 0 { -i64::from(*libc::__errno_location()) } else { result };
                libc::write(fds[1], (&value as *const i64).cast(), 8);
                libc::_exit(0);
            }
            libc::close(fds[1]);
            let mut value = 0i64;
            libc::read(fds[0], (&mut value as *mut i64).cast(), 8);
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            let signal = if libc::WIFSIGNALED(status) { libc::WTERMSIG(status) } else { 0 };
            (signal, value)
        }
    }

    #[test]
    fn clone3_answers_enosys() {
        let (signal, value) = in_child(|| {
            let mut args = [0u64; 11];
            args[0] = (libc::CLONE_NEWUSER) as u64;
            args[4] = libc::SIGCHLD as u64;
            // SAFETY: clone3 with a valid args struct; a child (if any) exits at once.
            let r = unsafe { libc::syscall(libc::SYS_clone3, args.as_mut_ptr(), 88) } as i64;
            if r == 0 {
                unsafe { libc::_exit(0) };
            }
            r
        });
        assert_eq!((signal, value), (0, -i64::from(libc::ENOSYS)));
    }

    #[test]
    fn ptrace_kills_and_raw_sockets_are_refused() {
        // SAFETY: harmless ptrace request; seccomp kills first.
        assert_eq!(in_child(|| unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) } as i64).0, libc::SIGSYS);
        // SAFETY: plain socket call.
        let raw = in_child(|| unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, 1) } as i64);
        assert_eq!(raw, (0, -i64::from(libc::EPERM)));
        // SAFETY: plain socket call.
        let tcp = in_child(|| unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) } as i64);
        assert_eq!(tcp.0, 0);
        assert!(tcp.1 >= 0, "TCP sockets are allowed: {tcp:?}");
    }
}
