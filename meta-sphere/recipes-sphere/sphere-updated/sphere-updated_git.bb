# nooelint: oelint.var.bbclassextend
# (no BBCLASSEXTEND: the update daemon runs on the device only)
SUMMARY = "OpenSphere update daemon"
DESCRIPTION = "sphere-updated verifies update metadata with The Update Framework (tough), \
               downloads OS images, app packages and M4 firmware resumably over HTTPS, \
               installs OS images into the inactive A/B slot while hashing, enforces the \
               anti-rollback minimum version, and serves the org.opensphere.Update1 D-Bus API."
HOMEPAGE = "https://github.com/opensphere/opensphere"
BUGTRACKER = "https://github.com/opensphere/opensphere/issues"
SECTION = "base"
LICENSE = "Apache-2.0 | MIT"
LIC_FILES_CHKSUM = "file://LICENSE-APACHE;md5=9c906197621ff6c11095fe41415ecad6 \
                    file://LICENSE-MIT;md5=39f1b8f9ca75cc35c10090b45af510b3"

PV = "0.1.0+git"

inherit sphere_cargo

SPHERE_CRATE_DIR = "daemons/sphere-updated"

# App packages from updates are handed to the app manager.
RDEPENDS:${PN} = "sphere-appd"
