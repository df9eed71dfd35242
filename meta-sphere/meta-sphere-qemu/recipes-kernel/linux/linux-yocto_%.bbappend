# linux-yocto only lists oe-core's own QEMU machines.
COMPATIBLE_MACHINE:sphere-qemuarm-a7 = "sphere-qemuarm-a7"

# The board fragment, read from the repository's kernel-config/ (one copy, shared
# with the QEMU test image). Only for this machine, so the layer changes nothing
# for others.
FILESEXTRAPATHS:prepend:sphere-qemuarm-a7 := "${SPHERE_QEMU_KERNEL_CONFIG_DIR}:"
SRC_URI:append:sphere-qemuarm-a7 = " ${@sphere_qemu_board_fragment(d)}"

def sphere_qemu_board_fragment(d):
    import os
    cfg = os.path.join(d.getVar('SPHERE_QEMU_KERNEL_CONFIG_DIR'), 'base-qemu-virt-a7.cfg')
    # Re-parse when the fragment appears or goes away.
    bb.parse.mark_dependency(d, cfg)
    return 'file://base-qemu-virt-a7.cfg' if os.path.exists(cfg) else ''
