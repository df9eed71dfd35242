//! `MutableStorage` with a hard quota: one ext4 image file per app, loop-mounted.
//!
//! Why an image file: the quota is the file system's size, so it holds whatever the device's
//! data partition is (ext4, f2fs, ubifs, a read-only root with an overlay), needs no quota tools
//! or project-quota feature at run time, survives reboot (it is a file on persistent storage),
//! and a full file system answers ENOSPC exactly where a full Azure Sphere storage does. An app's
//! data is also one file to delete on uninstall and one file to back up. The cost is a loop
//! device per running app with storage and a few KiB of ext4 metadata, sized out below.
//!
//! The image is created at install ([`create_image`], `mke2fs` from e2fsprogs) so that its usable
//! space is `SizeKB` (within a block or two), root directory owned by the app's uid, mode 0700.
//! The launcher mounts it once per boot ([`ensure_mounted`], `nosuid,nodev,noexec`) at a host path
//! that only root can traverse, and each sandbox bind-mounts it at `/mnt/config`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;

/// Small images have no journal: ext4's smallest journal (1 MiB) would dwarf a 64 KiB quota.
/// Above this a journal keeps the app's data consistent across power loss.
const JOURNAL_FROM_BYTES: u64 = 8 * 1024 * 1024;

fn other(message: String) -> io::Error {
    io::Error::other(message)
}

/// Block size and journal choice for a quota.
fn layout(quota_bytes: u64) -> (u64, bool) {
    let block = if quota_bytes < 64 * 1024 * 1024 { 1024 } else { 4096 };
    (block, quota_bytes >= JOURNAL_FROM_BYTES)
}

/// Create (or replace) an ext4 image whose free space is `quota_bytes`, root owned by uid:gid.
pub fn create_image(image: &Path, quota_bytes: u64, uid: u32, gid: u32) -> io::Result<()> {
    let (block, journal) = layout(quota_bytes);
    let inodes = (quota_bytes / 16384).clamp(32, 65536);
    // First guess: metadata is about 3% plus fixed structures; then correct by what mke2fs made.
    let mut size = quota_bytes + quota_bytes / 32 + 64 * 1024 + inodes * 256 + if journal { 4 << 20 } else { 0 };
    for _ in 0..3 {
        size = size.div_ceil(block) * block;
        run_mke2fs(image, size, block, journal, inodes, uid, gid)?;
        let free = free_bytes(image)?;
        if free.abs_diff(quota_bytes) <= 2 * block {
            return Ok(());
        }
        size = (size + quota_bytes).checked_sub(free).ok_or_else(|| other("storage: image size underflow".into()))?;
    }
    Err(other(format!("storage: could not size {} to {quota_bytes} bytes", image.display())))
}

fn run_mke2fs(image: &Path, size: u64, block: u64, journal: bool, inodes: u64, uid: u32, gid: u32) -> io::Result<()> {
    if let Some(parent) = image.parent() {
        fs::create_dir_all(parent)?;
    }
    let file = OpenOptions::new().write(true).create(true).truncate(true).open(image)?;
    file.set_len(size)?;
    drop(file);
    let features = if journal { "^resize_inode" } else { "^has_journal,^resize_inode" };
    let output = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-m", "0", "-O", features])
        .args(["-b", &block.to_string(), "-N", &inodes.to_string()])
        .args(["-E", &format!("root_owner={uid}:{gid}")])
        .arg(image)
        .output()
        .map_err(|error| other(format!("storage: cannot run mke2fs (e2fsprogs): {error}")))?;
    if !output.status.success() {
        return Err(other(format!("storage: mke2fs failed: {}", String::from_utf8_lossy(&output.stderr).trim())));
    }
    Ok(())
}

/// Free bytes recorded in an ext4 superblock (`s_free_blocks_count` × block size).
pub fn free_bytes(image: &Path) -> io::Result<u64> {
    let mut file = File::open(image)?;
    let mut superblock = [0u8; 1024];
    file.seek(SeekFrom::Start(1024))?;
    file.read_exact(&mut superblock)?;
    let word = |offset: usize| {
        u32::from_le_bytes([superblock[offset], superblock[offset + 1], superblock[offset + 2], superblock[offset + 3]])
    };
    if u16::from_le_bytes([superblock[0x38], superblock[0x39]]) != 0xEF53 {
        return Err(other(format!("storage: {} is not an ext4 image", image.display())));
    }
    let block = 1024u64 << word(0x18).min(6);
    let free_lo = u64::from(word(0x0C));
    Ok(free_lo * block)
}

/// Whether a file system is mounted at `path`: its device differs from its parent's. (Cheaper
/// than reading /proc/self/mountinfo on every launch; our mounts are always a different file
/// system from the directory they cover: an ext4 image, a tmpfs.)
pub fn is_mounted(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(parent) = path.parent() else { return true };
    match (fs::metadata(path), fs::metadata(parent)) {
        (Ok(here), Ok(above)) => here.dev() != above.dev(),
        _ => false,
    }
}

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// Attach `image` to a free loop device (detached automatically when unmounted). The device
/// stays open in the returned File until mounted: with AUTOCLEAR, closing the last reference to
/// an unmounted loop device detaches it again.
fn attach_loop(image: &File) -> io::Result<(String, File)> {
    let control = OpenOptions::new().read(true).write(true).open("/dev/loop-control")?;
    for _ in 0..8 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if number < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = format!("/dev/loop{number}");
        let device = OpenOptions::new().read(true).write(true).open(&path)?;
        // SAFETY: all-zero is a valid loop_config (no offset, no limit, no encryption).
        let mut config: LoopConfig = unsafe { std::mem::zeroed() };
        config.fd = image.as_raw_fd() as u32;
        config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        // SAFETY: config is a properly laid out struct loop_config that outlives the call.
        let result = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE as _, &config as *const LoopConfig) };
        if result == 0 {
            // Hold the device open read-only, not read-write: a kernel built without
            // BLK_DEV_WRITE_MOUNTED (ours, hardening) refuses with EBUSY to mount a block device
            // someone has open for writing. The read-only handle keeps AUTOCLEAR from detaching.
            let held = OpenOptions::new().read(true).open(&path)?;
            drop(device);
            return Ok((path, held));
        }
        let error = io::Error::last_os_error();
        // Another process took this device between GET_FREE and CONFIGURE: ask again.
        if error.raw_os_error() != Some(libc::EBUSY) {
            return Err(error);
        }
    }
    Err(other("storage: no free loop device".into()))
}

/// Mount the app's image at `mount_point` unless it already is (once per boot).
pub fn ensure_mounted(image: &Path, mount_point: &Path) -> io::Result<()> {
    if is_mounted(mount_point) {
        return Ok(());
    }
    fs::create_dir_all(mount_point)?;
    // Only root traverses the host-side mount point: other apps (other uids) cannot reach it
    // even if something else of the host were exposed to them.
    if let Some(parent) = mount_point.parent() {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(parent, fs::Permissions::from_mode(0o700))?;
    }
    let file = OpenOptions::new().read(true).write(true).open(image)?;
    let (device, _held_open) = attach_loop(&file)?;
    drop(file);
    let flags = nix::mount::MsFlags::MS_NOSUID
        | nix::mount::MsFlags::MS_NODEV
        | nix::mount::MsFlags::MS_NOEXEC
        | nix::mount::MsFlags::MS_NOATIME;
    nix::mount::mount(Some(device.as_str()), mount_point, Some("ext4"), flags, Some("errors=remount-ro"))
        .map_err(|errno| other(format!("storage: mount {device} at {}: {errno}", mount_point.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_quotas_have_no_journal_and_1k_blocks() {
        assert_eq!(layout(64 * 1024), (1024, false));
        assert_eq!(layout(16 * 1024 * 1024), (1024, true));
        assert_eq!(layout(512 * 1024 * 1024), (4096, true));
    }

    #[test]
    fn loop_config_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }

    #[test]
    fn image_is_sized_to_the_quota() {
        if Command::new("mke2fs").arg("-V").output().is_err() {
            eprintln!("skipped: mke2fs not installed");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        for quota in [64 * 1024, 1024 * 1024] {
            let image = dir.path().join("s.img");
            create_image(&image, quota, 10_001, 10_001).expect("create");
            let free = free_bytes(&image).expect("free");
            assert!(free.abs_diff(quota) <= 2048, "quota {quota}: free {free}");
        }
    }
}
