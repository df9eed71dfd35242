#!/usr/bin/env bash
# Assemble the OpenSphere QEMU Cortex-A7 image: kernel, initramfs, read-only root filesystem and a
# persistent data disk.
#
# Usage: scripts/build-image.sh [options]
#   --board NAME         layout directory under images/ (default: qemu-a7)
#   --kernel-dir DIR     use this kernel (a dir with zImage and config) instead of
#                        scripts/build-kernel.sh's
#   --rootfs-type TYPE   erofs (default) or squashfs
#   --fresh-data         recreate the data disk (default: keep it, so data persists across builds)
#   --data-size MIB      size of a newly created data disk (default 64)
#   --debug              add Debian's busybox-static (armhf) as /bin/busybox and /bin/sh
#   -h, --help
#
# Steps: kernel (scripts/build-kernel.sh, cached) -> cross-build the crates the layout names
# (scripts/cross-build.sh --release) -> validate init.json (sphere-init --check-config, host build)
# -> stage the root tree from images/BOARD/rootfs.txt -> mkfs.erofs/mksquashfs -> initramfs (cpio
# with sphere-init as /init and /dev/console, zstd) -> data disk (ext4, created once).
#
# Output: ${OPENSPHERE_CACHE:-$HOME/.cache/opensphere}/image/ (outside the checkout); every file
# is written to a temporary name and renamed into place. The last stdout line is that directory:
#   zImage kernel.config kernelrelease   the kernel
#   initramfs.cpio.zst                   /init = sphere-init (initramfs mode)
#   rootfs.erofs | rootfs.squashfs       read-only root (the disk with virtio serial sphere-root)
#   data.ext4                            persistent data disk (virtio serial sphere-data)
#   cmdline.txt                          kernel command line for scripts/run-qemu.sh
#   manifest.json                        sizes, kernel release, root filesystem type
# The development signing key pair is kept in the cache's keys/ directory; only the public key
# goes into the image (/etc/sphere/dev-keys/dev-signing.pub.pem: trusted only in development mode).
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
script_path="$repo_root/scripts/$(basename "${BASH_SOURCE[0]}")"
log() { echo "build-image: $*" >&2; }
die() { echo "build-image: ERROR: $*" >&2; exit 1; }

board=qemu-a7
kernel_dir=
rootfs_type=erofs
fresh_data=0
data_size=64
debug=0
while (($#)); do
  case "$1" in
    --board) board=${2:?--board needs a name}; shift ;;
    --kernel-dir) kernel_dir=${2:?--kernel-dir needs a directory}; shift ;;
    --rootfs-type) rootfs_type=${2:?--rootfs-type needs erofs or squashfs}; shift ;;
    --fresh-data) fresh_data=1 ;;
    --data-size) data_size=${2:?--data-size needs MiB}; shift ;;
    --debug) debug=1 ;;
    -h|--help) sed -n '2,/^set -euo pipefail/{/^set -euo/d;s/^# \{0,1\}//;p}' "$script_path"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
[[ $rootfs_type == erofs || $rootfs_type == squashfs ]] || die "--rootfs-type must be erofs or squashfs"
[[ $data_size =~ ^[1-9][0-9]*$ ]] || die "--data-size wants MiB, got '$data_size'"
layout="$repo_root/images/$board"
[[ -f $layout/rootfs.txt && -f $layout/init.json ]] || die "$layout needs rootfs.txt and init.json"
[[ $(id -u) -eq 0 ]] || die "run as root (device nodes and root-owned files in the images)"

"$repo_root/scripts/install-host-deps.sh" image cross >&2

cache=${OPENSPHERE_CACHE:-$HOME/.cache/opensphere}
out="$cache/image"
mkdir -p "$out" "$cache/keys" "$cache/tmp"
out=$(cd "$out" && pwd)
work=$(mktemp -d "$cache/tmp/build-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$SECONDS
step() { log "[$1/7 +$((SECONDS - start))s] $2"; }

# install_atomic SRC NAME: move SRC to $out/NAME through a temporary name in $out.
install_atomic() {
  local tmp="$out/.tmp.$2.$$"
  cp -f "$1" "$tmp"
  mv -f "$tmp" "$out/$2"
}

# --- 1. Kernel -------------------------------------------------------------------------------
step 1 "kernel"
if [[ -z $kernel_dir ]]; then
  kernel_dir=$("$repo_root/scripts/build-kernel.sh" | tail -n1)
fi
[[ -f $kernel_dir/zImage && -f $kernel_dir/config ]] || die "kernel dir '$kernel_dir' lacks zImage/config"
kernelrelease=$(cat "$kernel_dir/kernelrelease" 2>/dev/null || echo unknown)
log "kernel $kernelrelease from $kernel_dir"
config_fs=CONFIG_EROFS_FS
[[ $rootfs_type == squashfs ]] && config_fs=CONFIG_SQUASHFS
for symbol in "$config_fs" CONFIG_BLK_DEV_INITRD CONFIG_RD_ZSTD CONFIG_VIRTIO_BLK CONFIG_EXT4_FS CONFIG_DEVTMPFS; do
  grep -q "^$symbol=y" "$kernel_dir/config" || die "kernel config lacks $symbol=y (needed by this image)"
done

# --- 2. Device binaries --------------------------------------------------------------------------
step 2 "cross-building the device crates named in rootfs.txt"
mapfile -t crates < <(awk '$1 == "bin" { split($4, part, ":"); print part[1] }' "$layout/rootfs.txt" | sort -u)
((${#crates[@]})) || die "rootfs.txt names no bin entries (at least /sbin/init)"
crate_args=()
for crate in "${crates[@]}"; do crate_args+=(-p "$crate"); done
bindir=$("$repo_root/scripts/cross-build.sh" --release --print-dir "${crate_args[@]}" | tail -n1)
[[ -x $bindir/sphere-init ]] || die "cross-build produced no sphere-init in $bindir"

# --- 3. init.json ------------------------------------------------------------------------------
step 3 "validating init.json (host build of sphere-init --check-config)"
(cd "$repo_root" && cargo build --quiet -p sphere-init >&2)
host_init="${CARGO_TARGET_DIR:-$repo_root/target}/debug/sphere-init"  # where that cargo build put it
"$host_init" --check-config "$layout/init.json" >"$work/check.txt" || die "invalid $layout/init.json"
head -n1 "$work/check.txt" >&2

# --- 4. Root filesystem --------------------------------------------------------------------------
step 4 "staging the root tree and making $rootfs_type"
root="$work/root"
mkdir -p "$root"
pubkey="$cache/keys/dev-signing.pub.pem"
privkey="$cache/keys/dev-signing.key.pem"
if [[ ! -f $privkey || ! -f $pubkey ]]; then
  log "generating the development signing key pair in $cache/keys (Ed25519, PEM)"
  (umask 077 && openssl genpkey -algorithm ed25519 -out "$work/dev.key" 2>/dev/null)
  openssl pkey -in "$work/dev.key" -pubout -out "$work/dev.pub" 2>/dev/null
  mv -f "$work/dev.key" "$privkey"
  mv -f "$work/dev.pub" "$pubkey"
fi
while read -r kind path mode source _rest; do
  [[ -z $kind || $kind == \#* ]] && continue
  [[ $path == /* && $mode =~ ^[0-7]{3,4}$ ]] || die "rootfs.txt: bad line '$kind $path $mode $source'"
  dest="$root$path"
  case "$kind" in
    dir) install -d -m "$mode" "$dest" ;;
    bin) install -D -m "$mode" "$bindir/${source#*:}" "$dest" ;;  # CRATE or CRATE:BINARY
    file) install -D -m "$mode" "$layout/$source" "$dest" ;;
    tree)
      if [[ -d $layout/$source ]]; then
        while IFS= read -r -d '' file; do
          install -D -m "$mode" "$file" "$dest/${file#"$layout/$source"/}"
        done < <(find "$layout/$source" -type f -print0)
      else
        log "note: $layout/$source absent; $path not included"
      fi ;;
    gen)
      case "$source" in
        dev-public-key) install -D -m "$mode" "$pubkey" "$dest" ;;
        *) die "rootfs.txt: unknown generated file '$source'" ;;
      esac ;;
    *) die "rootfs.txt: unknown kind '$kind'" ;;
  esac
done <"$layout/rootfs.txt"
if ((debug)); then
  busybox_deb=$(ls "$cache"/debug/busybox-static_*_armhf.deb 2>/dev/null | tail -n1 || true)
  if [[ -z $busybox_deb ]]; then
    log "--debug: fetching Debian's busybox-static:armhf"
    mkdir -p "$cache/debug"
    if ! (cd "$cache/debug" && apt-get download -q busybox-static:armhf >&2 2>/dev/null); then
      # The host's apt needs armhf package lists once (a partial mirror error is not fatal here).
      dpkg --print-foreign-architectures | grep -qx armhf || dpkg --add-architecture armhf
      apt-get update -qq >&2 || log "warning: apt-get update reported errors; trying the download anyway"
      (cd "$cache/debug" && apt-get download -q busybox-static:armhf >&2)
    fi
    busybox_deb=$(ls "$cache"/debug/busybox-static_*_armhf.deb | tail -n1)
  fi
  dpkg-deb -x "$busybox_deb" "$work/busybox"
  install -D -m 0755 "$work/busybox/bin/busybox" "$root/bin/busybox"
  ln -sf busybox "$root/bin/sh"
  log "--debug: added /bin/busybox and /bin/sh from $(basename "$busybox_deb")"
fi
# Every service's binary must be in the image.
while read -r word name path; do
  [[ $word == service ]] || continue
  [[ -x $root$path ]] || die "init.json service '$name' runs $path, which is not in the root tree"
done <"$work/check.txt"
chown -R 0:0 "$root"
case "$rootfs_type" in
  # EROFS, LZ4HC: decompresses in place with fixed-size output clusters, so random reads of the
  # root cost little CPU and no big decompression cache (see images/qemu-a7/README.md).
  erofs) mkfs.erofs --quiet -zlz4hc,12 -T0 --all-root -U 6f70656e-7370-6865-7265-726f6f746673 \
           "$work/rootfs.img" "$root" >&2 ;;
  squashfs) mksquashfs "$root" "$work/rootfs.img" -noappend -all-root -comp xz -b 131072 \
              -mkfs-time 0 -all-time 0 -no-progress -quiet >&2 ;;
esac

# --- 5. Initramfs --------------------------------------------------------------------------------
step 5 "initramfs (sphere-init as /init)"
initramfs="$work/initramfs"
mkdir -p "$initramfs"/{dev,proc,sys,newroot}
install -m 0755 "$bindir/sphere-init" "$initramfs/init"
mknod -m 0600 "$initramfs/dev/console" c 5 1
(cd "$initramfs" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
  cpio --quiet -o -0 -H newc -R 0:0 --reproducible) | zstd -q -19 -T0 >"$work/initramfs.cpio.zst"

# --- 6. Data disk --------------------------------------------------------------------------------
step 6 "data disk"
if ((fresh_data)) || [[ ! -f $out/data.ext4 ]]; then
  truncate -s "${data_size}M" "$work/data.ext4"
  mkfs.ext4 -q -F -L sphere-data -E root_owner=0:0 "$work/data.ext4"
  mv -f "$work/data.ext4" "$out/.tmp.data.ext4.$$"
  mv -f "$out/.tmp.data.ext4.$$" "$out/data.ext4"
  log "created a fresh ${data_size} MiB data disk"
else
  log "keeping the existing data disk ($out/data.ext4; --fresh-data recreates it)"
fi

# --- 7. Install ----------------------------------------------------------------------------------
step 7 "installing into $out"
base_cmdline="console=ttyAMA0 earlycon=pl011,0x9000000 panic=-1 sphere.root=serial:sphere-root sphere.rootfstype=$rootfs_type"
extra_cmdline=
if [[ -f $repo_root/kernel-config/cmdline.txt ]]; then
  extra_cmdline=$(grep -v '^[[:space:]]*#' "$repo_root/kernel-config/cmdline.txt" | tr '\n' ' ' | tr -s ' ')
fi
echo "$base_cmdline ${extra_cmdline}" | sed 's/[[:space:]]*$//' >"$work/cmdline.txt"
cp "$kernel_dir/zImage" "$work/zImage"
cp "$kernel_dir/config" "$work/kernel.config"
echo "$kernelrelease" >"$work/kernelrelease"
other_rootfs=squashfs
[[ $rootfs_type == squashfs ]] && other_rootfs=erofs
for name in zImage kernel.config kernelrelease cmdline.txt; do install_atomic "$work/$name" "$name"; done
install_atomic "$work/initramfs.cpio.zst" initramfs.cpio.zst
install_atomic "$work/rootfs.img" "rootfs.$rootfs_type"
rm -f "$out/rootfs.$other_rootfs"

size() { stat -c %s "$1"; }
python3 - "$work/manifest.json" <<PY
import json, sys
manifest = {
    "board": "$board",
    "kernelrelease": "$kernelrelease",
    "rootfs_type": "$rootfs_type",
    "debug": bool($debug),
    "cmdline": open("$work/cmdline.txt").read().strip(),
    "sizes": {
        "zImage": $(size "$out/zImage"),
        "initramfs.cpio.zst": $(size "$out/initramfs.cpio.zst"),
        "rootfs.$rootfs_type": $(size "$out/rootfs.$rootfs_type"),
        "data.ext4": $(size "$out/data.ext4"),
    },
}
manifest["sizes"]["boot_total"] = sum(v for k, v in manifest["sizes"].items() if k != "data.ext4")
json.dump(manifest, open(sys.argv[1], "w"), indent=2)
PY
install_atomic "$work/manifest.json" manifest.json
log "done in $((SECONDS - start))s:"
for name in zImage initramfs.cpio.zst "rootfs.$rootfs_type" data.ext4; do
  printf 'build-image:   %-22s %9d bytes\n' "$name" "$(size "$out/$name")" >&2
done
log "  kernel command line: $(cat "$out/cmdline.txt")"
echo "$out"
