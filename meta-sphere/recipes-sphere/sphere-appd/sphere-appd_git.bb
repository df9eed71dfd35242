# nooelint: oelint.var.bbclassextend
# (no BBCLASSEXTEND: the app manager runs on the device only)
SUMMARY = "OpenSphere app manager"
DESCRIPTION = "sphere-appd installs signed app packages atomically, runs each \
               app in its sandbox, restarts apps that exit, keeps their logs and violation \
               counts, and serves the org.opensphere.AppManager1 D-Bus API."
HOMEPAGE = "https://github.com/opensphere/opensphere"
BUGTRACKER = "https://github.com/opensphere/opensphere/issues"
SECTION = "base"
LICENSE = "Apache-2.0 | MIT"
LIC_FILES_CHKSUM = "file://LICENSE-APACHE;md5=9c906197621ff6c11095fe41415ecad6 \
                    file://LICENSE-MIT;md5=39f1b8f9ca75cc35c10090b45af510b3"

PV = "0.1.0+git"

inherit sphere_cargo

SPHERE_CRATE_DIR = "daemons/sphere-appd"

# Every app is started through the sandbox launcher.
RDEPENDS:${PN} = "sphere-sandbox"
