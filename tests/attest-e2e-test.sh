#!/usr/bin/env bash
# test.sh suite `attest-qemu`: the device and the cloud end to end, nothing simulated.
#
# On the host: a real TPM 2.0 (swtpm) whose identity key is provisioned the way a factory
# station would (sphere-attestd provision reads the TPM-resident key; the cloud registers it),
# sphere-cloud (HTTPS API, CA, verifier with reference values computed HERE from the image
# being booted, signed with a release key), and mosquitto with TLS, client-certificate auth and
# per-device ACLs (sphere-cloud mosquitto-config). In QEMU: the OpenSphere image with that TPM
# attached (run-qemu.sh --tpm) and the cloud reachable through loopback guestfwds at 10.0.2.100.
#
# Asserted: the guest sees the TPM and uses it (not the file key); its identity is the one
# provisioned; it measures its boot into PCRs 8-12, attests with a TPM-quoted EAT, passes the
# cloud's appraisal and gets a short-lived certificate; it connects to mosquitto over mutual TLS
# with that certificate (key in the TPM) and its telemetry reaches the cloud; an app killed by
# its sandbox (seccomp) becomes an error report that the operator API returns.
#
# Usage (as root): tests/attest-e2e-test.sh [--keep] [--image-dir DIR] [--app-bin FILE]
#   --keep           keep the work directory (console log, cloud data, TPM state)
#   --image-dir DIR  boot this already-built image instead of running scripts/build-image.sh
#   --app-bin FILE   an already cross-built escape-artist instead of scripts/cross-build.sh's
# Last line: "attest-qemu: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
keep=0
image=
app=
while (($#)); do
  case "$1" in
    --keep) keep=1 ;;
    --image-dir) image=${2:?--image-dir needs a directory}; shift ;;
    --app-bin) app=${2:?--app-bin needs a file}; shift ;;
    *) echo "attest-e2e-test: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
suite=attest-qemu
. tests/check.sh
[[ $(id -u) -eq 0 ]] || fatal "must run as root"

scripts/install-host-deps.sh attest cloud >&2 || fatal "host packages"
cache=${OPENSPHERE_CACHE:-$HOME/.cache/opensphere}
work=$(mktemp -d /tmp/attest-e2e.XXXXXX)
pids=()
qemu_group=
cleanup() {
  umount "$work/mnt" 2>/dev/null || true
  [[ -n $qemu_group ]] && kill -- "-$qemu_group" 2>/dev/null
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  wait 2>/dev/null
  # The console logger writes its milestones file as it exits; let the group end first, or
  # it lands in the work dir after rm and leaves it behind.
  for _ in $(seq 50); do [[ -n $qemu_group ]] && kill -0 -- "-$qemu_group" 2>/dev/null || break; sleep 0.1; done
  if ((keep)); then echo "attest-e2e-test: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
mkdir -p "$work/mnt"

[[ -n $image ]] || image=$(scripts/build-image.sh | tail -n 1) || fatal "image build failed"
cargo build -q --locked -p sphere-cloud -p sphere-attestd -p sphere-cli || fatal "host build failed"
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
cloud_bin=$target_dir/debug/sphere-cloud
attestd_bin=$target_dir/debug/sphere-attestd
sphere=$target_dir/debug/sphere
if [[ -z $app ]]; then
  app=$(scripts/cross-build.sh --release -p escape-artist --print-dir | tail -n 1)/escape-artist || fatal "escape-artist build failed"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
cloud_port=$(free_port)
mqtt_port=$(free_port)

# --- 1. The device's TPM, provisioned on the "factory station" -------------------------------
tpm=$work/tpm
mkdir -p "$tpm"
swtpm socket --tpm2 --flags not-need-init --tpmstate "dir=$tpm" \
  --server "type=unixio,path=$work/provision.sock" --ctrl "type=unixio,path=$work/provision-ctrl.sock" &
swtpm_pid=$!
for _ in $(seq 100); do [[ -S $work/provision.sock ]] && break; sleep 0.05; done
"$attestd_bin" --config /dev/null --key "unix:$work/provision.sock" provision --json >"$work/provision.json" \
  || fatal "provisioning the TPM key failed"
swtpm_ioctl --unix "$work/provision-ctrl.sock" -s || kill "$swtpm_pid"
wait "$swtpm_pid" 2>/dev/null
device_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["device_id"])' "$work/provision.json")
check "provisioned a TPM-resident key (device $device_id)" \
  grep -q '"key_storage": "tpm2"' "$work/provision.json"

# --- 2. Reference values: computed from the image we boot, signed by a release key ----------
append="sphere.attest"
mount -t erofs -o loop,ro "$image/rootfs.erofs" "$work/mnt" || fatal "cannot mount the image's root filesystem"
python3 - "$image" "$work/mnt" "$append" >"$work/reference-values.json" <<'PY' || fatal "reference values"
import hashlib, json, os, sys
image, root, append = sys.argv[1:]
sha = lambda b: hashlib.sha256(b).hexdigest()
cmdline = open(f"{image}/cmdline.txt").read().strip() + " " + append
version = "unknown"
for line in open(f"{root}/etc/os-release"):
    if line.startswith("VERSION_ID="):
        version = line.split("=", 1)[1].strip().strip('"')
measurements = [
    {"stage": "boot-record", "component": "kernel-cmdline", "digests": [sha(cmdline.rstrip().encode())]},
    {"stage": "root-slot", "component": "rootfs", "digests": [sha(open(f"{image}/rootfs.erofs", "rb").read())]},
    {"stage": "init", "component": "sphere-init", "digests": [sha(open(f"{root}/sbin/init", "rb").read())]},
]
for name in ["sphere-appd", "sphere-sandbox-exec", "sphere-attestd"]:
    path = f"{root}/usr/bin/{name}"
    if os.path.exists(path):
        measurements.append({"stage": "daemon", "component": name, "digests": [sha(open(path, "rb").read())]})
print(json.dumps({"schema": "opensphere-reference-values-v1", "os_versions": [version],
                  "measurements": measurements, "policies": []}, indent=2))
PY
umount "$work/mnt"
cloud=$work/cloud
"$cloud_bin" init --data "$cloud" --ip 127.0.0.1 --ip 10.0.2.100 >/dev/null || fatal "sphere-cloud init"
openssl genpkey -algorithm ed25519 -out "$cloud/release.key" 2>/dev/null
openssl pkey -in "$cloud/release.key" -pubout -out "$cloud/release.pub"
"$cloud_bin" sign-reference-values "$work/reference-values.json" --key "$cloud/release.key" >/dev/null \
  || fatal "signing the reference values"

# --- 3. mosquitto (TLS, client certificates, per-device ACL) and sphere-cloud ---------------
"$cloud_bin" mosquitto-config --data "$cloud" --port "$mqtt_port" >/dev/null || fatal "mosquitto-config"
sed -i "s/^listener $mqtt_port\$/listener $mqtt_port 127.0.0.1/" "$cloud/mosquitto.conf"
printf 'user root\nlog_dest file %s\npersistence false\n' "$cloud/mosquitto.log" >>"$cloud/mosquitto.conf"
mosquitto -c "$cloud/mosquitto.conf" >/dev/null 2>&1 &
pids+=($!)
wait_port "$mqtt_port" || fatal "mosquitto did not start ($(tail -3 "$cloud/mosquitto.log"))"
"$cloud_bin" serve --data "$cloud" --listen "127.0.0.1:$cloud_port" --mqtt-broker "127.0.0.1:$mqtt_port" \
  --reference-values "$work/reference-values.json" --reference-key "$cloud/release.pub" \
  --certificate-lifetime 1h 2>"$work/cloud.log" &
pids+=($!)
wait_port "$cloud_port" || fatal "sphere-cloud did not start ($(tail -3 "$work/cloud.log"))"
operator() { # METHOD PATH [JSON]: the operator API, as an operator's tool would call it
  local args=(-sS --fail-with-body --cacert "$cloud/ca.crt" -H 'Content-Type: application/json' -X "$1"
    -H "Authorization: Bearer $(tr -d '\n' <"$cloud/operator.token")")
  [[ -n ${3:-} ]] && args+=(--data "$3")
  curl "${args[@]}" "https://127.0.0.1:$cloud_port$2"
}
register=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps({"public_key_pem": d["public_key_pem"], "description": "QEMU e2e"}))' "$work/provision.json")
operator POST /v1/devices "$register" >"$work/register.json" 2>&1
check "device registered with the cloud" grep -q "$device_id" "$work/register.json"

# --- 4. A fresh data disk: the provisioned cloud configuration, development mode -----------
truncate -s 64M "$work/data.ext4"
mkfs.ext4 -q -F -L sphere-data "$work/data.ext4"
mount -o loop "$work/data.ext4" "$work/mnt" || fatal "cannot mount the data disk"
mkdir -p "$work/mnt/sphere/attestd"
touch "$work/mnt/sphere/development-mode"
cp "$cloud/ca.crt" "$work/mnt/sphere/attestd/cloud-ca.pem"
cat >"$work/mnt/sphere/attestd/config.json" <<JSON
{"cloud": {"url": "https://10.0.2.100:$cloud_port", "ca_file": "/data/sphere/attestd/cloud-ca.pem"},
 "mqtt": {"host": "10.0.2.100", "port": $mqtt_port},
 "telemetry_interval_s": 5, "violation_poll_s": 2, "retry_s": 2}
JSON
umount "$work/mnt"

# --- 5. Boot -------------------------------------------------------------------------------
log=$work/console.log
# guestfwd "cmd:" runs socat for EACH guest connection (the "tcp:" form is one connection made
# when QEMU starts, so a second HTTPS request or an MQTT reconnect would go nowhere).
# setsid: the QEMU machinery is its own process group, ended as a whole at cleanup.
setsid scripts/run-qemu.sh --image-dir "$image" --data "$work/data.ext4" --tpm "$tpm" --append "$append" \
  --guestfwd "tcp:10.0.2.100:$cloud_port-cmd:socat STDIO TCP:127.0.0.1:$cloud_port" \
  --guestfwd "tcp:10.0.2.100:$mqtt_port-cmd:socat STDIO TCP:127.0.0.1:$mqtt_port" \
  --appd-socket "$work/appd.sock" --timeout 300 --log "$log" --quiet 2>"$work/run-qemu.err" &
qemu_group=$!
wait_for() { # SECONDS PATTERN: wait for PATTERN in the console log
  for _ in $(seq $(($1 * 2))); do grep -q "$2" "$log" 2>/dev/null && return 0; sleep 0.5; done
  return 1
}
wait_for 120 'sphere-attestd: attestation .* passed; certificate' || true
check "guest kernel found the TPM" grep -q 'tpm_tis.*2.0 TPM' "$log"
check "attestd uses the TPM key, not the file key" grep -q "sphere-attestd: device $device_id key tpm2" "$log"
check "no file-key warning" bash -c "! grep -q 'identity key is a FILE' '$log'"
check "attestation passed and a certificate was issued" grep -q 'sphere-attestd: attestation .* passed; certificate' "$log"
operator GET "/v1/devices/$device_id/attestations" >"$work/attestations.json" 2>&1
check "the cloud recorded a passed attestation" grep -q '"passed": *true' "$work/attestations.json"
wait_for 60 'sphere-attestd: mqtt connected' || true
check "connected to mosquitto over mutual TLS" grep -q 'sphere-attestd: mqtt connected' "$log"
telemetry_ok() { operator GET "/v1/devices/$device_id" | grep -q '"key_storage": *"tpm2"'; }
for _ in $(seq 60); do telemetry_ok && break; sleep 1; done
check "telemetry reached the cloud (operator API)" telemetry_ok

# --- 6. An error report from a real sandbox kill ------------------------------------------
id=5ec0bb11-7e57-4a11-9e55-000000000e2e
mkdir -p "$work/app/bin"
install -m 0755 "$app" "$work/app/bin/app"
cat >"$work/app/app_manifest.json" <<JSON
{"SchemaVersion": 1, "Name": "dies-by-seccomp", "ComponentId": "$id", "EntryPoint": "/bin/app",
 "CmdArgs": ["die-by-seccomp"], "Capabilities": {}}
JSON
"$sphere" app package "$work/app" -o "$work/app.sphpkg" --key "$cache/keys/dev-signing.key.pem" >/dev/null \
  || fatal "packaging the test app"
timeout 180 "$sphere" app install "$work/app.sphpkg" --socket "$work/appd.sock" >"$work/install.out" 2>&1
check "test app installed over the development port" grep -qi "$id\|installed" "$work/install.out"
errors_ok() { operator GET "/v1/errors?device=$device_id" | grep -q "\"app_id\": *\"$id\""; }
for _ in $(seq 90); do errors_ok && break; sleep 1; done
check "the app's sandbox violation came back from the operator API as an error report" errors_ok
operator GET "/v1/errors?device=$device_id" >"$work/errors.json" 2>&1
check "the report says what happened (sandbox violation or crash)" grep -Eq '"kind": *"(sandbox-violation|crash)"' "$work/errors.json"
if ((failed)); then
  echo "--- console (attestd, appd lines) ---" >&2
  grep -E 'attestd|appd|tpm' "$log" | tail -40 >&2
  echo "--- cloud ---" >&2
  tail -20 "$work/cloud.log" >&2
fi
finish
