#!/usr/bin/env bash
# Static checks of the Yocto layer meta-sphere/ (the test command runs this):
#   1. oelint-adv over every recipe, bbappend, class and configuration file of
#      meta-sphere and its nested layers: any finding fails. A finding that is
#      wrong for a file is suppressed in that file with an
#      `# nooelint: <rule>` comment that says why.
#   2. meta-sphere/recipes-sphere/include/opensphere-crates.inc matches the
#      workspace's Cargo.lock: it is regenerated into a temporary file and
#      compared, so a Cargo.lock change without a regenerated .inc fails.
#
# oelint-adv is installed, pinned, into a venv under
# ${OPENSPHERE_CACHE:-$HOME/.cache/opensphere}/venv-oelint on first use (PyPI).
# The bitbake-level checks (bitbake -p, bitbake -n sphere-image,
# yocto-check-layer) need the upstream layers; meta-sphere/README.md says how.
set -euo pipefail
cd "$(dirname "$0")/.."

OELINT_ADV_VERSION=9.11.2
cache="${OPENSPHERE_CACHE:-$HOME/.cache/opensphere}"
venv="$cache/venv-oelint"

if [[ "$("$venv/bin/oelint-adv" --version 2>/dev/null)" != "oelint-adv $OELINT_ADV_VERSION" ]]; then
  echo "check-layer: installing oelint-adv $OELINT_ADV_VERSION into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "oelint-adv==$OELINT_ADV_VERSION"
fi

mapfile -t files < <(find meta-sphere -type f \
  \( -name '*.bb' -o -name '*.bbappend' -o -name '*.bbclass' -o -name '*.inc' -o -name '*.conf' \) | sort)
((${#files[@]})) || { echo "check-layer: no layer files found" >&2; exit 1; }

status=0
echo "check-layer: oelint-adv $OELINT_ADV_VERSION on ${#files[@]} files" >&2
# One file per run: oelint-adv otherwise merges unrelated files into one
# "recipe" (sphere.conf and sphere-dev.conf would both "set DISTRO"). Our own
# variables, and oe-core/meta-oe ones oelint-adv does not know (QB_*,
# VERITY_*), are declared in oelint-constants.json. Any finding (error,
# warning or info) fails, and so does oelint-adv failing without output.
#
# Two justified exceptions:
# - oelint.vars.homepageping (suppressed): it fetches HOMEPAGE over the network,
#   which a test must not depend on (and this machine has no internet).
# - opensphere-crates.inc is generated in exactly the format of oe-core's
#   cargo-update-recipe-crates class (`SRC_URI += " \` on its own line), which
#   oelint-adv reports as inconspaces/notneededspace; and it reports the
#   oe-core-style "-crates.inc" name as a class name with '-'. Those three
#   findings, on that file only, are dropped; anything else in it still fails.
crates_inc_rules='oelint\.(vars\.inconspaces|vars\.notneededspace|bbclass\.underscores)'
findings=0
for f in "${files[@]}"; do
  rc=0
  out="$("$venv/bin/oelint-adv" --quiet --relpaths --release wrynose \
      --suppress oelint.vars.homepageping \
      --constantmods +meta-sphere/scripts/oelint-constants.json \
      --cachedir "$cache/oelint-cache" "$f" 2>&1)" || rc=$?
  if ((rc != 0)) && [[ -z "$out" ]]; then
    echo "check-layer: oelint-adv failed on $f (exit $rc)" >&2
    findings=1
  fi
  out="$(grep -Ev "^meta-sphere/recipes-sphere/include/opensphere-crates\.inc:[0-9]+:[a-z]+:$crates_inc_rules:" <<<"$out" || true)"
  if [[ -n "$out" ]]; then
    printf '%s\n' "$out" >&2
    findings=1
  fi
done
if ((findings)); then
  echo "check-layer: oelint-adv reported findings (above)" >&2
  status=1
fi

echo "check-layer: crate list against Cargo.lock" >&2
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
python3 meta-sphere/scripts/gen-crates-inc.py --output "$tmp"
if ! diff -u meta-sphere/recipes-sphere/include/opensphere-crates.inc "$tmp"; then
  echo "check-layer: opensphere-crates.inc is stale; run meta-sphere/scripts/gen-crates-inc.py and commit it" >&2
  status=1
fi

((status == 0)) && echo "check-layer: ok" >&2
exit "$status"
