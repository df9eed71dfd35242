#!/usr/bin/env bash
# OpenSphere's test command: everything CI runs, from a fresh Debian 12 machine (run as root so
# missing host packages can be installed; scripts/install-host-deps.sh says which).
#
# Usage: scripts/test.sh [--skip-boot] [--only SUITE]... [--list]
#   --skip-boot   do not run the QEMU suites (boot, update-qemu, escape-qemu, netd-qemu, device-cli, m4, intercore-qemu, attest-qemu); they are then
#                 reported as skipped, never silently
#   --only SUITE  run only the named suites (repeatable); --list shows them
#
# Each suite prints its own output; the last line is a summary "suites: N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."

SUITES=(rust-format rust-lint rust-tests cross-build fuzz-smoke escape netd update cloud attestd kernel-config yocto-layer boot escape-qemu netd-qemu device-cli m4 intercore-qemu attest-qemu update-qemu)
declare -A DESCRIPTION=(
  [rust-format]="cargo fmt --check over the workspace"
  [rust-lint]="cargo clippy -D warnings over every target"
  [rust-tests]="unit and integration tests of every crate"
  [cross-build]="device crates cross-built for armv7 with rustc 1.85 (MSRV)"
  [fuzz-smoke]="each fuzz target for 15 s (scripts/fuzz.sh for long runs)"
  [escape]="hostile app in the full sandbox on the host: every escape attempt must be blocked"
  [kernel-config]="kernel fragments merge, and a bad fragment fails naming the symbol"
  [yocto-layer]="oelint-adv over meta-sphere and crates.inc freshness"
  [boot]="build the A7 image and boot it under QEMU (tests/boot-test.sh)"
  [update-qemu]="A/B updates under QEMU: N->N+1 commits, failed health check and hung boot roll back, 30 power cuts during installs, sphere-updated N->N+1 over HTTPS and 30 power cuts during its download and install (tests/update-qemu-test.sh)"
  [escape-qemu]="the escape suite inside the QEMU image, apps started by sphere-appd"
  [netd-qemu]="the firewall's bypass suite inside the QEMU image: a hostile app against the device's sphere-netd (tests/netd-qemu-test.sh)"
  [device-cli]="sphere app install/list/logs/stop/remove against a QEMU guest in development mode"
  [cloud]="sphere-cloud against real mosquitto (TLS, client certs, ACLs), its embedded MQTT broker and PostgreSQL: attestation and MQTT attacks refused; the sphere device/group/errors CLI against it (tests/cloud-test.sh)"
  [attestd]="sphere-attestd on the host against a real swtpm: TPM commands, PCR-extend semantics, quotes, evidence, outbox (tests/attestd-test.sh)"
  [attest-qemu]="QEMU device with swtpm attests to sphere-cloud, gets a certificate, mTLS MQTT telemetry and an error report (tests/attest-e2e-test.sh)"
  [update]="TUF update attacks refused with the device unchanged, resume after link loss and power cut, python-tuf interop, apps deferring an update within the bound (tests/update-attack-test.sh, tests/update-interop-test.sh, tests/update-deferral-test.sh)"
  [netd]="per-app network firewall in test namespaces: allowed names/IPs work, every bypass attempt is blocked (tests/netd-test.sh)"
  [m4]="the Cortex-M4 firmware under QEMU mps2-an386: inter-core echo, backpressure, deadlines (tests/m4-test.sh)"
  [intercore-qemu]="A7 and M4 QEMU machines linked: app-manager-brokered round trips, refusals, resync, deadlines under flood"
)

skip_boot=0
only=()
while (($#)); do
  case "$1" in
    --skip-boot) skip_boot=1 ;;
    --only) shift; only+=("${1:?--only needs a suite name}") ;;
    --list) for s in "${SUITES[@]}"; do printf '%-14s %s\n' "$s" "${DESCRIPTION[$s]}"; done; exit 0 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "test.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for s in "${only[@]}"; do
  [[ -n "${DESCRIPTION[$s]+set}" ]] || { echo "test.sh: unknown suite '$s' (see --list)" >&2; exit 2; }
done

run_suite() {
  case "$1" in
    rust-format) cargo fmt --all --check ;;
    rust-lint) cargo clippy --workspace --all-targets --locked -- -D warnings ;;
    # Build every binary first: integration tests run other crates' binaries (sphere-appd's
    # daemon test starts sphere-sandbox-exec), which `cargo test` alone does not build.
    rust-tests) cargo build --workspace --locked && cargo test --workspace --locked ;;
    # --release: the image and the QEMU suites use release binaries, so this build is reused
    # rather than made a second time in debug (which cost 1.4 GB of disk and a full compile).
    cross-build) scripts/cross-build.sh --release ;;
    # The fuzz builds (sanitizer-instrumented, ~2 GB) are needed by nothing later: drop them.
    fuzz-smoke) scripts/fuzz.sh 15; local status=$?; rm -rf target/fuzz; return "$status" ;;
    escape) tests/escape-suite.sh ;;
    netd) tests/netd-test.sh ;;
    update) tests/update-attack-test.sh && tests/update-interop-test.sh && tests/update-deferral-test.sh ;;
    cloud) tests/cloud-test.sh ;;
    attestd) tests/attestd-test.sh ;;
    attest-qemu) tests/attest-e2e-test.sh ;;
    kernel-config) tests/kernel-config-test.sh ;;
    yocto-layer) scripts/check-layer.sh ;;
    boot) tests/boot-test.sh ;;
    update-qemu) tests/update-qemu-test.sh ;;
    escape-qemu) tests/escape-suite-qemu.sh ;;
    netd-qemu) tests/netd-qemu-test.sh ;;
    device-cli) tests/device-cli-test.sh ;;
    m4) tests/m4-test.sh ;;
    intercore-qemu) tests/intercore-qemu-test.sh ;;
  esac
}

prepare() {
  scripts/install-host-deps.sh cross image || return 1
  # rustfmt and clippy ship with the toolchain; add them if this rustup install lacks them.
  cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt || return 1
  cargo clippy --version >/dev/null 2>&1 || rustup component add clippy || return 1
}

selected=("${SUITES[@]}")
((${#only[@]})) && selected=("${only[@]}")

if ! prepare; then
  echo "test.sh: preparing the host failed" >&2
  echo "suites: 0 passed, ${#selected[@]} failed"
  exit 1
fi

# Incremental caches are useless for one-shot builds and were a third of the target directory.
export CARGO_INCREMENTAL=0

passed=0 failed=0 skipped=0
failed_names=()
for suite in "${selected[@]}"; do
  if [[ $suite =~ ^(boot|update-qemu|escape-qemu|netd-qemu|device-cli|m4|intercore-qemu|attest-qemu)$ && $skip_boot == 1 ]]; then
    echo "== $suite: SKIPPED (--skip-boot given)"
    skipped=$((skipped + 1))
    continue
  fi
  echo "== $suite: ${DESCRIPTION[$suite]} (disk free: $(df -h --output=avail . | tail -1 | tr -d ' '))"
  start=$SECONDS
  if run_suite "$suite"; then
    echo "== $suite: ok ($((SECONDS - start)) s)"
    passed=$((passed + 1))
  else
    echo "== $suite: FAILED ($((SECONDS - start)) s)"
    failed=$((failed + 1))
    failed_names+=("$suite")
  fi
done

((failed)) && echo "test.sh: failed suites: ${failed_names[*]}"
echo "suites: $passed passed, $failed failed, $skipped skipped"
((failed == 0))
