#!/usr/bin/env bash
# Install the Debian 12 host packages OpenSphere's build, test and image steps need.
# Idempotent: packages already present are skipped, so re-running costs one dpkg query.
#
# Usage: scripts/install-host-deps.sh [GROUP...]
#   base   compilers and tools every step needs (always installed)
#   cross  Debian's rustc 1.85 (our MSRV) + armhf/thumbv7em linkers for device cross builds
#   cloud  mosquitto and PostgreSQL for sphere-cloud's tests and benchmark
#   image  kernel source, kernel build tools, QEMU and filesystem tools for the A7 test image
#   ab     the A/B update disk and boot-state record tools (sfdisk, libubootenv)
#   attest the device attestation tests: swtpm (a real TPM 2.0 for the host tests and QEMU) and mosquitto
#   update the update attack/interop tests (openssl test CA, python3-cryptography, venv for python-tuf)
#          and scripts/bench-update.sh (RAUC to compare against)
#   update-bench  nginx for scripts/bench-update.sh (the repository served as a real server would)
set -euo pipefail

RUST_MSRV_DEB=1.85.0+dfsg3-1~deb12u3
declare -A GROUP_PACKAGES=(
  [base]="build-essential pkg-config git ca-certificates curl openssl python3 python3-venv procps"
  # rustc-web is pinned to 1.85, our MSRV: bookworm-security also carries a newer one, which would
  # make the cross build prove nothing about 1.85.
  [cross]="rustc-web=$RUST_MSRV_DEB cargo-web=$RUST_MSRV_DEB rust-web-src=$RUST_MSRV_DEB libstd-rust-web-dev=$RUST_MSRV_DEB gcc-arm-linux-gnueabihf libc6-dev-armhf-cross lld-19"
  [image]="linux-source-6.12 bc flex bison libssl-dev libelf-dev gcc-arm-linux-gnueabihf gcc-12-plugin-dev-arm-linux-gnueabihf cpio xz-utils zstd kmod qemu-system-arm e2fsprogs squashfs-tools erofs-utils"
  # The app sandbox's escape suite and benchmark: bubblewrap to compare against, mke2fs for storage images.
  [sandbox]="bubblewrap e2fsprogs"
  # sphere-cloud's tests: a real MQTT broker and a real PostgreSQL server (tests/cloud-test.sh).
  [cloud]="mosquitto mosquitto-clients postgresql"
  # sphere-netd's firewall test and benchmark: namespaces, veths and nft to list the table.
  [netd]="nftables iproute2 util-linux python3"
  # A/B slots: sfdisk for the GPT A/B disk, libubootenv's fw_printenv/fw_setenv to check the record format;
  # socat relays the QEMU guest's HTTPS connections to the host's update server (power cuts during downloads).
  [ab]="fdisk libubootenv-tool e2fsprogs erofs-utils socat"
  # sphere-attestd: swtpm (+ swtpm_ioctl) as the TPM in host tests and under QEMU, mosquitto for the
  # mutual-TLS link and the MQTT benchmark (mosquitto_pub/mosquitto_sub as the comparison).
  [attest]="swtpm swtpm-tools mosquitto mosquitto-clients socat e2fsprogs erofs-utils"
  # sphere-updated: a test CA (openssl), a key-forging attacker (python3-cryptography), python-tuf in a
  # venv for the interoperability test, RAUC (+ dbus-run-session) for the install benchmark.
  [update]="openssl python3 python3-venv python3-cryptography rauc dbus"
  # scripts/bench-update.sh: nginx serves the repository over TLS as a real update server would.
  [update-bench]="nginx-light"
)

groups=(base "$@")
wanted=()
for group in "${groups[@]}"; do
  [[ -n "${GROUP_PACKAGES[$group]+set}" ]] || { echo "install-host-deps: unknown group '$group'" >&2; exit 2; }
  read -r -a packages <<<"${GROUP_PACKAGES[$group]}"
  wanted+=("${packages[@]}")
done

# An entry is NAME or NAME=VERSION (then exactly that version must be installed).
is_installed() {
  local name=${1%%=*} version=
  [[ $1 == *=* ]] && version=${1#*=}
  local status
  status=$(dpkg-query -W -f='${Status}|${Version}' "$name" 2>/dev/null) || return 1
  [[ $status == "install ok installed|"* ]] || return 1
  [[ -z $version || ${status#*|} == "$version" ]]
}

missing=()
for package in "${wanted[@]}"; do
  is_installed "$package" || missing+=("$package")
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
apt-get update -qq || echo "install-host-deps: warning: apt-get update reported errors; trying with the package lists it did get" >&2
apt-get install -y -qq --no-install-recommends --allow-downgrades "${missing[@]}" >/dev/null
echo "install-host-deps: done"
