#!/usr/bin/env bash
# test.sh suite `attestd`: sphere-attestd on the host, against a real TPM 2.0 (swtpm), no QEMU.
#
# - unit tests: TPM command marshalling and bounds-checked response parsing, the outbox (bounded,
#   oldest dropped first, an interrupted append leaves no message), configuration layering,
#   HTTP response parsing, violation counters to error reports;
# - tests/swtpm.rs against a real swtpm: the identity key is recreated identically from the TPM's
#   seed (nothing stored outside the TPM), its ECDSA signatures verify, PCR_Extend follows
#   SHA-256(old || digest), quotes carry the nonce and the PCR composite and verify with the
#   identity key, measured boot leaves PCRs 8-12 equal to the event log's replay (and notices a
#   foreign extend), and the EAT token verifies with sphere-attestation's verifier (and not with
#   another key); the file backend refuses a key file others can read.
# - the daemon against real sphere-cloud and mosquitto (tests/attestd-host.sh): attestation,
#   certificate, mutual-TLS MQTT, error reports queued while the broker is down and delivered
#   when it is back.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-host-deps.sh attest cloud
cargo test --locked -p sphere-attestd
tests/attestd-host.sh
