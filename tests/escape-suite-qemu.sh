#!/usr/bin/env bash
# The sandbox escape suite inside the QEMU Cortex-A7 image: the same hostile app (armv7, static),
# packaged and signed with the development key, installed next to the victim by the device's own
# app store code (`sphere-appd install`), started by the app manager at boot in the full sandbox
# of the device (its 6.12 kernel: Landlock ABI 6, cgroup v2, CLONE_INTO_CGROUP). Its ATTEMPT
# lines come out on the console; every one must be blocked.
#
# Usage (as root): tests/escape-suite-qemu.sh [--kernel-dir DIR] [--timeout SECONDS] [--keep]
#   --kernel-dir DIR  a built kernel (zImage + config); default: the kernel of the shared image in
#                     ${OPENSPHERE_CACHE:-$HOME/.cache/opensphere}/image, else scripts/build-kernel.sh
#   --keep            keep the work directory (image, packages, console log)
# The image is built into a private cache (this suite never touches the shared image or its data
# disk). Attempts that need the victim's host pid are skipped in the guest (the app manager, not
# the suite, starts the victim); the host suite makes them. Last line: "escape-qemu: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/private-image.sh
source tests/private-image.sh

MIN_ATTEMPTS=40
timeout=240
kernel_dir=
keep=0
while (($#)); do
  case "$1" in
    --kernel-dir) shift; kernel_dir=${1:?--kernel-dir needs a directory} ;;
    --timeout) shift; timeout=${1:?--timeout needs seconds} ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "escape-suite-qemu: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
finish() { echo "escape-qemu: $1 passed, $2 failed"; exit $(( $2 > 0 ? 1 : 0 )); }
[[ $(id -u) -eq 0 ]] || { echo "escape-suite-qemu: must run as root" >&2; finish 0 1; }

private=$(mktemp -d /tmp/escape-qemu.XXXXXX)
mnt=$private/mnt
cleanup() {
  umount "$mnt" 2>/dev/null
  if ((keep)); then echo "escape-suite-qemu: kept $private" >&2; else rm -rf "$private"; fi
}
trap cleanup EXIT

echo "== build the image (private cache $private/cache)"
image=$(build_private_image "$private" "$kernel_dir") || finish 0 1
keys=$private/cache/keys
[[ -f $keys/dev-signing.key.pem ]] || { echo "escape-suite-qemu: no development key in $keys" >&2; finish 0 1; }

echo "== cross-build escape-artist for armv7, package and sign attacker and victim"
bin_dir=$(scripts/cross-build.sh --release -p escape-artist --print-dir | tail -n 1) || finish 0 1
cargo build -q --release --locked -p sphere-cli -p sphere-appd || finish 0 1
victim_cid=$(python3 -c 'import json; print(json.load(open("examples/escape-artist/packages/victim/app_manifest.json"))["ComponentId"])')
for role in attacker victim; do
  src=$private/src-$role
  mkdir -p "$src/bin"
  install -m 0755 "$bin_dir/escape-artist" "$src/bin/app"
  # The guest's facts: the QEMU board's GPIO chip instead of the host suite's stand-in node, and
  # the app manager's storage mount of the victim (/run/sphere/storage/ID) as the attacker's target.
  python3 - "examples/escape-artist/packages/$role/app_manifest.json" "$src/app_manifest.json" "$role" "$victim_cid" <<'EOF'
import json, sys
manifest = json.load(open(sys.argv[1])); role, victim = sys.argv[3], sys.argv[4]
if role == "victim":
    manifest["Capabilities"]["Gpio"] = ["$QEMU_VIRT_GPIO4"]
    manifest["CmdArgs"] = ["victim", "--device", "/dev/gpiochip0"]
else:
    manifest["CmdArgs"] += ["--victim-storage", f"/run/sphere/storage/{victim}", "--device", "/dev/gpiochip0"]
json.dump(manifest, open(sys.argv[2], "w"), indent=2)
EOF
  target/release/sphere app package "$src" -o "$private/$role.sphpkg" --key "$keys/dev-signing.key.pem" \
    --hardware-definition-dir images/qemu-a7/hardware-definitions \
    --hardware-definition images/qemu-a7/hardware-definitions/opensphere_qemu_virt_a7.json >/dev/null || finish 0 1
done

echo "== install both into a copy of the data disk with the device's store code"
mkdir -p "$mnt"
mount -o loop "$image/data.ext4" "$mnt" || finish 0 1
mkdir -p "$mnt/sphere"
touch "$mnt/sphere/development-mode"
for role in victim attacker; do
  target/release/sphere-appd install --store "$mnt/sphere/apps" --dev-trust "$keys/dev-signing.pub.pem" \
    --development-mode --board images/qemu-a7/hardware-definitions/opensphere_qemu_virt_a7.json \
    --storage-dir "$mnt/sphere/storage" "$private/$role.sphpkg" >/dev/null || finish 0 1
done
umount "$mnt"

echo "== boot (TCG; the hostile app runs once per start, the first full run counts)"
log=$private/console.log
scripts/run-qemu.sh --image-dir "$image" --timeout "$timeout" --log "$log" --quiet >/dev/null 2>&1
# App output reaches the console as "[escape-artist] LINE"; keep the first run, up to its SUMMARY.
run=$(sed -n 's/^.*\[escape-artist\] //p' "$log" | awk '{print} /^SUMMARY /{exit}')
grep -E '^(ATTEMPT|CONTROL|SKIP|SUMMARY)' <<<"$run"
grep -E '\[escape-victim\]' "$log" | head -5 | sed 's/^/   /'
grep -iE 'sphere-sandbox-exec: .*not enforced' "$log" | head -2 | sed 's/^/   degraded: /'

attempts=$(grep -c '^ATTEMPT ' <<<"$run")
blocked=$(grep -c '^ATTEMPT .* result=blocked ' <<<"$run")
failed=$(grep -cE '^ATTEMPT .* result=(ESCAPED|ERROR) |^CONTROL .* result=FAILED ' <<<"$run")
grep -q '^SUMMARY ' <<<"$run" || { echo "escape-suite-qemu: no complete run of the hostile app in $log" >&2; failed=$((failed + 1)); }
echo
echo "$attempts attempts, $(grep -c '^ATTEMPT .* result=ESCAPED ' <<<"$run") escaped (inside the QEMU image)"
if ((attempts < MIN_ATTEMPTS)); then
  echo "escape-suite-qemu: only $attempts attempts ran (at least $MIN_ATTEMPTS required)" >&2
  failed=$((failed + 1))
fi
finish "$blocked" "$failed"
