//! One module per command group; each command loads, acts, and prints through [`Output`].

mod app;
pub mod cloud;
mod device;
mod keys;
mod manifest;
pub mod net;
pub mod update;

use crate::cli::{AppCommand, Command, DeviceCommand, HardwareArgs, KeysCommand, ManifestCommand};
use crate::output::{CommandError, Output};
use sphere_app_format::HardwareDefinitionSet;
use sphere_app_format::hardware_definition::HardwareDefinitionError;

pub fn run(command: Command, output: &Output) -> Result<(), CommandError> {
    match command {
        Command::Keys(KeysCommand::New { name, dir, force }) => keys::new(&name, &dir, force, output),
        Command::Manifest(ManifestCommand::Check { file, hardware }) => manifest::check(&file, &hardware, output),
        Command::App(AppCommand::Package { dir, output: file, key, hardware }) => {
            app::package(&dir, &file, &key, &hardware, output)
        }
        Command::App(AppCommand::Verify { file, trust }) => app::verify(&file, &trust, output),
        Command::App(AppCommand::Show { file, trust }) => app::show(&file, &trust, output),
        Command::App(device_command) => device::run(device_command, output),
        Command::Device(DeviceCommand::EnableDevelopment { device }) => device::development_mode(true, &device, output),
        Command::Device(DeviceCommand::DisableDevelopment { device }) => {
            device::development_mode(false, &device, output)
        }
        Command::Device(DeviceCommand::Cloud(command)) => cloud::device(command, output),
        Command::Group(command) => cloud::group(command, output),
        Command::Errors(command) => cloud::errors(command, output),
        Command::Net(command) => net::run(command, output),
        Command::Update(command) => update::run(command, output),
    }
}

/// Load the hardware definition named on the command line, if any.
fn load_hardware(args: &HardwareArgs) -> Result<Option<HardwareDefinitionSet>, CommandError> {
    let Some(path) = &args.hardware_definition else { return Ok(None) };
    match HardwareDefinitionSet::load(path, &args.hardware_definition_dir) {
        Ok(set) => Ok(Some(set)),
        Err(error @ HardwareDefinitionError::Read { .. }) => Err(CommandError::Usage(error.to_string())),
        Err(error) => Err(CommandError::invalid(error.to_string())),
    }
}
