#!/usr/bin/env bash
# A/B update suite (`scripts/test.sh --only update-qemu`): the boot-state record on the host
# (unit tests incl. libubootenv's fw_printenv/fw_setenv on our format, SIGKILL during record
# writes), then the QEMU image on an A/B disk: update N -> N+1 boots N+1 and commits; an image
# that fails its health check rolls back by itself; a hung trial boot is rebooted by the
# watchdog and rolls back; power cuts (SIGKILL of QEMU) at random points of installs, each
# followed by a boot on a good slot that retries, and finally a completed update. Then the
# same through sphere-updated itself (tests/update-qemu-download.py): N -> N+1 from a TUF
# repository served over HTTPS by the host, and power cuts at random points of its download
# and install, downloads resuming with HTTP Range requests.
#
# Usage: tests/update-qemu-test.sh [--no-build] [--image-dir DIR] [--cuts N] [--seed S]
#                                  [--download-cuts N] [--scenarios LIST] [--keep]
#   --no-build     use the image already in --image-dir (default: build it with build-image.sh)
#   --cuts N       power cuts during sphere-slots installs from local media (default 30)
#   --download-cuts N  power cuts during sphere-updated's download and install (default 30;
#                  0 skips the sphere-updated part)
#   --scenarios    comma list of update, rollback, hung (default all three)
#   --keep         keep the work directory (console logs of every boot)
# Installs go through the image's update-test service (sphere-slots install; see
# tests/update-qemu.py) and its updated-test service (sphere-updated install, cross-built with
# scripts/cross-build.sh and added to the update images). The last line is "N passed, M failed".
set -uo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${OPENSPHERE_CACHE:-$HOME/.cache/opensphere}
image_dir=
build=1
cuts=30
download_cuts=30
seed=$(date +%s)
scenarios=update,rollback,hung
keep=0
while (($#)); do
  case "$1" in
    --no-build) build=0 ;;
    --image-dir) image_dir=${2:?}; shift ;;
    --cuts) cuts=${2:?}; shift ;;
    --download-cuts) download_cuts=${2:?}; shift ;;
    --seed) seed=${2:?}; shift ;;
    --scenarios) scenarios=${2?}; shift ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,/^set -uo pipefail/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "update-qemu-test: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done

"$repo_root/scripts/install-host-deps.sh" image ab >&2 || exit 2
passed=0
failed=0
tally() { # the "N passed, M failed" line of a sub-test
  local line
  line=$(tail -n1 "$1")
  if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    passed=$((passed + BASH_REMATCH[1])); failed=$((failed + BASH_REMATCH[2]))
  else
    echo "FAIL - $2 did not finish: $line"; failed=$((failed + 1))
  fi
}

if ((build)); then
  image_dir=$("$repo_root/scripts/build-image.sh" | tail -n1) || { echo "FAIL - build-image"; echo "0 passed, 1 failed"; exit 1; }
fi
image_dir=${image_dir:-$cache/image}
work=$(mktemp -d "${TMPDIR:-/tmp}/update-qemu.XXXXXX")
((keep)) && echo "# work directory: $work" || trap 'rm -rf "$work"' EXIT

# --- host: the record format and writer -----------------------------------------------------
(cd "$repo_root" && cargo build -q -p sphere-slots) || exit 2
tool=${CARGO_TARGET_DIR:-$repo_root/target}/debug/sphere-slots
if (cd "$repo_root" && SPHERE_SLOTS_REQUIRE_LIBUBOOTENV=1 cargo test -q -p sphere-slots >"$work/unit.txt" 2>&1); then
  echo "ok   - sphere-slots unit tests and libubootenv interoperability ($(awk '/^test result: ok/ {n += $4} END {print n + 0}' "$work/unit.txt") tests)"
  passed=$((passed + 1))
else
  echo "FAIL - sphere-slots unit tests"; tail -n 30 "$work/unit.txt"; failed=$((failed + 1))
fi
(cd "$work" && python3 "$repo_root/tests/record-powercut.py" --tool "$tool" --kills 200 --seed "$seed") | tee "$work/record.txt"
tally "$work/record.txt" record-powercut

# --- QEMU -----------------------------------------------------------------------------------
mkdir -p "$work/boot"
for file in zImage initramfs.cpio.zst cmdline.txt; do cp "$image_dir/$file" "$work/boot/"; done
python3 "$repo_root/tests/update-qemu.py" --image-dir "$image_dir" --boot-dir "$work/boot" --tool "$tool" \
  --work "$work/qemu" --cuts "$cuts" --seed "$seed" --scenarios "$scenarios" | tee "$work/qemu.txt"
tally "$work/qemu.txt" update-qemu.py

# --- QEMU: sphere-updated's own download and install ------------------------------------------
if ((download_cuts > 0)); then
  if (cd "$repo_root" && cargo build -q -p sphere-cli) && bindir=$("$repo_root/scripts/cross-build.sh" --release \
      --print-dir -p sphere-updated 2>"$work/cross.txt" | tail -n1) && [[ -x $bindir/sphere-updated ]]; then
    python3 "$repo_root/tests/update-qemu-download.py" --image-dir "$image_dir" --boot-dir "$work/boot" \
      --tool "$tool" --sphere "${CARGO_TARGET_DIR:-$repo_root/target}/debug/sphere" \
      --updated-bin "$bindir/sphere-updated" --work "$work/download" --cuts "$download_cuts" --seed "$seed" \
      | tee "$work/download.txt"
    tally "$work/download.txt" update-qemu-download.py
  else
    echo "FAIL - building sphere (host) or sphere-updated (armv7)"; tail -n 20 "$work/cross.txt"; failed=$((failed + 1))
  fi
fi

echo "$passed passed, $failed failed"
((failed == 0))
