SUMMARY = "OpenSphere development image"
DESCRIPTION = "sphere-image plus what a bench device needs: a busybox shell, \
               the sphere CLI on the device, the well-known development signing key (so \
               development-signed apps install) and the sample app. Never ship it."

require sphere-image.inc

SPHERE_IMAGE_TRUST_KEYS = "sphere-dev-keys"
SPHERE_IMAGE_APPS = "hello-sphere"

IMAGE_INSTALL += "busybox sphere-cli sphere-slots"

# A bench device: root logs in on the serial console without a password.
# nooelint: oelint.var.badimagefeature.allow-empty-password,oelint.var.badimagefeature.allow-root-login,oelint.var.badimagefeature.empty-root-password,oelint.var.badimagefeature.post-install-logging
IMAGE_FEATURES += "allow-empty-password allow-root-login empty-root-password post-install-logging"

# Same layout as production, but the slots come straight from the rootfs
# (no dm-verity), so a developer can rebuild without a signed root hash.
SPHERE_WKS_SLOT_SOURCE = "--source rootfs --fstype=squashfs"
