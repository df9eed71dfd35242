# nooelint: oelint.var.bbclassextend
# (no BBCLASSEXTEND: the attestation daemon runs on the device only)
SUMMARY = "OpenSphere device attestation daemon"
DESCRIPTION = "sphere-attestd holds the device identity key in the TPM 2.0 (or, on \
               boards without one, in a root-only key file), measures the boot into an \
               event log and the TPM's PCRs, attests to sphere-cloud with an EAT token and \
               a TPM quote, keeps the short-lived device certificate the cloud issues, and \
               runs the mutual-TLS MQTT link: telemetry, commands, configuration, update \
               notifications and error reports queued on the data partition."
HOMEPAGE = "https://github.com/opensphere/opensphere"
BUGTRACKER = "https://github.com/opensphere/opensphere/issues"
SECTION = "base"
LICENSE = "Apache-2.0 | MIT"
LIC_FILES_CHKSUM = "file://LICENSE-APACHE;md5=9c906197621ff6c11095fe41415ecad6 \
                    file://LICENSE-MIT;md5=39f1b8f9ca75cc35c10090b45af510b3"

PV = "0.1.0+git"

inherit sphere_cargo

SPHERE_CRATE_DIR = "daemons/sphere-attestd"

# It reads crash and violation counts from the app manager's D-Bus API. The TPM
# needs no user-space stack: the daemon speaks TPM 2.0 commands to /dev/tpmrm0
# itself (the kernel needs CONFIG_TCG_TPM and the board's TPM driver).
RDEPENDS:${PN} = "sphere-appd"
