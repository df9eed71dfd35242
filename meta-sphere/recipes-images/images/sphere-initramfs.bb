SUMMARY = "OpenSphere initramfs: A/B root slot selection"
DESCRIPTION = "The initramfs bundled into the kernel on boards where no boot \
               loader reads the A/B boot-state record (the QEMU machine): \
               sphere-init as /init reads the record on the bootenv partition, \
               counts a trial boot, falls back to the good slot when attempts \
               run out, and mounts the chosen read-only root. Nothing else: no \
               shell, no modules, no udev."
HOMEPAGE = "https://github.com/opensphere/opensphere"
BUGTRACKER = "https://github.com/opensphere/opensphere/issues"
SECTION = "images"
LICENSE = "MIT"
CVE_PRODUCT = ""

PACKAGE_INSTALL = "sphere-init-initramfs"

# An initramfs: no package database, no locales, no image features, no
# dependency on the kernel it is bundled into.
IMAGE_FEATURES = ""
IMAGE_LINGUAS = ""
IMAGE_FSTYPES = "${INITRAMFS_FSTYPES}"
IMAGE_NAME_SUFFIX ?= ""
IMAGE_ROOTFS_SIZE = "8192"
IMAGE_ROOTFS_EXTRA_SPACE = "0"
KERNELDEPMODDEPEND = ""
# /proc, /sys and /dev are mount points. /dev/console must exist before devtmpfs
# is mounted, or /init starts with no stdin, stdout and stderr (the cpio class
# does not add it; the node is recorded under pseudo).
ROOTFS_POSTPROCESS_COMMAND += "sphere_initramfs_dirs"
sphere_initramfs_dirs[doc] = "Creates the initramfs's mount points and /dev/console"
sphere_initramfs_dirs() {
    install -d ${IMAGE_ROOTFS}/proc ${IMAGE_ROOTFS}/sys ${IMAGE_ROOTFS}/dev
    mknod -m 0600 ${IMAGE_ROOTFS}/dev/console c 5 1
}

inherit image
