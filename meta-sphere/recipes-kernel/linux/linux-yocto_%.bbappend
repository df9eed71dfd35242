# OpenSphere's kernel configuration: the fragments in the repository's
# kernel-config/ directory, the same files the QEMU test image in images/ is
# built from. They are read in place (FILESEXTRAPATHS), never copied into the
# layer, so the two kernels cannot drift apart.
#
# Every *.cfg there is applied, in name order, except base-*.cfg: those describe
# a board and belong to its BSP layer (meta-sphere-qemu applies
# base-qemu-virt-a7.cfg for the QEMU machine). A new fragment needs no edit here.
#
# Only under the sphere distros (the "sphere" DISTROOVERRIDES entry): adding
# this layer to another distro's build leaves linux-yocto alone.

FILESEXTRAPATHS:prepend:sphere := "${SPHERE_KERNEL_CONFIG_DIR}:"
SRC_URI:append:sphere = " ${@sphere_kernel_fragments(d)}"

def sphere_kernel_fragments(d):
    import glob, os
    cfgdir = d.getVar('SPHERE_KERNEL_CONFIG_DIR') or \
        os.path.join(d.getVar('SPHERE_TOPDIR'), 'kernel-config')
    # Adding or removing a fragment changes the directory's mtime: re-parse then.
    bb.parse.mark_dependency(d, cfgdir)
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(cfgdir, '*.cfg')))
    return ' '.join('file://%s' % n for n in names if not n.startswith('base-'))
