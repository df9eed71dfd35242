# Build an OpenSphere app from an app recipe into a signed app package (.sphpkg).
#
# The app's crate is built for the A7 with sphere_cargo.bbclass; then the
# native `sphere` CLI (sphere-cli-native, the same code developers run) checks
# app_manifest.json and packs and signs the package. A manifest the CLI rejects
# fails the build at do_sphere_manifest_check, before anything is compiled.
#
# An app recipe needs little more than:
#     inherit sphere_app
#     SPHERE_CRATE_DIR = "examples/hello-sphere"
# The crate keeps its package directory in ${SPHERE_CRATE_DIR}/app (the
# manifest at its root, other files the app ships); the class adds the
# executable at the manifest's EntryPoint. The package is installed into
# ${SPHERE_APP_INSTALL_DIR} of the image; the bare executable is not.
#
# Peripheral names ("$SAMPLE_LED") are resolved against the app's hardware
# definition (SPHERE_APP_HARDWARE_DEFINITION, relative to the workspace root),
# whose imports are found in the board's directories, which the machine
# configuration names in SPHERE_HARDWARE_DEFINITION_DIRS.
#
# Signing: by default with the well-known development key (sphere-dev-keys),
# which only development images trust. Production builds set
# SPHERE_APP_SIGNING_KEY to the vendor's key (a path on the build host, outside
# any layer) and SPHERE_APP_SIGNING_KEY_DEPENDS to "" or to the recipe that
# stages it.

inherit sphere_cargo

SPHERE_APP_DIR ?= "${S}/${SPHERE_CRATE_DIR}/app"
SPHERE_APP_MANIFEST ?= "${SPHERE_APP_DIR}/app_manifest.json"
# Must match the manifest's EntryPoint ("/bin/app" in Azure Sphere's samples).
SPHERE_APP_ENTRYPOINT ?= "bin/app"
SPHERE_APP_EXECUTABLE ?= "${B}/target/${CARGO_TARGET_SUBDIR}/${BPN}"
SPHERE_APP_PACKAGE ?= "${B}/${BPN}.sphpkg"
SPHERE_APP_INSTALL_DIR ?= "${datadir}/sphere/apps"

SPHERE_APP_HARDWARE_DEFINITION ?= ""
SPHERE_HARDWARE_DEFINITION_DIRS ?= ""
SPHERE_APP_HARDWARE_ARGS = "${@sphere_app_hardware_args(d)}"

def sphere_app_hardware_args(d):
    import os
    s = d.getVar('S')
    args = []
    hwdef = d.getVar('SPHERE_APP_HARDWARE_DEFINITION')
    if hwdef:
        args += ['--hardware-definition', os.path.join(s, hwdef)]
    for hwdir in (d.getVar('SPHERE_HARDWARE_DEFINITION_DIRS') or '').split():
        args += ['--hardware-definition-dir', os.path.join(s, hwdir)]
    return ' '.join(args)

SPHERE_APP_SIGNING_KEY ?= "${STAGING_DATADIR_NATIVE}/sphere-dev-keys/dev-app-signing.key"
SPHERE_APP_SIGNING_KEY_DEPENDS ?= "sphere-dev-keys-native"

DEPENDS += "sphere-cli-native ${SPHERE_APP_SIGNING_KEY_DEPENDS}"

# A changed key must re-sign the package.
do_sphere_app_package[file-checksums] += "${SPHERE_APP_SIGNING_KEY}:False"

do_sphere_manifest_check[doc] = "Checks the app manifest with the native sphere CLI"
do_sphere_manifest_check() {
    sphere manifest check "${SPHERE_APP_MANIFEST}" ${SPHERE_APP_HARDWARE_ARGS}
}
addtask sphere_manifest_check after do_patch do_prepare_recipe_sysroot before do_compile

do_sphere_app_package[doc] = "Packs and signs the app into ${SPHERE_APP_PACKAGE}"
do_sphere_app_package[cleandirs] = "${B}/sphere-app"
do_sphere_app_package() {
    cp -R --no-preserve=ownership "${SPHERE_APP_DIR}/." ${B}/sphere-app/
    # The package carries the executable stripped: -dbg packages cannot
    # reach into a signed archive, and app flash is small.
    install -D -m 0755 "${SPHERE_APP_EXECUTABLE}" "${B}/sphere-app/${SPHERE_APP_ENTRYPOINT}"
    ${STRIP} "${B}/sphere-app/${SPHERE_APP_ENTRYPOINT}"
    sphere app package ${B}/sphere-app \
        --output "${SPHERE_APP_PACKAGE}" \
        --key "${SPHERE_APP_SIGNING_KEY}" \
        ${SPHERE_APP_HARDWARE_ARGS}
}
addtask sphere_app_package after do_compile before do_install

do_install() {
    install -d ${D}${SPHERE_APP_INSTALL_DIR}
    install -m 0644 "${SPHERE_APP_PACKAGE}" ${D}${SPHERE_APP_INSTALL_DIR}/${BPN}.sphpkg
}

FILES:${PN} += "${SPHERE_APP_INSTALL_DIR}/${BPN}.sphpkg"
