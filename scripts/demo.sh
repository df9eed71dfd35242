#!/usr/bin/env bash
# OpenSphere's main job, end to end on a fresh Debian 12 machine (run as root so missing host
# packages can be installed):
#   1. build the `sphere` CLI and cross-build the sample app for the Cortex-A7 (rustc 1.85),
#   2. make (once) a development signing key,
#   3. check the sample app's Azure Sphere manifest against the QEMU board's hardware definition,
#   4. package it signed, then verify the package as a device would and show what it holds,
#   5. build the QEMU Cortex-A7 image (our kernel, sphere-init, sphere-appd, the sandbox launcher),
#      install the package into the device's data partition with the device's own app store code,
#      boot the image, and show the app running in its sandbox; then power off cleanly.
#
# Usage: scripts/demo.sh [--no-boot] [--seconds N]
#   --no-boot     stop after step 4 (no kernel build, no QEMU)
#   --seconds N   how long the device runs before the clean poweroff (default 25)
# Outputs go to ${OPENSPHERE_CACHE:-$HOME/.cache/opensphere}/demo/ (outside the checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
boot=1
seconds=25
while (($#)); do
  case "$1" in
    --no-boot) boot=0 ;;
    --seconds) shift; seconds=${1:?--seconds needs a number} ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "demo: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
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

step "development signing key (the one the test image trusts in development mode)"
mkdir -p "$keys" "$out"
if [[ ! -f $keys/dev-signing.key.pem ]]; then
  "$sphere" keys new dev-signing --dir "$keys"
  mv "$keys/dev-signing.key" "$keys/dev-signing.key.pem"
  mv "$keys/dev-signing.pub" "$keys/dev-signing.pub.pem"
else
  echo "using $keys/dev-signing.key.pem" >&2
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
"$sphere" app package "$app" -o "$out/hello-sphere.sphpkg" --key "$keys/dev-signing.key.pem" "${hardware[@]}"

step "verifying the package as a device does (trusting only the development key)"
"$sphere" app verify "$out/hello-sphere.sphpkg" --trust "$keys/dev-signing.pub.pem"
"$sphere" app show "$out/hello-sphere.sphpkg" --trust "$keys/dev-signing.pub.pem"

if ((boot == 0)); then
  step "done: $out/hello-sphere.sphpkg (--no-boot: not booting the image)"
  exit 0
fi

step "building the QEMU Cortex-A7 image (kernel build ~10 min the first time, then cached)"
scripts/install-host-deps.sh image
image=$(scripts/build-image.sh --fresh-data | tail -n 1)

step "installing hello-sphere into the device's data partition (development mode on)"
cargo build --release --locked -p sphere-appd
mnt=$(mktemp -d)
trap 'umount "$mnt" 2>/dev/null || true; rm -rf "$app" "$mnt"' EXIT
mount -o loop "$image/data.ext4" "$mnt"
mkdir -p "$mnt/sphere"
touch "$mnt/sphere/development-mode"
target/release/sphere-appd install --store "$mnt/sphere/apps" \
  --dev-trust "$keys/dev-signing.pub.pem" --development-mode \
  --board images/qemu-a7/hardware-definitions/opensphere_qemu_virt_a7.json \
  --storage-dir "$mnt/sphere/storage" "$out/hello-sphere.sphpkg"
umount "$mnt"

step "booting the image; the app manager starts hello-sphere in its sandbox (clean poweroff after ${seconds}s)"
log=$out/console.log
# The run ends by our --timeout: run-qemu then powers the guest off cleanly and exits 124.
status=0
scripts/run-qemu.sh --image-dir "$image" --timeout "$seconds" --log "$log" || status=$?
echo >&2
if ((status != 0 && status != 124)); then
  echo "demo: the QEMU run failed (status $status); see $log" >&2
  exit 1
fi
grep -q 'milestone shutdown-complete action=poweroff' "$log" || { echo "demo: no clean poweroff; see $log" >&2; exit 1; }
if grep -q '\[hello-sphere\] hello-sphere: heartbeat' "$log"; then
  step "hello-sphere ran sandboxed on the device; what it reported:"
  grep -E '\[hello-sphere\] hello-sphere: (started|access|storage)' "$log" | sed 's/^/  /' >&2
  step "done"
else
  echo "demo: hello-sphere did not run; see $log" >&2
  exit 1
fi
