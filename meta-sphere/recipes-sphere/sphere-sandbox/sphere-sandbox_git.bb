# nooelint: oelint.var.bbclassextend
# (no BBCLASSEXTEND: the launcher confines apps on the device; a build host has no use for it)
SUMMARY = "OpenSphere app sandbox launcher"
DESCRIPTION = "sphere-sandbox-exec starts one app in its sandbox: its own uid, \
               namespaces, a minimal read-only root, Landlock, a seccomp allow-list, no \
               capabilities, cgroup limits and a storage quota, as the app manager asks."
HOMEPAGE = "https://github.com/opensphere/opensphere"
BUGTRACKER = "https://github.com/opensphere/opensphere/issues"
SECTION = "base"
LICENSE = "Apache-2.0 | MIT"
LIC_FILES_CHKSUM = "file://LICENSE-APACHE;md5=9c906197621ff6c11095fe41415ecad6 \
                    file://LICENSE-MIT;md5=39f1b8f9ca75cc35c10090b45af510b3"

PV = "0.1.0+git"

inherit sphere_cargo

SPHERE_CRATE_DIR = "daemons/sphere-sandbox"

# The crate also builds a benchmark and a bring-up helper; a device ships only the launcher.
do_install:append() {
    rm -f ${D}${bindir}/sphere-sandbox-bench ${D}${bindir}/sphere-sandbox-dev
}

# App storage images are created with mke2fs when an app is first installed.
RDEPENDS:${PN} = "e2fsprogs-mke2fs"
