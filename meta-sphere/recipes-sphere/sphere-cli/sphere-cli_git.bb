SUMMARY = "OpenSphere command line tool"
DESCRIPTION = "The sphere command: checks app manifests and hardware \
               definitions, builds and signs app packages, and manages devices. The native \
               variant is what sphere-app.bbclass uses to package apps at build time, so a \
               manifest is judged by the same code in a build as on a developer's machine."
HOMEPAGE = "https://github.com/opensphere/opensphere"
BUGTRACKER = "https://github.com/opensphere/opensphere/issues"
SECTION = "devel"
LICENSE = "Apache-2.0 | MIT"
LIC_FILES_CHKSUM = "file://LICENSE-APACHE;md5=9c906197621ff6c11095fe41415ecad6 \
                    file://LICENSE-MIT;md5=39f1b8f9ca75cc35c10090b45af510b3"

PV = "0.1.0+git"

inherit sphere_cargo

SPHERE_CRATE_DIR = "daemons/sphere-cli"

BBCLASSEXTEND = "native nativesdk"
