#!/usr/bin/env bash
# MQTT broker throughput: sphere-cloud's embedded broker against mosquitto configured by
# `sphere-cloud mosquitto-config`, in the same run, with the same clients and the same rules.
#
# Usage: scripts/bench-mqtt-broker.sh [--count N] [--size BYTES] [--qos 0|1] [--runs R]
#   --count N      messages per run (default 50000)
#   --size BYTES   payload size (default 64, a small telemetry document)
#   --qos Q        QoS of publisher and subscriber (default 1: what devices use for reports)
#   --runs R       runs per broker, alternating, median reported (default 3)
#
# Both brokers run as in production: TLS with client certificates from sphere-cloud's CA, the CRL,
# per-device ACLs. A simulated device attests and gets its certificate; mosquitto_pub (-l, one
# connection) publishes N messages on the device's own commands topic and mosquitto_sub, with the
# same certificate, receives them. The clock runs from the publisher's start to the subscriber's
# N-th message; a run that loses messages fails. sphere-cloud is connected to either broker (to
# mosquitto through its bridge client) as in production. Prints one line per run and a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
count=50000 size=64 qos=1 runs=3
while (($#)); do
  case "$1" in
    --count) count=${2:?}; shift ;;
    --size) size=${2:?}; shift ;;
    --qos) qos=${2:?}; shift ;;
    --runs) runs=${2:?}; shift ;;
    -h|--help) sed -n '2,/^set -euo pipefail/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "bench-mqtt-broker: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ $count =~ ^[1-9][0-9]*$ && $size =~ ^[1-9][0-9]*$ && $runs =~ ^[1-9][0-9]*$ && $qos =~ ^[01]$ ]] \
  || { echo "bench-mqtt-broker: --count, --size, --runs want positive integers, --qos 0 or 1" >&2; exit 2; }

scripts/install-host-deps.sh cloud >&2
# The same speed-tuned host build as scripts/bench-cloud.sh.
export CARGO_PROFILE_RELEASE_OPT_LEVEL=3 CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
target=${CARGO_TARGET_DIR:-target}/host-release
echo "bench-mqtt-broker: building sphere-cloud (release)" >&2
CARGO_TARGET_DIR=$target cargo build -q --release --locked -p sphere-cloud
bin=$target/release

work=$(mktemp -d /tmp/bench-mqtt-broker.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

data=$work/cloud
"$bin/sphere-cloud" init --data "$data" >/dev/null
openssl genpkey -algorithm ed25519 -out "$work/release.key" 2>/dev/null
openssl pkey -in "$work/release.key" -pubout -out "$work/release.pub"
"$bin/sphere-cloud-sim" reference-values >"$work/refs.json"
"$bin/sphere-cloud" sign-reference-values "$work/refs.json" --key "$work/release.key" >/dev/null

mosquitto_port=$(free_port)
"$bin/sphere-cloud" mosquitto-config --data "$data" --port "$mosquitto_port" >/dev/null
sed -i "s/^listener $mosquitto_port\$/listener $mosquitto_port 127.0.0.1/" "$data/mosquitto.conf"
[[ $(id -u) -eq 0 ]] && echo 'user root' >>"$data/mosquitto.conf"
printf 'log_dest none\npersistence false\nmax_queued_messages 0\n' >>"$data/mosquitto.conf"
mosquitto -c "$data/mosquitto.conf" >/dev/null 2>&1 &
pids+=($!)
wait_port "$mosquitto_port" || { echo "bench-mqtt-broker: mosquitto did not start" >&2; exit 1; }

# Two sphere-cloud servers on the same data: one bridged to mosquitto, one with the embedded broker.
serve() { # HTTPS port, MQTT arguments
  local port=$1; shift
  "$bin/sphere-cloud" serve --data "$data" --listen "127.0.0.1:$port" "$@" \
    --reference-values "$work/refs.json" --reference-key "$work/release.pub" 2>>"$work/cloud.log" &
  pids+=($!)
  wait_port "$port" || { echo "bench-mqtt-broker: sphere-cloud did not start: $(tail -3 "$work/cloud.log")" >&2; exit 1; }
}
https_port=$(free_port)
serve "$https_port" --mqtt-broker "127.0.0.1:$mosquitto_port"
embedded_port=$(free_port)
serve "$(free_port)" --mqtt-listen "127.0.0.1:$embedded_port"
wait_port "$embedded_port"

device=$("$bin/sphere-cloud-sim" device --url "https://127.0.0.1:$https_port" --data "$data" --out "$work/dev" 2>"$work/dev.err") \
  || { echo "bench-mqtt-broker: the simulated device did not attest: $(cat "$work/dev.err")" >&2; exit 1; }
topic=sphere/devices/$device/commands
tls=(--cafile "$data/ca.crt" --cert "$work/dev/device.crt" --key "$work/dev/device.key")
python3 -c 'import sys; n, s = int(sys.argv[1]), int(sys.argv[2]); sys.stdout.write(("x" * s + "\n") * n)' \
  "$count" "$size" >"$work/lines"

run() { # PORT: messages per second from the publisher's start to the subscriber's N-th message
  mosquitto_sub -h 127.0.0.1 -p "$1" "${tls[@]}" -i "$device-sub" -t "$topic" -q "$qos" -C "$count" -W $((count / 1000 + 30)) >/dev/null &
  local sub=$! start end
  sleep 0.5 # the subscription must be in place before the first message
  start=$(date +%s.%N)
  mosquitto_pub -h 127.0.0.1 -p "$1" "${tls[@]}" -i "$device-pub" -t "$topic" -q "$qos" -l <"$work/lines"
  wait "$sub" || { echo "bench-mqtt-broker: port $1: the subscriber did not receive all $count messages" >&2; exit 1; }
  end=$(date +%s.%N)
  python3 -c 'import sys; n, a, b = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]); print(f"{n / (b - a):.0f}")' \
    "$count" "$start" "$end"
}

echo "bench-mqtt-broker: $(nproc) CPUs, $count messages of $size bytes, QoS $qos, mTLS, $runs runs per broker"
declare -a embedded mosquitto
for i in $(seq "$runs"); do
  rate=$(run "$mosquitto_port"); mosquitto+=("$rate"); echo "run $i: mosquitto $rate msg/s"
  rate=$(run "$embedded_port"); embedded+=("$rate"); echo "run $i: embedded  $rate msg/s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m=$(median "${mosquitto[@]}") e=$(median "${embedded[@]}")
echo "bench-mqtt-broker: median mosquitto $m msg/s, embedded $e msg/s ($(python3 -c "print(f'{$e / $m:.2f}')")x)"
