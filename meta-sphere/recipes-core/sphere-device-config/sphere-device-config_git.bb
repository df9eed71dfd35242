# nooelint: oelint.var.bbclassextend
# (no BBCLASSEXTEND: configuration of the device; the build host has no use for it)
SUMMARY = "OpenSphere device configuration: init, app manager and board definition"
DESCRIPTION = "Writes /etc/sphere/init.json (what sphere-init mounts, which \
               network it configures and which daemons it supervises) and \
               /etc/sphere/appd.json from the machine's and the distro's \
               variables, and installs the board's hardware definitions. \
               init.json is checked at build time by the same sphere-init \
               that reads it on the device."
HOMEPAGE = "https://github.com/opensphere/opensphere"
BUGTRACKER = "https://github.com/opensphere/opensphere/issues"
SECTION = "base"
LICENSE = "Apache-2.0 | MIT"
LIC_FILES_CHKSUM = "file://LICENSE-APACHE;md5=9c906197621ff6c11095fe41415ecad6 \
                    file://LICENSE-MIT;md5=39f1b8f9ca75cc35c10090b45af510b3"

DEPENDS += "sphere-init-native"

PV = "0.1.0+git"

# The board's hardware definitions come from the repository (the same files the
# QEMU test image installs), so the sources are the OpenSphere checkout.
inherit sphere_source

# Every value depends on the machine.
PACKAGE_ARCH = "${MACHINE_ARCH}"

# --- Set by the machine (see meta-sphere/docs/bsp-layer.md) ---
# The writable data partition sphere-init mounts on /data: /dev/X or
# serial:NAME (virtio-blk serial).
SPHERE_DATA_DEVICE ??= "/dev/mmcblk0p4"
SPHERE_DATA_FSTYPE ??= "ext4"
# Static interfaces, space separated, each IFACE,ADDRESS/PREFIX[,GATEWAY].
# Empty: no network configured by init.
SPHERE_NETWORK ??= ""
# Directories of hardware definitions (relative to the repository) and the
# file in them that describes this board.
SPHERE_HARDWARE_DEFINITION_DIRS ??= ""
SPHERE_BOARD_HARDWARE_DEFINITION ??= ""

# --- Set by the distro or image ---
SPHERE_HOSTNAME ??= "${MACHINE}"
# Daemons sphere-init starts, in order; each is described by a varflag below.
SPHERE_INIT_SERVICES ??= "appd attestd"
# PATH ARGS... | the line the daemon prints when it is ready
SPHERE_INIT_SERVICE[appd] = "${bindir}/sphere-appd serve|sphere-appd: ready"
SPHERE_INIT_SERVICE[attestd] = "${bindir}/sphere-attestd serve|sphere-attestd: ready"

do_configure[noexec] = "1"

python do_compile() {
    import json, os
    cfg = sphere_init_config(d)
    with open(os.path.join(d.getVar('B'), 'init.json'), 'w') as f:
        json.dump(cfg, f, indent=2)
        f.write('\n')
    board = d.getVar('SPHERE_BOARD_HARDWARE_DEFINITION')
    etc_sphere = os.path.join(d.getVar('sysconfdir'), 'sphere')
    appd = {
        "trusted_keys_dir": os.path.join(etc_sphere, 'keys'),
        "development_keys_dir": os.path.join(etc_sphere, 'dev-keys'),
    }
    if board:
        appd["board"] = os.path.join(etc_sphere, 'hardware-definitions', board)
    with open(os.path.join(d.getVar('B'), 'appd.json'), 'w') as f:
        json.dump(appd, f, indent=2)
        f.write('\n')
    bb.build.exec_func('sphere_check_init_config', d)
}
do_compile[vardeps] += "SPHERE_INIT_SERVICE"

def sphere_init_config(d):
    networks = []
    for entry in (d.getVar('SPHERE_NETWORK') or '').split():
        parts = entry.split(',')
        if len(parts) not in (2, 3):
            bb.fatal("SPHERE_NETWORK entry '%s' is not IFACE,ADDRESS/PREFIX[,GATEWAY]" % entry)
        iface = {"name": parts[0], "address": parts[1]}
        if len(parts) == 3:
            iface["gateway"] = parts[2]
        networks.append(iface)
    services = []
    for name in (d.getVar('SPHERE_INIT_SERVICES') or '').split():
        spec = d.getVarFlag('SPHERE_INIT_SERVICE', name)
        if not spec:
            bb.fatal("SPHERE_INIT_SERVICES names '%s' but SPHERE_INIT_SERVICE[%s] is not set" % (name, name))
        command, _, ready = spec.partition('|')
        argv = command.split()
        service = {"name": name, "path": argv[0], "args": argv[1:]}
        if ready.strip():
            service["ready_line"] = ready.strip()
        services.append(service)
    return {
        "hostname": d.getVar('SPHERE_HOSTNAME'),
        "data": {
            "device": d.getVar('SPHERE_DATA_DEVICE'),
            "fstype": d.getVar('SPHERE_DATA_FSTYPE'),
            "mountpoint": "/data",
            "dirs": ["apps", "config", "log", "sphere"],
        },
        "network": networks,
        "services": services,
    }

# A typo in a machine variable must fail the build, not the device's boot.
sphere_check_init_config[doc] = "Checks the generated init.json with the native sphere-init"
sphere_check_init_config() {
    sphere-init --check-config ${B}/init.json
}

do_install() {
    install -d ${D}${sysconfdir}/sphere/hardware-definitions
    install -m 0644 ${B}/init.json ${D}${sysconfdir}/sphere/init.json
    install -m 0644 ${B}/appd.json ${D}${sysconfdir}/sphere/appd.json
    for dir in ${SPHERE_HARDWARE_DEFINITION_DIRS}; do
        install -m 0644 ${S}/$dir/*.json ${D}${sysconfdir}/sphere/hardware-definitions/
    done
}
