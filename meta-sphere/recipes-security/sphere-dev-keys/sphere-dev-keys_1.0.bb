SUMMARY = "Well-known OpenSphere development app-signing key"
DESCRIPTION = "The publicly known Ed25519 key pair development builds sign \
               apps with. The target package installs the public half into the app trust \
               store of development images; the native package gives sphere-app.bbclass the \
               private half. Production images must not contain it (sphere-image excludes \
               it): production keys come from the device maker's layer."
HOMEPAGE = "https://github.com/opensphere/opensphere"
BUGTRACKER = "https://github.com/opensphere/opensphere/issues"
SECTION = "base"
LICENSE = "Apache-2.0 | MIT"
# The sources are files of this layer, not a tarball with its own license
# text: oe-core's convention for such recipes is the common license files.
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10 \
                    file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = "file://dev-app-signing.key \
           file://dev-app-signing.pub"

S = "${UNPACKDIR}"

CVE_PRODUCT = "opensphere:sphere-dev-keys"

inherit allarch

# Where sphere-appd looks for development keys: trusted only while development
# mode is on (its development_keys_dir).
SPHERE_APP_TRUST_DIR ?= "${sysconfdir}/sphere/dev-keys"

do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    install -d ${D}${SPHERE_APP_TRUST_DIR}
    install -m 0644 ${S}/dev-app-signing.pub ${D}${SPHERE_APP_TRUST_DIR}/dev-app-signing.pub
}

# Only the build host gets the private half, for sphere-app.bbclass to sign with.
do_install:append:class-native() {
    install -d ${D}${datadir}/sphere-dev-keys
    install -m 0600 ${S}/dev-app-signing.key ${D}${datadir}/sphere-dev-keys/dev-app-signing.key
    install -m 0644 ${S}/dev-app-signing.pub ${D}${datadir}/sphere-dev-keys/dev-app-signing.pub
}

BBCLASSEXTEND = "native"
