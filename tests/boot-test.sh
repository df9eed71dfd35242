#!/usr/bin/env bash
# Boot test of the QEMU Cortex-A7 image: build it (fresh data disk), boot it twice with the
# self-test enabled, and check what sphere-init reports on the console (the device has no shell).
#
# Usage: tests/boot-test.sh [--no-build] [--image-dir DIR] [-m MIB] [--timeout SEC]
#   --no-build       boot the image already in --image-dir (its data disk is recreated anyway)
#
# Boot 1 is stopped from the host (poweroff over the virtio-serial control port once init says
# boot-complete); boot 2 powers itself off (sphere.after_boot=poweroff), so QEMU must exit 0 on
# its own. Checked: the kernel is ours (LOCALVERSION marker, fragment symbols in /proc/config.gz),
# Landlock ABI >= 6, every enabled service became ready (diag-flaky after a restart), the root is
# read-only, the network came up, the data partition keeps a counter across the reboot, daemons'
# RSS <= 6 MiB, kernel+initramfs+rootfs <= 16 MiB, and both shutdowns are clean.
# The last line is "N passed, M failed"; the exit status is non-zero if anything failed.
set -uo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${OPENSPHERE_CACHE:-$HOME/.cache/opensphere}
image_dir=
build=1
memory=256
timeout=240
while (($#)); do
  case "$1" in
    --no-build) build=0 ;;
    --image-dir) image_dir=${2:?}; shift ;;
    -m) memory=${2:?}; shift ;;
    --timeout) timeout=${2:?}; shift ;;
    -h|--help) sed -n '2,/^set -uo pipefail/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "boot-test: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done

passed=0
failed=0
pass() { echo "ok   - $1"; passed=$((passed + 1)); }
fail() { echo "FAIL - $1${2:+: $2}"; failed=$((failed + 1)); }
finish() {
  echo "$passed passed, $failed failed"
  ((failed == 0))
  exit $?
}

work=$(mktemp -d "${TMPDIR:-/tmp}/boot-test.XXXXXX")
trap 'rm -rf "$work"' EXIT

# fact KEY LOG: the value of the first `sphere-init: fact KEY=...` line.
fact() { sed -n "s/^\[[ 0-9.]*\] sphere-init: fact $1=//p" "$2" | head -n1; }
has() { grep -q -- "$1" "$2"; }

# --- Build -----------------------------------------------------------------------------------------
if ((build)); then
  if image_dir=$("$repo_root/scripts/build-image.sh" --fresh-data | tail -n1) && [[ -d $image_dir ]]; then
    pass "image builds"
  else
    fail "image builds"
    finish
  fi
else
  image_dir=${image_dir:-$cache/image}
  # A fresh data disk so the boot counter starts at 1.
  truncate -s 64M "$image_dir/.tmp.data.$$" && mkfs.ext4 -q -F -L sphere-data "$image_dir/.tmp.data.$$" &&
    mv -f "$image_dir/.tmp.data.$$" "$image_dir/data.ext4"
fi

# --- Expectations from kernel-config/ and the image --------------------------------------------
localversion=$(sed -n 's/^CONFIG_LOCALVERSION="\(.*\)"$/\1/p' "$repo_root"/kernel-config/*.cfg | tail -n1)
[[ -n $localversion ]] || localversion="-opensphere"
# One `=y` symbol from each fragment (plus Landlock), looked up by init in /proc/config.gz.
mapfile -t symbols < <(
  {
    echo CONFIG_SECURITY_LANDLOCK
    for fragment in "$repo_root"/kernel-config/*.cfg; do
      sed -n 's/^\(CONFIG_[A-Z0-9_]*\)=y$/\1/p' "$fragment" | head -n1
    done
  } | awk '!seen[$0]++' | head -n 12
)
symbol_list=$(IFS=,; echo "${symbols[*]}")
mapfile -t services < <(python3 - "$repo_root/images/qemu-a7/init.json" <<'PY'
import json, sys
for s in json.load(open(sys.argv[1])).get("services", []):
    if s.get("only_if_cmdline") in (None, "sphere.selftest"):
        print(s["name"])
PY
)

run() { # run LOG EXTRA-ARGS...: boot once
  local log=$1
  shift
  "$repo_root/scripts/run-qemu.sh" --image-dir "$image_dir" -m "$memory" --timeout "$timeout" --quiet \
    --selftest --append "sphere.selftest.config=$symbol_list" --log "$log" "$@" >"$log.out" 2>&1
}

# --- Boot 1: host-requested poweroff -----------------------------------------------------------
log1="$work/boot1.log"
echo "# boot 1 (poweroff requested over the control port after boot-complete)"
status=0
run "$log1" --command poweroff || status=$?
if ((status == 0)); then pass "boot 1: QEMU exited 0"; else fail "boot 1: QEMU exited 0" "status $status"; fi
sed -n 's/^run-qemu:   /  /p' "$log1.out"

release=$(fact kernel-release "$log1")
if [[ $release == *"$localversion"* ]]; then pass "kernel release '$release' has marker $localversion"
else fail "kernel release has marker $localversion" "got '$release'"; fi
for symbol in "${symbols[@]}"; do
  value=$(fact "config.$symbol" "$log1")
  if [[ $value == y ]]; then pass "/proc/config.gz: $symbol=y"; else fail "/proc/config.gz: $symbol=y" "got '$value'"; fi
done
abi=$(fact landlock-abi "$log1")
if [[ $abi =~ ^[0-9]+$ ]] && ((abi >= 6)); then pass "Landlock ABI $abi >= 6"; else fail "Landlock ABI >= 6" "got '$abi'"; fi
for svc in "${services[@]}"; do
  if grep -q "sphere-init: milestone daemon-ready name=$svc " "$log1"; then pass "service $svc ready"
  else fail "service $svc ready"; fi
done
if has "restarting diag-flaky in" "$log1" && has "milestone daemon-ready name=diag-flaky .* start=2 " "$log1"; then
  pass "diag-flaky failed once, was restarted with backoff and became ready"
else
  fail "diag-flaky restart with backoff"
fi
if grep -q "sphere-init: fact mount=[^ ]* / \(erofs\|squashfs\) ro[, ]" "$log1"; then pass "root filesystem is read-only erofs/squashfs"
else fail "root filesystem is read-only erofs/squashfs" "$(grep -m1 'fact mount=[^ ]* / ' "$log1")"; fi
if has "fact mount=[^ ]* /data ext4 rw" "$log1"; then pass "data partition mounted rw on /data"; else fail "data partition mounted rw on /data"; fi
if has "milestone network-up interfaces=1 " "$log1"; then pass "network: eth0 configured"; else fail "network: eth0 configured"; fi
count1=$(fact boot-count "$log1")
if [[ $count1 == 1 ]]; then pass "boot 1: data boot counter is 1"; else fail "boot 1: data boot counter is 1" "got '$count1'"; fi
rss=$(fact rss-total-kib "$log1")
if [[ $rss =~ ^[0-9]+$ ]] && ((rss <= 6144)); then pass "all user-space RSS ${rss} KiB <= 6 MiB"
else fail "all user-space RSS <= 6 MiB" "got '$rss' KiB"; fi
if has "milestone shutdown-start action=poweroff by=virtio-control-port" "$log1" &&
  has "milestone shutdown-complete action=poweroff" "$log1" && has "unmounted /data" "$log1"; then
  pass "boot 1: clean poweroff (services stopped, /data unmounted)"
else
  fail "boot 1: clean poweroff"
fi

# --- Boot 2: guest powers itself off; the counter must have survived -------------------------------
log2="$work/boot2.log"
echo "# boot 2 (sphere.after_boot=poweroff: the guest powers off by itself)"
status=0
run "$log2" --append sphere.after_boot=poweroff || status=$?
if ((status == 0)); then pass "boot 2: QEMU exited 0 by itself"; else fail "boot 2: QEMU exited 0 by itself" "status $status"; fi
sed -n 's/^run-qemu:   /  /p' "$log2.out"
count2=$(fact boot-count "$log2")
if [[ $count2 == 2 ]]; then pass "boot 2: data boot counter is 2 (persisted across reboot)"
else fail "boot 2: data boot counter is 2" "got '$count2'"; fi
if has "milestone shutdown-complete action=poweroff" "$log2"; then pass "boot 2: clean poweroff"; else fail "boot 2: clean poweroff"; fi

# --- Size budget ---------------------------------------------------------------------------------
total=0
for file in zImage initramfs.cpio.zst; do total=$((total + $(stat -c %s "$image_dir/$file"))); done
rootfs=$(ls "$image_dir"/rootfs.erofs "$image_dir"/rootfs.squashfs 2>/dev/null | head -n1)
total=$((total + $(stat -c %s "$rootfs")))
if ((total <= 16 * 1024 * 1024)); then pass "kernel+initramfs+rootfs $total bytes <= 16 MiB"
else fail "kernel+initramfs+rootfs <= 16 MiB" "$total bytes"; fi

if ((failed)); then
  for log in "$log1" "$log2"; do
    [[ -f $log ]] && { echo "# last console lines of $(basename "$log"):"; tail -n 25 "$log"; }
  done
fi
finish
