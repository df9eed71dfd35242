#!/usr/bin/env bash
# Install the Debian 12 host packages OpenSphere's build, test and image steps need.
# Idempotent: packages already present are skipped, so re-running costs one dpkg query.
#
# Usage: scripts/install-host-deps.sh [GROUP...]
#   base   compilers and tools every step needs (always installed)
#   cross  Debian's rustc 1.85 (our MSRV) + armhf/thumbv7em linkers for device cross builds
#   image  kernel source, kernel build tools, QEMU and filesystem tools for the A7 test image
set -euo pipefail

declare -A GROUP_PACKAGES=(
  [base]="build-essential pkg-config git ca-certificates curl python3 python3-venv"
  [cross]="rustc-web cargo-web rust-web-src libstd-rust-web-dev gcc-arm-linux-gnueabihf libc6-dev-armhf-cross lld-19"
  [image]="linux-source-6.12 bc flex bison libssl-dev libelf-dev gcc-arm-linux-gnueabihf gcc-12-plugin-dev-arm-linux-gnueabihf cpio xz-utils zstd kmod qemu-system-arm e2fsprogs squashfs-tools erofs-utils"
)

groups=(base "$@")
wanted=()
for group in "${groups[@]}"; do
  [[ -n "${GROUP_PACKAGES[$group]+set}" ]] || { echo "install-host-deps: unknown group '$group'" >&2; exit 2; }
  read -r -a packages <<<"${GROUP_PACKAGES[$group]}"
  wanted+=("${packages[@]}")
done

missing=()
for package in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done

if ((${#missing[@]} == 0)); then
  echo "install-host-deps: all host packages present (${groups[*]})"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "install-host-deps: missing packages: ${missing[*]}; run as root or install them with apt-get" >&2
  exit 1
fi

echo "install-host-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-host-deps: done"
