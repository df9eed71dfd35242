# Build one crate of the OpenSphere Cargo workspace with oe-core's cargo class.
#
# The layer sits inside the OpenSphere repository, so by default a recipe builds
# the commit checked out there (HEAD of ${SPHERE_TOPDIR}), fetched with bitbake's
# git fetcher over the file protocol: no network, and the sources always match
# the layer and opensphere-crates.inc of the same commit. A product that keeps
# the layer elsewhere points SPHERE_GIT_URI at its OpenSphere repository and sets
# SRCREV (see README.md).
#
# S is the workspace root; CARGO_SRC_DIR selects the member, so cargo builds that
# package alone (--manifest-path points at its Cargo.toml) against the one
# Cargo.lock at the root.

inherit cargo cargo-update-recipe-crates

# The crate's directory inside the workspace, e.g. "daemons/sphere-init".
SPHERE_CRATE_DIR ?= "daemons/${BPN}"

# usehead: build whatever commit the checkout has, on any branch.
SPHERE_GIT_URI ?= "git://${SPHERE_TOPDIR};protocol=file;usehead=1;nobranch=1"
SRC_URI = "${SPHERE_GIT_URI}"
# AUTOREV here resolves HEAD of the local checkout that also holds this layer,
# so the build is exactly as reproducible as the layer's own commit. Products
# that fetch from a remote set a fixed SRCREV.
# nooelint: oelint.vars.autorev
SRCREV ?= "${AUTOREV}"

CARGO_SRC_DIR = "${SPHERE_CRATE_DIR}"
CARGO_LOCK_PATH = "${S}/Cargo.lock"
CARGO_LOCK_SRC_DIR = "${S}"

# The workspace's release profile strips binaries (strip = true) to fit an
# MT3620's flash. In a bitbake build the package class strips and keeps the
# debug symbols in -dbg packages instead, and insane.bbclass rejects binaries
# that arrive already stripped.
export CARGO_PROFILE_RELEASE_STRIP = "false"

# Our own software: no match in the CVE database under another vendor's name.
CVE_PRODUCT ?= "opensphere:${BPN}"

# Every crate the workspace locks, generated from Cargo.lock. cargo resolves the
# whole workspace even when it builds one member, so each recipe needs them all.
# Regenerate with meta-sphere/scripts/gen-crates-inc.py (offline) or
# `bitbake -c update_crates sphere-cli` (same output). The path is relative to
# BBPATH, which layer.conf extends with this layer.
require recipes-sphere/include/opensphere-crates.inc

# update_crates writes ${THISDIR}/${BPN}-crates.inc; all recipes share one file.
do_update_crates:append() {
    mv "${THISDIR}/${BPN}-crates.inc" "${SPHERE_LAYERDIR}/recipes-sphere/include/opensphere-crates.inc"
}
