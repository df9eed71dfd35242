SUMMARY = "OpenSphere production image"
DESCRIPTION = "The image a device ships with: sphere-init as PID 1 and the \
               OpenSphere daemons on a read-only squashfs root with a dm-verity hash tree, in \
               an A/B disk layout. No shell, no package manager, no development features, and \
               no development signing key."

require sphere-image.inc

# The device maker's keys (set SPHERE_TRUSTED_APP_KEYS); sphere-trust-keys fails
# closed and warns when none are given.
SPHERE_IMAGE_TRUST_KEYS = "sphere-trust-keys"

# Whatever local.conf or EXTRA_IMAGE_FEATURES ask for, a production image gets
# none of the development features (local.conf.sample enables several for every
# image).
SPHERE_DEV_IMAGE_FEATURES = "\
    allow-empty-password allow-root-login empty-root-password serial-autologin-root \
    post-install-logging package-management dbg-pkgs dev-pkgs ptest-pkgs \
    tools-debug tools-profile tools-sdk tools-testapps \
    ssh-server-dropbear ssh-server-openssh \
    "
IMAGE_FEATURES:remove = "${SPHERE_DEV_IMAGE_FEATURES}"

# No shell and no publicly known key, even when some dependency asks for one:
# the rootfs step fails instead.
PACKAGE_EXCLUDE = "busybox bash dash mksh sphere-dev-keys"

# dm-verity: the hash tree is appended to the squashfs (meta-oe's
# image_types_verity), and the slots are written from that file, so that the
# boot chain defined by the OTA design can verify the root against a signed root
# hash (${IMAGE_LINK_NAME}.squashfs.verity-params).
IMAGE_CLASSES += "image_types_verity"
IMAGE_FSTYPES += "verity"
VERITY_IMAGE_FSTYPE = "squashfs"
# Image-specific, as image_types_verity asks (it warns about its default salt).
VERITY_SALT = "2e6610ec386d76a8110b712675f9963bd7397226cf5c1eace098248fd150d212"
SPHERE_WKS_SLOT_SOURCE = "--source rawcopy --sourceparams=file=${IMGDEPLOYDIR}/${IMAGE_NAME}.squashfs.verity"

# The slots are written from the verity image, so wic must wait for it. Both
# tasks are created by their classes' anonymous functions, so the ordering can
# only be added in one as well.
# nooelint: oelint.task.noanonpython
python () {
    if 'wic' in d.getVar('IMAGE_FSTYPES').split():
        bb.build.addtask('do_image_wic', 'do_image_complete', 'do_image_verity', d)
}
