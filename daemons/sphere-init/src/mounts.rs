//! Filesystems: the early API mounts, the data partition, and finding disks by serial.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::{MsFlags, mount};

use crate::config::DataConfig;
use crate::log::Log;

/// True when `path` is the root of a mount other than its parent's (st_dev differs), e.g. /dev
/// after the initramfs moved its devtmpfs over. Mounting again would stack a second mount.
pub fn is_mountpoint(path: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let parent = Path::new(path).parent().unwrap_or(Path::new("/"));
    match (std::fs::metadata(path), std::fs::metadata(parent)) {
        (Ok(own), Ok(up)) => own.dev() != up.dev(),
        _ => false,
    }
}

/// Mounts `fstype` on `target` (creating the directory when the parent is writable). A target
/// that is already a mount point (e.g. /dev moved over from the initramfs) counts as success.
/// Returns whether the filesystem is there.
pub fn mount_fs(log: &mut Log, source: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) -> bool {
    let _ = std::fs::create_dir_all(target);
    if target != "/" && is_mountpoint(target) {
        return true;
    }
    match mount(Some(source), target, Some(fstype), flags, data) {
        Ok(()) => true,
        Err(Errno::EBUSY) => true,
        Err(err) => {
            log.warn(format!("mount {fstype} {source} on {target} failed: {err}"));
            false
        }
    }
}

/// The API filesystems and tmpfs mounts every boot needs. Failures are logged and boot goes on.
pub fn early_mounts(log: &mut Log) {
    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs(log, "proc", "/proc", "proc", hardened, None);
    mount_fs(log, "sysfs", "/sys", "sysfs", hardened, None);
    mount_fs(log, "devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, Some("mode=0755"));
    mount_fs(log, "cgroup2", "/sys/fs/cgroup", "cgroup2", hardened, Some("nsdelegate"));
    mount_fs(log, "tmpfs", "/run", "tmpfs", hardened, Some("mode=0755,size=8m"));
    mount_fs(log, "tmpfs", "/tmp", "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=1777,size=16m"));
}

/// Makes sure fds 0, 1 and 2 are open (on /dev/console when the kernel could not open it, e.g.
/// booted without an initramfs that has /dev/console).
pub fn ensure_stdio() {
    // SAFETY: fcntl(F_GETFD) only queries the descriptor table.
    let missing = (0..3).any(|fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0);
    if !missing {
        return;
    }
    let path = c"/dev/console";
    // SAFETY: opening a constant NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
    if fd < 0 {
        return;
    }
    for target in 0..3 {
        // SAFETY: fcntl/dup2 on descriptors we own; fd is valid.
        if unsafe { libc::fcntl(target, libc::F_GETFD) } < 0 {
            unsafe { libc::dup2(fd, target) };
        }
    }
    if fd > 2 {
        // SAFETY: closing the extra descriptor we opened above.
        unsafe { libc::close(fd) };
    }
}

/// Resolves `/dev/X`, `serial:NAME` (the virtio-blk disk whose serial is NAME) or
/// `partname:NAME` (the GPT partition named NAME, as on the A/B disk) once. A spec may list
/// alternatives separated by `|`, tried in order: `serial:sphere-data|partname:data` finds the
/// data disk of the single-root image and the data partition of the A/B disk alike.
pub fn resolve_device_once(spec: &str) -> Option<PathBuf> {
    if spec.contains('|') {
        return spec.split('|').find_map(resolve_device_once);
    }
    if let Some(name) = spec.strip_prefix("partname:") {
        return sphere_slots::layout::find_partition(name);
    }
    if let Some(serial) = spec.strip_prefix("serial:") {
        let entries = std::fs::read_dir("/sys/block").ok()?;
        for entry in entries.flatten() {
            let found =
                std::fs::read_to_string(entry.path().join("serial")).map(|s| s.trim() == serial).unwrap_or(false);
            if found {
                let dev = Path::new("/dev").join(entry.file_name());
                if dev.exists() {
                    return Some(dev);
                }
            }
        }
        None
    } else {
        let path = PathBuf::from(spec);
        path.exists().then_some(path)
    }
}

/// True when every `|`-separated alternative of `spec` is `/dev/...`, `serial:NAME` or
/// `partname:NAME` (what [`resolve_device_once`] understands).
pub fn valid_device_spec(spec: &str) -> bool {
    spec.split('|').all(|one| {
        one.starts_with("/dev/")
            || one.strip_prefix("serial:").is_some_and(|s| !s.is_empty())
            || one.strip_prefix("partname:").is_some_and(|s| !s.is_empty())
    })
}

/// Waits up to `timeout` for a device to appear (drivers may still be probing).
pub fn resolve_device(spec: &str, timeout: Duration) -> Option<PathBuf> {
    let start = Instant::now();
    loop {
        if let Some(path) = resolve_device_once(spec) {
            return Some(path);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        crate::milestone::sleep(Duration::from_millis(20));
    }
}

/// Mounts the data partition and creates its directories. The root filesystem is read-only;
/// everything persistent lives here. Returns whether it is mounted.
pub fn mount_data(log: &mut Log, data: &DataConfig) -> bool {
    let Some(device) = resolve_device(&data.device, Duration::from_secs(5)) else {
        log.warn(format!(
            "data device {} not found; {} stays empty (tmpfs-less, read-only)",
            data.device, data.mountpoint
        ));
        return false;
    };
    let device_str = device.to_string_lossy().into_owned();
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOATIME;
    if !mount_fs(log, &device_str, &data.mountpoint, &data.fstype, flags, None) {
        return false;
    }
    for dir in &data.dirs {
        let path = Path::new(&data.mountpoint).join(dir);
        if let Err(err) = std::fs::create_dir_all(&path) {
            log.warn(format!("cannot create {}: {err}", path.display()));
        }
    }
    log.info(format!("data partition {device_str} ({}) mounted on {}", data.fstype, data.mountpoint));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountpoints_are_detected() {
        assert!(is_mountpoint("/proc"));
        let dir = std::env::temp_dir().join(format!("sphere-init-mp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        assert!(!is_mountpoint(&dir.to_string_lossy()));
        assert!(!is_mountpoint("/nonexistent/sphere-init"));
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn plain_device_paths_resolve_only_when_present() {
        assert_eq!(resolve_device_once("/dev/null"), Some(PathBuf::from("/dev/null")));
        assert_eq!(resolve_device_once("/dev/sphere-none"), None);
        assert_eq!(resolve_device_once("serial:sphere-none"), None);
        assert_eq!(resolve_device_once("partname:sphere-none"), None);
        assert_eq!(resolve_device_once("serial:sphere-none|/dev/null"), Some(PathBuf::from("/dev/null")));
    }

    #[test]
    fn device_specs_are_validated_per_alternative() {
        assert!(valid_device_spec("serial:sphere-data|partname:data"));
        assert!(valid_device_spec("/dev/vdb"));
        assert!(!valid_device_spec("serial:sphere-data|vdb"));
        assert!(!valid_device_spec("partname:"));
    }
}
