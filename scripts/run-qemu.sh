#!/usr/bin/env bash
# Boot the OpenSphere QEMU Cortex-A7 image built by scripts/build-image.sh.
#
# Usage: scripts/run-qemu.sh [options] [-- extra QEMU arguments]
#   --image-dir DIR    image to boot (default: ${OPENSPHERE_CACHE:-$HOME/.cache/opensphere}/image)
#   --build            run scripts/build-image.sh first (and boot what it printed)
#   -m MIB             guest RAM (default 256)
#   --timeout SEC      stop the guest after SEC seconds (default 120; 0 = never): a clean
#                      poweroff over the control port first, QEMU is killed 15 s later
#   --command CMD      poweroff | reboot: sent over the control port once init reports
#                      boot-complete (reboot ends QEMU too: it runs with -no-reboot)
#   --selftest         boot with sphere.selftest=1 (init prints facts, the diag services run)
#   --append ARGS      more kernel command-line words (e.g. sphere.after_boot=poweroff)
#   --log FILE         console log (default: IMAGE_DIR/logs/console-TIMESTAMP.log); the
#                      milestones go to FILE.milestones.json
#   --hostfwd SPEC     add hostfwd=SPEC to the user network (repeatable), e.g. tcp:127.0.0.1:2222-:22
#   --guestfwd SPEC    add guestfwd=SPEC (repeatable), e.g. tcp:10.0.2.100:8883-tcp:127.0.0.1:8883
#   --tap IFNAME       put the guest's eth0 on the existing tap device IFNAME instead of QEMU's
#                      user network (tests/netd-qemu-test.sh: a tap inside a network namespace of
#                      test hosts, so the guest's packets never reach the machine's uplink)
#   --data FILE        data disk to attach (default IMAGE_DIR/data.ext4)
#   --disk FILE        boot the A/B disk FILE instead of the root image and data disk: one GPT
#                      disk with bootenv, rootfs_a, rootfs_b and data partitions (made by
#                      scripts/make-ab-disk.sh, see docs/ab-slots.md); adds sphere.root=ab
#   --appd-socket PATH host end of the app manager's development port (default: in the run's
#                      temporary directory, printed at start); in development mode
#                      `sphere app ... --socket PATH` manages the guest's apps through it
#   --m4-firmware ELF  also boot the Cortex-M4 machine (mps2-an386) with this firmware (a
#                      real-time app package's entry point), its UART1 linked to the guest's
#                      inter-core port (virtio-serial sphere.intercore) through a host socket;
#                      its UART0 log goes to --m4-log (default: the console log + .m4.log)
#   --m4-log FILE      the M4's UART0 log
#   --m4-icount        run the M4 with -icount shift=3 (virtual time follows instructions, so a
#                      loaded host cannot make it look late)
#   --intercore-socket PATH  connect the guest's inter-core port to this Unix socket (a server
#                      someone else runs, e.g. a test's relay in front of an M4) instead
#   --tpm DIR          attach a TPM 2.0: starts swtpm with its state in DIR (created when new;
#                      keep DIR to keep the TPM's seeds, so the device keeps its identity) as a
#                      tpm-tis-device; the guest gets /dev/tpm0 and /dev/tpmrm0
#   --quiet            do not echo the console (it is still logged)
#   -h, --help
#
# The machine: qemu-system-arm -M virt,highmem=off -cpu cortex-a7, TCG; console on the PL011
# (ttyAMA0) piped through scripts/qemu-console.py, which timestamps each line on the host and
# prints the boot milestones (QEMU start, kernel start, init start, each daemon ready, ...).
# Disks are virtio-blk with serial numbers sphere-init looks for: the root image read-only
# (serial sphere-root) and the data disk (serial sphere-data). Network: user mode with
# restrict=on (the guest reaches nothing but the forwards given here); the guest is 10.0.2.15/24.
# Control: a virtio-serial port named sphere.ctl whose host end is a Unix socket; sending a line
# `poweroff` or `reboot` to it makes init shut down cleanly, e.g.
#     printf 'poweroff\n' | socat - UNIX-CONNECT:SOCKET     (SOCKET is printed at start)
# Exit status: QEMU's (0 after a clean poweroff), 124 on timeout, 130 on Ctrl-C, 3 on a kernel panic.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
script_path="$repo_root/scripts/$(basename "${BASH_SOURCE[0]}")"
die() { echo "run-qemu: ERROR: $*" >&2; exit 2; }

image_dir=${OPENSPHERE_CACHE:-$HOME/.cache/opensphere}/image
build=0
memory=256
timeout=120
command=
selftest=0
append=()
log_file=
appd_socket=
data_disk=
ab_disk=
quiet=0
tpm_dir=
m4_firmware=
m4_log=
m4_icount=0
intercore_socket=
netdev="user,id=n0,restrict=on"
extra=()
while (($#)); do
  case "$1" in
    --image-dir) image_dir=${2:?}; shift ;;
    --build) build=1 ;;
    -m) memory=${2:?-m needs MiB}; shift ;;
    --timeout) timeout=${2:?}; shift ;;
    --command) command=${2:?}; shift ;;
    --selftest) selftest=1 ;;
    --append) append+=("${2:?}"); shift ;;
    --log) log_file=${2:?}; shift ;;
    --appd-socket) appd_socket=${2:?}; shift ;;
    --hostfwd) netdev+=",hostfwd=${2:?}"; shift ;;
    --guestfwd) netdev+=",guestfwd=${2:?}"; shift ;;
    --tap) netdev="tap,id=n0,ifname=${2:?--tap needs an interface name},script=no,downscript=no"; shift ;;
    --data) data_disk=${2:?}; shift ;;
    --disk) ab_disk=${2:?}; shift ;;
    --quiet) quiet=1 ;;
    --tpm) tpm_dir=${2:?--tpm needs a state directory}; shift ;;
    --m4-firmware) m4_firmware=${2:?}; shift ;;
    --m4-log) m4_log=${2:?}; shift ;;
    --m4-icount) m4_icount=1 ;;
    --intercore-socket) intercore_socket=${2:?}; shift ;;
    -h|--help) sed -n '2,/^set -euo pipefail/{/^set -euo/d;s/^# \{0,1\}//;p}' "$script_path"; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
[[ $memory =~ ^[1-9][0-9]*$ ]] || die "-m wants MiB, got '$memory'"
[[ $timeout =~ ^[0-9]+$ ]] || die "--timeout wants seconds, got '$timeout'"
[[ -z $command || $command == poweroff || $command == reboot ]] || die "--command is poweroff or reboot"

if ((build)); then
  image_dir=$("$repo_root/scripts/build-image.sh" | tail -n1)
fi
for file in zImage initramfs.cpio.zst cmdline.txt; do
  [[ -f $image_dir/$file ]] || die "$image_dir/$file missing: run scripts/build-image.sh (or pass --build)"
done
if [[ -n $ab_disk ]]; then
  [[ -f $ab_disk ]] || die "A/B disk $ab_disk missing"
  # The initramfs finds the slots and the record by GPT partition name.
  disks=(-drive "if=none,id=disk,file=$ab_disk,format=raw"
    -device virtio-blk-device,drive=disk,serial=sphere-disk)
  append+=(sphere.root=ab)
else
  rootfs=$(ls "$image_dir"/rootfs.erofs "$image_dir"/rootfs.squashfs 2>/dev/null | head -n1 || true)
  [[ -n $rootfs ]] || die "no rootfs.erofs or rootfs.squashfs in $image_dir"
  data_disk=${data_disk:-$image_dir/data.ext4}
  [[ -f $data_disk ]] || die "data disk $data_disk missing"
  disks=(-drive "if=none,id=root,file=$rootfs,format=raw,readonly=on"
    -device virtio-blk-device,drive=root,serial=sphere-root
    -drive "if=none,id=data,file=$data_disk,format=raw"
    -device virtio-blk-device,drive=data,serial=sphere-data)
fi
command -v qemu-system-arm >/dev/null || die "qemu-system-arm missing (scripts/install-host-deps.sh image)"

cmdline=$(cat "$image_dir/cmdline.txt")
((selftest)) && cmdline+=" sphere.selftest=1"
((${#append[@]})) && cmdline+=" ${append[*]}"

if [[ -z $log_file ]]; then
  mkdir -p "$image_dir/logs"
  log_file="$image_dir/logs/console-$(date +%Y%m%d-%H%M%S)-$$.log"
fi
mkdir -p "$(dirname "$log_file")"
run_dir=$(mktemp -d "${TMPDIR:-/tmp}/opensphere-qemu.XXXXXX")
m4_pid=
trap '[[ -n $m4_pid ]] && kill "$m4_pid" 2>/dev/null; rm -rf "$run_dir"' EXIT
# The inter-core link: the M4's UART1 is a socket server; the guest's port connects to it
# (reconnect=1: QEMU keeps trying while the server is not there yet).
if [[ -n $m4_firmware ]]; then
  [[ -f $m4_firmware ]] || die "M4 firmware $m4_firmware missing"
  m4_log=${m4_log:-$log_file.m4.log}
  m4_extra=()
  ((m4_icount)) && m4_extra=(-icount shift=3)
  qemu-system-arm -M mps2-an386 -cpu cortex-m4 -nographic -monitor none \
    -semihosting-config enable=on,target=native "${m4_extra[@]}" -kernel "$m4_firmware" \
    -chardev "socket,id=ic,path=$run_dir/m4-link.sock,server=on,wait=off" \
    -serial "file:$m4_log" -serial chardev:ic </dev/null >"$run_dir/m4-qemu.out" 2>&1 &
  m4_pid=$!
  for _ in $(seq 100); do [[ -S $run_dir/m4-link.sock ]] && break; sleep 0.05; done
  [[ -S $run_dir/m4-link.sock ]] || die "the M4 machine did not start: $(cat "$run_dir/m4-qemu.out")"
  [[ -n $intercore_socket ]] || intercore_socket=$run_dir/m4-link.sock
  echo "run-qemu: M4 (mps2-an386) running $m4_firmware, UART0 log $m4_log" >&2
fi
ctl_socket="$run_dir/ctl.sock"
[[ -n $appd_socket ]] || appd_socket="$run_dir/appd.sock"

# The TPM: swtpm serves QEMU's TPM emulator backend over its control socket and ends with
# QEMU (--terminate: when the data channel closes).
tpm_args=()
tpm_pid=
if [[ -n $tpm_dir ]]; then
  command -v swtpm >/dev/null || die "swtpm missing (scripts/install-host-deps.sh attest)"
  mkdir -p "$tpm_dir"
  swtpm socket --tpm2 --tpmstate "dir=$tpm_dir" --ctrl "type=unixio,path=$run_dir/swtpm.sock" \
    --log "file=$run_dir/swtpm.log" --terminate </dev/null &
  tpm_pid=$!
  for _ in $(seq 100); do [[ -S $run_dir/swtpm.sock ]] && break; sleep 0.05; done
  [[ -S $run_dir/swtpm.sock ]] || die "swtpm did not start (log: $run_dir/swtpm.log)"
  tpm_args=(-chardev "socket,id=chrtpm,path=$run_dir/swtpm.sock" -tpmdev emulator,id=tpm0,chardev=chrtpm
    -device tpm-tis-device,tpmdev=tpm0)
  echo "run-qemu: TPM 2.0 (swtpm) with state in $tpm_dir" >&2
fi

qemu=(
  qemu-system-arm -M virt,highmem=off -cpu cortex-a7 -m "$memory"
  -display none -monitor none -serial stdio -no-reboot
  -kernel "$image_dir/zImage" -initrd "$image_dir/initramfs.cpio.zst" -append "$cmdline"
  "${disks[@]}"
  -netdev "$netdev" -device virtio-net-device,netdev=n0
  -device virtio-rng-device
  -chardev "socket,id=ctl,path=$ctl_socket,server=on,wait=off"
  -device virtio-serial-device -device virtserialport,chardev=ctl,name=sphere.ctl
  -chardev "socket,id=appd,path=$appd_socket,server=on,wait=off"
  -device virtserialport,chardev=appd,name=sphere.appd
)
if [[ -n $intercore_socket ]]; then
  qemu+=(-chardev "socket,id=ic,path=$intercore_socket,reconnect=1"
    -device virtserialport,chardev=ic,name=sphere.intercore)
fi
qemu+=("${extra[@]}")

((${#tpm_args[@]})) && qemu+=("${tpm_args[@]}")
echo "run-qemu: image $image_dir (-m $memory, timeout ${timeout}s)" >&2
echo "run-qemu: kernel command line: $cmdline" >&2
echo "run-qemu: console log $log_file; control socket $ctl_socket" >&2
echo "run-qemu: app manager (development mode only): sphere app list --socket $appd_socket" >&2
helper=(python3 "$repo_root/scripts/qemu-console.py" --log "$log_file" --milestones "$log_file.milestones.json"
  --timeout "$timeout" --ctl-socket "$ctl_socket")
[[ -n $command ]] && helper+=(--command "$command")
((quiet)) && helper+=(--quiet)
status=0
"${helper[@]}" -- "${qemu[@]}" || status=$?
[[ -n $tpm_pid ]] && { kill "$tpm_pid" 2>/dev/null || true; }
echo "run-qemu: exit status $status (log: $log_file)" >&2
exit "$status"
