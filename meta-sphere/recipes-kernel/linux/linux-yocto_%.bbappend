# Applies OpenSphere's kernel configuration only when the distro asks for it
# (DISTRO_FEATURES "sphere"): adding this layer to another distro's build leaves
# linux-yocto alone.
require ${@bb.utils.contains('DISTRO_FEATURES', 'sphere', 'linux-yocto-sphere.inc', '', d)}
