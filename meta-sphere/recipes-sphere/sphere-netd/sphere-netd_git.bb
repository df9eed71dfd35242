# nooelint: oelint.var.bbclassextend
# (no BBCLASSEXTEND: the firewall daemon runs on the device only)
SUMMARY = "OpenSphere per-app network firewall"
DESCRIPTION = "sphere-netd gives each app a network compartment (veth, IPv4 and \
               IPv6 addresses, NAT to the uplink), enforces the app manifest's \
               AllowedConnections and server ports in one nftables table written over \
               netlink, answers the app's DNS with an allow-list proxy, and records blocked \
               attempts (org.opensphere.Network1 D-Bus API)."
HOMEPAGE = "https://github.com/opensphere/opensphere"
BUGTRACKER = "https://github.com/opensphere/opensphere/issues"
SECTION = "base"
LICENSE = "Apache-2.0 | MIT"
LIC_FILES_CHKSUM = "file://LICENSE-APACHE;md5=9c906197621ff6c11095fe41415ecad6 \
                    file://LICENSE-MIT;md5=39f1b8f9ca75cc35c10090b45af510b3"

PV = "0.1.0+git"

inherit sphere_cargo

SPHERE_CRATE_DIR = "daemons/sphere-netd"

# The kernel needs nf_tables (inet, ct, nat, masq, reject, log, limit), veth and network
# namespaces; NFLOG (nfnetlink_log) for itemised blocked-packet telemetry.
RRECOMMENDS:${PN} = "kernel-module-veth kernel-module-nf-tables kernel-module-nfnetlink-log"
