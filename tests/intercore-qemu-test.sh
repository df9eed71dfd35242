#!/usr/bin/env bash
# The A7 and the M4 together: two QEMU machines linked through a host socket, with the app
# manager brokering inter-core messages between sandboxed high-level apps and real-time apps.
#
#   A7 guest (virt, cortex-a7)                 host                       M4 (mps2-an386)
#   app --Application_Connect--> sphere-appd --virtio-serial--> relay.sock -> intercore-relay.py -> UART1
#
# Four packages, signed with the development key, are installed into a fresh data disk by the
# device's own store code: the two real-time apps (their package's entry point is the M4
# firmware: the M4 machine boots the image extracted from the verified echo package, and the app
# manager deploys it on the guest), `hello-probe` (the component id both real-time apps allow;
# its manifest lists the echo app but NOT the sampler) and `stranger` (lists the echo app, which
# does not list it). Both run `hello-sphere intercore-test`. Checks:
#   - round trips: 50 of 50 echoed;
#   - refusals: stranger -> echo (the real-time app does not list it) and hello-probe -> sampler
#     (the high-level app does not list it) are refused, and recorded as intercore-refused
#     violations (read over the development port);
#   - resynchronisation: the relay injects garbage and flips bits in both directions while the
#     probe talks; afterwards 20 of 20 round trips succeed and the M4 counted the damage;
#   - deadlines under flood: the probe sends 1 KiB messages as fast as credit allows; the M4's
#     sampler (10 ms period, 2 ms deadline; -icount so host load cannot fake lateness) reports 0
#     misses and the link still round-trips afterwards.
#
# Usage (as root): tests/intercore-qemu-test.sh [--keep]
# Last line: "intercore-qemu: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
keep=0
[[ ${1:-} == --keep ]] && keep=1
suite=intercore-qemu
. tests/check.sh
[[ $(id -u) -eq 0 ]] || fatal "must run as root"

cache=${OPENSPHERE_CACHE:-$HOME/.cache/opensphere}
work=$(mktemp -d /tmp/intercore-qemu.XXXXXX)
pids=()
cleanup() {
  umount "$work/mnt" 2>/dev/null || true
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  wait 2>/dev/null
  if ((keep)); then echo "intercore-qemu-test: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

ECHO=6a1f0e2c-3b4d-4e5f-8a9b-0c1d2e3f4a51
SAMPLER=6a1f0e2c-3b4d-4e5f-8a9b-0c1d2e3f4a52
PROBE=7f0c2e5a-61d4-4b8e-9a3f-2c51d7e80b14
STRANGER=5e7a11e2-0000-4000-8000-0000000000ba

# --- Build (all cached after the first run) -----------------------------------------------------
image=$(scripts/build-image.sh | tail -n 1) || fatal "setup failed (see above)"
cargo build -q --locked -p sphere-cli -p sphere-appd || fatal "setup failed (see above)"
sphere=$PWD/target/debug/sphere
bin=$(scripts/cross-build.sh --release -p hello-sphere --print-dir | tail -n 1) || fatal "setup failed (see above)"
firmware=$(scripts/build-m4.sh --print-stripped | tail -n 1) || fatal "setup failed (see above)"
key=$cache/keys/dev-signing.key.pem
pub=$cache/keys/dev-signing.pub.pem

# --- Packages ------------------------------------------------------------------------------------
package() { # NAME MANIFEST_JSON BINARY
  mkdir -p "$work/$1/bin"
  echo "$2" >"$work/$1/app_manifest.json"
  install -m 0755 "$3" "$work/$1/bin/app"
  "$sphere" app package "$work/$1" -o "$work/$1.sphpkg" --key "$key" >/dev/null
}
for app in echo sampler; do
  package "rt-$app" "$(cat "daemons/sphere-rt-m4/apps/$app/app_manifest.json")" "$firmware" || fatal "setup failed (see above)"
done
package hello-probe "{\"SchemaVersion\": 1, \"Name\": \"hello-probe\", \"ComponentId\": \"$PROBE\",
  \"EntryPoint\": \"/bin/app\", \"CmdArgs\": [\"intercore-test\", \"50\", \"64\", \"5\"],
  \"Capabilities\": {\"AllowedApplicationConnections\": [\"$ECHO\"]}, \"ApplicationType\": \"Default\"}" \
  "$bin/hello-sphere" || fatal "setup failed (see above)"
package stranger "{\"SchemaVersion\": 1, \"Name\": \"stranger\", \"ComponentId\": \"$STRANGER\",
  \"EntryPoint\": \"/bin/app\", \"CmdArgs\": [\"intercore-test\"],
  \"Capabilities\": {\"AllowedApplicationConnections\": [\"$ECHO\"]}, \"ApplicationType\": \"Default\"}" \
  "$bin/hello-sphere" || fatal "setup failed (see above)"

# A fresh data disk, development mode on, the four apps installed by the device's store code.
truncate -s 64M "$work/data.ext4"
mkfs.ext4 -q -F -L sphere-data "$work/data.ext4"
mkdir -p "$work/mnt"
mount -o loop "$work/data.ext4" "$work/mnt" || fatal "setup failed (see above)"
mkdir -p "$work/mnt/sphere" && touch "$work/mnt/sphere/development-mode"
for app in rt-echo rt-sampler hello-probe stranger; do
  target/debug/sphere-appd install --store "$work/mnt/sphere/apps" --dev-trust "$pub" --development-mode \
    "$work/$app.sphpkg" >/dev/null || failed=$((failed + 1))
done
umount "$work/mnt"

# --- The M4: boot the firmware from the verified real-time package ----------------------------
"$sphere" app verify "$work/rt-echo.sphpkg" --trust "$pub" >/dev/null || fatal "setup failed (see above)"
tar -xOf "$work/rt-echo.sphpkg" bin/app >"$work/m4.elf"
check "the M4 boots the firmware extracted from the verified rt-echo package" cmp -s "$work/m4.elf" "$firmware"
qemu-system-arm -M mps2-an386 -cpu cortex-m4 -nographic -monitor none \
  -semihosting-config enable=on,target=native -icount shift=3 -kernel "$work/m4.elf" \
  -chardev "socket,id=ic,path=$work/m4.sock,server=on,wait=off" \
  -serial "file:$work/m4.log" -serial chardev:ic </dev/null >"$work/m4-qemu.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [[ -S $work/m4.sock ]] && break; sleep 0.05; done
python3 tests/intercore-relay.py --listen "$work/relay.sock" --connect "$work/m4.sock" \
  --control "$work/relay-ctl.sock" 2>"$work/relay.err" &
pids+=($!)
for _ in $(seq 100); do [[ -S $work/relay-ctl.sock ]] && break; sleep 0.05; done
relay() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(sys.argv[2].encode()); print(s.recv(4096).decode().strip())' "$work/relay-ctl.sock" "$1"; }

# --- The A7 ----------------------------------------------------------------------------------------
log=$work/console.log
socket=$work/appd.sock
scripts/run-qemu.sh --image-dir "$image" --data "$work/data.ext4" --appd-socket "$socket" --timeout 300 \
  --intercore-socket "$work/relay.sock" --log "$log" --quiet 2>"$work/run-qemu.err" &
qemu_pid=$!
pids+=("$qemu_pid")
wait_for() { # PATTERN SECONDS
  for _ in $(seq $(($2 * 2))); do
    grep -q "$1" "$log" 2>/dev/null && return 0
    sleep 0.5
  done
  return 1
}
check "guest booted" wait_for 'milestone boot-complete' 120
check "the app manager deployed the real-time apps" wait_for "real-time app rt-sampler $SAMPLER deployed" 10
if wait_for '\[hello-probe\] intercore-test: resync phase start' 120; then
  # Damage the stream three times while the probe's round trips run.
  for _ in 1 2 3; do
    sleep 2
    relay noise >/dev/null
  done
fi
wait_for '\[hello-probe\] intercore-test: done' 120
grep -E '\[(hello-probe|stranger)\] intercore-test' "$log" | sed 's/^/  /'
has() { grep -qE "$1" "$log"; }
check "round trips: 50 of 50 messages echoed by the M4" has '\[hello-probe\] intercore-test: round-trips ok=50/50'
check "refused: the stranger (not listed by the echo app)" \
  has "\[stranger\] intercore-test: connect echo: refused \(.*does not list $STRANGER"
check "refused: hello-probe -> sampler (hello-probe does not list the sampler)" \
  has "\[hello-probe\] intercore-test: connect sampler: refused \(hello-probe does not list $SAMPLER"
violations() { timeout 120 "$sphere" --json app violations "$1" --socket "$socket" 2>/dev/null; }
check "the refusals are recorded as intercore-refused violations" bash -c \
  "$(declare -f violations); sphere=$sphere socket=$socket
   violations $STRANGER | grep -q intercore-refused && violations $PROBE | grep -q intercore-refused"
stats=$(relay stats)
echo "  relay: $stats"
check "the relay damaged both directions (3 noise bursts, bits flipped)" \
  python3 -c 'import json,sys; s=json.loads(sys.argv[1]); sys.exit(not (s["noise_bursts"] == 3 and s["bits_flipped"] >= 4))' "$stats"
check "after the damage the link resynchronised: 20 of 20 round trips" has '\[hello-probe\] intercore-test: after-resync ok=20/20'
check "the M4 counted the damage (skipped bytes, bad frames)" \
  has '\[hello-probe\] intercore-test: echo stats: .* skipped_bytes=[1-9][0-9]* bad_frames=[1-9]'
check "flood: 1 KiB messages echoed under backpressure" has '\[hello-probe\] intercore-test: flood sent=[1-9][0-9]* echoed=[1-9]'
check "after the flood the link still round-trips: 20 of 20" has '\[hello-probe\] intercore-test: after-flood ok=20/20'
echo "  M4 UART0 (last report):"
grep 'sampler samples=' "$work/m4.log" | tail -1 | sed 's/^/    /'
check "the M4 sampler kept every deadline through the flood (0 misses, >= 1000 jobs)" bash -c \
  "! grep -q 'DEADLINE MISS' '$work/m4.log' && grep 'sampler samples=' '$work/m4.log' | tail -1 | grep -qE 'samples=[0-9]{4,} misses=0 '"

# The console helper owns the control port; SIGTERM makes it ask the guest for a clean poweroff.
pkill -TERM -f "qemu-console.py --log $log"
wait "$qemu_pid"
check "clean poweroff" grep -q 'milestone shutdown-complete action=poweroff' "$log"
finish
