//! The Landlock domain of an app: what it may touch, expressed as paths inside its sandbox.
//!
//! Landlock is the second wall after the mount namespace: even if a mount were exposed by
//! mistake, the app can only read its own root, execute only its package, write only `/tmp` and
//! its storage, and open only the device nodes it was granted. With ABI ≥ 4 TCP bind (and, for
//! apps without `AllowedConnections`, connect) is limited; with ABI ≥ 6 the app can neither
//! connect to abstract unix sockets nor signal processes outside its own domain.

use crate::spec::{APP_MOUNT, STORAGE_MOUNT, SandboxSpec};
use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetError, Scope,
};

/// Device nodes every app gets (and nothing else under /dev unless granted).
pub const STANDARD_DEVICES: [&str; 5] = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"];

/// Why the Landlock domain could not be built or enforced.
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("landlock: {0}")]
    Ruleset(#[from] RulesetError),
    #[error("landlock: cannot open {path}: {message}")]
    Path { path: String, message: String },
}

/// The highest ABI this crate knows how to use that the kernel has.
fn abi_for(kernel_abi: u32) -> ABI {
    ABI::from(i32::try_from(kernel_abi.min(6)).unwrap_or(0))
}

/// Access rights for a writable directory: everything but executing and making device nodes.
pub fn writable_dir(abi: ABI) -> BitFlags<AccessFs> {
    AccessFs::from_all(abi) & !(AccessFs::Execute | AccessFs::MakeChar | AccessFs::MakeBlock)
}

/// Access rights for a device node: open for reading and writing, truncate (`> /dev/null`),
/// and device ioctls.
pub fn device_node(abi: ABI) -> BitFlags<AccessFs> {
    let wanted = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev;
    wanted & AccessFs::from_file(abi)
}

fn rule(path: &str, access: BitFlags<AccessFs>) -> Result<PathBeneath<PathFd>, LandlockError> {
    let fd =
        PathFd::new(path).map_err(|error| LandlockError::Path { path: path.to_owned(), message: error.to_string() })?;
    Ok(PathBeneath::new(fd, access))
}

/// Build and enforce the app's Landlock domain on the calling thread (after pivot_root, so the
/// paths are the sandbox's). Returns whether the kernel enforced it (false without Landlock).
pub fn restrict(spec: &SandboxSpec, kernel_abi: u32) -> Result<bool, LandlockError> {
    if kernel_abi == 0 {
        return Ok(false); // Reported as the `landlock-fs` degradation.
    }
    let abi = abi_for(kernel_abi);
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let mut ruleset = Ruleset::default()
        // Only what the kernel supports is requested (abi ≤ kernel), so nothing is dropped
        // silently; the Degradations report names what the kernel lacks.
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi))?;
    if kernel_abi >= 4 {
        let mut net = BitFlags::from(AccessNet::BindTcp);
        if !spec.network.tcp_connect {
            net |= AccessNet::ConnectTcp;
        }
        ruleset = ruleset.handle_access(net)?;
    }
    if kernel_abi >= 6 {
        ruleset = ruleset.scope(Scope::AbstractUnixSocket | Scope::Signal)?;
    }
    let mut created = ruleset
        .create()?
        .add_rule(rule("/", read)?)?
        .add_rule(rule(APP_MOUNT, read | AccessFs::Execute)?)?
        .add_rule(rule("/tmp", writable_dir(abi))?)?;
    if spec.storage.is_some() {
        created = created.add_rule(rule(STORAGE_MOUNT, writable_dir(abi))?)?;
    }
    for path in STANDARD_DEVICES {
        created = created.add_rule(rule(path, device_node(abi))?)?;
    }
    for grant in &spec.devices {
        created = created.add_rule(rule(&grant.path.to_string_lossy(), device_node(abi))?)?;
    }
    if kernel_abi >= 4 {
        for port in &spec.network.tcp_bind_ports {
            created = created.add_rule(NetPort::new(*port, AccessNet::BindTcp))?;
        }
    }
    let status = created.restrict_self()?;
    Ok(status.ruleset != landlock::RulesetStatus::NotEnforced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_dirs_cannot_execute_or_make_devices() {
        let access = writable_dir(ABI::V6);
        assert!(!access.contains(AccessFs::Execute));
        assert!(!access.contains(AccessFs::MakeChar));
        assert!(!access.contains(AccessFs::MakeBlock));
        assert!(access.contains(AccessFs::WriteFile | AccessFs::MakeReg | AccessFs::RemoveFile | AccessFs::MakeSock));
    }

    #[test]
    fn device_rights_follow_the_abi() {
        assert!(device_node(ABI::V5).contains(AccessFs::IoctlDev));
        assert!(!device_node(ABI::V4).contains(AccessFs::IoctlDev));
        assert!(!device_node(ABI::V2).contains(AccessFs::Truncate));
        assert!(device_node(ABI::V1).contains(AccessFs::ReadFile | AccessFs::WriteFile));
    }

    #[test]
    fn abi_is_capped_at_what_we_use() {
        assert_eq!(abi_for(9), ABI::V6);
        assert_eq!(abi_for(2), ABI::V2);
        assert_eq!(abi_for(0), ABI::Unsupported);
    }
}
