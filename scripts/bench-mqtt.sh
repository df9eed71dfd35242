#!/usr/bin/env bash
# MQTT telemetry throughput: the device's MQTT client (sphere-attestd's rumqttc client, the same
# options the daemon uses) against mosquitto_pub, through the same local mosquitto broker in the
# same run.
#
# Usage: scripts/bench-mqtt.sh [--count N] [--size BYTES] [--runs R]
#   --count N      messages per run (default 200000)
#   --size BYTES   payload size (default 64, a small telemetry document)
#   --runs R       runs per publisher, alternating, median reported (default 3)
#
# Both publishers send QoS 0 messages on one connection over plain TCP on loopback (TLS would
# measure the cipher, not the client). The clock runs from the publisher's start until a
# mosquitto_sub subscriber has received all N messages, so a publisher cannot look fast by
# buffering: a run that loses messages fails. Prints one line per run and a summary with the
# ratio (goal: device client >= 1.0x mosquitto_pub); figures go to docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
count=200000
size=64
runs=3
while (($#)); do
  case "$1" in
    --count) count=${2:?}; shift ;;
    --size) size=${2:?}; shift ;;
    --runs) runs=${2:?}; shift ;;
    -h|--help) sed -n '2,/^set -euo pipefail/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "bench-mqtt: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ $count =~ ^[1-9][0-9]*$ && $size =~ ^[1-9][0-9]*$ && $runs =~ ^[1-9][0-9]*$ ]] \
  || { echo "bench-mqtt: --count, --size and --runs want positive integers" >&2; exit 2; }

scripts/install-host-deps.sh attest >&2
echo "bench-mqtt: building sphere-attestd (release)" >&2
cargo build -q --release --locked -p sphere-attestd
client=${CARGO_TARGET_DIR:-$PWD/target}/release/sphere-attestd

work=$(mktemp -d /tmp/bench-mqtt.XXXXXX)
broker_pid=
trap '[[ -n $broker_pid ]] && kill "$broker_pid" 2>/dev/null; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/mosquitto.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
log_dest none
EOF
[[ $(id -u) -eq 0 ]] && echo "user root" >>"$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" &
broker_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done

# mosquitto_pub -l sends one message per stdin line: N lines of exactly SIZE bytes.
python3 -c 'import sys; n, s = int(sys.argv[1]), int(sys.argv[2]); sys.stdout.write(("x" * s + "\n") * n)' \
  "$count" "$size" >"$work/lines"

# run NAME COMMAND...: time from the publisher's start to the subscriber's N-th message.
run() {
  local name=$1; shift
  mosquitto_sub -h 127.0.0.1 -p "$port" -t bench/telemetry -C "$count" -W 300 >/dev/null &
  local sub=$!
  sleep 0.5 # the subscription must be in place before the first message
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null
  if ! wait "$sub"; then
    echo "bench-mqtt: $name: the subscriber did not receive all $count messages" >&2
    exit 1
  fi
  end=$(date +%s.%N)
  python3 -c 'import sys; n, a, b = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]); print(f"{n / (b - a):.0f}")' \
    "$count" "$start" "$end"
}

declare -a ours theirs
for i in $(seq "$runs"); do
  rate=$(run mosquitto_pub sh -c "mosquitto_pub -h 127.0.0.1 -p $port -t bench/telemetry -q 0 -l <'$work/lines'")
  theirs+=("$rate")
  echo "run $i: mosquitto_pub   $rate msg/s"
  rate=$(run device-client "$client" bench-publish --host 127.0.0.1 --port "$port" --topic bench/telemetry \
    --count "$count" --size "$size")
  ours+=("$rate")
  echo "run $i: device client   $rate msg/s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m_ours=$(median "${ours[@]}")
m_theirs=$(median "${theirs[@]}")
ratio=$(python3 -c 'import sys; print(f"{float(sys.argv[1]) / float(sys.argv[2]):.2f}")' "$m_ours" "$m_theirs")
echo "summary: $count messages of $size bytes, QoS 0, loopback, median of $runs runs:" \
  "device client $m_ours msg/s, mosquitto_pub $m_theirs msg/s, ratio ${ratio}x (goal >= 1.0x)"
