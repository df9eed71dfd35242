#!/usr/bin/env bash
# OpenSphere's main job, end to end on a fresh Debian 12 machine (run as root so missing host
# packages can be installed):
#   1. build the `sphere` CLI and cross-build the sample app for the Cortex-A7 (rustc 1.85),
#   2. make (once) a development signing key,
#   3. check the sample app's Azure Sphere manifest against the QEMU board's hardware definition,
#   4. package it signed, then verify the package as a device would and show what it holds,
#   5. build the QEMU Cortex-A7 image (our kernel, sphere-init, sphere-appd, the sandbox launcher),
#      install the package into the device's data partition with the device's own app store code,
#      boot the image, and show the app running in its sandbox; then power off cleanly;
#   6. next to the A7, boot the Cortex-M4 (QEMU mps2-an386) with the real-time apps' firmware
#      (scripts/build-m4.sh), packaged and signed like any app (ApplicationType RealTimeCapable)
#      and installed by the app manager, which deploys it; the two machines are linked through a
#      host socket, and hello-sphere sends a message to the M4's echo app through
#      Application_Connect and prints the reply (docs/intercore-apps.md).
#
# Usage: scripts/demo.sh [--no-boot] [--seconds N]
#   --no-boot     stop after step 4 (no kernel build, no QEMU)
#   --seconds N   how long the devices run before the clean poweroff (default 40)
# Outputs go to ${OPENSPHERE_CACHE:-$HOME/.cache/opensphere}/demo/ (outside the checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
boot=1
seconds=40
while (($#)); do
  case "$1" in
    --no-boot) boot=0 ;;
    --seconds) shift; seconds=${1:?--seconds needs a number} ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
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

step "building the Cortex-M4 real-time firmware (echo and sampler apps) with rustc 1.85"
firmware_stripped=$(scripts/build-m4.sh --print-stripped --size | tail -n 1)

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

step "packaging the real-time apps (RealTimeCapable; the M4 firmware is their entry point)"
for rt in echo sampler; do
  mkdir -p "$app/rt-$rt/bin"
  cp "daemons/sphere-rt-m4/apps/$rt/app_manifest.json" "$app/rt-$rt/"
  cp "$firmware_stripped" "$app/rt-$rt/bin/app"
  "$sphere" app package "$app/rt-$rt" -o "$out/rt-$rt.sphpkg" --key "$keys/dev-signing.key.pem"
done

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
for rt in echo sampler; do
  target/release/sphere-appd install --store "$mnt/sphere/apps" \
    --dev-trust "$keys/dev-signing.pub.pem" --development-mode "$out/rt-$rt.sphpkg"
done
umount "$mnt"

step "extracting the M4 firmware from the verified rt-echo package (the M4 machine boots it)"
"$sphere" app verify "$out/rt-echo.sphpkg" --trust "$keys/dev-signing.pub.pem"
tar -xOf "$out/rt-echo.sphpkg" bin/app >"$out/m4-firmware.elf"

step "booting the A7 image and the M4 next to it; the app manager starts hello-sphere in its sandbox (clean poweroff after ${seconds}s)"
log=$out/console.log
m4_log=$out/m4-uart0.log
# The run ends by our --timeout: run-qemu then powers the guest off cleanly and exits 124.
status=0
scripts/run-qemu.sh --image-dir "$image" --timeout "$seconds" --log "$log" \
  --m4-firmware "$out/m4-firmware.elf" --m4-log "$m4_log" || status=$?
echo >&2
if ((status != 0 && status != 124)); then
  echo "demo: the QEMU run failed (status $status); see $log" >&2
  exit 1
fi
grep -q 'milestone shutdown-complete action=poweroff' "$log" || { echo "demo: no clean poweroff; see $log" >&2; exit 1; }
if grep -q '\[hello-sphere\] hello-sphere: heartbeat' "$log"; then
  step "hello-sphere ran sandboxed on the device; what it reported:"
  grep -E '\[hello-sphere\] hello-sphere: (started|access|storage)' "$log" | sed 's/^/  /' >&2
else
  echo "demo: hello-sphere did not run; see $log" >&2
  exit 1
fi
if grep -q '\[hello-sphere\] hello-sphere: real-time echo app: sent .*, reply ' "$log"; then
  step "a message round trip between the A7 and the M4 (hello-sphere -> app manager -> link -> M4 echo app and back):"
  grep -E 'real-time app .* deployed|inter-core (link|connection)' "$log" | sed 's/^/  /' >&2
  grep '\[hello-sphere\] hello-sphere: real-time echo app' "$log" | sed 's/^/  /' >&2
  echo "  M4 UART0 ($m4_log):" >&2
  grep -E 'm4:|link: delivered' "$m4_log" | head -n 5 | sed 's/^/    /' >&2
  step "done"
else
  echo "demo: no message round trip with the M4 echo app; see $log and $m4_log" >&2
  grep '\[hello-sphere\] hello-sphere: real-time echo app' "$log" >&2 || true
  exit 1
fi
