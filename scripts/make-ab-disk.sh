#!/usr/bin/env bash
# Assemble an A/B disk image for the QEMU board: the partition layout of meta-sphere's
# files/wic/sphere-ab.wks.in (same names, order and sizes), so the Yocto image and this one agree.
#
# Usage: scripts/make-ab-disk.sh --out FILE --rootfs-a IMG [options]
#   --out FILE         the disk image to write (replaced atomically)
#   --rootfs-a IMG     root filesystem image for slot A (e.g. rootfs.erofs)
#   --version-a V      its version in the boot-state record (default 1)
#   --rootfs-b IMG     root filesystem image for slot B (default: slot B left empty)
#   --version-b V      its version (default: --version-a)
#   --slot-size MIB    size of each root slot (default 64, as in the wic kickstart)
#   --data-size MIB    size of the data partition (ext4, default 32)
#   --bootlimit N      boots a trial slot gets before falling back (default 3)
#   -h, --help
#
# GPT partitions, 1 MiB aligned, found by name at boot:
#   1 boot      16 MiB  left empty here: QEMU loads the kernel itself (on boards: kernel, U-Boot files)
#   2 rootfs_a  SLOT    slot A (read-only root, EROFS)
#   3 rootfs_b  SLOT    slot B
#   4 data      DATA    ext4, label sphere-data: the only writable partition
#   5 bootenv   1 MiB   boot-state record: two U-Boot environment copies (0x0 and 0x10000, 16 KiB)
# The factory record says: slot A, committed (written with the host build of sphere-slots).
# The last stdout line is the byte offset of the bootenv partition (for sphere-slots --bootenv-offset).
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
script_path="$repo_root/scripts/$(basename "${BASH_SOURCE[0]}")"
die() { echo "make-ab-disk: ERROR: $*" >&2; exit 2; }

out= rootfs_a= rootfs_b= version_a=1 version_b= slot_size=64 data_size=32 bootlimit=3
while (($#)); do
  case "$1" in
    --out) out=${2:?}; shift ;;
    --rootfs-a) rootfs_a=${2:?}; shift ;;
    --rootfs-b) rootfs_b=${2:?}; shift ;;
    --version-a) version_a=${2:?}; shift ;;
    --version-b) version_b=${2:?}; shift ;;
    --slot-size) slot_size=${2:?}; shift ;;
    --data-size) data_size=${2:?}; shift ;;
    --bootlimit) bootlimit=${2:?}; shift ;;
    -h|--help) sed -n '2,/^set -euo pipefail/{/^set -euo/d;s/^# \{0,1\}//;p}' "$script_path"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
[[ -n $out && -f $rootfs_a ]] || die "--out and an existing --rootfs-a are required"
[[ -z $rootfs_b || -f $rootfs_b ]] || die "--rootfs-b $rootfs_b missing"
[[ $slot_size =~ ^[1-9][0-9]*$ && $data_size =~ ^[1-9][0-9]*$ ]] || die "sizes are MiB"
version_b=${version_b:-$version_a}
for img in "$rootfs_a" ${rootfs_b:+"$rootfs_b"}; do
  (($(stat -c %s "$img") <= slot_size * 1048576)) || die "$img does not fit a ${slot_size} MiB slot"
done
command -v sfdisk >/dev/null || PATH=$PATH:/usr/sbin:/sbin
command -v sfdisk >/dev/null || die "sfdisk missing (scripts/install-host-deps.sh ab)"

# The host build of the record tool.
(cd "$repo_root" && cargo build -q -p sphere-slots >&2)
tool=${CARGO_TARGET_DIR:-$repo_root/target}/debug/sphere-slots

mib=1048576
boot_start=1
a_start=$((boot_start + 16))
b_start=$((a_start + slot_size))
data_start=$((b_start + slot_size))
env_start=$((data_start + data_size))
total=$((env_start + 1 + 1))   # + 1 MiB for the backup GPT
tmp="$out.tmp.$$"
trap 'rm -f "$tmp" "$tmp.data"' EXIT
rm -f "$tmp"
truncate -s "$((total * mib))" "$tmp"
sfdisk --quiet --label gpt "$tmp" >&2 <<SFDISK
start=$((boot_start * 2048)), size=$((16 * 2048)), name=boot
start=$((a_start * 2048)), size=$((slot_size * 2048)), name=rootfs_a
start=$((b_start * 2048)), size=$((slot_size * 2048)), name=rootfs_b
start=$((data_start * 2048)), size=$((data_size * 2048)), name=data
start=$((env_start * 2048)), size=2048, name=bootenv
SFDISK
dd if="$rootfs_a" of="$tmp" bs=1M seek="$a_start" conv=notrunc,fsync status=none
if [[ -n $rootfs_b ]]; then
  dd if="$rootfs_b" of="$tmp" bs=1M seek="$b_start" conv=notrunc,fsync status=none
fi
truncate -s "${data_size}M" "$tmp.data"
mkfs.ext4 -q -F -L sphere-data -E root_owner=0:0 "$tmp.data"
dd if="$tmp.data" of="$tmp" bs=1M seek="$data_start" conv=notrunc,fsync status=none
factory=(factory --version-a "$version_a" --bootlimit "$bootlimit")
[[ -n $rootfs_b ]] && factory+=(--version-b "$version_b")
"$tool" --bootenv "$tmp" --bootenv-offset "$((env_start * mib))" "${factory[@]}" >&2
mv -f "$tmp" "$out"
echo "make-ab-disk: $out: boot@${boot_start}M rootfs_a@${a_start}M rootfs_b@${b_start}M data@${data_start}M bootenv@${env_start}M (${total} MiB)" >&2
echo "$((env_start * mib))"
