#!/usr/bin/env bash
# sphere-attestd's daemon on the host against the real cloud side (part of suite `attestd`):
# swtpm as its TPM, sphere-cloud (HTTPS, CA, verifier with signed reference values computed here
# from the files the daemon measures) and mosquitto with TLS, client certificates and ACLs.
#
# Asserted: provisioning reads the TPM key; an unregistered key is refused; an error report
# queued while the broker is DOWN stays on disk, the daemon attests and gets a certificate, and
# once mosquitto is up it connects over mutual TLS, delivers the queued report (the operator API
# returns it, the outbox is empty) and its telemetry reaches the cloud; SIGTERM stops it cleanly.
#
# With --embedded-broker the broker is sphere-cloud's own (its default, no mosquitto): "broker
# down" is sphere-cloud serving with --no-mqtt, "broker up" is sphere-cloud restarted with its
# embedded broker on the same data (suite `cloud` runs this variant).
#
# Usage (as root): tests/attestd-host.sh [--keep] [--embedded-broker].
# Last line: "attestd-host: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
keep=0 embedded=0
for arg in "$@"; do
  case $arg in
    --keep) keep=1 ;;
    --embedded-broker) embedded=1 ;;
    *) echo "attestd-host: unknown argument $arg" >&2; exit 2 ;;
  esac
done
suite=attestd-host
. tests/check.sh

work=$(mktemp -d /tmp/attestd-host.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  wait 2>/dev/null
  if ((keep)); then echo "attestd-host: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

cargo build -q --locked -p sphere-cloud -p sphere-attestd || fatal "build failed"
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
cloud_bin=$target_dir/debug/sphere-cloud
attestd=$target_dir/debug/sphere-attestd
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
cloud_port=$(free_port)
mqtt_port=$(free_port)

# The TPM.
swtpm socket --tpm2 --flags not-need-init --tpmstate "dir=$work" \
  --server "type=unixio,path=$work/tpm.sock" --ctrl "type=unixio,path=$work/tpm-ctrl.sock" 2>/dev/null &
pids+=($!)
for _ in $(seq 100); do [[ -S $work/tpm.sock ]] && break; sleep 0.05; done

# What the daemon measures: a fake device root (command line, root image, init, one daemon).
head -c 65536 /dev/urandom >"$work/rootfs.img"
echo "console=ttyAMA0 sphere.root=$work/rootfs.img" >"$work/cmdline"
printf 'init-binary' >"$work/init"
printf 'appd-binary' >"$work/appd"
printf 'NAME=OpenSphere\nVERSION_ID=0.1.0\n' >"$work/os-release"
cloud=$work/cloud
cat >"$work/attestd.json" <<JSON
{"key": "unix:$work/tpm.sock", "state_dir": "$work/state", "run_dir": "$work/run",
 "os_release": "$work/os-release",
 "cloud": {"url": "https://127.0.0.1:$cloud_port", "ca_file": "$cloud/ca.crt"},
 "mqtt": {"host": "127.0.0.1", "port": $mqtt_port},
 "telemetry_interval_s": 1, "violation_poll_s": 1, "retry_s": 1, "appd_socket": "$work/no-appd.sock",
 "measure": {"cmdline": "$work/cmdline", "mountinfo": null, "init": "$work/init",
             "daemons": [["sphere-appd", "$work/appd"]], "app_store": "$work/apps", "board": null}}
JSON
ad() { "$attestd" --config "$work/attestd.json" --cmdline "$work/cmdline" "$@"; }

ad provision --json >"$work/provision.json" || fatal "provision"
device_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["device_id"])' "$work/provision.json")
check "provision reads the TPM key" grep -q '"key_storage": "tpm2"' "$work/provision.json"

python3 - "$work" >"$work/reference-values.json" <<'PY'
import hashlib, json, sys
w = sys.argv[1]
sha = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
cmdline = open(f"{w}/cmdline").read().rstrip().encode()
print(json.dumps({"schema": "opensphere-reference-values-v1", "os_versions": ["0.1.0"], "measurements": [
    {"stage": "boot-record", "component": "kernel-cmdline", "digests": [hashlib.sha256(cmdline).hexdigest()]},
    {"stage": "root-slot", "component": "rootfs", "digests": [sha(f"{w}/rootfs.img")]},
    {"stage": "init", "component": "sphere-init", "digests": [sha(f"{w}/init")]},
    {"stage": "daemon", "component": "sphere-appd", "digests": [sha(f"{w}/appd")]}]}))
PY
"$cloud_bin" init --data "$cloud" >/dev/null || fatal "sphere-cloud init"
openssl genpkey -algorithm ed25519 -out "$cloud/release.key" 2>/dev/null
openssl pkey -in "$cloud/release.key" -pubout -out "$cloud/release.pub"
"$cloud_bin" sign-reference-values "$work/reference-values.json" --key "$cloud/release.key" >/dev/null || fatal "sign"
serve() { # MQTT arguments of `sphere-cloud serve`
  "$cloud_bin" serve --data "$cloud" --listen "127.0.0.1:$cloud_port" "$@" \
    --reference-values "$work/reference-values.json" --reference-key "$cloud/release.pub" 2>>"$work/cloud.log" &
  cloud_pid=$!
  pids+=($cloud_pid)
  wait_port "$cloud_port" || fatal "sphere-cloud did not start"
}
if ((embedded)); then
  serve --no-mqtt
else
  "$cloud_bin" mosquitto-config --data "$cloud" --port "$mqtt_port" >/dev/null || fatal "mosquitto-config"
  sed -i "s/^listener $mqtt_port\$/listener $mqtt_port 127.0.0.1/" "$cloud/mosquitto.conf"
  printf 'user root\nlog_dest file %s\npersistence false\n' "$cloud/mosquitto.log" >>"$cloud/mosquitto.conf"
  serve --mqtt-broker "127.0.0.1:$mqtt_port"
fi
operator() { # METHOD PATH [JSON]
  local args=(-sS --fail-with-body --cacert "$cloud/ca.crt" -H 'Content-Type: application/json' -X "$1"
    -H "Authorization: Bearer $(tr -d '\n' <"$cloud/operator.token")")
  [[ -n ${3:-} ]] && args+=(--data "$3")
  curl "${args[@]}" "https://127.0.0.1:$cloud_port$2"
}

# Before registration the cloud refuses the device (exit 1: refused, not "could not run").
ad attest >"$work/attest-unknown.out" 2>&1
status=$?
check "an unregistered device is refused (exit $status)" test "$status" -eq 1
register=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps({"public_key_pem": d["public_key_pem"]}))' "$work/provision.json")
operator POST /v1/devices "$register" >"$work/register.json" 2>&1
check "device registered" grep -q "$device_id" "$work/register.json"

# An error report made while offline: queued on disk.
ad report --kind crash --app 11111111-2222-3333-4444-555555555555 --detail "signal 11 (offline)" >/dev/null
check "report queued in the outbox while offline" test "$(ls "$work/state/outbox" | grep -c '\.msg$')" -eq 1

"$attestd" --config "$work/attestd.json" --cmdline "$work/cmdline" serve >"$work/attestd.out" 2>&1 &
attestd_pid=$!
pids+=($attestd_pid)
for _ in $(seq 100); do grep -q 'certificate .* valid until' "$work/attestd.out" && break; sleep 0.2; done
check "daemon attested and got a certificate" grep -q 'attestation .* passed; certificate' "$work/attestd.out"
check "certificate stored" test -s "$work/state/device.crt"
sleep 2
check "broker down: the report is still queued" test "$(ls "$work/state/outbox" | grep -c '\.msg$')" -eq 1

if ((embedded)); then
  kill "$cloud_pid"; wait "$cloud_pid" 2>/dev/null
  serve --mqtt-listen "127.0.0.1:$mqtt_port"
  wait_port "$mqtt_port" || fatal "the embedded broker did not start"
else
  mosquitto -c "$cloud/mosquitto.conf" >/dev/null 2>&1 &
  pids+=($!)
  wait_port "$mqtt_port" || fatal "mosquitto did not start"
fi
errors_ok() { operator GET "/v1/errors?device=$device_id" | grep -q 'signal 11 (offline)'; }
for _ in $(seq 60); do errors_ok && break; sleep 0.5; done
check "connected over mutual TLS" grep -q "mqtt connected to 127.0.0.1:$mqtt_port as $device_id" "$work/attestd.out"
check "the queued report reached the operator API once the broker was up" errors_ok
check "outbox emptied after the broker's PUBACK" test "$(ls "$work/state/outbox" | grep -c '\.msg$')" -eq 0
telemetry_ok() { operator GET "/v1/devices/$device_id" | grep -q '"key_storage": *"tpm2"'; }
for _ in $(seq 20); do telemetry_ok && break; sleep 0.5; done
check "telemetry reached the cloud" telemetry_ok
kill -TERM "$attestd_pid"
wait "$attestd_pid"
status=$?
check "SIGTERM stops the daemon cleanly (exit $status)" test "$status" -eq 0
((failed)) && { tail -20 "$work/attestd.out" >&2; tail -10 "$work/cloud.log" >&2; }
finish
