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

# The DNS server sphere-netd's per-app proxies forward allowed names to.
# Empty: no sphere-netd, so apps get loopback only (sphere-appd fails closed).
SPHERE_DNS_UPSTREAM ??= ""

# --- Set by the distro or the product ---
SPHERE_HOSTNAME ??= "${MACHINE}"
# The update repository (TUF metadata and targets, https or file URLs) and the
# board id matched against each target's hardware list. With no metadata URL
# there is no sphere-updated service. The trusted root itself is installed by
# sphere-trust-keys (SPHERE_UPDATE_TRUSTED_ROOT).
SPHERE_UPDATE_METADATA_URL ??= ""
SPHERE_UPDATE_TARGETS_URL ??= ""
SPHERE_BOARD_ID ??= "${MACHINE}"
SPHERE_UPDATE_TRUSTED_ROOT ??= ""
# Daemons sphere-init starts, in order (sphere-netd before the app manager,
# which asks it for each app's network compartment); each is described by a
# varflag below. Daemons whose configuration is missing are left out.
SPHERE_INIT_SERVICES ??= "netd appd attestd updated"
# PATH ARGS... | the exact line the daemon prints on stdout when it is ready
SPHERE_INIT_SERVICE[netd] = "${bindir}/sphere-netd serve --upstream ${SPHERE_DNS_UPSTREAM} --state-dir /data/sphere/netd|sphere-netd: ready"
SPHERE_INIT_SERVICE[appd] = "${bindir}/sphere-appd serve|sphere-appd: ready"
SPHERE_INIT_SERVICE[attestd] = "${bindir}/sphere-attestd serve|sphere-attestd: ready"
SPHERE_INIT_SERVICE[updated] = "${bindir}/sphere-updated serve|"

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
    updated = sphere_updated_config(d)
    if updated:
        with open(os.path.join(d.getVar('B'), 'updated.json'), 'w') as f:
            json.dump(updated, f, indent=2)
            f.write('\n')
    bb.build.exec_func('sphere_check_init_config', d)
}
do_compile[vardeps] += "SPHERE_INIT_SERVICE SPHERE_DNS_UPSTREAM SPHERE_UPDATE_METADATA_URL \
                        SPHERE_UPDATE_TARGETS_URL SPHERE_BOARD_ID SPHERE_UPDATE_TRUSTED_ROOT"

def sphere_updated_config(d):
    import os
    url = d.getVar('SPHERE_UPDATE_METADATA_URL')
    if not url:
        return None
    if not d.getVar('SPHERE_UPDATE_TRUSTED_ROOT'):
        bb.fatal("SPHERE_UPDATE_METADATA_URL is set but SPHERE_UPDATE_TRUSTED_ROOT (the "
                 "repository's root.json for sphere-trust-keys) is not")
    update_dir = os.path.join(d.getVar('sysconfdir'), 'sphere', 'update')
    return {
        "metadata_url": url,
        "targets_url": d.getVar('SPHERE_UPDATE_TARGETS_URL') or url.rstrip('/').rsplit('/', 1)[0] + '/targets/',
        "trusted_root": os.path.join(update_dir, 'root.json'),
        "hardware": d.getVar('SPHERE_BOARD_ID'),
        "state_dir": "/data/sphere/updated",
        "m4_dir": "/data/sphere/m4",
    }

def sphere_service_configured(d, name):
    """A daemon without its configuration would fail every boot's health check."""
    if name == 'netd':
        return bool(d.getVar('SPHERE_DNS_UPSTREAM'))
    if name == 'updated':
        return bool(d.getVar('SPHERE_UPDATE_METADATA_URL'))
    return True

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
        if not sphere_service_configured(d, name):
            bb.note("sphere-device-config: %s is not configured; sphere-init will not start it" % name)
            continue
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
    if [ -f ${B}/updated.json ]; then
        install -m 0644 ${B}/updated.json ${D}${sysconfdir}/sphere/updated.json
    fi
    for dir in ${SPHERE_HARDWARE_DEFINITION_DIRS}; do
        install -m 0644 ${S}/$dir/*.json ${D}${sysconfdir}/sphere/hardware-definitions/
    done
}
