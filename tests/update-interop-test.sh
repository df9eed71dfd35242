#!/usr/bin/env bash
# TUF interoperability with the reference implementation, python-tuf (PyPI `tuf`, pinned,
# installed into a venv here):
#   1. a repository written by python-tuf (consistent snapshots, a timestamp-key rotation to
#      root v2) is accepted by sphere-updated, which installs its OS image into slot B;
#   2. a repository written by `sphere update repo` (with a key rotation) is accepted by
#      python-tuf's ngclient, which downloads the target and sees our custom metadata.
# Both over HTTPS (tests/update-server.py, a test CA).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
scripts/install-host-deps.sh update >&2
TUF_VERSION=7.0.1
SSL_VERSION=1.6.0

if [[ -n ${SPHERE_UPDATE_BIN:-} ]]; then
  BIN=$SPHERE_UPDATE_BIN
else
  cargo build --locked -q -p sphere-updated -p sphere-cli
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
fi
W=$(mktemp -d /tmp/update-interop.XXXXXX)
SERVER_PID=
cleanup() {
  [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
pass=0
fail=0
ok() { echo "  ok: $*"; pass=$((pass + 1)); }
bad() { echo "  FAIL: $*"; fail=$((fail + 1)); }

# The venv is cached between runs (pinned versions; --no-deps-free resolution is pip's).
VENV=${SPHERE_TUF_VENV:-$ROOT/target/python-tuf-$TUF_VERSION}
if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c "import tuf; assert tuf.__version__ == '$TUF_VERSION'" 2>/dev/null; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "tuf==$TUF_VERSION" "securesystemslib[crypto]==$SSL_VERSION"
fi
PY=$VENV/bin/python

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/ca.key" -out "$W/ca.pem" \
  -days 2 -subj /CN=opensphere-test-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/server.key" -out "$W/server.csr" \
  -subj /CN=127.0.0.1 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$W/ext.cnf"
openssl x509 -req -in "$W/server.csr" -CA "$W/ca.pem" -CAkey "$W/ca.key" -CAcreateserial \
  -out "$W/server.pem" -days 2 -extfile "$W/ext.cnf" 2>/dev/null
serve() { # DIR
  [[ -n $SERVER_PID ]] && { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }
  rm -f "$W/port"
  python3 tests/update-server.py "$1" --cert "$W/server.pem" --key "$W/server.key" --port-file "$W/port" 2>>"$W/server.log" &
  SERVER_PID=$!
  for _ in $(seq 50); do [[ -s $W/port ]] && break; sleep 0.1; done
  PORT=$(cat "$W/port")
}

echo "== TUF interoperability with python-tuf $TUF_VERSION"

# 1. python-tuf's repository -> sphere-updated.
head -c $((3 << 20)) /dev/urandom >"$W/os-7.img"
"$PY" tests/update-interop.py make-repo "$W/py-repo" "$W/os-7.img" >/dev/null
serve "$W/py-repo"
D=$W/device
mkdir -p "$D"
echo "slot A" >"$D/slot-a"
cat >"$D/config.json" <<JSON
{
  "metadata_url": "https://127.0.0.1:$PORT/metadata/",
  "targets_url": "https://127.0.0.1:$PORT/targets/",
  "trusted_root": "$W/py-repo/metadata/1.root.json",
  "ca_certificates": "$W/ca.pem",
  "hardware": "qemu-a7",
  "state_dir": "$D/state",
  "min_version": "$D/min-version",
  "m4_dir": "$D/m4",
  "slots": {"bootenv": "$D/bootenv", "slot_a": "$D/slot-a", "slot_b": "$D/slot-b", "booted": "a"}
}
JSON
"$BIN/sphere-updated" --config "$D/config.json" init-record >/dev/null
if "$BIN/sphere-updated" --config "$D/config.json" install >"$W/out" 2>"$W/err" && cmp -s "$D/slot-b" "$W/os-7.img"; then
  ok "python-tuf repository (consistent snapshots, root v1 -> v2 key rotation) accepted: release py-7 installed into slot B"
else
  bad "python-tuf repository rejected: $(tail -2 "$W/err")"
fi
if python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["signed"]["version"] == 2 else 1)' "$D/state/tuf/root.json" 2>/dev/null; then
  ok "sphere-updated followed python-tuf's root rotation (trusts root v2)"
else
  bad "sphere-updated did not keep root v2"
fi

# 2. our repository -> python-tuf's ngclient.
R=$W/repo
K=$W/keys
head -c $((2 << 20)) /dev/urandom >"$W/os-9.img"
"$BIN/sphere" update repo init "$R" --keys "$K" >/dev/null
"$BIN/sphere" update repo add-target "$R" "$W/os-9.img" --keys "$K" --kind os-image --version 9 \
  --hardware qemu-a7 --release r9 >/dev/null
"$BIN/sphere" update repo rotate-key "$R" timestamp --keys "$K" >/dev/null
"$BIN/sphere" update repo publish "$R" "$W/web" >/dev/null
serve "$W/web"
if SSL_CERT_FILE=$W/ca.pem "$PY" tests/update-interop.py fetch "https://127.0.0.1:$PORT" "$R/metadata/1.root.json" \
  os-9.img "$W/fetched/os-9.img" >"$W/py-out" 2>"$W/py-err" && cmp -s "$W/fetched/os-9.img" "$W/os-9.img"; then
  ok "python-tuf ngclient accepted our repository and downloaded os-9.img"
else
  bad "python-tuf ngclient rejected our repository: $(tail -3 "$W/py-err")"
fi
if python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); o=d["custom"]["opensphere"]; sys.exit(0 if d["root_version"]==2 and o["kind"]=="os-image" and o["version"]==9 and o["hardware"]==["qemu-a7"] else 1)' "$W/py-out" 2>/dev/null; then
  ok "python-tuf followed our root rotation (root v2) and reads our target metadata (os-image, version 9, qemu-a7)"
else
  bad "python-tuf's view of our repository: $(cat "$W/py-out")"
fi

echo "== update interop: $pass passed, $fail failed"
((fail == 0))
