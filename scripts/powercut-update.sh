#!/usr/bin/env bash
# The long power-cut run of the A/B update path: boot the QEMU image from an A/B disk and cut
# the power (SIGKILL of QEMU) at N random points of installs from local media (sphere-slots),
# and at M random points of sphere-updated's own HTTPS download and install; after each cut the
# device must boot a good slot and retry (downloads resume with Range requests), and at the end
# an update must complete and commit. (The test suite update-qemu does the same with 30 + 30.)
#
# Usage: scripts/powercut-update.sh [--cuts N] [--download-cuts M] [--seed S] [--no-build]
#                                   [--image-dir DIR] [--keep]
#   --cuts N           power cuts during sphere-slots installs (default 100; 0: none)
#   --download-cuts M  power cuts during sphere-updated's download and install (default 100; 0: none)
# Prints each boot, each cut (when, which phase, bytes written so far, where the download resumed)
# and the counts; the last line is "N passed, M failed".
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cuts=100
download_cuts=100
args=()
while (($#)); do
  case "$1" in
    --cuts) cuts=${2:?}; shift ;;
    --download-cuts) download_cuts=${2:?}; shift ;;
    --seed|--image-dir) args+=("$1" "${2:?}"); shift ;;
    --no-build|--keep) args+=("$1") ;;
    -h|--help) sed -n '2,/^set -euo pipefail/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "powercut-update: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
exec "$repo_root/tests/update-qemu-test.sh" --scenarios "" --cuts "$cuts" --download-cuts "$download_cuts" "${args[@]}"
