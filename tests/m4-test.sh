#!/usr/bin/env bash
# The Cortex-M4 firmware under QEMU (mps2-an386), talking the inter-core protocol on UART1.
#
# Builds daemons/sphere-rt-m4 (scripts/build-m4.sh), boots it with UART0 (the log) in a file and
# UART1 (the inter-core link) on a unix socket, and plays the A7 side with tests/m4-host.py
# (scripts/intercore.py): echo round trips through garbage and a corrupted frame, a stranger
# refused, credit-based backpressure both ways, telemetry, and the sampler's deadline report.
# Two boots:
#   1. real time (QEMU's default clock, as a developer runs it): the protocol checks, the log
#      lines, and that the idle firmware sleeps on WFI (QEMU uses a small part of a host core);
#   2. deterministic time (-icount shift=3,sleep=off: virtual time follows instructions, so the
#      host's load cannot make the emulated core look late): 0 deadline misses while idle.
# Last line: "m4: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0 failed=0
ok() { echo "ok - $*"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $*"; failed=$((failed + 1)); }
finish() {
  echo "m4: $passed passed, $failed failed"
  ((failed == 0))
  exit
}

command -v qemu-system-arm >/dev/null || scripts/install-host-deps.sh image >&2
if elf=$(scripts/build-m4.sh --print-elf --size | tail -1) && [[ -f $elf ]]; then
  ok "firmware builds with rustc 1.85 for thumbv7em-none-eabihf within 96 KiB flash / 32 KiB RAM"
else
  not_ok "firmware builds"
  finish
fi

# The apps' manifests are valid Azure Sphere real-time manifests, and name the ids the firmware uses.
for manifest in daemons/sphere-rt-m4/apps/*/app_manifest.json; do
  id=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["ComponentId"] if m["ApplicationType"] == "RealTimeCapable" else "")' "$manifest")
  if cargo run -q -p sphere-cli -- manifest check "$manifest" >/dev/null &&
    [[ -n $id ]] && grep -q "\"$id\"" daemons/sphere-rt-m4/src/main.rs; then
    ok "$manifest: valid, RealTimeCapable, id $id in the firmware"
  else
    not_ok "$manifest: valid and its id in the firmware"
  fi
done

work=$(mktemp -d)
qemu_pid=
cleanup() {
  [[ -n $qemu_pid ]] && kill "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

boot() { # boot LOG [extra qemu args...]
  local log=$1
  shift
  rm -f "$work/ic.sock"
  qemu-system-arm -M mps2-an386 -cpu cortex-m4 -nographic -monitor none \
    -semihosting-config enable=on,target=native "$@" -kernel "$elf" \
    -chardev socket,id=ic,path="$work/ic.sock",server=on,wait=off \
    -serial file:"$log" -serial chardev:ic </dev/null >"$work/qemu.out" 2>&1 &
  qemu_pid=$!
  for _ in $(seq 100); do [[ -S $work/ic.sock ]] && return 0; sleep 0.05; done
  return 1
}

stop() {
  kill "$qemu_pid" 2>/dev/null
  wait "$qemu_pid" 2>/dev/null
  qemu_pid=
}

# Each m4-host.py check prints "ok - ..." or "not ok - ..."; count them into ours.
host() { # host MODE
  local out
  out=$(PYTHONPATH=scripts timeout 90 python3 tests/m4-host.py "$work/ic.sock" "$1" 2>&1)
  echo "$out"
  passed=$((passed + $(grep -c '^ok - ' <<<"$out")))
  failed=$((failed + $(grep -c '^not ok - ' <<<"$out")))
  grep -q '^Traceback' <<<"$out" && not_ok "m4-host.py $1 ran to the end"
}

# --- 1. real time (the way a developer runs it): protocol, log, WFI idle ----------------------
boot "$work/uart0.log" || { not_ok "QEMU starts"; finish; }
host protocol
sleep 1
ticks() { awk '{print $14 + $15}' "/proc/$qemu_pid/stat"; }
t0=$(ticks)
sleep 3
t1=$(ticks)
pct=$(((t1 - t0) * 100 / (3 * $(getconf CLK_TCK))))
stop
echo "  UART0:"
sed 's/^/    /' "$work/uart0.log" | grep -v 'link: delivered' | head -12
echo "    ($(grep -c 'link: delivered' "$work/uart0.log") 'link: delivered=...' lines)"
grep -q "m4: OpenSphere real-time runtime up" "$work/uart0.log" && ok "boot banner on UART0" || not_ok "boot banner on UART0"
grep -q "link: delivered=" "$work/uart0.log" && ok "link activity logged on UART0" || not_ok "link activity logged on UART0"
grep -q "sampler samples=" "$work/uart0.log" && ok "sampler reports every second on UART0" || not_ok "sampler reports on UART0"
if ((pct < 40)); then ok "idle firmware sleeps on WFI: QEMU used ${pct}% of a host core"; else not_ok "idle firmware sleeps on WFI: QEMU used ${pct}% of a host core"; fi

# --- 2. deterministic time: the deadline ------------------------------------------------------
# -icount ties virtual time to instructions (sleep=off skips idle time), so a busy host cannot
# make the emulated core look late; the real-time run above shows what a loaded host does.
boot "$work/uart0-icount.log" -icount shift=3,align=off,sleep=off || { not_ok "QEMU starts (icount)"; finish; }
host deadline
stop
echo "  UART0 (icount), last line:"
tail -1 "$work/uart0-icount.log" | sed 's/^/    /'
finish
