//! What the running kernel can enforce, and the explicit list of what it cannot.
//!
//! The sandbox never silently runs weaker than designed: every layer that the kernel lacks is
//! named in a [`Degradations`] report, which the launcher logs at every start and returns to the
//! app manager (which can refuse to run apps on a kernel that degrades too much).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The Landlock ABI version of the running kernel: 0 when Landlock is absent or disabled.
///
/// landlock 0.4.8 has no public ABI query, so this asks the kernel directly:
/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`.
pub fn landlock_abi() -> u32 {
    // SAFETY: with a NULL attribute pointer, size 0 and the VERSION flag the kernel reads nothing
    // from us and returns the ABI version (or an error).
    let version =
        unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<libc::c_void>(), 0usize, 1u32) };
    u32::try_from(version).unwrap_or(0)
}

/// One protection that this kernel does not provide, and what stands in for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Degradation {
    /// Stable identifier, e.g. `landlock-tcp`.
    pub feature: String,
    /// What would enforce it (e.g. `Landlock ABI 4`).
    pub needs: String,
    /// What the sandbox does instead (the remaining layers).
    pub instead: String,
}

/// Every protection not enforced on this kernel. Empty means the full sandbox.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Degradations {
    pub landlock_abi: u32,
    pub items: Vec<Degradation>,
}

impl Degradations {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn has(&self, feature: &str) -> bool {
        self.items.iter().any(|item| item.feature == feature)
    }

    fn add(&mut self, feature: &str, needs: &str, instead: &str) {
        self.items.push(Degradation {
            feature: feature.to_owned(),
            needs: needs.to_owned(),
            instead: instead.to_owned(),
        });
    }

    /// The report for a kernel with this Landlock ABI and cgroup support.
    pub fn for_kernel(landlock_abi: u32, cgroups: &CgroupSupport) -> Degradations {
        let mut report = Degradations { landlock_abi, items: Vec::new() };
        if landlock_abi < 1 {
            report.add(
                "landlock-fs",
                "Landlock ABI 1 (CONFIG_SECURITY_LANDLOCK, landlock in lsm=)",
                "minimal mount namespace (read-only root, nosuid/nodev/noexec mounts) only",
            );
        }
        if (1..2).contains(&landlock_abi) {
            report.add("landlock-refer", "Landlock ABI 2", "rename/link across directories refused outright");
        }
        if (1..3).contains(&landlock_abi) {
            report.add(
                "landlock-truncate",
                "Landlock ABI 3",
                "truncate of read-only files limited by mount flags only",
            );
        }
        if landlock_abi < 4 {
            report.add(
                "landlock-tcp",
                "Landlock ABI 4",
                "own empty network namespace; TCP bind/connect not restricted by port",
            );
        }
        if landlock_abi < 5 {
            report.add(
                "landlock-ioctl-dev",
                "Landlock ABI 5",
                "device ioctls limited by the seccomp ioctl filter only",
            );
        }
        if landlock_abi < 6 {
            report.add(
                "landlock-scope-abstract-unix",
                "Landlock ABI 6",
                "own network namespace (abstract unix sockets are per network namespace)",
            );
            report.add(
                "landlock-scope-signal",
                "Landlock ABI 6",
                "own pid namespace (outside processes are invisible)",
            );
        }
        match cgroups {
            CgroupSupport::V2 => {}
            CgroupSupport::V1Fallback { missing_in_v2 } => report.add(
                "cgroup-v2",
                &format!("cgroup v2 controllers {}", missing_in_v2.join(", ")),
                "the same limits through cgroup v1 (memory.limit_in_bytes, pids.max, cpu.shares)",
            ),
            CgroupSupport::None => report.add(
                "cgroup-limits",
                "cgroup v2 (or v1) memory, pids and cpu controllers",
                "RLIMIT_NPROC and RLIMIT_AS only; no OOM telemetry",
            ),
        }
        report
    }
}

impl fmt::Display for Degradations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.items.is_empty() {
            return write!(f, "full sandbox (Landlock ABI {})", self.landlock_abi);
        }
        write!(f, "Landlock ABI {}; not enforced:", self.landlock_abi)?;
        for item in &self.items {
            write!(f, " [{} (needs {}; instead: {})]", item.feature, item.needs, item.instead)?;
        }
        Ok(())
    }
}

/// How resource limits can be applied on this kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupSupport {
    /// The unified hierarchy has memory, pids and cpu.
    V2,
    /// Those controllers are bound to v1 hierarchies (a hybrid host); v1 files are used.
    V1Fallback {
        missing_in_v2: Vec<String>,
    },
    None,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_7_with_cgroup_v2_is_the_full_sandbox() {
        let report = Degradations::for_kernel(7, &CgroupSupport::V2);
        assert!(report.is_empty(), "{report}");
        assert_eq!(report.to_string(), "full sandbox (Landlock ABI 7)");
    }

    #[test]
    fn abi_6_is_enough() {
        assert!(Degradations::for_kernel(6, &CgroupSupport::V2).is_empty());
    }

    #[test]
    fn debian_6_1_abi_2_loses_tcp_ioctl_and_scopes() {
        let report = Degradations::for_kernel(2, &CgroupSupport::V2);
        let features: Vec<_> = report.items.iter().map(|item| item.feature.as_str()).collect();
        assert_eq!(
            features,
            [
                "landlock-truncate",
                "landlock-tcp",
                "landlock-ioctl-dev",
                "landlock-scope-abstract-unix",
                "landlock-scope-signal"
            ]
        );
    }

    #[test]
    fn no_landlock_at_all_is_reported_first() {
        let report = Degradations::for_kernel(0, &CgroupSupport::None);
        assert_eq!(report.items[0].feature, "landlock-fs");
        assert!(report.has("cgroup-limits"));
        assert!(!report.has("landlock-refer"), "refer is part of landlock-fs when there is no Landlock");
    }

    #[test]
    fn hybrid_cgroups_are_named() {
        let report = Degradations::for_kernel(
            7,
            &CgroupSupport::V1Fallback { missing_in_v2: vec!["memory".into(), "pids".into()] },
        );
        assert!(report.has("cgroup-v2"));
        assert!(report.to_string().contains("memory, pids"));
    }

    #[test]
    fn the_running_kernel_answers() {
        // Any value is fine; the call must not fail or panic on a kernel without Landlock.
        let _ = landlock_abi();
    }
}
