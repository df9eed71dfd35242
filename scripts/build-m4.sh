#!/usr/bin/env bash
# Build the Cortex-M4 real-time firmware (daemons/sphere-rt-m4) with Debian's rustc 1.85.
#
# The M4 crate is not a workspace member (it cannot link for the host). rustup here has no
# thumbv7em standard library, so `core` is built from source (RUSTC_BOOTSTRAP=1
# -Zbuild-std=core, from Debian's rust-web-src) and linked by LLVM 19's ld.lld with
# cortex-m-rt's link.x; memory.x holds the firmware to 96 KiB of code and 32 KiB of RAM.
#
# Usage: scripts/build-m4.sh [--print-elf | --print-stripped] [--size]
#   --print-elf       print the firmware's path as the last line
#   --print-stripped  print the path of a copy without symbols or debug info (what app
#                     packages carry) as the last line
#   --size            print the size of .text, .rodata, .data and .bss
set -euo pipefail
cd "$(dirname "$0")/.."

print_elf=0
print_stripped=0
size=0
while (($#)); do
  case "$1" in
    --print-elf) print_elf=1 ;;
    --print-stripped) print_stripped=1 ;;
    --size) size=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "build-m4: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

scripts/install-host-deps.sh cross >&2

TARGET=thumbv7em-none-eabihf
crate=daemons/sphere-rt-m4
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$PWD/target/m4"
echo "build-m4: $(/usr/bin/rustc --version) -> $TARGET (release)" >&2
(cd "$crate" && /usr/bin/cargo build --locked --release --target "$TARGET" -Zbuild-std=core >&2)
elf="$CARGO_TARGET_DIR/$TARGET/release/sphere-rt-m4"
if ((size)); then
  llvm_size=$(command -v llvm-size-19 || command -v /usr/lib/llvm-19/bin/llvm-size || true)
  if [[ -n $llvm_size ]]; then
    "$llvm_size" -A "$elf" | awk '$1 ~ /^\.(vector_table|text|rodata|data|bss|uninit)$/ {print "build-m4: " $1 " " $2 " bytes"}' >&2
  else
    arm-none-eabi-size -A "$elf" >&2 2>/dev/null || size -A "$elf" >&2
  fi
fi
echo "build-m4: ok" >&2
((print_elf)) && echo "$elf"
if ((print_stripped)); then
  stripped=$elf.stripped
  strip=$(command -v llvm-strip-19 || command -v llvm-strip || command -v arm-none-eabi-strip || true)
  if [[ -n $strip ]]; then "$strip" --strip-all -o "$stripped" "$elf"; else cp "$elf" "$stripped"; fi
  echo "$stripped"
fi
exit 0
