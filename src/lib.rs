//! selfheal: heal failed systemd services and tell their owner what happened.
//!
//! `main.rs` parses the command line and calls [`run`]; everything else lives here, one
//! layer per folder. The public surface is what `main`, the integration tests and the
//! benches need; `sandbox` and `fuzzing` are public only for tests, benches and fuzz targets.

// The layers, each importing only those below it (docs/architecture.md):
// commands → sandbox → status, deploy → notify → report → heal → state, config → systemd,
// host → ui. The leaves at the top (cli, error, exit_code, outcome, logging) are shared.
pub mod cli;
mod commands;
mod config;
mod deploy;
pub mod error;
pub mod exit_code;
#[doc(hidden)]
pub mod fuzzing;
mod heal;
mod host;
pub mod logging;
mod notify;
pub mod outcome;
mod receiver;
mod report;
#[doc(hidden)]
pub mod sandbox;
pub mod state;
mod status;
mod systemd;
mod ui;

pub use error::{Error, UsageError};
/// For the integration tests and benches: which process holds a port.
pub use host::ports;

/// Runs one command and returns its exit code. Errors are returned, not printed.
pub fn run(cli: cli::Cli) -> Result<exit_code::ExitCode, Error> {
    commands::execute(cli)
}
