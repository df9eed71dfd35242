#!/usr/bin/env bash
# sphere-netd's bypass suite inside the QEMU Cortex-A7 image (issue #8): the device's own
# sphere-netd (booted with sphere.netd), its kernel's nf_tables, apps started by sphere-appd in
# the full sandbox. The hostile app (escape-artist net-attack) tries every way around its
# AllowedConnections; a second app (net-peer) gives it another app's host and server to aim at.
#
#   osq-net   a network namespace on this machine, with no route anywhere: QEMU runs inside it
#     |       and the guest's eth0 is its tap osq0 (10.0.2.2/24, the guest's gateway). Test
#     |       hosts on its loopback (documentation ranges): web servers, the device's DNS
#     |       upstream 10.0.2.3, a rogue DNS server 198.51.100.54, a metadata address.
#   guest     10.0.2.15: sphere-netd, sphere-appd, the two apps in their compartments.
#
# Each attempt sends a unique token; the hosts log every token they receive, so an attempt got
# through if the app saw an answer or its token is in the log.
#
# Usage (as root): tests/netd-qemu-test.sh [--kernel-dir DIR] [--timeout SECONDS] [--keep]
#   --kernel-dir DIR  a built kernel (zImage + config); default: the shared image's kernel, else
#                     scripts/build-kernel.sh builds one
# Last lines: "N bypass attempts, M got through" and "netd-qemu: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/private-image.sh
source tests/private-image.sh

MIN_ATTEMPTS=16
timeout=420
kernel_dir=
keep=0
while (($#)); do
  case "$1" in
    --kernel-dir) shift; kernel_dir=${1:?--kernel-dir needs a directory} ;;
    --timeout) shift; timeout=${1:?--timeout needs seconds} ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "netd-qemu-test: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done

passed=0 failed=0 attempts=0 through=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }
finish() {
  echo "$attempts bypass attempts, $through got through (inside the QEMU image)"
  echo "netd-qemu: $passed passed, $failed failed"
  exit $((failed > 0 ? 1 : 0))
}
[[ $(id -u) -eq 0 ]] || { bad "must run as root (network namespace, tap)"; finish; }
scripts/install-host-deps.sh netd image cross >&2 || { bad "host packages"; finish; }

NS=osq-net
TAP=osq0
private=$(mktemp -d /tmp/netd-qemu.XXXXXX)
mnt=$private/mnt
qemu_pid=
hosts_pid=
cleanup() {
  [[ -n $qemu_pid ]] && kill "$qemu_pid" 2>/dev/null
  pkill -f "$private/" 2>/dev/null
  [[ -n $hosts_pid ]] && kill "$hosts_pid" 2>/dev/null
  wait 2>/dev/null
  umount "$mnt" 2>/dev/null
  ip netns del "$NS" 2>/dev/null
  # The console logger (a grandchild of run-qemu.sh) may still be writing its last file.
  if ((keep)); then echo "netd-qemu-test: kept $private" >&2; else rm -rf "$private" 2>/dev/null || { sleep 2; rm -rf "$private"; }; fi
}
trap cleanup EXIT

echo "== build the image (private cache $private/cache)"
image=$(build_private_image "$private" "$kernel_dir") || { bad "image builds"; finish; }
keys=$private/cache/keys
grep -q '"only_if_cmdline": "sphere.netd"' images/qemu-a7/init.json || { bad "init.json no longer starts netd on sphere.netd"; finish; }

echo "== cross-build escape-artist, package net-attacker and net-peer"
bin_dir=$(scripts/cross-build.sh --release -p escape-artist --print-dir | tail -n 1) || { bad "cross-build"; finish; }
cargo build -q --release --locked -p sphere-cli -p sphere-appd || { bad "host tools build"; finish; }
ATTACKER=e5ca9e00-a7a7-4c0d-9e11-0b5e55ed0a01
PEER=e5ca9e00-a7a7-4c0d-9e11-0b5e55ed0a02
package() { # name component-id args-json capabilities-json
  local src=$private/src-$1
  mkdir -p "$src/bin"
  install -m 0755 "$bin_dir/escape-artist" "$src/bin/app"
  cat >"$src/app_manifest.json" <<JSON
{ "SchemaVersion": 1, "Name": "$1", "ComponentId": "$2", "EntryPoint": "/bin/app", "CmdArgs": $3,
  "Capabilities": $4, "ApplicationType": "Default" }
JSON
  target/release/sphere app package "$src" -o "$private/$1.sphpkg" --key "$keys/dev-signing.key.pem" >/dev/null
}
package net-attacker "$ATTACKER" '["net-attack"]' \
  '{ "AllowedConnections": ["allowed.example.com", "*.cdn.example.org", "rebind.example.com", "ttl.example.com", "192.0.2.11"] }' \
  || { bad "package net-attacker"; finish; }
package net-peer "$PEER" '["net-peer"]' '{ "AllowedConnections": ["b.example.com"], "AllowedTcpServerPorts": [8080] }' \
  || { bad "package net-peer"; finish; }

echo "== install both into the private data disk with the device's store code"
mkdir -p "$mnt"
mount -o loop "$image/data.ext4" "$mnt" || { bad "mount data disk"; finish; }
mkdir -p "$mnt/sphere"
touch "$mnt/sphere/development-mode"
for app in net-peer net-attacker; do
  target/release/sphere-appd install --store "$mnt/sphere/apps" --dev-trust "$keys/dev-signing.pub.pem" \
    --development-mode --board images/qemu-a7/hardware-definitions/opensphere_qemu_virt_a7.json \
    --storage-dir "$mnt/sphere/storage" "$private/$app.sphpkg" >/dev/null || { bad "install $app"; finish; }
done
umount "$mnt"

echo "== the test network: namespace $NS, tap $TAP, test hosts"
ip netns del "$NS" 2>/dev/null
ip netns add "$NS" || { bad "create namespace"; finish; }
net() { ip netns exec "$NS" "$@"; }
net ip link set lo up
net ip tuntap add dev "$TAP" mode tap || { bad "create tap (needs /dev/net/tun)"; finish; }
net ip addr add 10.0.2.2/24 dev "$TAP"
net ip link set "$TAP" up
for a in 10.0.2.3 192.0.2.10 192.0.2.11 192.0.2.12 192.0.2.20 192.0.2.21 192.0.2.30 198.51.100.10 198.51.100.54 169.254.169.254 10.0.0.5; do
  net ip addr add "$a/32" dev lo
done
for a in 2001:db8::10 2001:db8::12; do net ip addr add "$a/128" dev lo; done
if [[ -n $(net ip route show default) ]]; then bad "$NS has a default route"; finish; fi
zone=$private/zone
mkdir -p "$zone"
printf 'A 300 192.0.2.10\n' >"$zone/allowed.example.com"
printf 'A 300 192.0.2.30\n' >"$zone/x.cdn.example.org"
printf 'A 300 198.51.100.10\n' >"$zone/b.example.com"
printf 'A 300 10.0.0.5\n' >"$zone/rebind.example.com"
printf 'A 2 192.0.2.20\n' >"$zone/ttl.example.com"
printf 'A 300 192.0.2.12\n' >"$zone/blocked.example.net"
LOG=$private/hosts.log
touch "$LOG"
NETD_HOSTS_UPSTREAM=10.0.2.3 net python3 tests/netd-hosts.py serve "$LOG" "$zone" >"$private/hosts.out" 2>&1 &
hosts_pid=$!
for _ in $(seq 50); do grep -q ready "$private/hosts.out" && break; sleep 0.1; done
grep -q ready "$private/hosts.out" || { bad "test hosts did not start: $(cat "$private/hosts.out")"; finish; }

echo "== boot with sphere.netd (TCG); the apps start at boot, the attacker runs once"
console=$private/console.log
net scripts/run-qemu.sh --image-dir "$image" --tap "$TAP" --append sphere.netd --timeout "$timeout" \
  --log "$console" --quiet >"$private/run-qemu.out" 2>&1 &
qemu_pid=$!
deadline=$((SECONDS + timeout))
while ((SECONDS < deadline)) && kill -0 "$qemu_pid" 2>/dev/null; do
  grep -q '\[net-attacker\] SUMMARY ' "$console" 2>/dev/null && break
  # The attacker has its first answer for ttl.example.com: the name moves to a new address.
  grep -q '\[net-attacker\] NETTTL ' "$console" 2>/dev/null && printf 'A 2 192.0.2.21\n' >"$zone/ttl.example.com"
  sleep 2
done
sleep 6   # sphere-netd writes its telemetry every 5 s
kill "$qemu_pid" 2>/dev/null   # run-qemu.sh asks the guest to power off, then ends QEMU
for _ in $(seq 40); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.5; done

grep -q 'sphere-netd: ready' "$console" && ok "sphere-netd started in the guest" || bad "sphere-netd not ready in the guest"
run=$(sed -n 's/^.*\[net-attacker\] //p' "$console" | awk '{print} /^SUMMARY /{exit}')
peer=$(sed -n 's/^.*\[net-peer\] //p' "$console")
grep -E '^(ATTEMPT|CONTROL|SUMMARY)' <<<"$run"
grep -E '^(CONTROL|NETPEER)' <<<"$peer" | sed 's/^/   peer: /'
if ! grep -q '^SUMMARY ' <<<"$run"; then
  bad "no complete run of net-attacker (console: $console$( ((keep)) || echo ', use --keep'))"
  grep -E 'sphere-(netd|appd)' "$console" | tail -15 | sed 's/^/   /'
  finish
fi

while read -r line; do
  name=$(sed -n 's/.* name=\([^ ]*\).*/\1/p' <<<"$line")
  case $line in
    *" result=ok "*) ok "control: $name" ;;
    *) bad "control: $line" ;;
  esac
done < <(grep '^CONTROL ' <<<"$run")
grep -q '^CONTROL name=peer_reach_allowed result=ok' <<<"$peer" && ok "control: net-peer reaches its own allowed name" \
  || bad "control: net-peer did not reach b.example.com (the other-app attempts prove less)"
while read -r line; do
  attempts=$((attempts + 1))
  name=$(sed -n 's/.* name=\([^ ]*\).*/\1/p' <<<"$line")
  case $line in
    *" result=blocked "*) ok "blocked: $name" ;;
    *" result=ESCAPED "*) through=$((through + 1)); bad "BYPASS: $line" ;;
    *) bad "attempt did not run: $line" ;;
  esac
done < <(grep '^ATTEMPT ' <<<"$run")
((attempts >= MIN_ATTEMPTS)) || bad "only $attempts attempts ran (at least $MIN_ATTEMPTS expected)"

# The far side: no attempt's token reached a host, the controls' did.
for token in t-literal t-v6 t-meta t-rebind-ip t-rogue t-upstream t-udp t-otherhost t-expired; do
  if grep -q -- "$token" "$LOG"; then
    through=$((through + 1)); bad "BYPASS: token $token reached a test host: $(grep -- "$token" "$LOG" | head -1)"
  fi
done
grep -q 'allowed-v4' "$LOG" && ok "the hosts saw the allowed traffic (the token check is live)" || bad "hosts log lacks allowed-v4"
grep -q 'dns upstream .* blocked.example.net' "$LOG" && bad "a disallowed name reached the upstream" \
  || ok "a disallowed name never left the device"
# The device's own record of what it blocked, read from the data disk after the run. With
# NFLOG in the kernel every blocked packet is itemised; DNS refusals are itemised either way.
state=$private/blocked.json
if mount -o ro,noload "$image/data.ext4" "$mnt" 2>/dev/null; then
  cp "$mnt/sphere/netd/blocked.json" "$state" 2>/dev/null
  umount "$mnt"
fi
check_blocked() { # description, python expression over entries e
  if python3 -c "import json,sys; e=json.load(open(sys.argv[1])); sys.exit(0 if ($2) else 1)" "$state" 2>/dev/null; then
    ok "telemetry: $1"
  else bad "telemetry: $1 ($(head -c 400 "$state" 2>/dev/null || echo 'no blocked.json'))"; fi
}
check_blocked "the disallowed name, for net-attacker" "any(x['component_id']=='$ATTACKER' and x['kind']=='dns' and x['destination']=='blocked.example.net' for x in e)"
if grep -q '^CONFIG_NETFILTER_NETLINK_LOG=y' "$image/kernel.config" 2>/dev/null || grep -q '^CONFIG_NETFILTER_NETLINK_LOG=y' "${kernel_dir:-/nonexistent}/config" 2>/dev/null; then
  check_blocked "192.0.2.12:80 itemised (NFLOG)" "any(x['component_id']=='$ATTACKER' and x['kind']=='outbound' and x['destination']=='192.0.2.12' and x['port']==80 and x['count']>=1 for x in e)"
else
  # kernel-config/netfilter-nftables.cfg turns NFLOG on: a kernel without it is not the image's.
  bad "the kernel has no CONFIG_NETFILTER_NETLINK_LOG: blocked packets would only be counted"
fi
grep -q '\[net-peer\] NETPEER accepted' "$console" && bad "net-peer accepted a connection (another app reached it)" \
  || ok "net-peer's server saw no connection"
finish
