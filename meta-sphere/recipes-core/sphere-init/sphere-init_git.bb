SUMMARY = "OpenSphere init (PID 1)"
SUMMARY:${PN}-initramfs = "sphere-init as the initramfs's /init (A/B slot selection)"
DESCRIPTION = "sphere-init mounts the kernel filesystems and the data \
               partition, brings up the network, starts and supervises the OpenSphere daemons \
               and shuts the device down. It replaces a shell-based init: the production image \
               has no shell at all."
HOMEPAGE = "https://github.com/opensphere/opensphere"
BUGTRACKER = "https://github.com/opensphere/opensphere/issues"
SECTION = "base"
LICENSE = "Apache-2.0 | MIT"
LIC_FILES_CHKSUM = "file://LICENSE-APACHE;md5=9c906197621ff6c11095fe41415ecad6 \
                    file://LICENSE-MIT;md5=39f1b8f9ca75cc35c10090b45af510b3"

PV = "0.1.0+git"

inherit sphere_cargo

SPHERE_CRATE_DIR = "daemons/sphere-init"

# The kernel starts /sbin/init unless told otherwise; sphere-init is that init.
# The initramfs stage (${PN}-initramfs) is the same binary as /init: where no
# boot loader does it (QEMU), it reads the A/B boot-state record, picks and
# counts the slot, mounts it read-only and switches to it (sphere.root=ab on the
# kernel command line). Only sphere-initramfs installs that package.
do_install:append:class-target() {
    install -d ${D}${base_sbindir}
    mv ${D}${bindir}/sphere-init ${D}${base_sbindir}/sphere-init
    ln -sf sphere-init ${D}${base_sbindir}/init
    rmdir --ignore-fail-on-non-empty ${D}${bindir}
    install -d ${D}/newroot
    install -m 0755 ${D}${base_sbindir}/sphere-init ${D}/init
}
PACKAGES =+ "${PN}-initramfs"
FILES:${PN}-initramfs += "/init /newroot"

# Other init systems own /sbin/init too; only one can be installed.
RCONFLICTS:${PN} = "sysvinit systemd"

# The native build checks init.json files at build time (sphere-device-config)
# with the same parser the device runs: `sphere-init --check-config FILE`.
BBCLASSEXTEND = "native"
