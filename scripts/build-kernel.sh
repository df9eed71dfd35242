#!/usr/bin/env bash
# Build OpenSphere's hardened Linux kernel (zImage) for the QEMU `virt` Cortex-A7 test image.
#
# Usage: scripts/build-kernel.sh [--fragments DIR] [--check-only] [--jobs N] [--help]
#   --fragments DIR  directory of Kconfig fragments (*.cfg, merged in name order);
#                    default: kernel-config/ of this checkout
#   --check-only     stop after the configuration check (nothing is compiled); the last stdout
#                    line is then the path of the checked, merged .config
#   --jobs N         parallel make jobs (default: $JOBS or 2)
#
# Steps: unpack Debian's linux-source-6.12 into the cache (once), `make ARCH=arm allnoconfig`,
# merge every fragment with the kernel's scripts/kconfig/merge_config.sh -m, `make olddefconfig`,
# then FAIL if any symbol a fragment asks for did not end up in .config with the requested value
# (unknown symbols and symbols dropped for unmet dependencies alike; each one is printed with its
# fragment and the requested value). This check runs before anything is compiled.
#
# Output (the interface the image builder relies on): on success the LAST line of stdout is the
# absolute path of a directory holding `zImage` and `config` (the merged .config), plus
# `kernelrelease` and `build.log`. Everything else goes to stderr.
#
# Cache: ${OPENSPHERE_CACHE:-$HOME/.cache/opensphere}/kernel/ holds the unpacked source, one
# object directory (incremental rebuilds) and finished builds keyed by a hash of (fragment names and
# their CONFIG_ lines -- comments do not count --, kernel source package version, cross-compiler
# version, this script). An unchanged configuration is not rebuilt: the cached directory is
# printed in well under a second.
# Environment: OPENSPHERE_CACHE, JOBS, PROGRESS_INTERVAL (seconds between progress lines, 60).
set -euo pipefail

SCRIPT_VERSION=1 # bump when the build procedure changes in a way the hash would not notice
KERNEL_SOURCE_PACKAGE=linux-source-6.12
KERNEL_TARBALL=/usr/src/linux-source-6.12.tar.xz
export ARCH=arm
export CROSS_COMPILE=arm-linux-gnueabihf-

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
script_path="$repo_root/scripts/$(basename "${BASH_SOURCE[0]}")"

log() { echo "build-kernel: $*" >&2; }
die() { echo "build-kernel: ERROR: $*" >&2; exit 1; }

fragments_dir="$repo_root/kernel-config"
check_only=0
jobs=${JOBS:-2}
while (($#)); do
  case "$1" in
    --fragments) fragments_dir=${2:?--fragments needs a directory}; shift ;;
    --fragments=*) fragments_dir=${1#*=} ;;
    --check-only) check_only=1 ;;
    --jobs) jobs=${2:?--jobs needs a number}; shift ;;
    --jobs=*) jobs=${1#*=} ;;
    -h|--help) sed -n '2,/^set -euo pipefail/{/^set -euo/d;s/^# \{0,1\}//;p}' "$script_path"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
[[ $jobs =~ ^[1-9][0-9]*$ ]] || die "--jobs wants a positive number, got '$jobs'"
[[ -d $fragments_dir ]] || die "fragment directory '$fragments_dir' does not exist"
fragments_dir=$(cd "$fragments_dir" && pwd)
mapfile -t fragments < <(find "$fragments_dir" -maxdepth 1 -type f -name '*.cfg' | LC_ALL=C sort)
((${#fragments[@]} > 0)) || die "no *.cfg fragments in $fragments_dir"

"$repo_root/scripts/install-host-deps.sh" image >&2

cache_root=${OPENSPHERE_CACHE:-$HOME/.cache/opensphere}/kernel
mkdir -p "$cache_root"/{src,builds,configs,tmp}
cache_root=$(cd "$cache_root" && pwd)

# --- Cache key -------------------------------------------------------------------------------
source_version=$(dpkg-query -W -f='${Version}' "$KERNEL_SOURCE_PACKAGE")
compiler_version=$("${CROSS_COMPILE}gcc" --version | head -n1)
key=$(
  {
    echo "script-version $SCRIPT_VERSION"
    sha256sum <"$script_path"
    echo "source $KERNEL_SOURCE_PACKAGE $source_version"
    echo "compiler $compiler_version"
    # Only the assignments count (in order): editing a comment must not trigger a rebuild.
    for fragment in "${fragments[@]}"; do
      echo "fragment $(basename "$fragment") $(grep -E '^(CONFIG_|# CONFIG_[A-Za-z0-9_]+ is not set)' "$fragment" | sha256sum)"
    done
  } | sha256sum | cut -c1-16
)
build_dir="$cache_root/builds/$key"

if ((!check_only)) && [[ -f $build_dir/zImage && -f $build_dir/config ]]; then
  log "cached build $key is up to date ($(cat "$build_dir/kernelrelease" 2>/dev/null || echo '?'))"
  echo "$build_dir"
  exit 0
fi

# --- Helpers -----------------------------------------------------------------------------------
work=$(mktemp -d "$cache_root/tmp/run.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

# run_logged LABEL LOGFILE CMD...: run CMD with its output in LOGFILE, printing a progress line
# (elapsed time + the log's last line) every PROGRESS_INTERVAL seconds; on failure show the tail.
run_logged() {
  local label=$1 logfile=$2
  shift 2
  local interval=${PROGRESS_INTERVAL:-60} start=$SECONDS next pid status=0
  next=$((SECONDS + interval))
  "$@" >"$logfile" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if ((SECONDS >= next)); then
      log "$label: $((SECONDS - start))s elapsed; $(tail -n1 "$logfile" 2>/dev/null | cut -c1-120)"
      next=$((SECONDS + interval))
    fi
  done
  wait "$pid" || status=$?
  if ((status != 0)); then
    log "$label FAILED (exit $status) after $((SECONDS - start))s; last lines of $logfile:"
    tail -n 40 "$logfile" >&2
    return "$status"
  fi
  log "$label: done in $((SECONDS - start))s"
}

# --- Kernel source (unpacked once per source package version) ----------------------------------
[[ -r $KERNEL_TARBALL ]] || die "$KERNEL_TARBALL missing (package $KERNEL_SOURCE_PACKAGE)"
src="$cache_root/src/linux-$(echo "$source_version" | tr -c 'A-Za-z0-9.\n-' '_')"
if [[ ! -f $src/Makefile ]]; then
  unpack="$work/unpack"
  mkdir -p "$unpack"
  run_logged "unpacking $KERNEL_TARBALL" "$work/unpack.log" tar -xf "$KERNEL_TARBALL" -C "$unpack"
  [[ -f $unpack/$KERNEL_SOURCE_PACKAGE/Makefile ]] || die "unexpected tarball layout in $KERNEL_TARBALL"
  # Atomic: a concurrent run that unpacked first wins, ours is discarded with $work.
  mv -T "$unpack/$KERNEL_SOURCE_PACKAGE" "$src" 2>/dev/null || [[ -f $src/Makefile ]] ||
    die "could not move the unpacked source to $src"
fi
kernel_version=$(make -s -C "$src" kernelversion 2>/dev/null)
log "kernel source $kernel_version ($KERNEL_SOURCE_PACKAGE $source_version) in $src"

# --- Configure: allnoconfig + fragments + olddefconfig (in a throw-away object dir) -------------
cfg_obj="$work/config-obj"
mkdir -p "$cfg_obj"
kmake() { make -C "$src" O="$1" ARCH="$ARCH" CROSS_COMPILE="$CROSS_COMPILE" "${@:2}"; }
run_logged "make allnoconfig" "$work/allnoconfig.log" kmake "$cfg_obj" allnoconfig
run_logged "merge_config.sh -m (${#fragments[@]} fragments)" "$work/merge.log" \
  env KCONFIG_CONFIG="$cfg_obj/.config" "$src/scripts/kconfig/merge_config.sh" -m -O "$cfg_obj" \
  "$cfg_obj/.config" "${fragments[@]}"
run_logged "make olddefconfig" "$work/olddefconfig.log" kmake "$cfg_obj" olddefconfig

# --- Check that every requested symbol survived --------------------------------------------------
log "checking that every symbol requested by the fragments survived into .config"
python3 - "$src" "$cfg_obj/.config" "${fragments[@]}" >&2 <<'PY' || die "configuration check failed (see above); nothing was compiled"
import os, re, sys

src, config_path, fragments = sys.argv[1], sys.argv[2], sys.argv[3:]
SET = re.compile(r'^(CONFIG_[A-Za-z0-9_]+)=(.*)$')
UNSET = re.compile(r'^# (CONFIG_[A-Za-z0-9_]+) is not set$')

def parse(path):
    """Yield (line number, symbol, value) for every assignment; 'n' for "is not set"."""
    with open(path, encoding='utf-8', errors='replace') as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip('\n')
            m = SET.match(line)
            if m:
                yield number, m.group(1), m.group(2)
                continue
            m = UNSET.match(line)
            if m:
                yield number, m.group(1), 'n'

final = {sym: val for _, sym, val in parse(config_path)}

# Every symbol any Kconfig file of this kernel defines, with where and on what it depends.
definitions = {}
DEF = re.compile(r'^\s*(?:menu)?config\s+([A-Za-z0-9_]+)\s*$')
for root, dirs, files in os.walk(src):
    dirs[:] = [d for d in dirs if not d.startswith('.')]
    for name in files:
        if not name.startswith('Kconfig'):
            continue
        path = os.path.join(root, name)
        with open(path, encoding='utf-8', errors='replace') as f:
            lines = f.readlines()
        enclosing = []  # conditions of the `if` blocks around the current line
        for i, line in enumerate(lines):
            block = re.match(r'^\s*if\s+(.*?)\s*$', line)
            if block:
                enclosing.append(block.group(1))
            elif re.match(r'^\s*endif\b', line) and enclosing:
                enclosing.pop()
            m = DEF.match(line)
            if not m:
                continue
            depends = list(enclosing)
            for follow in lines[i + 1:]:
                if re.match(r'^\s*(?:(?:menu)?config|choice|endchoice|menu|endmenu|if|endif|source|comment)\b', follow):
                    break
                d = re.match(r'^\s*depends on\s+(.*?)\s*$', follow)
                if d:
                    depends.append(d.group(1))
            definitions.setdefault('CONFIG_' + m.group(1), []).append(
                (os.path.relpath(path, src), i + 1, depends))

def normal(value):
    return 'n' if value in ('n', '') else value

lost = []
requested = {}
for fragment in fragments:
    for number, sym, want in parse(fragment):
        where = f'{os.path.basename(fragment)}:{number}'
        have = final.get(sym)
        why = []
        if sym in requested and normal(requested[sym][1]) != normal(want):
            why.append(f'conflicts with {requested[sym][0]}, which asks for {sym}={requested[sym][1]}')
        requested[sym] = (where, want)
        if sym not in definitions:
            why.append('unknown symbol: no Kconfig file of this kernel defines it (typo, or removed/renamed upstream)')
        elif normal(have if have is not None else 'n') != normal(want):
            deps = '; '.join(f"{p}:{l}" + (f" depends on {' && '.join(d)}" if d else '')
                             for p, l, d in definitions[sym])
            why.append(('dropped by olddefconfig: a dependency is not met or another option overrides it'
                        if normal(want) != 'n' else
                        'forced on by another option (select, or a default with no prompt)')
                       + f'; defined at {deps}')
        if why:
            shown = have if have is not None else ('(absent)' if sym not in definitions else 'n (absent from .config)')
            lost.append((where, sym, want, shown, why))

if lost:
    print(f'build-kernel: {len(lost)} requested symbol(s) did not survive into .config:', file=sys.stderr)
    for where, sym, want, have, why in lost:
        print(f'  LOST {sym}: {where} requests {sym}={want}, .config has {have}', file=sys.stderr)
        for reason in why:
            print(f'       {reason}', file=sys.stderr)
    sys.exit(1)
print(f'build-kernel: all {len(requested)} requested symbols are in .config as requested', file=sys.stderr)
PY

if ((check_only)); then
  checked="$cache_root/configs/$key.config"
  cp "$cfg_obj/.config" "$checked.tmp.$$" && mv -f "$checked.tmp.$$" "$checked"
  echo "$checked"
  exit 0
fi

# --- Build (one persistent object dir per source version, serialised by a lock) ----------------
obj="$cache_root/obj-$(basename "$src")"
mkdir -p "$obj"
exec 9>"$cache_root/obj.lock"
if ! flock -n 9; then
  log "waiting for another build-kernel.sh to release $obj"
  flock 9
fi
if [[ -f $build_dir/zImage && -f $build_dir/config ]]; then # built by whoever held the lock
  log "cached build $key appeared while waiting"
  echo "$build_dir"
  exit 0
fi
cp "$cfg_obj/.config" "$obj/.config"
run_logged "make olddefconfig (object dir)" "$work/olddefconfig2.log" kmake "$obj" olddefconfig
cmp -s "$cfg_obj/.config" "$obj/.config" || die "olddefconfig changed the checked .config in $obj"
log "compiling zImage with make -j$jobs (log: $work/build.log; a progress line every ${PROGRESS_INTERVAL:-60}s)"
build_start=$SECONDS
if ! run_logged "make zImage" "$work/build.log" kmake "$obj" -j"$jobs" zImage; then
  cp "$work/build.log" "$cache_root/failed-build.log"
  die "kernel build failed; full log: $cache_root/failed-build.log"
fi
build_seconds=$((SECONDS - build_start))
kernelrelease=$(kmake "$obj" -s kernelrelease 2>/dev/null)

# Stage the result next to its final place and rename it in: no half-written build directory.
stage=$(mktemp -d "$cache_root/builds/.stage.$key.XXXXXX")
cp "$obj/arch/arm/boot/zImage" "$stage/zImage"
cp "$obj/.config" "$stage/config"
echo "$kernelrelease" >"$stage/kernelrelease"
cp "$work/build.log" "$stage/build.log"
chmod 755 "$stage"
if ! mv -T "$stage" "$build_dir" 2>/dev/null; then
  rm -rf "$stage"
  [[ -f $build_dir/zImage ]] || die "could not move the build into $build_dir"
fi
log "built $kernelrelease in ${build_seconds}s: $build_dir/zImage ($(stat -c %s "$build_dir/zImage") bytes)"
echo "$build_dir"
