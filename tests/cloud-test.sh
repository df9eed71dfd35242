#!/usr/bin/env bash
# test.sh suite `cloud`: sphere-cloud against real components on the host, no QEMU.
#
# - unit tests of the shared attestation formats (sphere-attestation) and of the verifier, CA
#   and storage (sphere-cloud);
# - the attack tests (daemons/sphere-cloud/tests/attacks.rs): the real sphere-cloud binary, a
#   real mosquitto with TLS, client certificates and per-device ACLs, and a real PostgreSQL
#   server from Debian's package; replayed and expired nonces, a tampered event log, an
#   unreleased measurement, evidence signed by another key, another device's MQTT topics, no or
#   a self-made client certificate, revoked and expired certificates and a certificate after a
#   failed attestation must all be refused; the same run again against sphere-cloud's embedded
#   MQTT broker (the default), plus mosquitto_pub/mosquitto_sub interoperating with it;
# - reference values from the update repository's signed release metadata
#   (daemons/sphere-cloud/tests/reference_repo.rs): a TUF repository made with `sphere update
#   repo`, `serve --reference-repo`; a released measurement passes, a new release is accepted
#   after SIGHUP and by the periodic refresh, a tampered target (hash, length), metadata edited
#   without its key and expired metadata are refused with the last good set kept, and a
#   measurement in no release is refused;
# - the operator's `sphere device|group|errors` commands, the real `sphere` binary against a
#   running sphere-cloud and mosquitto (tests/cloud-cli-test.sh);
# - the real device daemon, sphere-attestd with swtpm as its TPM, against sphere-cloud's
#   embedded broker: attests, gets a certificate, delivers an error report it queued while MQTT
#   was down and its telemetry (tests/attestd-host.sh --embedded-broker; suite `attestd` runs
#   the same against mosquitto).
#
# Takes about 1.5 minutes once built (the expired-nonce and expired-certificate cases wait out
# deliberately short lifetimes, once per broker; the CLI part about 10 s, sphere-attestd 30 s).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-host-deps.sh cloud attest
# The `sphere` CLI makes the TUF repository for tests/reference_repo.rs (found next to sphere-cloud).
cargo build --locked -p sphere-cloud -p sphere-cli
cargo test --locked -p sphere-attestation -p sphere-cloud -- --include-ignored --nocapture 2>&1
tests/cloud-cli-test.sh
tests/attestd-host.sh --embedded-broker
