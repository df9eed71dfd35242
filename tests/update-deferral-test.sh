#!/usr/bin/env bash
# Update deferral end to end on the host (part of test.sh suite `update`): the real
# sphere-updated (`serve`, file-backed A/B slots, a TUF repository over HTTPS) and the real
# sphere-appd running real apps in the real sandbox (sphere-sandbox-exec), the apps being the
# sample's update-deferral example (`hello-sphere update-deferral`, static, applibs sysevent).
#
# Asserted:
#  A. an app with SystemEventNotifications + SoftwareUpdateDeferral receives
#     UpdateReadyForInstall (pending), defers; the install waits (state `deferred`, slot B
#     untouched); the app resumes and the install proceeds; the app hears `final` then
#     `complete`. An app with SystemEventNotifications but NOT SoftwareUpdateDeferral hears the
#     event, its defer is refused, and the app manager counts a `sysevent-refused` violation.
#  B. an app that never resumes holds the install only until the bound (TEST ONLY: shortened to
#     12 s by SPHERE_UPDATED_TEST_MAX_DEFERRAL_SECONDS; 24 h on a device), and the bound counts
#     from the FIRST announcement: sphere-updated is killed (-9) while deferred and restarted,
#     the same release is asked again, and it installs at the original deadline, not 12 s later.
#
# Usage (as root): tests/update-deferral-test.sh [--keep]
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
keep=0
[[ ${1:-} == --keep ]] && keep=1
pass=0
fail=0
ok() { echo "  ok: $*"; pass=$((pass + 1)); }
bad() { echo "  FAIL: $*"; fail=$((fail + 1)); }
finish() {
  echo "update-deferral: $pass passed, $fail failed"
  exit $((fail > 0 ? 1 : 0))
}
[[ $(id -u) -eq 0 ]] || { bad "must run as root (the app sandbox needs namespaces and cgroups)"; finish; }
scripts/install-host-deps.sh update sandbox >&2 || { bad "host dependencies"; finish; }

cargo build --locked -q -p sphere-updated -p sphere-appd -p sphere-sandbox -p sphere-cli || { bad "build"; finish; }
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
STATIC_TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/deferral-static
# Apps are static binaries (a sandbox has no dynamic loader), as in the escape suite.
CARGO_TARGET_DIR=$STATIC_TARGET cargo rustc --locked -q --release -p hello-sphere --bin hello-sphere -- \
  -C target-feature=+crt-static || { bad "static app build"; finish; }
SPHERE=$BIN/sphere
UPDATED=$BIN/sphere-updated

W=$(mktemp -d /tmp/update-deferral.XXXXXX)
CGROUP=/sys/fs/cgroup/opensphere-deferral-test-$$
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  wait 2>/dev/null
  # What the sandbox launcher leaves mounted: its /dev and the apps' pinned network namespaces.
  for mnt in "$W"/run/storage/* "$W"/run/sandbox/netns/* "$W/run/sandbox/dev"; do
    [[ -e $mnt ]] && umount -l "$mnt" 2>/dev/null
  done
  find "$CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null
  if ((keep)); then echo "update-deferral: kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

# --- an HTTPS update repository with one OS release ----------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/ca.key" -out "$W/ca.pem" \
  -days 2 -subj /CN=opensphere-test-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/server.key" -out "$W/server.csr" \
  -subj /CN=127.0.0.1 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$W/ext.cnf"
openssl x509 -req -in "$W/server.csr" -CA "$W/ca.pem" -CAkey "$W/ca.key" -CAcreateserial \
  -out "$W/server.pem" -days 2 -extfile "$W/ext.cnf" 2>/dev/null
R=$W/repo
"$SPHERE" update repo init "$R" --keys "$W/keys" >/dev/null
head -c $((256 << 10)) /dev/urandom >"$W/os-2.img"
"$SPHERE" update repo add-target "$R" "$W/os-2.img" --kind os-image --version 2 --hardware qemu-a7 --release r2 \
  --keys "$W/keys" >/dev/null
mkdir -p "$W/web"
"$SPHERE" update repo publish "$R" "$W/web" >/dev/null
python3 tests/update-server.py "$W/web" --cert "$W/server.pem" --key "$W/server.key" --port 0 \
  --port-file "$W/port" 2>>"$W/server.log" &
pids+=($!)
for _ in $(seq 50); do [[ -s $W/port ]] && break; sleep 0.1; done
PORT=$(cat "$W/port")

# A device: file-backed slots and sphere-updated's state. $1 = name.
make_device() {
  local D=$W/$1
  mkdir -p "$D"
  echo "running root filesystem of slot A, version 1" >"$D/slot-a"
  cat >"$D/config.json" <<JSON
{
  "metadata_url": "https://127.0.0.1:$PORT/metadata/",
  "targets_url": "https://127.0.0.1:$PORT/targets/",
  "trusted_root": "$R/metadata/1.root.json",
  "ca_certificates": "$W/ca.pem",
  "hardware": "qemu-a7",
  "state_dir": "$D/state",
  "min_version": "$D/min-version",
  "m4_dir": "$D/m4",
  "slots": {"bootenv": "$D/bootenv", "slot_a": "$D/slot-a", "slot_b": "$D/slot-b", "booted": "a"},
  "appd_socket": "$W/run/appd.sock",
  "socket": "$D/updated.sock"
}
JSON
  echo 1 >"$D/min-version"
  "$UPDATED" --config "$D/config.json" init-record >/dev/null
}
UPDATED_PID=
start_updated() { # device, test bound in seconds
  rm -f "$W/$1/updated.sock"
  SPHERE_UPDATED_TEST_MAX_DEFERRAL_SECONDS=$2 "$UPDATED" --config "$W/$1/config.json" serve >>"$W/$1/updated.log" 2>&1 &
  UPDATED_PID=$!
  pids+=("$UPDATED_PID")
  for _ in $(seq 100); do [[ -S $W/$1/updated.sock ]] && return 0; sleep 0.1; done
  return 1
}
state_of() { "$SPHERE" update status --socket "$W/$1/updated.sock" --json 2>/dev/null |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null; }
# wait_for SECONDS command... : true once the command succeeds.
wait_for() {
  local limit=$1
  shift
  for _ in $(seq $((limit * 5))); do "$@" && return 0; sleep 0.2; done
  return 1
}

# --- the app manager with three apps --------------------------------------------------------
"$SPHERE" keys new suite --dir "$W" >/dev/null
mkdir -p "$W/trusted" "$W/inbox"
cp "$W/suite.pub" "$W/trusted/"
declare -A ID=([deferrer]=5b0d7c1e-2a4f-4e8b-9c3d-1f2e3a4b5c61 [notifier]=5b0d7c1e-2a4f-4e8b-9c3d-1f2e3a4b5c62
  [holder]=5b0d7c1e-2a4f-4e8b-9c3d-1f2e3a4b5c63)
package() { # name capabilities-json cmdargs-json
  mkdir -p "$W/src-$1/bin"
  cp "$STATIC_TARGET/release/hello-sphere" "$W/src-$1/bin/app"
  printf '{"SchemaVersion":1,"Name":"%s","ComponentId":"%s","EntryPoint":"/bin/app","CmdArgs":%s,"Capabilities":%s,"ApplicationType":"Default"}\n' \
    "$1" "${ID[$1]}" "$3" "$2" >"$W/src-$1/app_manifest.json"
  "$SPHERE" app package "$W/src-$1" -o "$W/$1.sphpkg" --key "$W/suite.key" >/dev/null
}
package deferrer '{"SystemEventNotifications":true,"SoftwareUpdateDeferral":true}' '["update-deferral","--resume-after","4"]'
package notifier '{"SystemEventNotifications":true}' '["update-deferral"]'
package holder '{"SystemEventNotifications":true,"SoftwareUpdateDeferral":true}' '["update-deferral"]'
cp "$W/deferrer.sphpkg" "$W/notifier.sphpkg" "$W/inbox/"
cat >"$W/appd.json" <<JSON
{"store_dir": "$W/store", "storage_dir": "$W/storage", "trusted_keys_dir": "$W/trusted",
 "development_keys_dir": "$W/dev-keys", "development_mode_flag": "$W/devmode", "inbox_dir": "$W/inbox",
 "runtime_dir": "$W/run", "cgroup_parent": "$CGROUP", "launcher": "$BIN/sphere-sandbox-exec",
 "socket": "$W/run/appd.sock", "dev_port": null, "intercore_port": null}
JSON
SPHERE_NETD_SOCKET=$W/no-netd.sock "$BIN/sphere-appd" serve --config "$W/appd.json" >"$W/appd.log" 2>&1 &
pids+=($!)
APPD=(--socket "$W/run/appd.sock")
logs() { "$SPHERE" app logs "${ID[$1]}" "${APPD[@]}" 2>/dev/null; }
registered() { logs "$1" | grep -q "sysevent: registered"; }
if wait_for 30 registered deferrer && wait_for 10 registered notifier; then
  ok "both apps run in the sandbox and registered for update-ready-for-install"
else
  bad "the apps did not register: $(tail -3 "$W/appd.log")"
  finish
fi

# --- A: defer, the install waits, resume, it proceeds -------------------------------------
make_device a
start_updated a 600 || { bad "sphere-updated did not start"; finish; }
slot_b_before=$(sha256sum "$W/a/slot-b" 2>/dev/null || echo none)
"$SPHERE" update install --release r2 --socket "$W/a/updated.sock" >"$W/a/install.out" 2>&1 &
install_pid=$!
pids+=("$install_pid")
if wait_for 10 bash -c "'$SPHERE' app logs ${ID[deferrer]} --socket '$W/run/appd.sock' | grep -q 'deferred r2 until'"; then
  ok "the app received UpdateReadyForInstall (pending) and deferred it"
else
  bad "no deferral by the app: $(logs deferrer | tail -3)"
fi
deferred() { [[ $(state_of a) == deferred ]]; }
wait_for 3 deferred
state=$(state_of a)
if [[ $state == deferred && $(sha256sum "$W/a/slot-b" 2>/dev/null || echo none) == "$slot_b_before" ]]; then
  ok "while deferred the install waits (state $state, slot B untouched)"
  if "$SPHERE" update status --socket "$W/a/updated.sock" 2>/dev/null | grep -q "update: deferred until [0-9]"; then
    ok "sphere update status shows the deferral"
  else
    bad "sphere update status: $("$SPHERE" update status --socket "$W/a/updated.sock" 2>&1)"
  fi
else
  bad "the install did not wait: state '$state'"
fi
if logs notifier | grep -q "sysevent: event update-ready-for-install pending" &&
  logs notifier | grep -q "defer refused:.*SoftwareUpdateDeferral"; then
  ok "an app without SoftwareUpdateDeferral hears the event but its defer is refused"
else
  bad "notifier: $(logs notifier | tail -3)"
fi
if "$SPHERE" app violations "${ID[notifier]}" "${APPD[@]}" 2>/dev/null | grep -q "sysevent-refused"; then
  ok "the refusal is counted as a sysevent-refused violation"
else
  bad "no sysevent-refused violation: $("$SPHERE" app violations "${ID[notifier]}" "${APPD[@]}" 2>&1 | tail -2)"
fi
if wait_for 30 bash -c "[[ \$('$SPHERE' update status --socket '$W/a/updated.sock' --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"state\"])') == installed ]]"; then
  if logs deferrer | grep -q "sysevent: resumed"; then
    ok "after the app resumed, the install proceeded (state installed)"
  else
    bad "installed, but the app never resumed"
  fi
else
  bad "the install did not proceed after the resume: state '$(state_of a)'"
fi
if wait_for 5 bash -c "'$SPHERE' app logs ${ID[deferrer]} --socket '$W/run/appd.sock' | grep -q 'update-ready-for-install complete'" &&
  logs deferrer | grep -q "update-ready-for-install final"; then
  ok "the app heard final, then complete"
else
  bad "no final/complete: $(logs deferrer | tail -4)"
fi
if [[ ! -e $W/a/state/deferral.json ]]; then ok "the deferral record is gone after the install"; else bad "deferral.json left behind"; fi
wait "$install_pid" 2>/dev/null
kill "$UPDATED_PID" 2>/dev/null

# --- B: an app that never resumes; the bound holds across a restart -----------------------
BOUND=12
"$SPHERE" app install "$W/holder.sphpkg" "${APPD[@]}" >/dev/null 2>&1 || bad "installing the holder app"
wait_for 30 registered holder || bad "the holder app did not register"
make_device b
start_updated b $BOUND || { bad "sphere-updated did not start"; finish; }
"$SPHERE" update install --release r2 --socket "$W/b/updated.sock" >"$W/b/install1.out" 2>&1 &
pids+=($!)
wait_for 10 bash -c "[[ -s '$W/b/state/deferral.json' ]]" || bad "no deferral record"
first=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["announced_at"])' "$W/b/state/deferral.json")
wait_for 10 bash -c "'$SPHERE' app logs ${ID[holder]} --socket '$W/run/appd.sock' | grep -q 'deferred r2 until'" ||
  bad "the holder did not defer"
sleep 3
kill -9 "$UPDATED_PID"
wait "$UPDATED_PID" 2>/dev/null
start_updated b $BOUND || { bad "sphere-updated did not restart"; finish; }
"$SPHERE" update install --release r2 --socket "$W/b/updated.sock" >"$W/b/install2.out" 2>&1
rc=$?
done_at=$(date +%s)
again=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["announced_at"])' "$W/b/state/deferral.json" 2>/dev/null || echo gone)
elapsed=$((done_at - first))
if ((rc == 0)) && [[ $(state_of b) == installed ]]; then
  ok "the app never resumed, yet the install proceeded once the bound was reached"
else
  bad "install after the bound: rc $rc, state '$(state_of b)': $(tail -2 "$W/b/install2.out")"
fi
# The restart happened ~5 s in: with the clock restarted the install could not finish before
# 5 + $BOUND s; with the first announcement kept it finishes at about $BOUND s.
if ((elapsed >= BOUND - 1 && elapsed < BOUND + 4)); then
  ok "the bound counted from the first announcement across a restart (installed ${elapsed} s after it, bound ${BOUND} s)"
else
  bad "installed ${elapsed} s after the first announcement (bound ${BOUND} s; restart must not extend it)"
fi
[[ $again == gone ]] && ok "the record was removed after the install" || bad "record still there (announced_at $again)"
deadlines=$(grep -o "(deadline [0-9]*)" "$W/b/updated.log" | sort -u)
if [[ $deadlines == "(deadline $((first + BOUND)))" ]]; then
  ok "before and after the restart sphere-updated waited for the same deadline ($((first + BOUND)))"
else
  bad "deadlines seen: $(echo $deadlines)"
fi
grep -q "deferral bound reached" "$W/b/updated.log" && ok "sphere-updated logged the bound" ||
  bad "no bound message in the updater's log"
finish
