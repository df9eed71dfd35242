#!/usr/bin/env bash
# Inter-core benchmark: round-trip latency and throughput between a sandboxed high-level app on
# the A7 guest and the echo app on the M4 machine, next to a raw byte echo over the same QEMU
# link in the same run; and the M4 firmware's flash and RAM use.
#
# Usage (as root): scripts/bench-intercore.sh [--count N] [--size BYTES] [--seconds S] [--keep]
#   --count N      round trips for each latency figure (default 200)
#   --size BYTES   message size for the latency figures (default 64)
#   --seconds S    length of the throughput flood (1 KiB messages; default 5)
#
# One boot of the A7 image (TCG) with the M4 (mps2-an386) linked through a host socket:
#   1. raw echoes: before it starts brokering, sphere-appd asks the firmware's link-control
#      endpoint to echo the next COUNT*SIZE bytes unframed, then times COUNT round trips of SIZE
#      raw bytes itself (no framing, no broker, no app socket): the link's own cost. Twice:
#      a byte echo (each byte sent back as it arrives, so both directions overlap) and a
#      message echo (each SIZE bytes sent back once all arrived, as any app that answers a
#      message must: no protocol can overlap a reply with its request);
#   2. framed echo: the app `hello-sphere intercore-bench` (sandboxed, Application_Connect) times
#      COUNT round trips of SIZE-byte messages: app socket -> broker -> frame -> M4 echo app ->
#      frame -> broker -> app socket;
#   3. throughput: the same app floods 1 KiB messages for S seconds under credit backpressure
#      and counts echoed bytes.
# Prints the figures and the ratios of the medians (goal: framed <= 1.2 x raw).
set -euo pipefail
cd "$(dirname "$0")/.."
count=200
size=64
seconds=5
keep=0
while (($#)); do
  case "$1" in
    --count) count=${2:?}; shift ;;
    --size) size=${2:?}; shift ;;
    --seconds) seconds=${2:?}; shift ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-intercore: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for v in "$count" "$size" "$seconds"; do [[ $v =~ ^[1-9][0-9]*$ ]] || { echo "bench-intercore: numbers must be positive integers" >&2; exit 2; }; done
((size <= 1024)) || { echo "bench-intercore: --size at most 1024" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "bench-intercore: run as root (loop-mounts the data disk)" >&2; exit 2; }

cache=${OPENSPHERE_CACHE:-$HOME/.cache/opensphere}
work=$(mktemp -d /tmp/bench-intercore.XXXXXX)
qemu_pid=
cleanup() {
  umount "$work/mnt" 2>/dev/null || true
  [[ -n $qemu_pid ]] && kill "$qemu_pid" 2>/dev/null
  wait 2>/dev/null
  if ((keep)); then echo "bench-intercore: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
log() { echo "bench-intercore: $*" >&2; }

ECHO=6a1f0e2c-3b4d-4e5f-8a9b-0c1d2e3f4a51
APP=7f0c2e5a-61d4-4b8e-9a3f-2c51d7e80b14

log "building (cached after the first run)"
image=$(scripts/build-image.sh | tail -n 1)
cargo build -q --locked -p sphere-cli -p sphere-appd
sphere=$PWD/target/debug/sphere
bin=$(scripts/cross-build.sh --release -p hello-sphere --print-dir | tail -n 1)
elf=$(scripts/build-m4.sh --print-stripped | tail -n 1)
key=$cache/keys/dev-signing.key.pem
pub=$cache/keys/dev-signing.pub.pem

# Flash: what the firmware places in ROM (vector table, code, read-only data, .data's initial
# values); RAM: .data + .bss + .uninit, plus the stack (the rest of memory.x's RAM region).
read -r flash ram < <(size -A "$elf" | awk '
  $1 ~ /^\.(vector_table|text|rodata)$/ {f += $2}
  $1 == ".data" {f += $2; r += $2}
  $1 ~ /^\.(bss|uninit)$/ {r += $2}
  END {print f, r}')
ram_region=$(awk -F'LENGTH *= *' '/RAM/ && /LENGTH/ {print $2}' daemons/sphere-rt-m4/memory.x | tr -d ' K' | head -n1)

mkdir -p "$work/rt-echo/bin" "$work/bench/bin" "$work/mnt"
cp daemons/sphere-rt-m4/apps/echo/app_manifest.json "$work/rt-echo/"
cp "$elf" "$work/rt-echo/bin/app"
"$sphere" app package "$work/rt-echo" -o "$work/rt-echo.sphpkg" --key "$key" >/dev/null
install -m 0755 "$bin/hello-sphere" "$work/bench/bin/app"
cat >"$work/bench/app_manifest.json" <<JSON
{"SchemaVersion": 1, "Name": "hello-bench", "ComponentId": "$APP", "EntryPoint": "/bin/app",
 "CmdArgs": ["intercore-bench", "$count", "$size", "$seconds"],
 "Capabilities": {"AllowedApplicationConnections": ["$ECHO"]}, "ApplicationType": "Default"}
JSON
"$sphere" app package "$work/bench" -o "$work/bench.sphpkg" --key "$key" >/dev/null

truncate -s 64M "$work/data.ext4"
mkfs.ext4 -q -F -L sphere-data "$work/data.ext4"
mount -o loop "$work/data.ext4" "$work/mnt"
mkdir -p "$work/mnt/sphere"
touch "$work/mnt/sphere/development-mode"
echo "$count $size" >"$work/mnt/sphere/intercore-raw-bench"
for pkg in rt-echo bench; do
  target/debug/sphere-appd install --store "$work/mnt/sphere/apps" --dev-trust "$pub" --development-mode \
    "$work/$pkg.sphpkg" >/dev/null
done
umount "$work/mnt"
"$sphere" app verify "$work/rt-echo.sphpkg" --trust "$pub" >/dev/null
tar -xOf "$work/rt-echo.sphpkg" bin/app >"$work/m4.elf"

log "booting the A7 and the M4 (one run: raw echo, then framed echo, then the flood)"
console=$work/console.log
scripts/run-qemu.sh --image-dir "$image" --data "$work/data.ext4" --timeout 400 --m4-firmware "$work/m4.elf" \
  --m4-log "$work/m4.log" --log "$console" --quiet 2>"$work/run-qemu.err" &
qemu_pid=$!
for _ in $(seq 600); do
  grep -q '\[hello-bench\] intercore-test: done' "$console" 2>/dev/null && break
  kill -0 "$qemu_pid" 2>/dev/null || break
  sleep 0.5
done
grep -q '\[hello-bench\] intercore-test: done' "$console" || { log "the benchmark app did not finish; see $console (--keep)"; keep=1; exit 1; }
pkill -TERM -f "qemu-console.py --log $console" || true
wait "$qemu_pid" 2>/dev/null || true
qemu_pid=

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2" | head -n1; }
raw=$(grep -m1 'sphere-appd: intercore raw-echo ok=' "$console" || true)
rawmsg=$(grep -m1 'sphere-appd: intercore raw-message-echo ok=' "$console" || true)
framed=$(grep -m1 '\[hello-bench\] intercore-test: framed-echo ok=' "$console" || true)
flood=$(grep -m1 '\[hello-bench\] intercore-test: flood ' "$console" || true)
[[ -n $raw && -n $rawmsg && -n $framed && -n $flood ]] || { log "missing figures; see $console (--keep)"; keep=1; exit 1; }
raw_median=$(field median_us "$raw")
rawmsg_median=$(field median_us "$rawmsg")
framed_median=$(field median_us "$framed")
row() { printf '  %-44s median %6s us   p99 %6s us   (%s)\n' "$1" "$(field median_us "$2")" "$(field p99_us "$2")" \
  "$(sed 's/.*ok=\([0-9/]*\).*/\1/' <<<"$2")"; }
ratio() { awk -v f="$framed_median" -v r="$1" 'BEGIN {x = f / r; printf "%.2fx (%s the <= 1.2x goal)", x, (x <= 1.2) ? "meets" : "misses"}'; }
echo "inter-core link, A7 guest <-> M4 (QEMU TCG, host socket), $count round trips of $size bytes:"
row "raw byte echo (each byte as it arrives)" "$raw"
row "raw message echo (whole message, unframed)" "$rawmsg"
row "framed echo (app -> broker -> M4 app)" "$framed"
echo "  framed / raw byte echo median:    $(ratio "$raw_median")"
echo "  framed / raw message echo median: $(ratio "$rawmsg_median")"
echo "  throughput (1 KiB messages, ${seconds} s flood): $(field throughput_Bps "$flood") B/s echoed" \
  "($(field sent "$flood") sent, $(field echoed "$flood") echoed)"
echo "M4 firmware (release): flash $flash B of 98304 (96 KiB budget = half of 192 KiB TCM), RAM ${ram} B static + stack in a ${ram_region:-32} KiB region (half of 64 KiB)"
