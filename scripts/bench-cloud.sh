#!/usr/bin/env bash
# Benchmark sphere-cloud: attestations + certificate issuance per second on loopback.
#
# Usage: scripts/bench-cloud.sh [--devices N] [--seconds S] [--postgres]
#   --devices N   simulated devices, each a thread in a loop (default 16)
#   --seconds S   measuring time per run (default 10)
#   --postgres    also run against a PostgreSQL server started in a temp dir
#
# Each attestation is the full exchange a device makes every day: nonce request, EAT evidence
# (COSE_Sign1) with a 9-entry event log and a CSR, verification against signed reference values,
# and a 24 h certificate signed by the CA, over HTTPS with keep-alive. Server and simulated devices
# share this machine's cores, so the figure includes the devices' own signing and TLS work.
# Runs both device key algorithms: Ed25519 (file backend) and P-256 (what a TPM signs with).
# The MQTT client benchmark (device client vs mosquitto_pub) is sphere-attestd's: see
# docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
devices=16 seconds=10 postgres=0
while (($#)); do
  case "$1" in
    --devices) devices=${2:?}; shift ;;
    --seconds) seconds=${2:?}; shift ;;
    --postgres) postgres=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "bench-cloud: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

scripts/install-host-deps.sh cloud >&2
# sphere-cloud is a host service: speed-tuned (opt-level 3, no fat LTO) rather than the
# workspace's size-tuned device release profile, in its own target directory.
export CARGO_PROFILE_RELEASE_OPT_LEVEL=3 CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
target=${CARGO_TARGET_DIR:-target}/host-release
CARGO_TARGET_DIR=$target cargo build --release --locked -p sphere-cloud >&2
bin=$target/release

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

data=$work/cloud
"$bin/sphere-cloud" init --data "$data" >/dev/null
openssl genpkey -algorithm ed25519 -out "$work/release.key" 2>/dev/null
openssl pkey -in "$work/release.key" -pubout -out "$work/release.pub"
"$bin/sphere-cloud-sim" reference-values >"$work/refs.json"
"$bin/sphere-cloud" sign-reference-values "$work/refs.json" --key "$work/release.key" >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Sets $url. Not called as $(...): the background server would hold the substitution's pipe open.
run_server() { # $1 = database URL or "" for SQLite
  local port db_args=()
  port=$(free_port)
  [[ -n $1 ]] && db_args=(--database "$1")
  # --no-mqtt: only the HTTPS attestation path is measured (and the embedded broker's default
  # port may be taken on a shared machine).
  "$bin/sphere-cloud" serve --data "$data" --listen "127.0.0.1:$port" "${db_args[@]}" --no-mqtt \
    --reference-values "$work/refs.json" --reference-key "$work/release.pub" >/dev/null 2>>"$work/server.log" &
  pids+=($!)
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  url="https://127.0.0.1:$port"
}

bench() { # $1 = storage label, $2 = URL
  for algorithm in ed25519 p256; do
    local flag=()
    [[ $algorithm == p256 ]] && flag=(--p256)
    local result
    result=$("$bin/sphere-cloud-sim" bench --url "$2" --data "$data" --devices "$devices" --seconds "$seconds" "${flag[@]}")
    echo "bench-cloud: storage=$1 $result"
  done
}

echo "bench-cloud: $(nproc) CPUs, $devices simulated devices, ${seconds}s per run"
run_server ""
bench sqlite "$url"
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

if ((postgres)); then
  pg=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  pgdir=$work/pg
  mkdir -p "$pgdir"
  run_pg=()
  # PostgreSQL refuses to run as root: as root, run it as the postgres user (who must be able
  # to traverse the 0700 mktemp directory).
  if [[ $(id -u) == 0 ]]; then chmod 711 "$work"; chown postgres:postgres "$pgdir"; run_pg=(runuser -u postgres --); fi
  "${run_pg[@]}" "$pg/initdb" -A trust -U postgres --no-sync -D "$pgdir/data" >/dev/null
  pgport=$(free_port)
  "${run_pg[@]}" "$pg/pg_ctl" -D "$pgdir/data" -o "-p $pgport -k $pgdir -c listen_addresses=127.0.0.1 -c fsync=off" -w start >/dev/null
  trap '"${run_pg[@]}" "$pg/pg_ctl" -D "$pgdir/data" -m fast stop >/dev/null 2>&1 || true; cleanup' EXIT
  run_server "postgres://postgres@127.0.0.1:$pgport/postgres"
  bench postgresql "$url"
fi
