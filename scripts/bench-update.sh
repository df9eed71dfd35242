#!/usr/bin/env bash
# Benchmark: install a 64 MiB OS image into a file-backed slot with sphere-updated and with
# RAUC (Debian's rauc 1.8, bootloader=noop, file-backed raw slots, under dbus-run-session),
# alternating, in one run; and SHA-256 throughput of the installer's hasher against
# `openssl speed -evp sha256` on the same machine.
#
# sphere-updated's run is the whole device path: TUF refresh (timestamp, snapshot, targets,
# signatures) over HTTPS from a local static server (nginx, and the Python test server
# tests/update-server.py for comparison), the 64 MiB download streamed into the
# slot while hashing, verification, the boot record updated. RAUC's run is `rauc install` of
# a signed bundle already on local disk (signature check, bundle mount, copy + hash). Page
# cache warm for both (the first round is a discarded warm-up). A third contender installs
# the same TUF repository from local media (file://), like RAUC's local bundle.
#
# Usage: scripts/bench-update.sh [ROUNDS]     (default 7; prints medians and ratios)
# Goals (docs/benchmarks.md): sphere-updated median <= 1.0x RAUC's; hashing >= 80% of openssl.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-7}
scripts/install-host-deps.sh update update-bench >&2
# The measured binary is the release build; `sphere` only prepares the repository (debug is fine).
# SPHERE_BENCH_RELEASE_DIR / SPHERE_BENCH_DEBUG_DIR: use binaries built already.
if [[ -z ${SPHERE_BENCH_RELEASE_DIR:-} ]]; then
  cargo build --locked --release -q -p sphere-updated
  cargo build --locked -q -p sphere-cli
fi
BIN=${SPHERE_BENCH_RELEASE_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/release}
SPHERE=${SPHERE_BENCH_DEBUG_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/debug}/sphere
W=$(mktemp -d /tmp/bench-update.XXXXXX)
SERVER_PID=
NGINX_PID=
cleanup() {
  [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null || true
  [[ -n $NGINX_PID ]] && kill "$NGINX_PID" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

IMAGE=$W/rootfs.img
head -c $((64 << 20)) /dev/urandom >"$IMAGE"

# --- RAUC: keys, system.conf, bundle -----------------------------------------------------
mkdir -p "$W/rauc/bundle"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$W/rauc/key.pem" -out "$W/rauc/cert.pem" \
  -days 2 -subj /CN=bench 2>/dev/null
cat >"$W/rauc/system.conf" <<CONF
[system]
compatible=opensphere-bench
bootloader=noop
data-directory=$W/rauc/data

[keyring]
path=$W/rauc/cert.pem

[slot.rootfs.0]
device=$W/rauc/slot-a
type=raw
bootname=A

[slot.rootfs.1]
device=$W/rauc/slot-b
type=raw
bootname=B
CONF
cp "$IMAGE" "$W/rauc/bundle/rootfs.img"
cat >"$W/rauc/bundle/manifest.raucm" <<MANIFEST
[update]
compatible=opensphere-bench
version=2

[image.rootfs]
filename=rootfs.img
MANIFEST
truncate -s $((64 << 20)) "$W/rauc/slot-a" "$W/rauc/slot-b"
rauc bundle --cert="$W/rauc/cert.pem" --key="$W/rauc/key.pem" "$W/rauc/bundle" "$W/rauc/update.raucb" >/dev/null 2>&1
rm -rf "$W/rauc/bundle"

# --- sphere-updated: CA, repository, server, device --------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/ca.key" -out "$W/ca.pem" \
  -days 2 -subj /CN=bench-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/server.key" -out "$W/server.csr" \
  -subj /CN=127.0.0.1 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$W/ext.cnf"
openssl x509 -req -in "$W/server.csr" -CA "$W/ca.pem" -CAkey "$W/ca.key" -CAcreateserial \
  -out "$W/server.pem" -days 2 -extfile "$W/ext.cnf" 2>/dev/null
"$SPHERE" update repo init "$W/repo" --keys "$W/keys" >/dev/null
"$SPHERE" update repo add-target "$W/repo" "$IMAGE" --keys "$W/keys" --kind os-image --version 2 \
  --hardware bench --release r2 >/dev/null
python3 tests/update-server.py "$W/repo" --cert "$W/server.pem" --key "$W/server.key" --port-file "$W/port" 2>/dev/null &
SERVER_PID=$!
for _ in $(seq 50); do [[ -s $W/port ]] && break; sleep 0.1; done
PORT=$(cat "$W/port")
# The same repository from nginx (TLS, sendfile): what a real update server or CDN edge is.
# The Python test server spends most of an HTTPS round encrypting in Python on the same two
# cores, so it measures itself more than the device.
NGINX_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$W/nginx/tmp"
cat >"$W/nginx/nginx.conf" <<CONF
# The work directory is private (0700): the worker reads it as the user running the benchmark.
user $(id -un);
worker_processes 1;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log;
events {}
http {
  access_log off;
  client_body_temp_path $W/nginx/tmp/body;
  proxy_temp_path $W/nginx/tmp/proxy;
  fastcgi_temp_path $W/nginx/tmp/fastcgi;
  uwsgi_temp_path $W/nginx/tmp/uwsgi;
  scgi_temp_path $W/nginx/tmp/scgi;
  sendfile on;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$NGINX_PORT ssl;
    ssl_certificate $W/server.pem;
    ssl_certificate_key $W/server.key;
    root $W/repo;
  }
}
CONF
nginx -c "$W/nginx/nginx.conf" -p "$W/nginx" -g 'daemon off;' 2>"$W/nginx/start.log" &
NGINX_PID=$!
D=$W/device
mkdir -p "$D"
truncate -s $((64 << 20)) "$D/slot-a" "$D/slot-b"
cat >"$D/config.json" <<JSON
{
  "metadata_url": "https://127.0.0.1:$PORT/metadata/",
  "targets_url": "https://127.0.0.1:$PORT/targets/",
  "trusted_root": "$W/repo/metadata/1.root.json",
  "ca_certificates": "$W/ca.pem",
  "hardware": "bench",
  "state_dir": "$D/state",
  "min_version": "$D/min-version",
  "m4_dir": "$D/m4",
  "slots": {"bootenv": "$D/bootenv", "slot_a": "$D/slot-a", "slot_b": "$D/slot-b", "booted": "a"}
}
JSON

# The same repository from local media (file://): no TLS, no server process in the timing.
python3 - "$D/config.json" "$D/config-local.json" "$W/repo" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["metadata_url"] = "file://" + sys.argv[3] + "/metadata/"
c["targets_url"] = "file://" + sys.argv[3] + "/targets/"
json.dump(c, open(sys.argv[2], "w"))
PY
sed "s#https://127.0.0.1:$PORT/#https://127.0.0.1:$NGINX_PORT/#" "$D/config.json" >"$D/config-nginx.json"

now() { date +%s.%N; }
sphere_round() { # CONFIG
  rm -rf "$D/state" "$D/bootenv"
  "$BIN/sphere-updated" --config "$1" init-record >/dev/null
  local t0 t1
  t0=$(now)
  if ! "$BIN/sphere-updated" --config "$1" install --release r2 >"$W/install.log" 2>&1; then
    echo "bench-update: install with $(basename "$1") failed: $(tail -5 "$W/install.log")" >&2
    return 1
  fi
  t1=$(now)
  cmp -s "$D/slot-b" "$IMAGE" || { echo "bench-update: sphere-updated wrote a wrong slot" >&2; exit 1; }
  echo "$t1 - $t0" | bc
}
rauc_round() {
  rm -rf "$W/rauc/data"
  mkdir -p "$W/rauc/data"
  # One D-Bus session and RAUC service per round, started before the clock.
  # rauc talks to the "system" bus: point it at this private session bus.
  dbus-run-session -- bash -c '
    export DBUS_SYSTEM_BUS_ADDRESS=$DBUS_SESSION_BUS_ADDRESS
    rauc service --conf="$1/system.conf" --override-boot-slot=A >/dev/null 2>&1 &
    svc=$!
    for _ in $(seq 100); do rauc status >/dev/null 2>&1 && break; sleep 0.05; done
    t0=$(date +%s.%N)
    rauc install "$1/update.raucb" >/dev/null 2>&1 || { echo FAIL; kill $svc; exit 1; }
    t1=$(date +%s.%N)
    kill $svc
    echo "$t1 - $t0" | bc' _ "$W/rauc"
}
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.4f\n", (a[NR/2]+a[NR/2+1])/2}'; }

echo "bench-update: 64 MiB image, $ROUNDS rounds each (alternating; first round of each discarded as warm-up)"
sphere_round "$D/config.json" >/dev/null
sphere_round "$D/config-local.json" >/dev/null
sphere_round "$D/config-nginx.json" >/dev/null || { echo "bench-update: nginx: $(cat "$W/nginx/start.log" "$W/nginx/error.log" 2>/dev/null)" >&2; exit 1; }
rauc_round >/dev/null
: >"$W/sphere.times"
: >"$W/local.times"
: >"$W/rauc.times"
: >"$W/nginx.times"
for _ in $(seq "$ROUNDS"); do
  sphere_round "$D/config.json" >>"$W/sphere.times"
  sphere_round "$D/config-local.json" >>"$W/local.times"
  sphere_round "$D/config-nginx.json" >>"$W/nginx.times"
  r=$(rauc_round)
  [[ $r == FAIL* ]] && { echo "bench-update: rauc install failed" >&2; exit 1; }
  echo "$r" >>"$W/rauc.times"
done
cmp -s "$W/rauc/slot-b" "$IMAGE" || { echo "bench-update: RAUC did not write slot B" >&2; exit 1; }
s_med=$(median <"$W/sphere.times")
l_med=$(median <"$W/local.times")
r_med=$(median <"$W/rauc.times")
n_med=$(median <"$W/nginx.times")
printf 'sphere-updated install, HTTPS from nginx (TUF + download + hash):     median %.3f s  (%s)\n' "$n_med" "$(tr '\n' ' ' <"$W/nginx.times")"
printf 'sphere-updated install, HTTPS from the Python test server:           median %.3f s  (%s)\n' "$s_med" "$(tr '\n' ' ' <"$W/sphere.times")"
printf 'sphere-updated install, local file:// repository:                     median %.3f s  (%s)\n' "$l_med" "$(tr '\n' ' ' <"$W/local.times")"
printf 'rauc install (local bundle, noop bootloader):                         median %.3f s  (%s)\n' "$r_med" "$(tr '\n' ' ' <"$W/rauc.times")"
printf 'ratio sphere-updated / rauc: local %.2fx, HTTPS (nginx) %.2fx, HTTPS (Python server) %.2fx (goal <= 1.0x)\n' \
  "$(echo "$l_med / $r_med" | bc -l)" "$(echo "$n_med / $r_med" | bc -l)" "$(echo "$s_med / $r_med" | bc -l)"

ours=$("$BIN/sphere-updated" bench-hash --mib 512)
# Both figures divide by CPU time (openssl speed's default; bench-hash uses the thread's CPU
# clock), so a loaded machine does not skew the ratio.
openssl_kb=$(openssl speed -evp sha256 -bytes 1048576 -seconds 2 2>/dev/null | awk '/^sha256/ {print $2}' | tr -d k)
openssl_bps=$(echo "$openssl_kb * 1000" | bc)
printf 'sha256: sphere-updated %.0f MB/s, openssl speed -evp sha256 (1 MiB blocks) %.0f MB/s: %.0f%% (goal >= 80%%)\n' \
  "$(echo "$ours / 1000000" | bc -l)" "$(echo "$openssl_bps / 1000000" | bc -l)" "$(echo "100 * $ours / $openssl_bps" | bc -l)"
