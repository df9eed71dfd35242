# nooelint: oelint.var.bbclassextend
# (no BBCLASSEXTEND: it reads and writes the device's own boot-state record)
SUMMARY = "OpenSphere A/B slot tool"
DESCRIPTION = "sphere-slots shows and checks the A/B boot-state record (a U-Boot \
               environment on the bootenv partition), commits or rolls back a trial \
               slot, and writes the factory record. sphere-updated and sphere-init \
               use the same code as a library; this is the tool for development \
               images and factory provisioning."
HOMEPAGE = "https://github.com/opensphere/opensphere"
BUGTRACKER = "https://github.com/opensphere/opensphere/issues"
SECTION = "base"
LICENSE = "Apache-2.0 | MIT"
LIC_FILES_CHKSUM = "file://LICENSE-APACHE;md5=9c906197621ff6c11095fe41415ecad6 \
                    file://LICENSE-MIT;md5=39f1b8f9ca75cc35c10090b45af510b3"

PV = "0.1.0+git"

inherit sphere_cargo

SPHERE_CRATE_DIR = "daemons/sphere-slots"
