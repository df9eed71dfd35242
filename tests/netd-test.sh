#!/usr/bin/env bash
# sphere-netd's firewall test (issue #8), on the host, as root, in network namespaces this script
# creates. None of them has a route to the machine's real uplink: the "internet" is a namespace
# holding documentation-range test hosts (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/30,
# 2001:db8::/32), so no packet can leave the machine.
#
#   osn-net  test hosts (addresses on its loopback): web servers, the upstream DNS server 198.51.100.53, a rogue DNS server
#      |     198.51.100.54, a "metadata service" on 169.254.169.254
#   osn-dev  the device: sphere-netd runs here (its own nftables, its own forwarding)
#      |     a host daemon listens on :8000 (apps must not reach it)
#   apps     three app namespaces that sphere-netd creates, pins and wires (veth sphN <-> eth0):
#            A: allowed.example.com, *.cdn.example.org, ttl.example.com, rebind.example.com,
#               the literal 192.0.2.11;  B: b.example.com, TCP server port 8080;  C: nothing.
#
# Every bypass attempt sends a unique token; the hosts log every token they receive, so an
# attempt "got through" if its token shows up there (or the client saw an answer).
#
# Usage (as root): tests/netd-test.sh [--keep]     Last line: "netd: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."

keep=0
[[ ${1:-} == --keep ]] && keep=1
passed=0 failed=0 attempts=0 through=0
finish() {
  echo "$attempts bypass attempts, $through got through"
  echo "netd: $passed passed, $failed failed"
  exit $(( failed > 0 ? 1 : 0 ))
}
[[ $(id -u) -eq 0 ]] || { echo "netd-test: must run as root (network namespaces, nftables)" >&2; failed=1; finish; }
scripts/install-host-deps.sh netd >&2 || { failed=1; finish; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
# NETD_BIN: an already built sphere-netd (e.g. the release one of a benchmark run).
if [[ -z ${NETD_BIN:-} ]]; then
  cargo build -q --locked -p sphere-netd -p sphere-cli >&2 || { failed=1; finish; }
fi
NETD=${NETD_BIN:-$CARGO_TARGET_DIR/debug/sphere-netd}
SPHERE=${SPHERE_BIN:-$CARGO_TARGET_DIR/debug/sphere}
HOSTS="$PWD/tests/netd-hosts.py"
work=$(mktemp -d /tmp/netd-test.XXXXXX)
run="$work/run"
mkdir -p "$run" "$work/zone"
LOG="$work/hosts.log"
touch "$LOG"
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  # A daemon started through the nsenter wrapper is a grandchild of the recorded pid: end
  # everything that runs from this work directory too (sphere-netd outlived the suite before).
  pkill -f -- "$work/" 2>/dev/null || true
  wait 2>/dev/null
  for pin in "$run"/netns/*; do [[ -e $pin ]] && umount "$pin" 2>/dev/null; done
  ip netns del osn-dev 2>/dev/null
  ip netns del osn-net 2>/dev/null
  if ((keep)); then echo "netd-test: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

ok() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }

# nsenter, not `ip netns exec`: that would give sphere-netd a mount namespace of its own, and
# the app namespaces it pins must be visible to everyone (as on the device).
dev() { nsenter --net=/run/netns/osn-dev "$@"; }
net() { ip netns exec osn-net "$@"; }
# Run a client in an app's namespace, with the resolv.conf sphere-netd wrote for it mounted at
# /etc/resolv.conf (what the sandbox does for a real app).
app() {
  local id=$1; shift
  nsenter --net="$run/netns/$id" unshare -m sh -c \
    "mount --bind '$run/net/$id/resolv.conf' /etc/resolv.conf && exec python3 '$HOSTS' \"\$@\"" sh "$@"
}

# --- the namespaces -----------------------------------------------------------------------
ip netns del osn-dev 2>/dev/null; ip netns del osn-net 2>/dev/null
ip netns add osn-dev && ip netns add osn-net || { bad "create namespaces"; finish; }
ip link add up1 netns osn-dev type veth peer name up0 netns osn-net
dev ip link set lo up; net ip link set lo up
dev ip addr add 203.0.113.1/30 dev up1; dev ip addr add 2001:db8:ffff::1/64 dev up1 nodad
net ip addr add 203.0.113.2/30 dev up0; net ip addr add 2001:db8:ffff::2/64 dev up0 nodad
dev ip link set up1 up; net ip link set up0 up
dev ip route add default via 203.0.113.2; dev ip -6 route add default via 2001:db8:ffff::2
for a in 192.0.2.10 192.0.2.11 192.0.2.12 192.0.2.20 192.0.2.21 192.0.2.30 198.51.100.10 198.51.100.53 \
         198.51.100.54 169.254.169.254 10.0.0.5; do
  net ip addr add "$a/32" dev lo
done
for a in 2001:db8::10 2001:db8::12; do net ip addr add "$a/128" dev lo; done
# A LAN peer may reach apps' server ports: the test hosts route the compartments to the device.
net ip route add 10.213.0.0/16 via 203.0.113.1
if [[ -n $(dev ip route show default) && -z $(dev ip route get 8.8.8.8 2>/dev/null | grep 203.0.113.2) ]]; then
  bad "osn-dev routes somewhere but to the test hosts"; finish
fi
# A table of the host's own, which sphere-netd must leave alone.
dev nft add table inet hostfw && dev nft add chain inet hostfw keep '{ type filter hook output priority 0; policy accept; }'

# --- the zone: NAME files of "TYPE TTL ADDRESS" -------------------------------------------
printf 'A 300 192.0.2.10\nAAAA 300 2001:db8::10\n' >"$work/zone/allowed.example.com"
printf 'A 300 192.0.2.30\n' >"$work/zone/x.cdn.example.org"
printf 'A 300 198.51.100.10\n' >"$work/zone/b.example.com"
printf 'A 2 192.0.2.20\n' >"$work/zone/ttl.example.com"
printf 'A 300 10.0.0.5\n' >"$work/zone/rebind.example.com"
printf 'A 300 169.254.169.254\n' >"$work/zone/meta.cdn.example.org"
printf 'A 300 192.0.2.12\n' >"$work/zone/blocked.example.net"

net python3 "$HOSTS" serve "$LOG" "$work/zone" >"$work/hosts.out" 2>&1 &
pids+=($!)
dev python3 "$HOSTS" serve "$LOG" "$work/zone" >"$work/devhosts.out" 2>&1 &
pids+=($!)
dev "$NETD" serve --socket "$work/netd.sock" --runtime-dir "$run/net" --state-dir "$work/state" \
  --upstream 198.51.100.53 --ttl-min 1 --ttl-max 600 >"$work/netd.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [[ -S $work/netd.sock ]] && grep -q ready "$work/hosts.out" && break; sleep 0.1; done
[[ -S $work/netd.sock ]] || { bad "sphere-netd did not start: $(cat "$work/netd.log")"; finish; }

A=a0000000-0000-4000-8000-00000000000a
B=b0000000-0000-4000-8000-00000000000b
C=c0000000-0000-4000-8000-00000000000c
manifest() { # id name connections tcp-ports
  cat >"$work/$1.json" <<JSON
{ "SchemaVersion": 1, "Name": "$2", "ComponentId": "$1", "EntryPoint": "/bin/app", "CmdArgs": [],
  "Capabilities": { $3 $4 }, "ApplicationType": "Default" }
JSON
}
manifest "$A" app-a '"AllowedConnections": ["allowed.example.com", "*.cdn.example.org", "ttl.example.com", "rebind.example.com", "192.0.2.11"]' ''
manifest "$B" app-b '"AllowedConnections": ["b.example.com"],' '"AllowedTcpServerPorts": [8080]'
manifest "$C" app-c '' '"AllowedTcpServerPorts": []'
for id in $A $B $C; do
  if dev "$NETD" setup "$id" "$run/netns/$id" "$work/$id.json" --socket "$work/netd.sock" >"$work/$id.compartment"; then
    ok "compartment for $id: $(cat "$work/$id.compartment")"
  else
    bad "set up $id: $(cat "$work/$id.compartment")"; finish
  fi
done
addr_of() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$work/$1.compartment" "$2"; }
# Two apps set up at once (the app manager starts apps concurrently at boot): each must get
# its own slot and keep its link; they once shared slot 0 and one deleted the other's veth.
D=d0000000-0000-4000-8000-00000000000d
E=e0000000-0000-4000-8000-00000000000e
manifest "$D" app-d '"AllowedConnections": ["allowed.example.com"]' ''
manifest "$E" app-e '"AllowedConnections": ["allowed.example.com"]' ''
for id in $D $E; do
  dev "$NETD" setup "$id" "$run/netns/$id" "$work/$id.json" --socket "$work/netd.sock" >"$work/$id.compartment" 2>&1 &
done
wait_ok=1
for job in $(jobs -p); do [[ " ${pids[*]} " == *" $job "* ]] || wait "$job" || wait_ok=0; done
concurrent=$(for id in $D $E; do nsenter --net="$run/netns/$id" ip -4 -o addr show dev eth0 2>/dev/null | awk '{print $4}'; done | sort -u | wc -l)
if ((wait_ok)) && [[ $concurrent == 2 ]]; then
  ok "two compartments set up at once get distinct slots, both links up"
else
  bad "concurrent setup: $(cat "$work/$D.compartment" "$work/$E.compartment")"
fi
dev "$NETD" teardown "$D" --socket "$work/netd.sock"; dev "$NETD" teardown "$E" --socket "$work/netd.sock"

B_ADDR=$(addr_of "$B" address_v4); B_GW=$(addr_of "$B" gateway_v4); A_GW=$(addr_of "$A" gateway_v4)

dev nft list table inet hostfw >/dev/null 2>&1 && ok "the host's own table is untouched" || bad "the host's table inet hostfw is gone"
dev nft list table inet opensphere >"$work/ruleset.nft" 2>&1 && ok "table inet opensphere loaded ($(grep -c . "$work/ruleset.nft") lines)" \
  || bad "nft cannot list table inet opensphere: $(cat "$work/ruleset.nft")"

# --- what must work ------------------------------------------------------------------------
expect_ok() { # description, command...
  local what=$1; shift
  if out=$("$@" 2>&1); then ok "$what ${out:+($out)}"; else bad "$what: $out"; fi
}
expect_ok "A resolves an allowed name" app "$A" resolve allowed.example.com
expect_ok "A reaches the allowed name over IPv4" app "$A" connect 192.0.2.10 80 allowed-v4
expect_ok "A reaches the allowed name over IPv6" app "$A" connect 2001:db8::10 80 allowed-v6
expect_ok "A reaches its allowed IP literal" app "$A" connect 192.0.2.11 80 allowed-literal
expect_ok "A resolves a wildcard name" app "$A" resolve x.cdn.example.org
expect_ok "A reaches a wildcard name's address" app "$A" connect 192.0.2.30 80 allowed-wildcard
expect_ok "B resolves its allowed name" app "$B" resolve b.example.com
expect_ok "B reaches its allowed name" app "$B" connect 198.51.100.10 80 allowed-b
expect_ok "A resolves ttl.example.com (TTL 2 s)" app "$A" resolve ttl.example.com
expect_ok "A reaches 192.0.2.20 while the TTL runs" app "$A" connect 192.0.2.20 80 allowed-ttl
# B runs a server on 8080 (allowed) and 8081 (not in its manifest).
nsenter --net="$run/netns/$B" python3 "$HOSTS" serve "$LOG" "$work/zone" >"$work/bhosts.out" 2>&1 &
pids+=($!)
for _ in $(seq 30); do grep -q ready "$work/bhosts.out" && break; sleep 0.1; done
expect_ok "a LAN peer reaches B's server port 8080" net python3 "$HOSTS" connect "$B_ADDR" 8080 inbound-allowed

# --- bypass attempts: each must fail, and its token must never reach a host ----------------
tokens=()
attempt() { # description, token, command...
  local what=$1 token=$2; shift 2
  attempts=$((attempts + 1))
  tokens+=("$token")
  out=$("$@" 2>&1)
  case $? in
    0) through=$((through + 1)); bad "BYPASS: $what got an answer ($out)" ;;
    3) ok "blocked: $what" ;;
    *) bad "attempt did not run: $what: $out" ;;
  esac
}
attempt "A to a disallowed IP literal" t-literal app "$A" connect 192.0.2.12 80 t-literal
attempt "A resolves a disallowed name" t-name app "$A" resolve blocked.example.net
attempt "A to another app's allowed host" t-otherhost app "$A" connect 198.51.100.10 80 t-otherhost
attempt "A to a disallowed IPv6 address" t-v6 app "$A" connect 2001:db8::12 80 t-v6
attempt "A to the metadata address" t-meta app "$A" connect 169.254.169.254 80 t-meta
attempt "A resolves a wildcard name that points at the metadata address" t-meta-dns app "$A" resolve meta.cdn.example.org
attempt "A resolves an allowed name rebound to a private address" t-rebind app "$A" resolve rebind.example.com
attempt "A to the rebinding target anyway" t-rebind-ip app "$A" connect 10.0.0.5 80 t-rebind-ip
attempt "A asks a rogue DNS server" t-rogue app "$A" dns 198.51.100.54 t-rogue.example.com
attempt "A asks the upstream DNS server directly" t-upstream app "$A" dns 198.51.100.53 t-upstream.example.com
attempt "A asks B's DNS proxy" t-bproxy app "$A" dns "$B_GW" b.example.com
attempt "A to a host daemon on its gateway" t-hostgw app "$A" connect "$A_GW" 8000 t-hostgw
attempt "A to a host daemon on the uplink address" t-hostup app "$A" connect 203.0.113.1 8000 t-hostup
attempt "A to app B" t-app2app app "$A" connect "$B_ADDR" 8080 t-app2app
attempt "A sends UDP to a disallowed host" t-udp app "$A" udp 192.0.2.12 9 t-udp
attempt "A sends a raw-socket IPv4/UDP packet to a disallowed host" t-raw app "$A" raw 192.0.2.12 t-raw
attempt "A forges B's source address on a packet socket to B's allowed host" t-forge app "$A" packet eth0 "$A_GW" "$B_ADDR" 198.51.100.10 t-forge
attempt "C (no AllowedConnections) resolves a name" t-c-dns app "$C" resolve allowed.example.com
attempt "C (no AllowedConnections) to an IP" t-c-ip app "$C" connect 192.0.2.11 80 t-c-ip
attempt "a LAN peer to B's closed port 8081" t-inbound net python3 "$HOSTS" connect "$B_ADDR" 8081 t-inbound

# TTL expiry: the old address leaves the set; a fresh answer brings the new one.
printf 'A 2 192.0.2.21\n' >"$work/zone/ttl.example.com"
sleep 3
attempt "A to ttl.example.com's old address after the TTL ran out" t-expired app "$A" connect 192.0.2.20 80 t-expired
expect_ok "A resolves ttl.example.com afresh" app "$A" resolve ttl.example.com
expect_ok "A reaches the fresh answer" app "$A" connect 192.0.2.21 80 allowed-fresh

# Controls for the raw paths: the same hand-made packets to an allowed host, from A's own
# address, do arrive; so the blocked ones above were stopped by the rules, not by the tool.
A_ADDR=$(addr_of "$A" address_v4)
app "$A" raw 192.0.2.11 c-raw >/dev/null
app "$A" packet eth0 "$A_GW" "$A_ADDR" 192.0.2.11 c-packet >/dev/null
sleep 0.5
grep -q "udp .* c-raw$" "$LOG" && ok "control: a raw-socket packet to an allowed host arrives" || bad "control: raw-socket packet to an allowed host did not arrive"
grep -q "udp .* c-packet$" "$LOG" && ok "control: a packet-socket frame to an allowed host arrives" || bad "control: packet-socket frame to an allowed host did not arrive"
for token in "${tokens[@]}"; do
  if grep -q -- " $token\$\|$token\." "$LOG"; then
    through=$((through + 1)); bad "BYPASS: token $token reached a test host: $(grep -- "$token" "$LOG" | head -1)"
  fi
done
grep -q "allowed-v4" "$LOG" && ok "the hosts log what got through (allowed traffic is there)" || bad "hosts log is empty: the token check proves nothing"
grep -q "dns upstream .* blocked.example.net" "$LOG" && bad "a disallowed name reached the upstream" || ok "a disallowed name never left the device"

# --- telemetry ----------------------------------------------------------------------------
sleep 6   # the daemon writes its telemetry file every 5 s
state="$work/state/blocked.json"
check_blocked() { # description, python expression over entries e
  if python3 -c "import json,sys; e=json.load(open(sys.argv[1])); sys.exit(0 if ($2) else 1)" "$state" 2>/dev/null; then ok "telemetry: $1"; else bad "telemetry: $1 ($(head -c 600 "$state" 2>/dev/null))"; fi
}
check_blocked "outbound block of 192.0.2.12:80 for A, counted" "any(x['component_id']=='$A' and x['kind']=='outbound' and x['destination']=='192.0.2.12' and x['port']==80 and x['count']>=1 and x['first_seen']<=x['last_seen'] for x in e)"
check_blocked "IPv6 block of 2001:db8::12" "any(x['destination']=='2001:db8::12' for x in e)"
check_blocked "host-daemon attempt" "any(x['kind']=='host' and x['port']==8000 for x in e)"
check_blocked "disallowed name" "any(x['kind']=='dns' and x['destination']=='blocked.example.net' for x in e)"
check_blocked "rebinding answer" "any(x['kind']=='dns-rebind' and 'rebind.example.com' in x['destination'] for x in e)"
check_blocked "inbound to a closed port" "any(x['component_id']=='$B' and x['kind']=='inbound' and x['port']==8081 for x in e)"

# --- the operator's view: sphere net rules / blocked --------------------------------------
if out=$("$SPHERE" net rules "$A" --socket "$work/netd.sock"); then
  grep -q "x.cdn.example.org .*192.0.2.30" <<<"$out" && grep -q "allowed.example.com .*2001:db8::10" <<<"$out" \
    && grep -q "ip saddr 10.213.0.2 ip daddr @allow4_0 accept" <<<"$out" \
    && ok "sphere net rules shows A's resolved addresses and chains" || bad "sphere net rules: $out"
else bad "sphere net rules failed: $out"; fi
if out=$("$SPHERE" --json net rules "$C" --socket "$work/netd.sock") \
  && python3 -c "import json,sys; r=json.loads(sys.argv[1]); sys.exit(0 if r['allowed_connections']==[] and r['resolved']==[] else 1)" "$out"; then
  ok "sphere --json net rules: C allows nothing"
else bad "sphere --json net rules C: $out"; fi
if out=$("$SPHERE" --json net blocked --app "$A" --socket "$work/netd.sock") \
  && python3 -c "import json,sys; b=json.loads(sys.argv[1])['blocked']; sys.exit(0 if b and all(x['component_id']==sys.argv[2] for x in b) and any(x['destination']=='192.0.2.12' for x in b) else 1)" "$out" "$A"; then
  ok "sphere --json net blocked --app A lists A's blocks only"
else bad "sphere net blocked: $out"; fi
"$SPHERE" net rules 00000000-0000-4000-8000-000000000000 --socket "$work/netd.sock" >/dev/null 2>&1
[[ $? == 1 ]] && ok "sphere net rules of an unknown app exits 1" || bad "sphere net rules of an unknown app: wrong exit"

dev "$NETD" teardown "$C" --socket "$work/netd.sock" && ! dev ip link show sph2 >/dev/null 2>&1 \
  && ok "tear-down removes C's veth" || bad "tear-down of C"
finish
