#!/usr/bin/env bash
# sphere-netd benchmark (issue #8), as root, in scratch network namespaces (no uplink):
#   1. rule update: the whole `inet opensphere` table replaced in one netlink batch, for 1, 10 and
#      100 apps with 20 resolved hostnames each (median of 7 runs; goal: 100 apps < 50 ms), at
#      normal priority and again under SCHED_FIFO (the work itself, without waiting for a CPU);
#   2. DNS proxy overhead: the median of 1000 A queries from an app through its proxy (which
#      forwards, filters and adds the answer to the app's nftables set) against the same queries
#      sent straight to the test upstream from the device namespace (goal: < 0.2 ms added).
# Usage: scripts/bench-netd.sh      (NETD_BIN=path skips the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) -eq 0 ]] || { echo "bench-netd: must run as root" >&2; exit 2; }
scripts/install-host-deps.sh netd >&2
if [[ -z ${NETD_BIN:-} ]]; then
  cargo build -q --release --locked -p sphere-netd >&2
  NETD_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/sphere-netd"
fi
HOSTS="$PWD/tests/netd-hosts.py"
work=$(mktemp -d /tmp/bench-netd.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # A daemon started through the nsenter wrapper is a grandchild of the recorded pid: end
  # everything that runs from this work directory too (sphere-netd outlived the suite before).
  pkill -f -- "$work/" 2>/dev/null || true
  wait 2>/dev/null || true
  for pin in "$work"/run/netns/*; do [[ -e $pin ]] && umount "$pin" 2>/dev/null || true; done
  ip netns del obn-dev 2>/dev/null || true
  ip netns del obn-net 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
echo "bench-netd: $(uname -r), $(nproc) cores, $("$NETD_BIN" 2>&1 | head -0)release build $NETD_BIN"

ip netns add obn-dev
ip netns add obn-net
dev() { nsenter --net=/run/netns/obn-dev "$@"; }
net() { nsenter --net=/run/netns/obn-net "$@"; }
for n in 1 10 100; do dev "$NETD_BIN" bench-rules --apps "$n" --names 20 --runs 7; done
# The same under SCHED_FIFO: the kernel applies a batch in the sending thread, so this measures
# the update's own work without the wait for a CPU on a busy (shared) machine.
if command -v chrt >/dev/null; then
  for n in 1 10 100; do echo "(SCHED_FIFO) $(dev chrt -f 50 "$NETD_BIN" bench-rules --apps "$n" --names 20 --runs 7)"; done
fi

ip link add up1 netns obn-dev type veth peer name up0 netns obn-net
dev ip link set lo up; net ip link set lo up
dev ip addr add 203.0.113.1/30 dev up1; net ip addr add 203.0.113.2/30 dev up0
dev ip link set up1 up; net ip link set up0 up
dev ip route add default via 203.0.113.2
net ip addr add 198.51.100.53/32 dev lo
mkdir -p "$work/zone" "$work/run"
printf 'A 300 192.0.2.10\n' >"$work/zone/allowed.example.com"
net python3 "$HOSTS" serve "$work/hosts.log" "$work/zone" >"$work/hosts.out" 2>&1 &
pids+=($!)
dev "$NETD_BIN" serve --socket "$work/netd.sock" --runtime-dir "$work/run/net" --state-dir "$work/state" \
  --upstream 198.51.100.53 >"$work/netd.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [[ -S $work/netd.sock ]] && grep -q ready "$work/hosts.out" && break; sleep 0.1; done
id=be000000-0000-4000-8000-0000000000be
cat >"$work/app.json" <<JSON
{ "SchemaVersion": 1, "Name": "bench", "ComponentId": "$id", "EntryPoint": "/bin/app", "CmdArgs": [],
  "Capabilities": { "AllowedConnections": ["allowed.example.com"] }, "ApplicationType": "Default" }
JSON
dev "$NETD_BIN" setup "$id" "$work/run/netns/$id" "$work/app.json" --socket "$work/netd.sock" >/dev/null
direct=$(dev "$NETD_BIN" bench-dns --server 198.51.100.53 --name allowed.example.com --count 1000)
proxied=$(nsenter --net="$work/run/netns/$id" "$NETD_BIN" bench-dns --server 10.213.0.1 --name allowed.example.com --count 1000)
echo "$direct (direct, from the device namespace)"
echo "$proxied (through the app's proxy)"
d=$(grep -o 'median [0-9.]*' <<<"$direct" | cut -d' ' -f2)
p=$(grep -o 'median [0-9.]*' <<<"$proxied" | cut -d' ' -f2)
python3 -c "import sys; d,p=float(sys.argv[1]),float(sys.argv[2]); print(f'proxy overhead: median {p-d:.3f} ms per query ({p:.3f} vs {d:.3f} ms)')" "$d" "$p"
