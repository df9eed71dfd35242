//! Where the slots and the boot-state record are, and which slot is running.
//!
//! On the QEMU image and on boards built from meta-sphere's `sphere-ab.wks.in`, the disk is
//! GPT and partitions are found by name: `bootenv` (the record, two environment copies),
//! `rootfs_a`, `rootfs_b`, `data`. The kernel exposes a GPT partition's name as `PARTNAME=`
//! in `/sys/class/block/*/uevent`.

use std::path::{Path, PathBuf};

use crate::env::EnvLocation;
use crate::state::Slot;

/// GPT partition name of the boot-state record.
pub const BOOTENV_PARTITION: &str = "bootenv";
/// GPT partition name of the data partition.
pub const DATA_PARTITION: &str = "data";

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("no partition named {0:?} (GPT PARTNAME in /sys/class/block/*/uevent)")]
    MissingPartition(String),
    #[error("cannot tell which slot is running: {0}")]
    UnknownBootedSlot(String),
}

/// The device of the GPT partition named `name`, if the kernel has it.
pub fn find_partition(name: &str) -> Option<PathBuf> {
    find_partition_in(Path::new("/sys/class/block"), Path::new("/dev"), name)
}

/// [`find_partition`] with other sysfs and /dev roots (tests).
pub fn find_partition_in(sys_class_block: &Path, dev: &Path, name: &str) -> Option<PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(sys_class_block).ok()?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let Ok(uevent) = std::fs::read_to_string(entry.path().join("uevent")) else { continue };
        let named = uevent.lines().any(|line| line.strip_prefix("PARTNAME=") == Some(name));
        if named {
            let device = dev.join(entry.file_name());
            if device.exists() {
                return Some(device);
            }
        }
    }
    None
}

/// The devices of an A/B system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The boot-state record (two environment copies).
    pub env: EnvLocation,
    /// Slot A's and slot B's devices.
    pub slots: [PathBuf; 2],
}

impl Layout {
    /// Finds `bootenv`, `rootfs_a` and `rootfs_b` by GPT name; the record has the default
    /// geometry ([`EnvLocation::redundant_default`]).
    pub fn discover() -> Result<Layout, LayoutError> {
        let find = |name: &str| find_partition(name).ok_or_else(|| LayoutError::MissingPartition(name.to_string()));
        Ok(Layout {
            env: EnvLocation::redundant_default(find(BOOTENV_PARTITION)?),
            slots: [find(Slot::A.partition_name())?, find(Slot::B.partition_name())?],
        })
    }

    pub fn slot_device(&self, slot: Slot) -> &Path {
        match slot {
            Slot::A => &self.slots[0],
            Slot::B => &self.slots[1],
        }
    }

    /// The running slot: the one whose device is mounted as `/` (the `st_dev` of `/` equals
    /// the slot device's `st_rdev`). Independent of the record, so a stale record cannot make
    /// an installer overwrite the running root.
    pub fn booted_slot(&self) -> Result<Slot, LayoutError> {
        self.slot_of_root(Path::new("/"))
    }

    /// [`Layout::booted_slot`] for another mount point (tests, tools).
    pub fn slot_of_root(&self, root: &Path) -> Result<Slot, LayoutError> {
        use std::os::unix::fs::MetadataExt;
        let root_dev = std::fs::metadata(root)
            .map_err(|e| LayoutError::UnknownBootedSlot(format!("stat {}: {e}", root.display())))?
            .dev();
        for slot in Slot::ALL {
            let device = self.slot_device(slot);
            if let Ok(meta) = std::fs::metadata(device) {
                if meta.rdev() == root_dev {
                    return Ok(slot);
                }
            }
        }
        Err(LayoutError::UnknownBootedSlot(format!(
            "{} is on neither {} nor {}",
            root.display(),
            self.slots[0].display(),
            self.slots[1].display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_partitions_by_gpt_name() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        let dev = dir.path().join("dev");
        for (node, name) in [("vda1", "bootenv"), ("vda2", "rootfs_a"), ("vda3", "rootfs_b")] {
            std::fs::create_dir_all(sys.join(node)).unwrap();
            std::fs::write(
                sys.join(node).join("uevent"),
                format!("MAJOR=254\nDEVNAME={node}\nPARTN=1\nPARTNAME={name}\n"),
            )
            .unwrap();
            std::fs::create_dir_all(&dev).unwrap();
            std::fs::write(dev.join(node), "").unwrap();
        }
        std::fs::create_dir_all(sys.join("vda")).unwrap();
        std::fs::write(sys.join("vda/uevent"), "DEVNAME=vda\nDEVTYPE=disk\n").unwrap();
        assert_eq!(find_partition_in(&sys, &dev, "rootfs_b"), Some(dev.join("vda3")));
        assert_eq!(find_partition_in(&sys, &dev, "rootfs"), None, "names match whole");
        assert_eq!(find_partition_in(&sys, &dev, "data"), None);
    }

    #[test]
    fn booted_slot_of_a_non_slot_root_is_unknown() {
        let layout = Layout {
            env: EnvLocation::redundant_default("/nonexistent"),
            slots: ["/dev/null".into(), "/nonexistent/b".into()],
        };
        assert!(layout.booted_slot().is_err());
    }
}
