//! `sphere`: OpenSphere's command line for app developers and fleet operators.
//!
//! Exit codes are part of the interface, so scripts can tell a bad app from a bad invocation:
//! 0 success, 1 the input was read and found invalid or untrusted, 2 the command could not run
//! as asked (bad arguments, unreadable files).

mod cli;
mod commands;
mod output;

use clap::Parser;
use output::Output;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let output = Output { json: cli.json };
    match commands::run(cli.command, &output) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            output.error(&error);
            ExitCode::from(error.exit_code())
        }
    }
}
