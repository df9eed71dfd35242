#!/usr/bin/env bash
# `sphere app ...` against a QEMU guest in development mode: the CLI on the host reaches the
# guest's app manager through its development port (a virtio-serial port relayed to the D-Bus
# API), installs a signed package sent as bytes, and watches it run, stop and go away.
#
# Usage (as root): tests/device-cli-test.sh [--keep]
# Uses the shared image (scripts/build-image.sh, cached) with a fresh, private data disk.
# Last line: "device-cli: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
keep=0
[[ ${1:-} == --keep ]] && keep=1
suite=device-cli
. tests/check.sh
[[ $(id -u) -eq 0 ]] || fatal "must run as root"

cache=${OPENSPHERE_CACHE:-$HOME/.cache/opensphere}
work=$(mktemp -d /tmp/device-cli.XXXXXX)
qemu_pid=
cleanup() {
  umount "$work/mnt" 2>/dev/null || true
  [[ -n $qemu_pid ]] && kill "$qemu_pid" 2>/dev/null
  if ((keep)); then echo "device-cli-test: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

image=$(scripts/build-image.sh | tail -n 1) || fatal "setup failed (see above)"
cargo build -q --locked -p sphere-cli || fatal "setup failed (see above)"
sphere=$PWD/target/debug/sphere
bin=$(scripts/cross-build.sh --release -p hello-sphere --print-dir | tail -n 1) || fatal "setup failed (see above)"

# A fresh data disk with development mode switched on (the local admin action).
truncate -s 64M "$work/data.ext4"
mkfs.ext4 -q -F -L sphere-data "$work/data.ext4"
mkdir -p "$work/mnt"
mount -o loop "$work/data.ext4" "$work/mnt" && mkdir -p "$work/mnt/sphere" && touch "$work/mnt/sphere/development-mode"
umount "$work/mnt"

# The sample app without MutableStorage (the image has no mke2fs to create it at run time).
id=3f6c1d2e-8a47-4b5c-9d0e-1a2b3c4d5e6f
mkdir -p "$work/app/bin"
install -m 0755 "$bin/hello-sphere" "$work/app/bin/app"
cat >"$work/app/app_manifest.json" <<JSON
{"SchemaVersion": 1, "Name": "hello-device-cli", "ComponentId": "$id", "EntryPoint": "/bin/app",
 "Capabilities": {"Gpio": [6]}}
JSON
"$sphere" app package "$work/app" -o "$work/app.sphpkg" --key "$cache/keys/dev-signing.key.pem" >/dev/null || fatal "setup failed (see above)"
cp "$work/app.sphpkg" "$work/tampered.sphpkg"
python3 - "$work/tampered.sphpkg" <<'PY'
import sys
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
at = data.find(b"\x7fELF")
data[at + 100] ^= 0xFF
open(path, "wb").write(data)
PY

socket=$work/appd.sock
scripts/run-qemu.sh --image-dir "$image" --data "$work/data.ext4" --appd-socket "$socket" --timeout 240 \
  --log "$work/console.log" --quiet 2>"$work/run-qemu.err" &
qemu_pid=$!
for _ in $(seq 240); do
  grep -q 'milestone boot-complete' "$work/console.log" 2>/dev/null && break
  sleep 0.5
done
check "guest booted" grep -q 'milestone boot-complete' "$work/console.log"

# Generous: an install verifies and unpacks under TCG, and CI loads both cores.
# The pause: the development port is one virtio-serial stream, and the guest learns that a host
# connection ended only from the port's hang-up. A second connection that follows within
# milliseconds can be taken for the tail of the first and its request lost (the command then
# hangs until the timeout). Seen as flakes in CI; a known limit of the port, see docs/sphere-cli.md.
dev() { sleep 1; timeout 180 "$sphere" "$@" --socket "$socket"; }
check "list over the development port: no apps yet" bash -c "$(declare -f dev); sphere=$sphere socket=$socket; dev app list | grep -q 'no apps installed'"
dev --json app install "$work/app.sphpkg" >"$work/install.json" 2>"$work/install.err"
status=$?
cat "$work/install.err" >&2
check "install from the host: exit 0" test "$status" -eq 0
check "installed app is running" grep -q '"state": "running"' "$work/install.json"
# --lines 200 (appd keeps 200): the app's first lines leave the default 50-line window after ~45
# heartbeats, and on a loaded CI machine these calls can come that late (a flake seen in CI).
for _ in $(seq 60); do dev app logs "$id" --lines 200 | grep -q 'heartbeat 2' && break; sleep 1; done
check "logs show the app's heartbeats" bash -c "$(declare -f dev); sphere=$sphere socket=$socket; dev app logs $id --lines 200 | grep -q 'heartbeat 2'"
check "the granted GPIO chip opened inside the sandbox" bash -c "$(declare -f dev); sphere=$sphere socket=$socket; dev app logs $id --lines 200 | grep -q 'access /dev/gpiochip0: open'"
dev app install "$work/tampered.sphpkg" >/dev/null 2>"$work/tampered.err"
check "a tampered package is refused with exit 1" test $? -eq 1
check "the refusal names the tampered file" grep -q 'bin/app' "$work/tampered.err"
check "stop: state stopped" bash -c "$(declare -f dev); sphere=$sphere socket=$socket; dev app stop $id | grep -q 'state      stopped'"
dev app remove "$id" >"$work/remove.out" 2>&1
remove_status=$?
dev app list >"$work/list.out" 2>&1
check "remove: list is empty again" bash -c "test $remove_status -eq 0 && grep -q 'no apps installed' '$work/list.out'"
if ((remove_status != 0)) || ! grep -q 'no apps installed' "$work/list.out"; then
  echo "#   remove (exit $remove_status): $(tr '\n' ' ' <"$work/remove.out")"
  echo "#   list: $(tr '\n' ' ' <"$work/list.out")"
  grep -E 'sphere-appd|hello-device-cli' "$work/console.log" | tail -8 | sed 's/^/#   console: /'
fi

# The console helper owns the control port; SIGTERM makes it ask the guest for a clean poweroff.
pkill -TERM -f "qemu-console.py --log $work/console.log"
wait "$qemu_pid"
qemu_pid=
check "clean poweroff" grep -q 'milestone shutdown-complete action=poweroff' "$work/console.log"
finish
