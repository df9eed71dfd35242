//! The command-line grammar. Help texts are the first documentation people read, so each
//! command says what it is for and shows an example.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "sphere",
    version,
    about = "OpenSphere: build, sign and check apps for OpenSphere devices",
    long_about = "OpenSphere: build, sign and check apps for OpenSphere devices.\n\n\
        Apps use Azure Sphere's app_manifest.json unchanged. Packages are signed with Ed25519 keys; \
        devices install only packages signed by a key they trust.",
    after_help = "Exit codes: 0 success, 1 the input is invalid or untrusted, 2 the command could not run as asked.\n\n\
        Quick start:\n  \
        sphere keys new dev\n  \
        sphere manifest check app/app_manifest.json --hardware-definition hw/board.json\n  \
        sphere app package app -o hello.sphpkg --key dev.key\n  \
        sphere app verify hello.sphpkg --trust dev.pub"
)]
pub struct Cli {
    /// Print results as JSON on stdout (messages for people still go to stderr).
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create and inspect signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Check app manifests.
    #[command(subcommand)]
    Manifest(ManifestCommand),
    /// Package, verify and inspect signed apps; install and manage them on a device.
    #[command(subcommand)]
    App(AppCommand),
    /// Devices: the fleet in sphere-cloud (list, show, attest, certificate, register, revoke) and
    /// settings held by a device's app manager (development mode).
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Device groups in sphere-cloud and the release each group should run.
    #[command(subcommand)]
    Group(crate::commands::cloud::GroupCommand),
    /// Error reports (crashes, sandbox and firewall violations) devices sent to sphere-cloud.
    #[command(subcommand)]
    Errors(crate::commands::cloud::ErrorsCommand),
    /// The device's per-app network firewall: effective rules and blocked attempts.
    #[command(subcommand)]
    Net(crate::commands::net::NetCommand),
    /// Over-the-air updates: build and sign the update repository (TUF); check, install and
    /// roll back updates on a device.
    #[command(subcommand)]
    Update(crate::commands::update::UpdateCommand),
}

#[derive(Subcommand)]
pub enum DeviceCommand {
    /// Allow packages signed by development keys (sideloading). Needs root on the device.
    #[command(after_help = "Example:\n  sphere device enable-development\n\n\
        Off by default. Apps already installed stay; new development-signed packages are refused once it is off.")]
    EnableDevelopment {
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Refuse packages signed by development keys again.
    DisableDevelopment {
        #[command(flatten)]
        device: DeviceArgs,
    },
    #[command(flatten)]
    Cloud(crate::commands::cloud::DeviceCloudCommand),
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Generate an Ed25519 signing key pair: NAME.key (private, mode 0600) and NAME.pub.
    #[command(after_help = "Example:\n  sphere keys new release --dir ~/.config/opensphere/keys\n\n\
        The files are PEM (PKCS#8 and SubjectPublicKeyInfo), readable by `openssl pkey`. \
        Give NAME.pub to devices and verifiers; keep NAME.key secret.")]
    New {
        /// Base name of the key files.
        name: String,
        /// Directory to write the key files into.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Replace existing key files of the same name.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
pub enum ManifestCommand {
    /// Validate an app_manifest.json and, with a hardware definition, resolve its "$NAME" peripherals.
    #[command(after_help = "Example:\n  sphere manifest check app/app_manifest.json \\\n      \
        --hardware-definition hardware-definitions/sample_appliance.json \\\n      \
        --hardware-definition-dir images/qemu-a7/hardware-definitions\n\n\
        Every problem is listed with its JSON path (e.g. $.Capabilities.AllowedTcpServerPorts[1]). \
        Unknown capabilities are warnings: the app loads but does not get them.")]
    Check {
        /// The manifest file.
        file: PathBuf,
        #[command(flatten)]
        hardware: HardwareArgs,
    },
}

#[derive(Args)]
pub struct HardwareArgs {
    /// Board hardware definition used to resolve "$NAME" peripheral references.
    #[arg(long, value_name = "FILE")]
    pub hardware_definition: Option<PathBuf>,
    /// Extra directory searched for imported hardware definitions (repeatable).
    #[arg(long, value_name = "DIR")]
    pub hardware_definition_dir: Vec<PathBuf>,
}

#[derive(Subcommand)]
pub enum AppCommand {
    /// Build a signed package from an app directory holding app_manifest.json and the app's files.
    #[command(after_help = "Example:\n  sphere app package app/ -o hello.sphpkg --key release.key\n\n\
        The directory is packaged as is: app_manifest.json at its root and the EntryPoint \
        (e.g. bin/app, executable). Packages are reproducible: same files and key, same bytes. \
        The output is written atomically.")]
    Package {
        /// The app directory.
        dir: PathBuf,
        /// Package file to write.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Private signing key (PEM), from `sphere keys new`.
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        #[command(flatten)]
        hardware: HardwareArgs,
    },
    /// Verify a package's signature and every file in it against trusted public keys.
    #[command(after_help = "Example:\n  sphere app verify hello.sphpkg --trust release.pub --trust backup.pub\n\n\
        Exit 0 means: signed by one of the trusted keys, nothing added, removed or altered.")]
    Verify {
        file: PathBuf,
        /// Trusted public key (PEM); repeat for several.
        #[arg(long, value_name = "KEY", required = true)]
        trust: Vec<PathBuf>,
    },
    /// Install (or update) a signed package on a device and start it.
    #[command(after_help = "Example:\n  sphere app install hello.sphpkg\n\n\
        The device's app manager verifies the signature against its trusted keys (development keys only \
        in development mode), unpacks atomically and starts the app in its sandbox.")]
    Install {
        file: PathBuf,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Stop and remove an installed app (and its mutable storage).
    Remove {
        component_id: String,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// List installed apps and their state.
    List {
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Start an installed app.
    Start {
        component_id: String,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Stop an app: SIGTERM, then SIGKILL after its grace period.
    Stop {
        component_id: String,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Stop an app and start it again.
    Restart {
        component_id: String,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Show an app's state, restarts and last exit.
    Status {
        component_id: String,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Print the last lines an app wrote.
    Logs {
        component_id: String,
        /// How many lines.
        #[arg(long, default_value_t = 50)]
        lines: u32,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Show the sandbox violations counted for an app (seccomp kills, Landlock denials, OOM kills, crashes).
    Violations {
        component_id: String,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Show a package's manifest, signer and contents.
    #[command(after_help = "Example:\n  sphere app show hello.sphpkg --json\n\n\
        Without --trust the structure and file digests are checked but the signer is only reported, not trusted.")]
    Show {
        file: PathBuf,
        /// Trusted public key (PEM) to check the signature against; repeatable.
        #[arg(long, value_name = "KEY")]
        trust: Vec<PathBuf>,
    },
}

/// How to reach the device's app manager.
#[derive(Args)]
pub struct DeviceArgs {
    /// The app manager's peer-to-peer D-Bus socket.
    #[arg(long, value_name = "PATH", default_value = sphere_appd_api::P2P_SOCKET)]
    pub socket: PathBuf,
    /// Use the system bus instead of the socket.
    #[arg(long)]
    pub system_bus: bool,
}
