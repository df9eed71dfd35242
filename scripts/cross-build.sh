#!/usr/bin/env bash
# Cross-build OpenSphere's device-side crates for the Cortex-A7 with Debian's rustc 1.85 (our MSRV).
#
# rustup here has only x86_64's std, so we build std from source with Debian's rustc-web
# (RUSTC_BOOTSTRAP=1 -Zbuild-std). Binaries are static (+crt-static): the image ships no libc.
# A crate is device-side when its Cargo.toml says:
#     [package.metadata.opensphere]
#     side = "device"
#
# Usage: scripts/cross-build.sh [--release] [--print-dir] [-p CRATE]...
#   --release    optimised, size-tuned build (the image uses this)
#   --print-dir  print the directory holding the built binaries as the last line
#   -p CRATE     build only CRATE (repeatable); default: every device-side crate
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=armv7-unknown-linux-gnueabihf
profile=debug
print_dir=0
crates=()
while (($#)); do
  case "$1" in
    --release) profile=release ;;
    --print-dir) print_dir=1 ;;
    -p) shift; crates+=("${1:?-p needs a crate name}") ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "cross-build: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

scripts/install-host-deps.sh cross >&2

if ((${#crates[@]} == 0)); then
  mapfile -t crates < <(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
for package in json.load(sys.stdin)["packages"]:
    if (package.get("metadata") or {}).get("opensphere", {}).get("side") == "device":
        print(package["name"])')
fi
((${#crates[@]})) || { echo "cross-build: no device-side crates found" >&2; exit 1; }

package_args=()
for crate in "${crates[@]}"; do package_args+=(-p "$crate"); done
release_args=()
[[ $profile == release ]] && release_args=(--release)

export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$PWD/target/cross-$TARGET"
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc
export CC_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-gcc
export AR_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-ar
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS="-C target-feature=+crt-static"

echo "cross-build: $(/usr/bin/rustc --version) -> $TARGET ($profile): ${crates[*]}" >&2
/usr/bin/cargo build --locked --target "$TARGET" -Zbuild-std=std,panic_abort \
  "${release_args[@]}" "${package_args[@]}" >&2
echo "cross-build: ok" >&2
((print_dir)) && echo "$CARGO_TARGET_DIR/$TARGET/$profile"
exit 0
