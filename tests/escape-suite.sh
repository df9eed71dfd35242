#!/usr/bin/env bash
# The sandbox escape suite (issue #4): a hostile app, installed as a normal signed package, tries
# every escape we know from inside the full sandbox while a victim app with a secret, an abstract
# socket and a granted device runs beside it. Every attempt is an assertion.
#
# Usage (as root): tests/escape-suite.sh [--keep]
#   --keep   leave the work directory (logs, packages, reports) for inspection
#
# Fails if any attempt escaped, any attempt gave no verdict, any control failed, or fewer than
# MIN_ATTEMPTS attempts ran. Last line: "escape: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."

MIN_ATTEMPTS=40
keep=0
[[ ${1:-} == --keep ]] && keep=1

finish() { # passed failed
  echo "escape: $1 passed, $2 failed"
  exit $(( $2 > 0 ? 1 : 0 ))
}

if [[ $(id -u) -ne 0 ]]; then
  echo "escape-suite: must run as root (namespaces, cgroups, loop mounts)" >&2
  finish 0 1
fi
scripts/install-host-deps.sh sandbox >&2 || finish 0 1

work=$(mktemp -d /tmp/escape-suite.XXXXXX)
runtime="$work/run"
pids_to_kill=()
cleanup() {
  for pid in "${pids_to_kill[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  wait 2>/dev/null
  for mnt in "$work"/storage-mnt/*; do [[ -d $mnt ]] && umount -l "$mnt" 2>/dev/null; done
  for pin in "$runtime"/netns/*; do [[ -e $pin ]] && umount -l "$pin" 2>/dev/null; done
  # The apps' cgroups outlive their runs (reused by the next launch); remove ours.
  for id in "${cid[@]:-}"; do
    [[ -n $id ]] || continue
    find /sys/fs/cgroup -maxdepth 6 -type d -name "$id" -path '*sphere-sandbox*' -exec rmdir {} + 2>/dev/null
    find /sys/fs/cgroup -maxdepth 3 -type d -name "$id" -path '*opensphere-*' -exec rmdir {} + 2>/dev/null
  done
  umount -l "$runtime/dev" 2>/dev/null
  rm -f /dev/opensphere-test-gpio
  if ((keep)); then echo "escape-suite: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

echo "== build: sphere CLI, sandbox launcher, escape-artist (static, like device apps)"
cargo build -q -p sphere-cli -p sphere-sandbox || finish 0 1
# Apps are static binaries (the device ships no libc); build the hostile app the same way.
# Release profile: small enough (< 1 MB) that copying it into /tmp (4 MiB) for the setuid attempt fits.
CARGO_TARGET_DIR=target/escape-static cargo rustc -q --release -p escape-artist --bin escape-artist -- \
  -C target-feature=+crt-static || finish 0 1
sphere=target/debug/sphere
dev=target/debug/sphere-sandbox-dev
exec_bin=target/debug/sphere-sandbox-exec
artist=target/escape-static/release/escape-artist

echo "== package and sign both apps with the sphere CLI, then verify and install them"
"$sphere" keys new suite --dir "$work" >/dev/null || finish 0 1
declare -A app_root cid uid=([attacker]=20001 [victim]=20002)
for role in attacker victim; do
  mkdir -p "$work/src-$role/bin"
  cp "examples/escape-artist/packages/$role/app_manifest.json" "$work/src-$role/"
  cp "$artist" "$work/src-$role/bin/app"
  "$sphere" app package "$work/src-$role" -o "$work/$role.sphpkg" --key "$work/suite.key" >/dev/null || finish 0 1
  installed=$("$dev" install "$work/$role.sphpkg" --trust "$work/suite.pub" --apps "$work/apps" \
    --storage "$work/storage" --uid "${uid[$role]}") || finish 0 1
  cid[$role]=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["component_id"])' "$installed")
  app_root[$role]="$work/apps/${cid[$role]}"
  echo "   $role: ${cid[$role]} installed (signature verified)"
done
# A package signed by another key must be refused by the same install path.
"$sphere" keys new intruder --dir "$work" >/dev/null
"$sphere" app package "$work/src-attacker" -o "$work/intruder.sphpkg" --key "$work/intruder.key" >/dev/null
if "$dev" install "$work/intruder.sphpkg" --trust "$work/suite.pub" --apps "$work/apps-x" --storage "$work/storage-x" \
  --uid 20009 >/dev/null 2>&1; then
  echo "escape-suite: a package signed by an untrusted key was installed" >&2
  finish 0 1
fi

# The victim's peripheral: a stand-in device node (a /dev/null twin) only root may open on the host.
rm -f /dev/opensphere-test-gpio
mknod -m 600 /dev/opensphere-test-gpio c 1 3

# Host-side bait: a TCP listener on loopback and an abstract unix socket, logging any connection.
host_port=$((20000 + RANDOM % 10000))
python3 - "$host_port" "$work/host-bait.log" <<'EOF' &
import socket, sys, select
port, log = int(sys.argv[1]), sys.argv[2]
tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("127.0.0.1", port)); tcp.listen()
unix = socket.socket(socket.AF_UNIX); unix.bind("\0opensphere-escape-host"); unix.listen()
open(log, "w").close()
while True:
    for s in select.select([tcp, unix], [], [])[0]:
        conn, _ = s.accept(); open(log, "a").write(f"connection on {s}\n"); conn.close()
EOF
pids_to_kill+=($!)

spec_for() { # role extra-args...
  local role=$1; shift
  "$dev" spec --app-root "${app_root[$role]}" --uid "${uid[$role]}" \
    --storage-image "$work/storage/${cid[$role]}.img" --storage-mount "$work/storage-mnt/${cid[$role]}" \
    --hardware-definition examples/escape-artist/hardware-definitions/escape_test_board.json \
    --runtime-dir "$runtime" --cgroup-parent /sys/fs/cgroup/opensphere-escape-suite "$@"
}

echo "== start the victim"
secret="SECRET-$RANDOM$RANDOM$RANDOM"
spec_for victim --arg --secret --arg "$secret" >"$work/victim.json" || finish 0 1
python3 - "$work/victim.json" <<'EOF'
import json, sys
spec = json.load(open(sys.argv[1])); spec["stop_grace_ms"] = 1000
json.dump(spec, open(sys.argv[1], "w"))
EOF
"$exec_bin" --spec "$work/victim.json" --report "$work/victim-report.json" >"$work/victim.log" 2>&1 &
victim_launcher=$!
pids_to_kill+=("$victim_launcher")
for _ in $(seq 1 100); do grep -q "VICTIM ready" "$work/victim.log" 2>/dev/null && break; sleep 0.05; done
victim_pid=$(cat "/proc/$victim_launcher/task/$victim_launcher/children" 2>/dev/null | awk '{print $1}')
if [[ -z $victim_pid ]] || ! grep -q "VICTIM ready" "$work/victim.log"; then
  echo "escape-suite: victim did not start:" >&2; cat "$work/victim.log" >&2
  finish 0 1
fi
echo "   victim pid $victim_pid (host); its log:"; sed 's/^/   | /' "$work/victim.log"
# The grant works for the app it was granted to (the hostile app's attempt on it must fail).
device_control="CONTROL name=victim_granted_device_opens result=FAILED detail=see_victim_log"
grep -q "VICTIM granted device /dev/opensphere-test-gpio opens" "$work/victim.log" && \
  device_control="CONTROL name=victim_granted_device_opens result=ok detail=victim_opened_its_gpio_node"
echo "$device_control"

echo "== run the hostile app in the full sandbox"
spec_for attacker --arg --victim-pid --arg "$victim_pid" \
  --arg --victim-storage --arg "$work/storage-mnt/${cid[victim]}" \
  --arg --host-port --arg "$host_port" --arg --host-abstract --arg opensphere-escape-host \
  --arg --pid-max --arg "$(cat /proc/sys/kernel/pid_max)" \
  >"$work/attacker.json" || finish 0 1
"$exec_bin" --spec "$work/attacker.json" --report "$work/attacker-report.json" >"$work/attack.log" 2>"$work/attack.err"
attack_status=$?
cat "$work/attack.log"
[[ -s $work/attack.err ]] && sed 's/^/   launcher: /' "$work/attack.err"

# Host-side assertions: what the attacker must not have changed, as more ATTEMPT lines.
host_check() { # name condition-command...
  local name=$1; shift
  if "$@"; then echo "ATTEMPT name=$name result=blocked detail=host-side_check"
  else echo "ATTEMPT name=$name result=ESCAPED detail=host-side_check_failed"; fi
}
{
  host_check host_victim_alive kill -0 "$victim_pid"
  host_check host_victim_secret_intact test "$(cat "$work/storage-mnt/${cid[victim]}/secret" 2>/dev/null)" = "$secret"
  host_check host_victim_storage_nothing_planted test ! -e "$work/storage-mnt/${cid[victim]}/planted"
  host_check host_victim_no_signal_or_connection bash -c "! grep -Eq 'VICTIM (got signal|accepted)' '$work/victim.log'"
  host_check host_bait_untouched test ! -s "$work/host-bait.log"
  host_check host_root_no_marker test ! -e /escape-marker
} >"$work/host.log"
cat "$work/host.log"

echo "== telemetry: the launcher's exit report of the hostile app"
cat "$work/attacker-report.json"
controls=$(python3 - "$work/attacker-report.json" "$attack_status" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1])); v = r.get("violations", {})
def line(name, ok, detail): print(f"CONTROL name={name} result={'ok' if ok else 'FAILED'} detail={detail}")
line("report_exit_clean", r.get("cause") == "exited" and r.get("code") == 0 and sys.argv[2] == "0",
     f"cause={r.get('cause')},code={r.get('code')},launcher_status={sys.argv[2]}")
line("telemetry_landlock_denials", v.get("landlock_denials_reported", 0) > 0, f"{v.get('landlock_denials_reported')}_reported")
line("telemetry_oom_kill", v.get("oom_kills", 0) > 0, f"{v.get('oom_kills')}_oom_kills")
line("telemetry_pids_max", v.get("pids_max_hits", 0) > 0, f"{v.get('pids_max_hits')}_refused_forks")
EOF
)
echo "$controls"

echo "== telemetry: an app that calls ptrace is killed by seccomp and reported as such"
python3 - "$work/attacker.json" "$work/seccomp.json" <<'EOF'
import json, sys
spec = json.load(open(sys.argv[1])); spec["args"] = ["die-by-seccomp"]
json.dump(spec, open(sys.argv[2], "w"))
EOF
"$exec_bin" --spec "$work/seccomp.json" --report "$work/seccomp-report.json" >/dev/null 2>&1
seccomp_control=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); ok=r.get("cause")=="seccomp_kill" and r["violations"]["seccomp_kills"]==1; print("CONTROL name=telemetry_seccomp_kill result=%s detail=cause=%s" % ("ok" if ok else "FAILED", r.get("cause")))' "$work/seccomp-report.json")
echo "$seccomp_control"

echo "== stop the victim: SIGTERM (it ignores it), SIGKILL after the grace period"
kill -TERM "$victim_launcher"
wait "$victim_launcher" 2>/dev/null
stop_control=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); ok=r.get("cause")=="stopped" and r.get("signal")==9; print("CONTROL name=stop_term_then_kill result=%s detail=cause=%s,signal=%s" % ("ok" if ok else "FAILED", r.get("cause"), r.get("signal")))' "$work/victim-report.json")
echo "$stop_control"
storage_control="CONTROL name=storage_survives_restart result=FAILED detail=secret_missing_after_stop"
[[ $(cat "$work/storage-mnt/${cid[victim]}/secret" 2>/dev/null) == "$secret" ]] && \
  storage_control="CONTROL name=storage_survives_restart result=ok detail=secret_still_in_the_image"
echo "$storage_control"

all=$(cat "$work/attack.log" "$work/host.log"; echo "$device_control"; echo "$controls"; echo "$seccomp_control"; echo "$stop_control"; echo "$storage_control")
attempts=$(grep -c '^ATTEMPT ' <<<"$all")
blocked=$(grep -c '^ATTEMPT .* result=blocked ' <<<"$all")
escaped=$(grep -c '^ATTEMPT .* result=ESCAPED ' <<<"$all")
no_verdict=$(grep -c '^ATTEMPT .* result=ERROR ' <<<"$all")
controls_failed=$(grep -c '^CONTROL .* result=FAILED ' <<<"$all")
skipped=$(grep -c '^SKIP ' "$work/attack.log")
((skipped)) && { echo "escape-suite: $skipped attempts were skipped (the host run must make them all)" >&2; no_verdict=$((no_verdict + skipped)); }
grep -q '^SUMMARY ' "$work/attack.log" || { echo "escape-suite: the hostile app did not finish its run" >&2; no_verdict=$((no_verdict + 1)); }

echo
echo "$attempts attempts, $escaped escaped"
failed=$((escaped + no_verdict + controls_failed))
((no_verdict)) && echo "escape-suite: $no_verdict attempts gave no verdict" >&2
((controls_failed)) && echo "escape-suite: $controls_failed controls failed" >&2
if ((attempts < MIN_ATTEMPTS)); then
  echo "escape-suite: only $attempts attempts ran (at least $MIN_ATTEMPTS required)" >&2
  failed=$((failed + 1))
fi
finish "$blocked" "$failed"
