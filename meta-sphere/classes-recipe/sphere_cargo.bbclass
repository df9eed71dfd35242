# Build one crate of the OpenSphere Cargo workspace with oe-core's cargo class.
#
# The sources are the checkout that holds this layer (sphere_source.bbclass).
#
# S is the workspace root; CARGO_SRC_DIR selects the member, so cargo builds that
# package alone (--manifest-path points at its Cargo.toml) against the one
# Cargo.lock at the root.

inherit cargo cargo-update-recipe-crates sphere_source

# The crate's directory inside the workspace, e.g. "daemons/sphere-init".
SPHERE_CRATE_DIR ?= "daemons/${BPN}"

CARGO_SRC_DIR = "${SPHERE_CRATE_DIR}"
CARGO_LOCK_PATH ?= "${S}/Cargo.lock"
CARGO_LOCK_SRC_DIR ?= "${S}"

# The workspace's release profile strips binaries (strip = true) to fit an
# MT3620's flash. In a bitbake build the package class strips and keeps the
# debug symbols in -dbg packages instead, and insane.bbclass rejects binaries
# that arrive already stripped.
export CARGO_PROFILE_RELEASE_STRIP = "false"

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
