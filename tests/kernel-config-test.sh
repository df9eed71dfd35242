#!/usr/bin/env bash
# Tests for scripts/build-kernel.sh's configuration check. None of them compiles a kernel: a bad
# fragment set must be refused right after `make olddefconfig`, and the good one is checked with
# --check-only. Takes about a minute (each case runs allnoconfig + merge + olddefconfig).
#
# Usage: tests/kernel-config-test.sh
# Prints one line per check and a final "N passed, M failed"; exits non-zero if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."

build=scripts/build-kernel.sh
passed=0
failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

pass() { passed=$((passed + 1)); echo "ok   - $*"; }
fail() { failed=$((failed + 1)); echo "FAIL - $*"; }

# run_build NAME ARGS...: run build-kernel.sh, keeping exit status and combined output.
run_build() {
  local name=$1
  shift
  status=0
  "$build" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" || status=$?
  cat "$tmp/$name.out" "$tmp/$name.err" >"$tmp/$name.all"
}

expect_in_output() { # NAME PATTERN DESCRIPTION
  if grep -qE -- "$2" "$tmp/$1.all"; then pass "$3"; else
    fail "$3 (no /$2/ in output:)"
    sed 's/^/      /' "$tmp/$1.all" | tail -n 25
  fi
}

expect_refused_before_compiling() { # NAME DESCRIPTION
  if ((status != 0)); then pass "$2: build-kernel.sh exits non-zero ($status)"; else
    fail "$2: build-kernel.sh succeeded with a bad fragment set"
  fi
  if grep -q 'compiling zImage' "$tmp/$1.all"; then fail "$2: it started compiling"; else
    pass "$2: refused before compiling"
  fi
}

fragments_with() { # DIR FILE CONTENT: copy of kernel-config/ plus one extra fragment
  mkdir -p "$1"
  cp kernel-config/*.cfg "$1/"
  printf '%s\n' "$3" >"$1/$2"
}

# --help documents the interface.
run_build help --help
if ((status == 0)) && grep -q -- '--fragments' "$tmp/help.all" && grep -qi 'last line' "$tmp/help.all"; then
  pass "--help explains --fragments and the last-line output"
else fail "--help (exit $status)"; fi

# The real fragments pass the check; spot-check what the image tests rely on.
run_build good --check-only
if ((status == 0)); then pass "kernel-config/ passes the symbol check"; else
  fail "kernel-config/ fails the symbol check:"
  sed 's/^/      /' "$tmp/good.all" | tail -n 25
fi
config=$(tail -n1 "$tmp/good.out" 2>/dev/null || true)
if [[ -f $config ]]; then
  for want in '# CONFIG_MODULES is not set' 'CONFIG_NF_TABLES=y' 'CONFIG_SECURITY_LANDLOCK=y' \
    'CONFIG_IKCONFIG_PROC=y' 'CONFIG_GPIO_CDEV=y' 'CONFIG_VIRTIO_CONSOLE=y' 'CONFIG_DM_VERITY=y' \
    'CONFIG_LOCALVERSION="-opensphere"' 'CONFIG_SECCOMP_FILTER=y' 'CONFIG_USER_NS=y'; do
    if grep -qxF -- "$want" "$config"; then pass "merged config has $want"; else fail "merged config lacks $want"; fi
  done
  if grep -qE '^CONFIG_LSM=".*landlock.*"$' "$config"; then pass "CONFIG_LSM includes landlock"; else
    fail "CONFIG_LSM does not include landlock"; fi
else
  fail "--check-only did not print the merged config's path as its last line"
fi

# (a) A symbol this kernel does not know.
fragments_with "$tmp/unknown" zz-unknown.cfg 'CONFIG_OPENSPHERE_NO_SUCH_SYMBOL=y'
run_build unknown --fragments "$tmp/unknown"
expect_refused_before_compiling unknown "unknown symbol"
expect_in_output unknown 'CONFIG_OPENSPHERE_NO_SUCH_SYMBOL' "unknown symbol: output names CONFIG_OPENSPHERE_NO_SUCH_SYMBOL"
expect_in_output unknown 'zz-unknown\.cfg:1.*=y' "unknown symbol: output names the fragment, line and requested value"
expect_in_output unknown 'unknown symbol' "unknown symbol: output says it is unknown"

# (b) A known symbol whose dependency is off (btrfs is not built, so its ACL option cannot be).
fragments_with "$tmp/dep" zz-missing-dependency.cfg 'CONFIG_BTRFS_FS_POSIX_ACL=y'
run_build dep --fragments "$tmp/dep"
expect_refused_before_compiling dep "unmet dependency"
expect_in_output dep 'CONFIG_BTRFS_FS_POSIX_ACL' "unmet dependency: output names CONFIG_BTRFS_FS_POSIX_ACL"
expect_in_output dep 'zz-missing-dependency\.cfg:1' "unmet dependency: output names the fragment and line"
expect_in_output dep 'depends on BTRFS_FS' "unmet dependency: output shows the dependency"

# (c) The same, but by switching off something another fragment needs (ext4 off, its xattr
# security labels still requested by base-qemu-virt-a7.cfg).
mkdir -p "$tmp/ext4off"
cp kernel-config/*.cfg "$tmp/ext4off/"
sed -i 's/^CONFIG_EXT4_FS=y$/# CONFIG_EXT4_FS is not set/' "$tmp/ext4off/base-qemu-virt-a7.cfg"
run_build ext4off --fragments "$tmp/ext4off"
expect_refused_before_compiling ext4off "ext4 off"
expect_in_output ext4off 'LOST CONFIG_EXT4_FS_SECURITY: base-qemu-virt-a7\.cfg:[0-9]+ requests CONFIG_EXT4_FS_SECURITY=y' \
  "ext4 off: output names CONFIG_EXT4_FS_SECURITY, its fragment and requested value"

# (d) Two fragments asking for different values of one symbol.
fragments_with "$tmp/conflict" zz-conflict.cfg '# CONFIG_SECCOMP_FILTER is not set'
run_build conflict --fragments "$tmp/conflict"
expect_refused_before_compiling conflict "conflicting fragments"
expect_in_output conflict 'LOST CONFIG_SECCOMP_FILTER: zz-conflict\.cfg:1' "conflicting fragments: output names the symbol and the later fragment"
expect_in_output conflict 'conflicts with seccomp\.cfg:[0-9]+' "conflicting fragments: output names the earlier fragment"

echo "$passed passed, $failed failed"
((failed == 0))
