#!/usr/bin/env bash
# The operator's `sphere` fleet commands (sphere device / group / errors) against a real
# sphere-cloud: the built `sphere` binary talks HTTPS (the cloud's own CA, real TLS) to
# `sphere-cloud serve` (SQLite), which is connected to a real mosquitto (TLS, client
# certificates, per-device ACLs). Devices are sphere-cloud-sim devices (software keys) that
# register, attest and get certificates over the same API sphere-attestd uses; an error report
# is published over MQTT with mosquitto_pub and the device's own certificate.
#
# Asserted: text and --json output of every read command (JSON parsed and its fields checked),
# device registration by key, groups (create, assign, set and clear a release, which also
# reaches the device as a retained MQTT message), error-report queries and filters, certificate
# and device revocation, and the failures an operator meets: an untrusted server certificate,
# an unknown device, a wrong or missing operator token, an unreachable cloud, a malformed id.
# Each must exit non-zero with a message that says what is wrong.
#
# Called by tests/cloud-test.sh (suite `cloud`); runs alone too. Takes about 10 s once built.
# Usage: tests/cloud-cli-test.sh [--keep]     (--keep: keep the work directory)
# Last line: "cloud-cli: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
keep=0
[[ ${1:-} == --keep ]] && keep=1
suite=cloud-cli
. tests/check.sh

scripts/install-host-deps.sh cloud >&2 || fatal "host packages (mosquitto, mosquitto-clients)"
cargo build -q --locked -p sphere-cloud -p sphere-cli || fatal "build failed"
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
cloud_bin=$target_dir/debug/sphere-cloud
sim=$target_dir/debug/sphere-cloud-sim
sphere=$target_dir/debug/sphere

work=$(mktemp -d /tmp/cloud-cli.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  wait 2>/dev/null
  if ((keep)); then echo "cloud-cli-test: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
cloud_port=$(free_port)
mqtt_port=$(free_port)

# --- The cloud: CA, reference values for the simulated devices, mosquitto, sphere-cloud -----
cloud=$work/cloud
"$cloud_bin" init --data "$cloud" >/dev/null || fatal "sphere-cloud init"
openssl genpkey -algorithm ed25519 -out "$cloud/release.key" 2>/dev/null || fatal "release key"
openssl pkey -in "$cloud/release.key" -pubout -out "$cloud/release.pub" || fatal "release public key"
"$sim" reference-values >"$work/reference-values.json" || fatal "reference values"
"$cloud_bin" sign-reference-values "$work/reference-values.json" --key "$cloud/release.key" >/dev/null \
  || fatal "signing the reference values"
"$cloud_bin" mosquitto-config --data "$cloud" --port "$mqtt_port" >/dev/null || fatal "mosquitto-config"
sed -i "s/^listener $mqtt_port\$/listener $mqtt_port 127.0.0.1/" "$cloud/mosquitto.conf"
# As root mosquitto would switch to its own user, which cannot read the 0600 keys here.
[[ $(id -u) -eq 0 ]] && echo 'user root' >>"$cloud/mosquitto.conf"
printf 'log_dest file %s\npersistence false\n' "$cloud/mosquitto.log" >>"$cloud/mosquitto.conf"
mosquitto -c "$cloud/mosquitto.conf" >/dev/null 2>&1 &
pids+=($!)
wait_port "$mqtt_port" || fatal "mosquitto did not start ($(tail -3 "$cloud/mosquitto.log"))"
"$cloud_bin" serve --data "$cloud" --listen "127.0.0.1:$cloud_port" --mqtt-broker "127.0.0.1:$mqtt_port" \
  --reference-values "$work/reference-values.json" --reference-key "$cloud/release.pub" 2>"$work/cloud.log" &
pids+=($!)
wait_port "$cloud_port" || fatal "sphere-cloud did not start ($(tail -3 "$work/cloud.log"))"
url=https://127.0.0.1:$cloud_port

# Every fleet command below finds the cloud through the environment, as docs/sphere-cli.md says.
export SPHERE_CLOUD_URL=$url SPHERE_CLOUD_CA=$cloud/ca.crt SPHERE_CLOUD_TOKEN_FILE=$cloud/operator.token
unset SPHERE_CLOUD_TOKEN

# run NAME ARGS...: `sphere ARGS`, stdout in $work/NAME.out, stderr in NAME.err, exit code in NAME.rc
# (run_raw NAME COMMAND...: the same for any command, e.g. `env -u VAR sphere ...`).
run_raw() {
  local name=$1; shift
  "$@" >"$work/$name.out" 2>"$work/$name.err"
  echo $? >"$work/$name.rc"
}
run() { local name=$1; shift; run_raw "$name" "$sphere" "$@"; }
# text NAME REGEX...: NAME exited 0 and every REGEX matches a line of its stdout.
text() {
  local name=$1; shift
  [[ $(cat "$work/$name.rc") == 0 ]] || return 1
  for re in "$@"; do grep -q -- "$re" "$work/$name.out" || return 1; done
}
# json NAME PYTHON-EXPRESSION [EXIT]: NAME exited 0 (or EXIT) and the expression over `d` (its
# stdout, parsed) holds.
json() {
  [[ $(cat "$work/$1.rc") == "${3:-0}" ]] || return 1
  python3 - "$work/$1.out" "$2" <<'PY'
import json, sys, time
d = json.load(open(sys.argv[1]))
now = time.time()
sys.exit(0 if eval("(" + sys.argv[2] + ")") else 1)
PY
}
# fails NAME EXIT REGEX: NAME exited with EXIT and its stderr matches REGEX (case-insensitive,
# across lines).
fails() {
  [[ $(cat "$work/$1.rc") == "$2" ]] && grep -qiz -- "$3" "$work/$1.err" && return 0
  echo "     exit $(cat "$work/$1.rc"), stderr: $(head -c 400 "$work/$1.err")"
  return 1
}
field() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$work/$1.out" "$2"; }

# --- Groups and devices ---------------------------------------------------------------------
run group-create --json group create field --release 1.0.0 --description 'units in the field'
check "group create --json: name, release, description, no devices yet" \
  json group-create 'd["name"] == "field" and d["release"] == "1.0.0" and d["description"] == "units in the field" and d["devices"] == 0'
run group-create-again group create field
check "creating an existing group fails (exit 1) saying it exists" fails group-create-again 1 'group field exists'
run group-bad-name group create 'no spaces'
check "an invalid group name is refused (exit 1) with the rule" fails group-bad-name 1 'group names are 1-64 of'

dev1=$("$sim" device --url "$url" --data "$cloud" --out "$work/dev1" --group field 2>"$work/dev1.err") \
  || fatal "simulated device 1 did not attest: $(cat "$work/dev1.err")"
dev2=$("$sim" device --url "$url" --data "$cloud" --out "$work/dev2" --p256 2>"$work/dev2.err") \
  || fatal "simulated device 2 did not attest: $(cat "$work/dev2.err")"

run list device list
check "device list (text): both devices, dev1 in group field with a passed attestation, the count" \
  text list "^$dev2 " "^$dev1  *field  *.* passed " '^2 device(s)$'
run list-json --json device list
check "device list --json: 2 devices, both attested and not revoked, dev1 in field, dev2 in none" \
  json list-json "len(d) == 2 and all(x['last_attestation_passed'] is True and x['revoked_at'] is None for x in d)
    and {x['id']: x['group'] for x in d} == {'$dev1': 'field', '$dev2': None}"
run list-group --json device list --group field
check "device list --group field --json: only dev1" json list-group "[x['id'] for x in d] == ['$dev1']"

run show device show "$dev1"
check "device show (text): id, group, Ed25519 key, passed attestation" \
  text show "^device *$dev1\$" '^group *field$' '^key *[Ee]d25519' '^attestation *passed '
run show-json --json device show "$dev2"
check "device show --json: dev2 has a P-256 key and attested within the last minute" \
  json show-json "d['id'] == '$dev2' and 'p256' in d['algorithm'].lower().replace('-', '')
    and d['last_attestation_passed'] is True and now - 60 <= d['last_attestation_at'] <= now + 5"
run attest --json device attest "$dev1"
check "device attest --json: one passed attestation without failure reasons" \
  json attest "len(d) == 1 and d[0]['passed'] is True and d[0]['reasons'] == []"
run certs --json device certificate "$dev1"
check "device certificate --json: one certificate of dev1, not revoked, expiring in about 24 h" \
  json certs "len(d) == 1 and d[0]['revoked_at'] is None and d[0]['device_id'] == '$dev1'
    and 23 * 3600 < d[0]['not_after'] - now <= 24 * 3600 + 60"
serial=$(field certs 'd[0]["serial"]')
run certs-text device certificate "$dev1"
check "device certificate (text): that serial, marked valid" text certs-text "^$serial *valid "

run set-group --json device set-group "$dev2" field
check "device set-group --json: dev2 now in field" json set-group "d['id'] == '$dev2' and d['group'] == 'field'"
run group-show --json group show field
check "group show --json: field holds 2 devices, release 1.0.0" json group-show "d['devices'] == 2 and d['release'] == '1.0.0'"
run set-release --json group set-release field 1.1.0
check "group set-release --json: release 1.1.0" json set-release "d['name'] == 'field' and d['release'] == '1.1.0'"
run group-list group list
check "group list (text): field, release 1.1.0, 2 devices" text group-list '^field  *release 1.1.0  *2 device(s)'
# A device learns its release from a retained message on its own updates topic.
timeout 10 mosquitto_sub -h 127.0.0.1 -p "$mqtt_port" --cafile "$cloud/ca.crt" \
  --cert "$work/dev2/device.crt" --key "$work/dev2/device.key" -i "$dev2" \
  -t "sphere/devices/$dev2/updates" -C 1 -W 8 >"$work/updates.out" 2>"$work/updates.err"
check "the new release reached dev2 over MQTT (retained updates message)" grep -q '"release": *"1.1.0"' "$work/updates.out"
run clear-release --json group set-release field --none
check "group set-release --none --json: release cleared" json clear-release "d['release'] is None"
run clear-group --json device set-group "$dev2" --none
check "device set-group --none --json: dev2 in no group" json clear-group "d['group'] is None"

# A device registered by its identity key with `sphere device register` (a key made by `sphere
# keys new`: Ed25519, SPKI PEM); its id is the SHA-256 of the SubjectPublicKeyInfo.
"$sphere" keys new factory-unit --dir "$work" >/dev/null 2>&1 || fatal "sphere keys new"
dev3=$(openssl pkey -pubin -in "$work/factory-unit.pub" -outform DER | sha256sum | cut -d' ' -f1)
run register --json device register --public-key "$work/factory-unit.pub" --group field --description 'bench unit 7'
check "device register --json: id = SHA-256 of the key, group and description as given, never attested" \
  json register "d['id'] == '$dev3' and d['group'] == 'field' and d['description'] == 'bench unit 7'
    and d['last_attestation_at'] is None and d['revoked_at'] is None"
run register-again device register --public-key "$work/factory-unit.pub"
check "registering the same key again: exit 1, the cloud says why" fails register-again 1 "sphere-cloud: device $dev3 is already registered"
run register-not-a-key device register --public-key "$work/factory-unit.key"
check "registering a private key file instead of a public key: refused (exit 1)" fails register-not-a-key 1 'not an Ed25519 or P-256 public key'
run show-new device show "$dev3"
check "device show (text) for the new device: 'never attested', its description" \
  text show-new '^attestation *never attested$' '^description *bench unit 7$'
run attest-new device attest "$dev3"
check "device attest (text) for it: 'no attestations yet'" text attest-new '^no attestations yet$'

# --- Error reports --------------------------------------------------------------------------
app=5ec0bb11-7e57-4a11-9e55-0000000c11e0
report="{\"kind\": \"crash\", \"app_id\": \"$app\", \"count\": 3, \"detail\": \"cli-test: exit 139 (SIGSEGV)\", \"occurred_at\": $(date +%s)}"
mosquitto_pub -h 127.0.0.1 -p "$mqtt_port" --cafile "$cloud/ca.crt" \
  --cert "$work/dev1/device.crt" --key "$work/dev1/device.key" -i "$dev1" -q 1 \
  -t "sphere/devices/$dev1/errors" -m "$report" 2>"$work/pub.err" || fatal "mosquitto_pub: $(cat "$work/pub.err")"
for _ in $(seq 50); do
  run errors --json errors list --device "$dev1"
  json errors 'len(d) >= 1' 2>/dev/null && break
  sleep 0.2
done
check "errors list --device --json: the crash report with its app, count and detail" \
  json errors "len(d) == 1 and d[0]['device_id'] == '$dev1' and d[0]['kind'] == 'crash'
    and d[0]['app_id'] == '$app' and d[0]['count'] == 3 and d[0]['detail'] == 'cli-test: exit 139 (SIGSEGV)'
    and now - 60 <= d[0]['received_at'] <= now + 5"
run errors-text errors list --kind crash
check "errors list --kind crash (text): kind, count, app, device and detail" \
  text errors-text "crash .* 3x app $app device ${dev1:0:12}  cli-test: exit 139 (SIGSEGV)"
run errors-filtered --json errors list --kind firewall-violation
check "errors list --kind firewall-violation --json: filtered out" json errors-filtered 'd == []'
run errors-app --json errors list --app "$app" --limit 1
check "errors list --app --limit 1 --json: the report (filter by app)" json errors-app "len(d) == 1 and d[0]['app_id'] == '$app'"
run errors-other-device --json errors list --device "$dev2"
check "errors list --device dev2 --json: none (filter by device)" json errors-other-device 'd == []'
run errors-future --json errors list --since $(($(date +%s) + 3600))
check "errors list --since <in an hour> --json: none (filter by time)" json errors-future 'd == []'
run errors-bad-kind errors list --kind explosion
check "errors list with an unknown --kind: refused (exit 2) with the kinds there are" \
  fails errors-bad-kind 2 "invalid value 'explosion' for '--kind.*possible values: crash, sandbox-violation"

# --- Revocation -----------------------------------------------------------------------------
run dev2-certs --json device certificate "$dev2"
dev2_serial=$(field dev2-certs 'd[0]["serial"]')
run revoke-other device certificate "$dev1" --revoke "$dev2_serial"
check "revoking dev2's certificate under dev1's id is refused (exit 1)" \
  fails revoke-other 1 "certificate $dev2_serial is not one of device $dev1's"
run dev2-certs-still --json device certificate "$dev2"
check "... and left that certificate valid" json dev2-certs-still "d[0]['revoked_at'] is None"
run revoke-cert --json device certificate "$dev2" --revoke "$dev2_serial"
check "device certificate --revoke SERIAL --json: that certificate revoked" \
  json revoke-cert "d['serial'] == '$dev2_serial' and d['revoked_at'] is not None"
run dev2-certs-after device certificate "$dev2"
check "device certificate (text) then shows it revoked" text dev2-certs-after "^$dev2_serial *revoked "

run revoke --json device revoke "$dev1"
check "device revoke --json: revoked_at set" json revoke "d['id'] == '$dev1' and d['revoked_at'] is not None"
run show-revoked device show "$dev1"
check "device show (text) then says REVOKED" text show-revoked '^attestation *REVOKED'
run certs-revoked --json device certificate "$dev1"
check "every certificate of the revoked device is revoked, $serial among them" \
  json certs-revoked "len(d) >= 1 and all(c['revoked_at'] is not None for c in d) and '$serial' in [c['serial'] for c in d]"
run list-revoked --json device list
check "device list --json: dev1 revoked, dev2 and dev3 not" \
  json list-revoked "{x['id']: x['revoked_at'] is not None for x in d} == {'$dev1': True, '$dev2': False, '$dev3': False}"

# --- What an operator gets wrong ------------------------------------------------------------
unknown=$(printf '0%.0s' $(seq 64))
run unknown device show "$unknown"
check "unknown device: exit 1, 'no device … is registered'" fails unknown 1 "no device $unknown is registered"
run unknown-attest device attest "$unknown"
check "attestations of an unknown device: exit 1, not an empty history" fails unknown-attest 1 "no device $unknown is registered"
run unknown-revoke device revoke "$unknown"
check "revoking an unknown device: exit 1" fails unknown-revoke 1 "no device $unknown is registered"
run unknown-json --json device show "$unknown"
check "unknown device --json: a JSON error document (ok false, HTTP 404, code unknown-device)" \
  json unknown-json "d['ok'] is False and d['error']['kind'] == 'invalid'
    and d['error']['details'] == {'status': 404, 'code': 'unknown-device'}" 1
run unknown-group group show nosuch
check "unknown group: exit 1, 'no group nosuch'" fails unknown-group 1 'no group nosuch'
run unknown-set-group device set-group "$dev2" nosuch
check "moving a device to a group that does not exist: exit 1, the group named" fails unknown-set-group 1 'nosuch'
run traversal device show ../groups
check "a device id that would address another resource (../groups): exit 2 before any request" \
  fails traversal 2 'device id "../groups": only letters, digits'

# A server certificate from another CA: a second, unrelated CA the CLI is pointed at.
openssl req -x509 -newkey ed25519 -keyout "$work/other-ca.key" -out "$work/other-ca.crt" -days 1 -nodes \
  -subj /CN=not-the-cloud-ca 2>/dev/null || fatal "test CA"
run untrusted device list --cloud-ca "$work/other-ca.crt"
check "server certificate not signed by the given CA: exit 2, says so and names the CA file" \
  fails untrusted 2 "sphere-cloud at $url is not trusted: its certificate is not signed by the CA in $work/other-ca.crt"
run untrusted-json --json device list --cloud-ca "$work/other-ca.crt"
check "... and with --json a JSON error document, no device data" \
  json untrusted-json "d['ok'] is False and d['error']['kind'] == 'usage' and 'not trusted' in d['error']['message']" 2
run not-a-ca device list --cloud-ca "$cloud/https.key"
check "a --cloud-ca file without a certificate (a key): exit 2, says so" fails not-a-ca 2 'no PEM certificate in it'

echo wrong-token >"$work/bad.token"
run bad-token device list --token-file "$work/bad.token"
check "a wrong operator token (file): refused, exit 2, names where it came from" \
  fails bad-token 2 "sphere-cloud refused the operator token from $work/bad.token"
SPHERE_CLOUD_TOKEN=wrong-token run_raw bad-token-env env -u SPHERE_CLOUD_TOKEN_FILE "$sphere" device list
check "a wrong operator token (SPHERE_CLOUD_TOKEN): refused, exit 2" \
  fails bad-token-env 2 'refused the operator token from SPHERE_CLOUD_TOKEN'
SPHERE_CLOUD_TOKEN=$(cat "$cloud/operator.token") run_raw good-token-env env -u SPHERE_CLOUD_TOKEN_FILE "$sphere" --json group list
check "the right token from SPHERE_CLOUD_TOKEN works" json good-token-env "[g['name'] for g in d] == ['field']"
run_raw no-token env -u SPHERE_CLOUD_TOKEN_FILE "$sphere" device list
check "no operator token at all: exit 2, says how to give one" fails no-token 2 'no operator token: give --token-file'
run plain-http device list --cloud "http://127.0.0.1:$cloud_port"
check "an http:// URL is refused (the token never goes out unencrypted): exit 2" fails plain-http 2 'must be an https:// URL'
run unreachable device list --cloud "https://127.0.0.1:$(free_port)"
check "nothing listening: exit 2, 'cannot reach sphere-cloud'" fails unreachable 2 'cannot reach sphere-cloud at https://127.0.0.1:'
finish
