#!/usr/bin/env bash
# App launch latency of the full OpenSphere sandbox versus bubblewrap, side by side (issue #4).
#
# Usage (as root): scripts/bench-sandbox.sh [RUNS]     (default 200 runs each)
#
# Builds the launcher (release profile, as on the device) and a static test app, installs the app
# from a signed package with a MutableStorage image (so the measured launch mounts storage too),
# then runs sphere-sandbox-bench: spawn -> the app's first byte on a pipe, our launcher with the
# full sandbox vs `bwrap --unshare-all --ro-bind / /`, interleaved; medians, p90, the ratio and
# the launcher's RSS. Goal: ours <= 0.5 x bwrap's median.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-200}
[[ $(id -u) -eq 0 ]] || { echo "bench-sandbox: must run as root" >&2; exit 2; }
scripts/install-host-deps.sh sandbox >&2

cargo build -q --release -p sphere-sandbox -p sphere-cli
# The launcher and the app are static binaries, as on the device (no dynamic loader at start).
for bin in sphere-sandbox:sphere-sandbox-exec escape-artist:escape-artist; do
  CARGO_TARGET_DIR=target/escape-static cargo rustc -q --release -p "${bin%%:*}" --bin "${bin##*:}" -- \
    -C target-feature=+crt-static
done
launcher=target/escape-static/release/sphere-sandbox-exec

work=$(mktemp -d /tmp/bench-sandbox.XXXXXX)
cleanup() {
  for mnt in "$work"/storage-mnt/*; do [[ -d $mnt ]] && umount -l "$mnt" 2>/dev/null; done
  for pin in "$work"/run/netns/*; do [[ -e $pin ]] && umount -l "$pin" 2>/dev/null; done
  # The apps' cgroups outlive their runs (reused by the next launch); remove ours.
  for id in "${cid:-}"; do
    [[ -n $id ]] || continue
    find /sys/fs/cgroup -maxdepth 6 -type d -name "$id" -path '*sphere-sandbox*' -exec rmdir {} + 2>/dev/null
    find /sys/fs/cgroup -maxdepth 3 -type d -name "$id" -path '*opensphere-*' -exec rmdir {} + 2>/dev/null
  done
  umount -l "$work/run/dev" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/src/bin"
cp examples/escape-artist/packages/attacker/app_manifest.json "$work/src/"
cp target/escape-static/release/escape-artist "$work/src/bin/app"
target/release/sphere keys new bench --dir "$work" >/dev/null
target/release/sphere app package "$work/src" -o "$work/app.sphpkg" --key "$work/bench.key" >/dev/null
installed=$(target/release/sphere-sandbox-dev install "$work/app.sphpkg" --trust "$work/bench.pub" \
  --apps "$work/apps" --storage "$work/storage" --uid 20010)
cid=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["component_id"])' "$installed")
target/release/sphere-sandbox-dev spec --app-root "$work/apps/$cid" --uid 20010 \
  --storage-image "$work/storage/$cid.img" --storage-mount "$work/storage-mnt/$cid" \
  --runtime-dir "$work/run" --cgroup-parent /sys/fs/cgroup/opensphere-bench >"$work/spec.json"
# The app under test writes one byte as its first action and exits.
python3 - "$work/spec.json" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1])); spec["args"] = ["first-byte"]; spec["stdout"] = "inherit"
json.dump(spec, open(sys.argv[1], "w"))
PY

echo "kernel $(uname -r), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); launcher: static, $(stat -c %s "$launcher") bytes"
target/release/sphere-sandbox-bench --exec "$launcher" --spec "$work/spec.json" \
  --app "$work/apps/$cid/bin/app" --runs "$runs"
