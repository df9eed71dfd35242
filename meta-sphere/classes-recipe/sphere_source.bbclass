# Fetch the OpenSphere repository that holds this layer, at the commit checked out.
#
# The layer sits inside the OpenSphere repository, so by default a recipe builds
# the commit checked out there (HEAD of ${SPHERE_TOPDIR}), fetched with bitbake's
# git fetcher over the file protocol: no network, and the sources always match
# the layer (and opensphere-crates.inc) of the same commit. A product that keeps
# the layer elsewhere points SPHERE_GIT_URI at its OpenSphere repository and sets
# SRCREV (see README.md).

# usehead: build whatever commit the checkout has, on any branch.
SPHERE_GIT_URI ?= "git://${SPHERE_TOPDIR};protocol=file;usehead=1;nobranch=1"
SRC_URI = "${SPHERE_GIT_URI}"
# AUTOREV here resolves HEAD of the local checkout that also holds this layer,
# so the build is exactly as reproducible as the layer's own commit. Products
# that fetch from a remote set a fixed SRCREV.
# nooelint: oelint.vars.autorev
SRCREV ?= "${AUTOREV}"

# Our own software: no match in the CVE database under another vendor's name.
CVE_PRODUCT ?= "opensphere:${BPN}"
