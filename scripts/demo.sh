#!/usr/bin/env bash
# OpenSphere's main job, end to end on a fresh Debian 12 machine (run as root so missing host
# packages can be installed):
#   1. build the `sphere` CLI and cross-build the sample app for the Cortex-A7 (rustc 1.85),
#   2. make (once) a development signing key,
#   3. check the sample app's Azure Sphere manifest against the QEMU board's hardware definition,
#   4. package it signed, then verify the package as a device would and show what it holds.
#
# Usage: scripts/demo.sh
# Outputs go to ${OPENSPHERE_CACHE:-$HOME/.cache/opensphere}/demo/ (outside the checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${OPENSPHERE_CACHE:-$HOME/.cache/opensphere}
out=$cache/demo
keys=$cache/keys
step() { printf '\n==> %s\n' "$*" >&2; }

step "host packages"
scripts/install-host-deps.sh cross

step "building the sphere CLI (host)"
cargo build --release --locked -p sphere-cli
sphere=$PWD/target/release/sphere

step "cross-building hello-sphere for armv7 with rustc 1.85 (a few minutes the first time)"
device_bin=$(scripts/cross-build.sh --release -p hello-sphere --print-dir | tail -n 1)

step "development signing key"
mkdir -p "$keys" "$out"
if [[ ! -f $keys/dev.key ]]; then
  "$sphere" keys new dev --dir "$keys"
else
  echo "using $keys/dev.key" >&2
fi

step "checking the manifest against the QEMU board's hardware definition"
hardware=(--hardware-definition examples/hello-sphere/hardware-definitions/sample_appliance.json
  --hardware-definition-dir images/qemu-a7/hardware-definitions)
"$sphere" manifest check examples/hello-sphere/app/app_manifest.json "${hardware[@]}"

step "packaging hello-sphere, signed with the development key"
app=$(mktemp -d)
trap 'rm -rf "$app"' EXIT
mkdir -p "$app/bin"
cp examples/hello-sphere/app/app_manifest.json "$app/"
install -m 0755 "$device_bin/hello-sphere" "$app/bin/app"
"$sphere" app package "$app" -o "$out/hello-sphere.sphpkg" --key "$keys/dev.key" "${hardware[@]}"

step "verifying the package as a device does (trusting only the development key)"
"$sphere" app verify "$out/hello-sphere.sphpkg" --trust "$keys/dev.pub"
"$sphere" app show "$out/hello-sphere.sphpkg" --trust "$keys/dev.pub"

step "done: $out/hello-sphere.sphpkg"
