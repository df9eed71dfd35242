# nooelint: oelint.var.bbclassextend
# (no BBCLASSEXTEND: an app package is only built for the device; there is nothing to run on the build host)
SUMMARY = "OpenSphere sample app"
DESCRIPTION = "hello-sphere, the sample high-level app, built and signed into \
               an OpenSphere app package with sphere_app.bbclass: the example to copy for a \
               product's own app recipes."
HOMEPAGE = "https://github.com/opensphere/opensphere"
BUGTRACKER = "https://github.com/opensphere/opensphere/issues"
SECTION = "apps"
LICENSE = "Apache-2.0 | MIT"
LIC_FILES_CHKSUM = "file://LICENSE-APACHE;md5=9c906197621ff6c11095fe41415ecad6 \
                    file://LICENSE-MIT;md5=39f1b8f9ca75cc35c10090b45af510b3"

PV = "0.1.0+git"

inherit sphere_app

SPHERE_CRATE_DIR = "examples/hello-sphere"
# Its names for the board's peripherals ("$SAMPLE_LED" and so on).
SPHERE_APP_HARDWARE_DEFINITION = "examples/hello-sphere/hardware-definitions/sample_appliance.json"
