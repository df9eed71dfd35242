#!/usr/bin/env bash
# Boot benchmark of the QEMU Cortex-A7 image against Debian's stock armmp kernel (issue #3).
#
# Usage: scripts/bench-boot.sh [options]
#   --runs N          timed boots per side, interleaved ours/stock in one run (default 5)
#   --no-build        benchmark the image already in --image-dir (default: run build-image.sh,
#                     which is cached, first)
#   --image-dir DIR   image to benchmark (default ${OPENSPHERE_CACHE:-$HOME/.cache/opensphere}/image)
#   --mem-steps LIST  guest RAM sizes (MiB) tried, largest first, for the smallest -m that still
#                     boots (default "64 56 48 40 36 32 28 24 20 16"; stops at the first failure)
#   --no-mem-search   skip that search
#   -m MIB            guest RAM of the timed boots, both sides (default 256)
#   --timeout SEC     per boot (default 90)
#   -h, --help
#
# Prints figures, asserts nothing (the boot test asserts): per side median [min-max] of the boot
# phases, the ratio ours/stock, kernel and image sizes, the RSS of every process after boot and
# the smallest -m, then one verdict line per goal of issue #3.
#
# Both sides run on the same QEMU machine (qemu-system-arm -M virt,highmem=off -cpu cortex-a7
# -m 256, TCG, the same virtio devices as scripts/run-qemu.sh) with the same console settings
# (console=ttyAMA0 earlycon=pl011,0x9000000 panic=-1), and every console line is timestamped on the
# host by scripts/qemu-console.py. Definitions, identical for both sides (host clock):
#   kernel start  the console line "Booting Linux on physical CPU" (printed at once by earlycon,
#                 after the zImage decompressor has run)
#   kernel done   the console line "Run /init as init process"
#   init ready    ours: sphere-init's `milestone boot-complete` (initramfs stage done, root
#                 mounted, switched root, mounts, network, every service ready);
#                 stock: a busybox /init has mounted proc, sysfs and devtmpfs and printed
#                 `stock-init: ready` (it then runs `poweroff -f`)
# The guest's CLOCK_MONOTONIC at init ready is shown too, but it is NOT used for the goal: the
# kernel's clock starts only when the timer is set up, so it misses everything before that.
#
# Stock side: linux-image-6.1.0-NN-armmp:armhf (newest NN that apt knows, downloaded once) and
# busybox-static:armhf, both via `apt-get download`, kept in the cache's bench/ directory with
# the initramfs built from them. Our image is copied to bench/image (with its own scratch data
# disk) so that concurrent builds or boot tests do not disturb the benchmark.
# Console logs of the last run: bench/logs/.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
script_path="$repo_root/scripts/$(basename "${BASH_SOURCE[0]}")"
log() { echo "bench-boot: $*" >&2; }
die() { echo "bench-boot: ERROR: $*" >&2; exit 2; }

cache=${OPENSPHERE_CACHE:-$HOME/.cache/opensphere}
runs=5
build=1
image_dir=
mem_steps="64 56 48 40 36 32 28 24 20 16"
mem_search=1
timeout=90
memory=256
while (($#)); do
  case "$1" in
    --runs) runs=${2:?--runs needs a number}; shift ;;
    --no-build) build=0 ;;
    --image-dir) image_dir=${2:?--image-dir needs a directory}; build=0; shift ;;
    --mem-steps) mem_steps=${2:?--mem-steps needs a list}; shift ;;
    --no-mem-search) mem_search=0 ;;
    --timeout) timeout=${2:?}; shift ;;
    -m) memory=${2:?-m needs MiB}; shift ;;
    -h|--help) sed -n '2,/^set -euo pipefail/{/^set -euo/d;s/^# \{0,1\}//;p}' "$script_path"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs wants a positive number, got '$runs'"
[[ $timeout =~ ^[1-9][0-9]*$ ]] || die "--timeout wants seconds, got '$timeout'"
[[ $memory =~ ^[1-9][0-9]*$ ]] || die "-m wants MiB, got '$memory'"
for m in $mem_steps; do [[ $m =~ ^[1-9][0-9]*$ ]] || die "--mem-steps: '$m' is not MiB"; done
[[ $(id -u) -eq 0 ]] || die "run as root (build-image.sh and the stock initramfs need device nodes)"
command -v qemu-system-arm >/dev/null || die "qemu-system-arm missing (scripts/install-host-deps.sh image)"

bench="$cache/bench"
mkdir -p "$bench/debs" "$bench/stock" "$bench/image" "$cache/tmp"
logs="$bench/logs"
rm -rf "$logs"
mkdir -p "$logs"
work=$(mktemp -d "$cache/tmp/bench-boot.XXXXXX")
trap 'rm -rf "$work"' EXIT
started=$SECONDS

# --- 1. Our image ------------------------------------------------------------------------------
if ((build)); then
  log "building the image (scripts/build-image.sh; output in $logs/build-image.log)"
  image_dir=$("$repo_root/scripts/build-image.sh" 2>"$logs/build-image.log" | tail -n1) ||
    { tail -n 20 "$logs/build-image.log" >&2; die "build-image.sh failed"; }
fi
image_dir=${image_dir:-$cache/image}
rootfs_src=$(ls "$image_dir"/rootfs.erofs "$image_dir"/rootfs.squashfs 2>/dev/null | head -n1 || true)
[[ -n $rootfs_src && -f $image_dir/zImage && -f $image_dir/initramfs.cpio.zst && -f $image_dir/cmdline.txt ]] ||
  die "$image_dir is not a built image (run scripts/build-image.sh)"
snap="$bench/image"
rm -f "$snap"/rootfs.* "$snap"/.tmp.*
for file in zImage initramfs.cpio.zst cmdline.txt kernelrelease "$(basename "$rootfs_src")"; do
  if [[ -f $image_dir/$file ]]; then cp -f "$image_dir/$file" "$snap/$file"; else rm -f "$snap/$file"; fi
done
truncate -s 64M "$work/data.ext4" && mkfs.ext4 -q -F -L sphere-data "$work/data.ext4"
mv -f "$work/data.ext4" "$snap/data.ext4"
rootfs="$snap/$(basename "$rootfs_src")"

# --- 2. Stock side: Debian armmp kernel + busybox initramfs --------------------------------------
# apt_download PACKAGE: fetch PACKAGE:armhf into bench/debs (armhf package lists once if needed).
apt_download() {
  if ! (cd "$bench/debs" && apt-get download -q "$1:armhf" >/dev/null 2>&1); then
    dpkg --print-foreign-architectures | grep -qx armhf || dpkg --add-architecture armhf
    apt-get update -qq >&2 || log "warning: apt-get update reported errors; trying the download anyway"
    (cd "$bench/debs" && apt-get download -q "$1:armhf" >&2)
  fi
}
kernel_deb=$(ls "$bench"/debs/linux-image-6.1.0-*-armmp_*_armhf.deb 2>/dev/null | sort -V | tail -n1 || true)
if [[ -z $kernel_deb ]]; then
  stock_pkg=$(apt-cache search '^linux-image-6\.1\.0-[0-9]+-armmp$' 2>/dev/null | awk '{print $1}' | sort -V | tail -n1)
  if [[ -z $stock_pkg ]]; then
    dpkg --print-foreign-architectures | grep -qx armhf || dpkg --add-architecture armhf
    apt-get update -qq >&2 || true
    stock_pkg=$(apt-cache search '^linux-image-6\.1\.0-[0-9]+-armmp$' | awk '{print $1}' | sort -V | tail -n1)
  fi
  [[ -n $stock_pkg ]] || die "apt knows no linux-image-6.1.0-NN-armmp package"
  log "downloading $stock_pkg:armhf (once)"
  apt_download "$stock_pkg"
  kernel_deb=$(ls "$bench"/debs/linux-image-6.1.0-*-armmp_*_armhf.deb | sort -V | tail -n1)
fi
busybox_deb=$(ls "$bench"/debs/busybox-static_*_armhf.deb 2>/dev/null | tail -n1 || true)
if [[ -z $busybox_deb ]]; then
  log "downloading busybox-static:armhf (once)"
  apt_download busybox-static
  busybox_deb=$(ls "$bench"/debs/busybox-static_*_armhf.deb | tail -n1)
fi
stock="$bench/stock"
stamp="$(basename "$kernel_deb") $(basename "$busybox_deb") v1"
if [[ $(cat "$stock/stamp" 2>/dev/null) != "$stamp" ]]; then
  log "extracting $(basename "$kernel_deb") and building the busybox initramfs"
  rm -rf "$work/k" "$work/bb" "$work/ir"
  dpkg-deb --fsys-tarfile "$kernel_deb" | tar -x -C "$work" --wildcards './boot/vmlinuz-*' './boot/config-*'
  dpkg-deb -x "$busybox_deb" "$work/bb"
  mkdir -p "$work/ir"/{bin,dev,proc,sys}
  install -m 0755 "$work/bb/bin/busybox" "$work/ir/bin/busybox"
  mknod -m 0600 "$work/ir/dev/console" c 5 1
  # /proc/timer_list's "now at N nsecs" is ktime_get(), the same CLOCK_MONOTONIC sphere-init prints.
  cat >"$work/ir/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
ns=$(/bin/busybox sed -n 's/^now at \([0-9]*\) nsecs$/\1/p;5q' /proc/timer_list)
echo "stock-init: ready monotonic_ns=${ns:-unknown}"
/bin/busybox poweroff -f
EOF
  chmod 0755 "$work/ir/init"
  # Same compression as our initramfs (zstd -19).
  (cd "$work/ir" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
    cpio --quiet -o -0 -H newc -R 0:0 --reproducible) | zstd -q -19 -T0 >"$work/initramfs.cpio.zst"
  mv -f "$work"/boot/vmlinuz-* "$stock/vmlinuz"
  mv -f "$work"/boot/config-* "$stock/config"
  mv -f "$work/initramfs.cpio.zst" "$stock/initramfs.cpio.zst"
  echo "$stamp" >"$stock/stamp"
fi
truncate -s 64M "$stock/scratch.img"

common_append="console=ttyAMA0 earlycon=pl011,0x9000000 panic=-1"
grep -q "^$common_append" "$snap/cmdline.txt" ||
  log "warning: our command line does not start with '$common_append': console settings differ"

# boot_stock LOG MEM: one stock boot with the machine and devices of scripts/run-qemu.sh.
boot_stock() {
  local log=$1 mem=$2 sock_dir
  sock_dir=$(mktemp -d "${TMPDIR:-/tmp}/bench-stock.XXXXXX")
  python3 "$repo_root/scripts/qemu-console.py" --log "$log" --milestones "$log.milestones.json" \
    --timeout "$timeout" --grace 0 --quiet -- \
    qemu-system-arm -M virt,highmem=off -cpu cortex-a7 -m "$mem" \
    -display none -monitor none -serial stdio -no-reboot \
    -kernel "$stock/vmlinuz" -initrd "$stock/initramfs.cpio.zst" -append "$common_append" \
    -drive "if=none,id=root,file=$rootfs,format=raw,readonly=on" \
    -device virtio-blk-device,drive=root,serial=sphere-root \
    -drive "if=none,id=data,file=$stock/scratch.img,format=raw" \
    -device virtio-blk-device,drive=data,serial=sphere-data \
    -netdev user,id=n0,restrict=on -device virtio-net-device,netdev=n0 \
    -device virtio-rng-device \
    -chardev "socket,id=ctl,path=$sock_dir/ctl.sock,server=on,wait=off" \
    -device virtio-serial-device -device virtserialport,chardev=ctl,name=sphere.ctl \
    >"$log.out" 2>&1 || echo "exit $?" >>"$log.out"
  rm -rf "$sock_dir"
}
# boot_ours LOG MEM [run-qemu.sh args...]
boot_ours() {
  local log=$1 mem=$2
  shift 2
  "$repo_root/scripts/run-qemu.sh" --image-dir "$snap" -m "$mem" --timeout "$timeout" --quiet \
    --log "$log" "$@" >"$log.out" 2>&1 || echo "exit $?" >>"$log.out"
}

# --- 3. Timed boots, interleaved ---------------------------------------------------------------
log "timed boots: $runs per side, interleaved (odd runs ours first, even runs stock first)"
for ((i = 1; i <= runs; i++)); do
  if ((i % 2)); then
    boot_ours "$logs/ours-$i.log" "$memory" --command poweroff
    boot_stock "$logs/stock-$i.log" "$memory"
  else
    boot_stock "$logs/stock-$i.log" "$memory"
    boot_ours "$logs/ours-$i.log" "$memory" --command poweroff
  fi
  log "  run $i/$runs done (+$((SECONDS - started))s)"
done

# --- 4. RSS after boot (self-test boot, same -m) ---------------------------------------------------------
log "self-test boot for the per-process RSS"
boot_ours "$logs/rss.log" "$memory" --selftest --command poweroff

# --- 5. Smallest -m ------------------------------------------------------------------------------------
mem_tried=()
if ((mem_search)); then
  log "smallest -m: trying $mem_steps (self-test boot; stops at the first failure)"
  for m in $mem_steps; do
    boot_ours "$logs/mem-$m.log" "$m" --selftest --command poweroff
    mem_tried+=("$m")
    if python3 - "$repo_root/images/qemu-a7/init.json" "$logs/mem-$m.log" <<'PY'; then
import json, re, sys
from pathlib import Path
cfg, log = json.load(open(sys.argv[1])), Path(sys.argv[2])
text = log.read_text(errors="replace")
out = Path(str(log) + ".out").read_text(errors="replace")
need = [s["name"] for s in cfg.get("services", []) if s.get("only_if_cmdline") in (None, "sphere.selftest")]
ok = re.search(r"sphere-init: milestone boot-complete services=\d+ t=", text) is not None
ok = ok and all(f"milestone daemon-ready name={n} " in text for n in need)
ok = ok and "run-qemu: exit status 0" in out and "Out of memory" not in text and "oom-kill" not in text
sys.exit(0 if ok else 1)
PY
      log "  -m $m: boots, every service ready"
    else
      log "  -m $m: FAILED (see $logs/mem-$m.log)"
      break
    fi
  done
fi

# --- 6. Report ---------------------------------------------------------------------------------------
log "done in $((SECONDS - started))s; console logs in $logs"
python3 - "$runs" "$memory" "$logs" "$snap" "$rootfs" "$stock" "$kernel_deb" "$busybox_deb" \
  "$repo_root/images/qemu-a7/init.json" "${mem_tried[*]:-}" <<'PY'
import json, re, statistics, sys
from pathlib import Path

runs, memory, logs, snap, rootfs, stock, kernel_deb, busybox_deb, init_json, mem_tried = sys.argv[1:]
runs, logs, snap, rootfs, stock = int(runs), Path(logs), Path(snap), Path(rootfs), Path(stock)
mem_tried = [int(m) for m in mem_tried.split()]
MIB = 1024 * 1024
LINE = re.compile(r"^\[\s*(\d+\.\d+)\] (.*)$")
PRINTK = re.compile(r"^\[\s*(\d+\.\d+)\] ")
MILESTONE = re.compile(r"sphere-init: milestone (\S+)((?: [^ =]+=\S+)*) t=(\d+\.\d+)")


def parse(path, side):
    """Phase times (host s) of one boot log, or None if it did not reach init ready."""
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        m = LINE.match(raw)
        if m:
            lines.append((float(m.group(1)), m.group(2)))
    r = {"milestones": {}}
    for host, text in lines:
        if "kernel_start" not in r and "Booting Linux on physical CPU" in text:
            r["kernel_start"] = host
        if "kernel_done" not in r and "Run /init as init process" in text:
            r["kernel_done"] = host
        p = PRINTK.match(text)
        if p and "kernel_start" in r and "timer_start" not in r and float(p.group(1)) > 0:
            r["timer_start"] = host  # first printk stamp > 0: the kernel's clock is running
        if "mem auto-init: clearing system memory" in text:
            r["clear_start"] = host
        elif "clear_start" in r and "clear_end" not in r:
            r["clear_end"] = host
        m = MILESTONE.search(text)
        if m:
            r["milestones"].setdefault(m.group(1), (host, float(m.group(3))))
        if side == "stock" and "ready" not in r and text.startswith("stock-init: ready"):
            ns = re.search(r"monotonic_ns=(\d+)", text)
            r["ready"], r["guest_ready"] = host, (int(ns.group(1)) / 1e9 if ns else None)
    if side == "ours" and "boot-complete" in r["milestones"]:
        r["ready"], r["guest_ready"] = r["milestones"]["boot-complete"]
    if not all(k in r for k in ("kernel_start", "kernel_done", "ready")):
        return None
    r["clear"] = r["clear_end"] - r["clear_start"] if "clear_end" in r else 0.0
    return r


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def fmt(s, unit="s"):
    if s is None:
        return "n/a"
    return f"{s[0]:6.3f} [{s[1]:.3f}-{s[2]:.3f}]"


results = {side: [parse(logs / f"{side}-{i}.log", side) for i in range(1, runs + 1)] for side in ("ours", "stock")}
failed = {side: sum(r is None for r in rs) for side, rs in results.items()}
good = {side: [r for r in rs if r] for side, rs in results.items()}

print()
print(f"OpenSphere boot benchmark — {runs} boots per side, interleaved in one run")
print(f"machine: qemu-system-arm -M virt,highmem=off -cpu cortex-a7 -m {memory}, TCG, same virtio devices both sides")
release = (snap / "kernelrelease").read_text().strip() if (snap / "kernelrelease").exists() else "?"
print(f"ours : Linux {release}, {rootfs.name}, sphere-init; cmdline: {(snap / 'cmdline.txt').read_text().strip()}")
print(f"stock: {Path(kernel_deb).name} + busybox initramfs ({Path(busybox_deb).name}); "
      "cmdline: console=ttyAMA0 earlycon=pl011,0x9000000 panic=-1")
for side in ("ours", "stock"):
    if failed[side]:
        print(f"WARNING: {failed[side]} of {runs} {side} boots did not reach init ready (logs in {logs})")
print()
print("Boot phases, host clock, seconds: median [min-max]")
phases = [
    ("QEMU start -> kernel start (load+decompress)", lambda r: r["kernel_start"]),
    ("kernel start -> Run /init (kernel)", lambda r: r["kernel_done"] - r["kernel_start"]),
    ("  of it: before the kernel clock starts", lambda r: r.get("timer_start", r["kernel_start"]) - r["kernel_start"]),
    ("  of it: mem auto-init clearing memory", lambda r: r["clear"]),
    ("Run /init -> init ready (user space)", lambda r: r["ready"] - r["kernel_done"]),
    ("kernel start -> init ready  [GOAL]", lambda r: r["ready"] - r["kernel_start"]),
    ("  the same without mem auto-init clearing", lambda r: r["ready"] - r["kernel_start"] - r["clear"]),
    ("QEMU start -> init ready", lambda r: r["ready"]),
    ("guest CLOCK_MONOTONIC at init ready", lambda r: r.get("guest_ready")),
]
print(f"  {'phase':<46} {'ours':<24} {'stock':<24} ours/stock")
medians = {}
for name, fn in phases:
    s = {side: stats([fn(r) for r in good[side]]) for side in ("ours", "stock")}
    medians[name] = s
    ratio = f"{s['ours'][0] / s['stock'][0]:.2f}x" if s["ours"] and s["stock"] and s["stock"][0] > 0 else "-"
    print(f"  {name:<46} {fmt(s['ours']):<24} {fmt(s['stock']):<24} {ratio}")
print("  (the guest clock starts only with the kernel timer, so it misses the first phase of the kernel)")

print()
print("Our init milestones, host seconds after kernel start, median of the timed boots:")
names = []
for r in good["ours"]:
    for n in r["milestones"]:
        if n not in names and n not in ("shutdown-start", "shutdown-complete"):
            names.append(n)
row = [("Run /init", stats([r["kernel_done"] - r["kernel_start"] for r in good["ours"]]))]
row += [(n, stats([r["milestones"][n][0] - r["kernel_start"] for r in good["ours"] if n in r["milestones"]])) for n in names]
print("  " + "  ".join(f"{n} {s[0]:.3f}" for n, s in row if s))

# Sizes
zimage = (snap / "zImage").stat().st_size
initramfs = (snap / "initramfs.cpio.zst").stat().st_size
root = rootfs.stat().st_size
total = zimage + initramfs + root
vmlinuz = (stock / "vmlinuz").stat().st_size
print()
print("Sizes")
print(f"  kernel: our zImage {zimage / MIB:.2f} MiB vs stock vmlinuz {vmlinuz / MIB:.2f} MiB "
      f"({zimage / vmlinuz:.2f}x; stock modules not counted)")
print(f"  image: zImage {zimage / MIB:.2f} + initramfs {initramfs / MIB:.2f} + {rootfs.name} {root / MIB:.2f} "
      f"= {total / MIB:.2f} MiB ({total} bytes) vs budget 16 MiB")

# RSS
rss_log = (logs / "rss.log").read_text(errors="replace") if (logs / "rss.log").exists() else ""
rows = re.findall(r"sphere-init: fact rss=pid=(\d+) comm=(\S+) kib=(\d+)", rss_log)
total_rss = re.search(r"sphere-init: fact rss-total-kib=(\d+)", rss_log)
selftest_only = {s["name"] for s in json.load(open(init_json)).get("services", []) if s.get("only_if_cmdline")}
service_pid = {m.group(1): m.group(2) for m in re.finditer(r"milestone daemon-ready name=(\S+) pid=(\d+)", rss_log)}
selftest_pids = {pid for name, pid in service_pid.items() if name in selftest_only}
print()
print(f"Memory after boot (self-test boot, -m {memory}; VmRSS of every user-space process)")
if rows:
    for pid, comm, kib in rows:
        name = next((n for n, p in service_pid.items() if p == pid), "")
        tag = f" service {name}" + (" (self-test only)" if pid in selftest_pids else "") if name else ""
        print(f"  pid {pid:>4} {comm:<16} {int(kib):>6} KiB{tag}")
    rss_total = int(total_rss.group(1)) if total_rss else sum(int(k) for _, _, k in rows)
    rss_prod = sum(int(k) for p, _, k in rows if p not in selftest_pids)
    print(f"  total {rss_total} KiB ({rss_total / 1024:.2f} MiB); without the self-test-only services "
          f"{rss_prod} KiB ({rss_prod / 1024:.2f} MiB)")
    meminfo = re.findall(r"sphere-init: fact meminfo\.(\w+)=(.*)", rss_log)
    if meminfo:
        print("  " + ", ".join(f"{k} {v.strip()}" for k, v in meminfo))
else:
    rss_total = None
    print("  no rss facts in the self-test boot (see rss.log)")

# Smallest -m
print()
cfg_services = json.load(open(init_json)).get("services", [])
apps = [s["name"] for s in cfg_services if not s.get("only_if_cmdline")]
print("Smallest -m (self-test boot: boot-complete, every service ready, clean poweroff, no OOM)")
print("  init.json runs " + (f"these services outside the self-test: {', '.join(apps)}" if apps else
      "no app or daemon outside the self-test; the self-test services (" +
      ", ".join(s["name"] for s in cfg_services) + ") stand in for the sample app"))
smallest = None
for m in mem_tried:
    r = parse(logs / f"mem-{m}.log", "ours")
    text = (logs / f"mem-{m}.log").read_text(errors="replace")
    out = (logs / f"mem-{m}.log.out").read_text(errors="replace")
    need = [s["name"] for s in cfg_services if s.get("only_if_cmdline") in (None, "sphere.selftest")]
    ok = (r is not None and "pending=" not in text.split("milestone boot-complete", 1)[-1].split("\n", 1)[0]
          and all(f"milestone daemon-ready name={n} " in text for n in need)
          and "run-qemu: exit status 0" in out and "Out of memory" not in text and "oom-kill" not in text)
    if ok:
        smallest = m
        avail = re.search(r"fact meminfo\.MemAvailable=(.*)", text)
        print(f"  -m {m:>3}: ok    kernel start -> boot-complete {r['ready'] - r['kernel_start']:.3f} s, "
              f"mem clearing {r['clear']:.3f} s" + (f", MemAvailable {avail.group(1).strip()}" if avail else ""))
    else:
        tail = [l for l in text.splitlines() if l.strip()][-1:] or ["(no console output)"]
        print(f"  -m {m:>3}: FAIL  last console line: {tail[0][:110]}")
if not mem_tried:
    print("  not searched (--no-mem-search)")

# Verdicts
print()
goal = medians["kernel start -> init ready  [GOAL]"]
if goal["ours"] and goal["stock"]:
    ratio = goal["ours"][0] / goal["stock"][0]
    print(f"goal kernel start->init ready <= 0.5x stock: {ratio:.2f}x "
          f"({goal['ours'][0]:.3f} s vs {goal['stock'][0]:.3f} s) {'MET' if ratio <= 0.5 else 'NOT MET'}")
else:
    print("goal kernel start->init ready <= 0.5x stock: no data NOT MET")
print(f"goal image (kernel+initramfs+rootfs) <= 16 MiB: {total / MIB:.2f} MiB {'MET' if total <= 16 * MIB else 'NOT MET'}")
if rss_total is not None:
    print(f"goal RSS of all processes after boot <= 6 MiB: {rss_total / 1024:.2f} MiB "
          f"{'MET' if rss_total <= 6144 else 'NOT MET'}")
else:
    print("goal RSS of all processes after boot <= 6 MiB: no data NOT MET")
if mem_tried:
    floor = " (lowest step tried)" if smallest == mem_tried[-1] else ""
    print(f"goal boots and runs its services with -m <= 64 MiB: "
          + (f"{smallest} MiB{floor} MET" if smallest is not None and smallest <= 64 else "fails at 64 MiB NOT MET"))
else:
    print("goal boots and runs its services with -m <= 64 MiB: not searched")
PY
