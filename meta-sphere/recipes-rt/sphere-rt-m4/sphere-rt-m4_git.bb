# nooelint: oelint.var.bbclassextend
# (no BBCLASSEXTEND: firmware for the device's M4 core; nothing runs on the build host)
SUMMARY = "OpenSphere Cortex-M4 real-time firmware"
DESCRIPTION = "sphere-rt-m4, the real-time runtime and its real-time apps \
               (echo/telemetry and a deadline-checked sampler), built for the \
               Cortex-M4F (thumbv7em-none-eabihf) and installed where the A7 side \
               loads M4 firmware from."
HOMEPAGE = "https://github.com/opensphere/opensphere"
BUGTRACKER = "https://github.com/opensphere/opensphere/issues"
SECTION = "kernel"
LICENSE = "Apache-2.0 | MIT"
LIC_FILES_CHKSUM = "file://LICENSE-APACHE;md5=9c906197621ff6c11095fe41415ecad6 \
                    file://LICENSE-MIT;md5=39f1b8f9ca75cc35c10090b45af510b3"

PV = "0.1.0+git"

# Why not a baremetal multiconfig: oe-core's rust only builds a standard library
# for Linux targets (libstd-rs), and the firmware needs just `core`. rust-native
# is a full rustc (its LLVM has the ARM backend) and ships the library sources
# (${libdir}/rustlib/src/rust), so cargo's -Zbuild-std=core builds `core` for
# thumbv7em-none-eabihf inside this recipe, exactly as scripts/build-m4.sh does
# with Debian's rustc on a development host.
inherit sphere_cargo

# cargo resolves the whole standard library workspace for -Zbuild-std, even for
# `core` alone, so the library's own crates.io dependencies must be vendored
# too. They come from the vendor/ directory of the rust source tarball that
# rust-native is built from (as libstd-rs does), so they always match its
# library's Cargo.lock. (Checked on a development host: a union of the
# firmware's and the library's vendored crates builds with --frozen, and the
# GNU-ld-linked ELF boots on QEMU mps2-an386.)
RUST_VERSION = "${@d.getVar('RUSTVERSION').replace('%', '')}"
# (oe-core's file, found through BBPATH; oelint runs without oe-core.)
# nooelint: oelint.file.requirenotfound
require recipes-devtools/rust/rust-source.inc
# rust-source.inc's patches live next to oe-core's rust recipes; the only way to
# share the tarball (and its checksum) with rust-native without copying the inc.
# nooelint: oelint.vars.fileextrapaths,oelint.vars.outofcontext
FILESEXTRAPATHS:prepend := "${COREBASE}/meta/recipes-devtools/rust/files:"

SPHERE_CRATE_DIR = "daemons/sphere-rt-m4"
# The firmware is its own cargo workspace with its own lock (it cannot link for
# the A7), whose crates opensphere-crates.inc also lists.
CARGO_LOCK_PATH = "${S}/${SPHERE_CRATE_DIR}/Cargo.lock"
CARGO_LOCK_SRC_DIR = "${S}/${SPHERE_CRATE_DIR}"

SPHERE_M4_TARGET = "thumbv7em-none-eabihf"
CARGO_BUILD_FLAGS = "-v --frozen --target ${SPHERE_M4_TARGET} --release -Zbuild-std=core --manifest-path=${CARGO_MANIFEST_PATH}"
CARGO_TARGET_SUBDIR = "${SPHERE_M4_TARGET}/release"
# -Zbuild-std is unstable; this rustc is the build's own, pinned by oe-core.
export RUSTC_BOOTSTRAP = "1"
# Not the A7's flags: those add -L for the A7's libstd, which is the wrong target
# here. cortex-m-rt's link.x (with the crate's memory.x) places the vector table
# and caps flash and RAM; GNU ld from the A7 cross binutils links ARM/Thumb ELF.
RUSTFLAGS = "-C link-arg=-Tlink.x -C linker-flavor=ld ${RUST_DEBUG_REMAP}"
export CARGO_TARGET_THUMBV7EM_NONE_EABIHF_LINKER = "${HOST_PREFIX}ld"

# Add the standard library's crates to the vendored ones (those of opensphere-crates.inc).
do_configure:append() {
    for crate in ${RUSTSRC}/vendor/*; do
        name=$(basename "$crate")
        [ -e "${CARGO_VENDORING_DIRECTORY}/$name" ] || ln -s "$crate" "${CARGO_VENDORING_DIRECTORY}/$name"
    done
}

# Where the A7 side (sphere-appd) and Linux remoteproc look for M4 firmware.
SPHERE_M4_FIRMWARE_DIR = "${nonarch_base_libdir}/firmware/sphere"

do_install() {
    install -d ${D}${SPHERE_M4_FIRMWARE_DIR}
    install -m 0644 ${B}/target/${CARGO_TARGET_SUBDIR}/sphere-rt-m4 ${D}${SPHERE_M4_FIRMWARE_DIR}/sphere-rt-m4.elf
}

FILES:${PN} += "${SPHERE_M4_FIRMWARE_DIR}"
# Firmware for another core: not an A7 executable, so no A7 strip, debug split
# or library-dependency scan. (insane's arch check passes: both are 32-bit
# little-endian ARM ELF, and a static image has no dynamic section to check.)
INHIBIT_PACKAGE_STRIP = "1"
INHIBIT_PACKAGE_DEBUG_SPLIT = "1"
INHIBIT_SYSROOT_STRIP = "1"
EXCLUDE_FROM_SHLIBS = "1"
