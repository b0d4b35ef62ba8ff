//! selfheal: heal failed systemd services and tell their owner what happened.
//!
//! `main.rs` parses the command line and calls [`run`]; everything else lives here, one
//! concept per module.

pub mod bounded_read;
pub mod cli;
mod commands;
pub mod config;
pub mod demo;
pub mod demo_service;
pub mod diagnose;
pub mod duration;
pub mod email;
pub mod error;
pub mod exit_code;
#[doc(hidden)]
pub mod fuzzing;
pub mod host;
pub mod install;
pub mod journal;
pub mod logging;
pub mod nofollow;
pub mod outcome;
pub mod ports;
pub mod process;
pub mod report;
pub mod run;
pub mod sandbox;
pub mod state;
pub mod status;
pub mod strategy;
pub mod systemd;
pub mod verify;

pub use error::{Error, UsageError};

/// Runs one command and returns its exit code. Errors are returned, not printed.
pub fn run(cli: cli::Cli) -> Result<exit_code::ExitCode, Error> {
    commands::execute(cli)
}
