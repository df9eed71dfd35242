# nooelint: oelint.var.bbclassextend
# (no BBCLASSEXTEND: the device's trust anchors; the build host signs with its own keys)
SUMMARY = "The device maker's OpenSphere trust anchors"
DESCRIPTION = "Installs the public keys a production device accepts app \
               packages from (/etc/sphere/keys). The keys are the device \
               maker's, named by SPHERE_TRUSTED_APP_KEYS in its distro or \
               local configuration, and the update repository's TUF root \
               (SPHERE_UPDATE_TRUSTED_ROOT); this layer ships none. With no app \
               key the device trusts no app package (fail closed) and the \
               build warns."
HOMEPAGE = "https://github.com/opensphere/opensphere"
BUGTRACKER = "https://github.com/opensphere/opensphere/issues"
SECTION = "base"
LICENSE = "Apache-2.0 | MIT"
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10 \
                    file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

# The keys are files of the build host named by a variable, not sources to fetch.
SRC_URI = ""
S = "${UNPACKDIR}"

CVE_PRODUCT = "opensphere:sphere-trust-keys"

inherit allarch

# Absolute paths, on the build host, of Ed25519 public keys in PEM
# (`sphere keys new` writes NAME.pub.pem). Keep them outside any layer that is
# published, with the private halves offline.
SPHERE_TRUSTED_APP_KEYS ??= ""
# Where sphere-appd reads production keys (its trusted_keys_dir).
SPHERE_APP_TRUST_DIR ?= "${sysconfdir}/sphere/keys"
# The update repository's root metadata (root.json made by `sphere update repo
# init`), the TUF root of trust sphere-updated starts from; and, for an https
# repository with a private CA, that CA's PEM certificate(s).
SPHERE_UPDATE_TRUSTED_ROOT ??= ""
SPHERE_UPDATE_CA ??= ""

# A changed key must rebuild the package.
do_install[file-checksums] += "${@' '.join(p + ':True' for p in (d.getVar('SPHERE_TRUSTED_APP_KEYS') + ' ' + d.getVar('SPHERE_UPDATE_TRUSTED_ROOT') + ' ' + d.getVar('SPHERE_UPDATE_CA')).split())}"

do_configure[noexec] = "1"
do_compile[noexec] = "1"

python do_install() {
    import os, shutil
    keys = (d.getVar('SPHERE_TRUSTED_APP_KEYS') or '').split()
    dest = d.getVar('D') + d.getVar('SPHERE_APP_TRUST_DIR')
    bb.utils.mkdirhier(dest)
    if not keys:
        bb.warn("SPHERE_TRUSTED_APP_KEYS is empty: this image trusts no app package; "
                "set it to the device maker's public keys (see meta-sphere/README.md)")
    for key in keys:
        if not os.path.isabs(key) or not os.path.isfile(key):
            bb.fatal("SPHERE_TRUSTED_APP_KEYS: '%s' is not an existing absolute path" % key)
        with open(key, 'rb') as f:
            head = f.read(64)
        if not head.startswith(b'-----BEGIN PUBLIC KEY-----'):
            bb.fatal("SPHERE_TRUSTED_APP_KEYS: '%s' is not a PEM public key "
                     "(a private key must never go into an image)" % key)
        target = os.path.join(dest, os.path.basename(key))
        shutil.copyfile(key, target)
        os.chmod(target, 0o644)
    update_dir = d.getVar('D') + os.path.join(d.getVar('sysconfdir'), 'sphere', 'update')
    for var, name in (('SPHERE_UPDATE_TRUSTED_ROOT', 'root.json'), ('SPHERE_UPDATE_CA', 'ca.pem')):
        src = d.getVar(var)
        if not src:
            continue
        if not os.path.isabs(src) or not os.path.isfile(src):
            bb.fatal("%s: '%s' is not an existing absolute path" % (var, src))
        bb.utils.mkdirhier(update_dir)
        shutil.copyfile(src, os.path.join(update_dir, name))
        os.chmod(os.path.join(update_dir, name), 0o644)
}

# An empty trust store is a valid (if useless) configuration.
ALLOW_EMPTY:${PN} = "1"
FILES:${PN} += "${SPHERE_APP_TRUST_DIR} ${sysconfdir}/sphere/update"
