//! selfheal: heal failed systemd services and tell their owner what happened.
//!
//! `main.rs` parses the command line and calls [`run`]; everything else lives here, one
//! concept per module. The public surface is what `main`, the integration tests and the
//! benches need; `sandbox` and `fuzzing` are public only for tests, benches and fuzz targets.

mod atomic_file;
mod bounded_read;
mod cascade;
pub mod cli;
mod commands;
mod config;
mod demo;
mod demo_service;
mod diagnose;
mod digest;
mod duration;
mod email;
mod episode;
pub mod error;
pub mod exit_code;
#[doc(hidden)]
pub mod fuzzing;
mod host;
mod install;
mod journal;
pub mod logging;
mod mailing;
mod manual;
mod metrics;
mod nofollow;
pub mod outcome;
pub mod ports;
mod process;
mod report;
mod run;
#[doc(hidden)]
pub mod sandbox;
pub mod state;
mod stats;
mod status;
mod strategy;
mod systemd;
mod terminal;
mod verify;
mod watch;
mod when;

pub use error::{Error, UsageError};

/// Runs one command and returns its exit code. Errors are returned, not printed.
pub fn run(cli: cli::Cli) -> Result<exit_code::ExitCode, Error> {
    commands::execute(cli)
}
