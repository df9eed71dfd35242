#!/usr/bin/env bash
# Run OpenSphere's fuzz targets (cargo-fuzz / libFuzzer) for a fixed time each.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   default: 60 seconds for each of manifest, package_verify, hardware_definition, intercore_stream, dns_message, evidence, uboot_env, tuf_metadata
# Prints each target's executions and exits non-zero if any target finds a crash
# (the reproducer is left under daemons/*/fuzz/artifacts/).
#
# cargo-fuzz needs nightly-only sanitizer flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain
# accept them (no nightly toolchain can be downloaded here).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(manifest package_verify hardware_definition intercore_stream dns_message evidence uboot_env tuf_metadata)
fuzz_dir=daemons/sphere-app-format/fuzz
intercore_fuzz_dir=daemons/sphere-intercore/fuzz
slots_fuzz_dir=daemons/sphere-slots/fuzz
attestation_fuzz_dir=daemons/sphere-attestation/fuzz
netd_fuzz_dir=daemons/sphere-netd/fuzz
updated_fuzz_dir=daemons/sphere-updated/fuzz

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
export RUSTC_BOOTSTRAP=1

seed_corpus() {
  local corpus=$fuzz_dir/corpus
  mkdir -p "$corpus/manifest" "$corpus/package_verify" "$corpus/hardware_definition"
  cp examples/hello-sphere/app/app_manifest.json "$corpus/manifest/sample.json"
  cp daemons/sphere-app-format/tests/data/*.json "$corpus/manifest/" 2>/dev/null || true
  cp images/qemu-a7/hardware-definitions/*.json examples/hello-sphere/hardware-definitions/*.json "$corpus/hardware_definition/"
  # Small signed packages, signed with the fuzz key the target trusts.
  cargo build -q -p sphere-cli
  local sphere=${CARGO_TARGET_DIR:-$PWD/target}/debug/sphere
  local app
  app=$(mktemp -d)
  mkdir -p "$app/bin" "$app/lib"
  cp examples/hello-sphere/app/app_manifest.json "$app/"
  printf '\177ELF seed' >"$app/bin/app" && chmod 755 "$app/bin/app"
  printf 'data' >"$app/lib/data.bin" && ln -s data.bin "$app/lib/link"
  "$sphere" app package "$app" -o "$corpus/package_verify/seed.sphpkg" --key "$fuzz_dir/keys/fuzz-signing.key" >/dev/null
  rm -rf "$app"
  python3 scripts/intercore.py seed "$intercore_fuzz_dir/corpus/intercore_stream"
  # U-Boot environment copies (redundant layout) as the bootenv partition holds them.
  python3 - "$slots_fuzz_dir/corpus/uboot_env" <<'PY'
import os, sys, zlib
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for name, size, text in [("small", 64, b"sphere_slot=b\0upgrade_available=1\0bootcount=2\0\0"),
                         ("full", 0x4000, b"bootcmd=run sphere_boot\0bootlimit=3\0sphere_good_slot=a\0sphere_slot=a\0\0")]:
    data = text.ljust(size - 5, b"\0")
    open(os.path.join(out, name), "wb").write(zlib.crc32(data).to_bytes(4, "little") + b"\x07" + data)
PY
  # Evidence: tokens signed by the fixed key the target verifies with, and an event log.
  mkdir -p "$attestation_fuzz_dir/corpus/evidence"
  cp "$attestation_fuzz_dir"/seeds/* "$attestation_fuzz_dir/corpus/evidence/"
  # TUF metadata: a repository made by `sphere update repo` with the fuzz key for every role
  # (the key the target re-signs with), long expiries so the seeds stay valid, targets of
  # every kind, another board and a directory; packed as the target reads its input.
  local keys repo
  keys=$(mktemp -d)
  repo=$keys/repo
  for role in root targets snapshot timestamp; do cp "$updated_fuzz_dir/keys/fuzz-tuf.pem" "$keys/$role.pem"; done
  "$sphere" update repo init "$repo" --keys "$keys" --root-expires 3650d >/dev/null
  printf 'os image 3' >"$keys/os-3.img" && printf 'm4 firmware' >"$keys/m4.bin" && printf 'app' >"$keys/app.sphpkg"
  local add=("$sphere" update repo add-target "$repo" --keys "$keys")
  "${add[@]}" "$keys/os-3.img" --kind os-image --version 3 --hardware qemu-a7 --release r3 >/dev/null
  "${add[@]}" "$keys/m4.bin" --kind m4-firmware --version 3 --hardware qemu-a7 --hardware '*' --release r3 >/dev/null
  "${add[@]}" "$keys/app.sphpkg" --name apps/hello.sphpkg --kind app-package --version 1 --hardware qemu-a7 \
    --release r3 --component-id 0c3ee1b5-1111-4c2c-9c8e-0123456789ab >/dev/null
  "${add[@]}" "$keys/os-3.img" --name os-other.img --kind os-image --version 9 --hardware mt3620 --release rx >/dev/null
  for role in targets snapshot timestamp root; do
    "$sphere" update repo set-expiry "$repo" "$role" 3650d --keys "$keys" >/dev/null
  done
  python3 - "$repo/metadata" "$updated_fuzz_dir/corpus/tuf_metadata" <<'PY'
import os, sys
meta, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
read = lambda name: open(os.path.join(meta, name), "rb").read()
roles = [read("1.root.json"), read("timestamp.json"), read("snapshot.json"), read("targets.json")]
for flags in (0, 1, 3):
    open(os.path.join(out, f"repo-{flags}"), "wb").write(bytes([flags]) + b"\xff".join(roles))
    open(os.path.join(out, f"repo-rotated-{flags}"), "wb").write(bytes([flags]) + b"\xff".join(roles + [read("2.root.json")]))
PY
  rm -rf "$keys"
}

seed_corpus
# One target directory for every fuzz crate: they share most dependencies (libfuzzer-sys, serde,
# the workspace crates), and one directory is one thing to delete afterwards.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_FUZZ:-$PWD/target/fuzz}"
status=0
for target in "${targets[@]}"; do
  echo "fuzz: $target for ${seconds}s" >&2
  log=$(mktemp)
  dir=$fuzz_dir
  [[ $target == intercore_* ]] && dir=$intercore_fuzz_dir
  [[ $target == uboot_env ]] && dir=$slots_fuzz_dir
  [[ $target == evidence ]] && dir=$attestation_fuzz_dir
  [[ $target == dns_* ]] && dir=$netd_fuzz_dir
  [[ $target == tuf_metadata ]] && dir=$updated_fuzz_dir
  if (cd "$dir" && cargo fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536) >"$log" 2>&1; then
    verdict=ok
  else
    verdict=CRASH
    status=1
    tail -40 "$log" >&2
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  [[ -n $execs ]] || execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
  echo "fuzz: $target: $verdict, ${execs:-?} executions in ${seconds}s"
  rm -f "$log"
done
exit "$status"
