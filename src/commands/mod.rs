//! One module per command, each with one `execute` that returns the exit code; `execute` here
//! dispatches, one line per command. Clap's types end here: below, commands hand plain values
//! and the loaded `Config` to the library.

mod check;
mod completions;
mod demo;
mod digest;
mod discover;
mod flush;
mod history;
mod install;
mod man;
mod manual;
mod pause;
mod probe;
mod receive;
mod run;
mod status;
mod test_email;
mod test_notify;
mod watch;

use std::path::PathBuf;

use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::exit_code::ExitCode;
use crate::state::StateDir;
use crate::{Error, UsageError};

/// Where the config and the state live, from `--config` / `--state-dir` (or their defaults).
pub(crate) struct Paths {
    pub config: PathBuf,
    pub state_dir: PathBuf,
}

impl Paths {
    pub(crate) fn load_config(&self) -> Result<Config, Error> {
        Ok(Config::load(&self.config)?)
    }

    pub(crate) fn state(&self) -> StateDir {
        StateDir::new(&self.state_dir)
    }
}

/// Runs one command and returns its exit code. Errors are returned, not printed.
pub(crate) fn execute(cli: Cli) -> Result<ExitCode, Error> {
    let paths = Paths {
        config: cli.config,
        state_dir: cli.state_dir,
    };
    match cli.command {
        Command::Run(args) => run::execute(&paths, &args),
        Command::Check => check::execute(&paths),
        Command::Status(args) => status::execute(&paths, &args),
        Command::History(args) => history::execute(&paths, &args),
        Command::Install(args) => install::install(&paths, &args),
        Command::Uninstall(args) => install::uninstall(&paths, &args),
        Command::Flush => flush::execute(&paths),
        Command::Pause(args) => pause::pause(&paths, &args),
        Command::Resume(args) => pause::resume(&paths, &args),
        Command::Watch => watch::execute(&paths),
        Command::Probe(args) => probe::execute(&paths, &args),
        Command::Receive(args) => receive::execute(&paths, &args),
        Command::Discover => discover::execute(&paths),
        Command::Digest(args) => digest::execute(&paths, &args),
        Command::TestEmail => test_email::execute(&paths),
        Command::TestNotify => test_notify::execute(&paths),
        Command::Demo => demo::execute(),
        Command::Completions { shell } => completions::execute(shell),
        Command::Man(args) => man::execute(&args),
        Command::ServeDemo { port, say, status } => demo::serve(port, say.as_deref(), status),
        Command::SandboxInit(args) => demo::sandbox_init(args),
    }
}

/// The entry a run of `name` uses: a monitored service's, or with `all_services:` an unlisted
/// unit's (see `Config::entry`). Anything else is a usage error that says why.
pub(crate) fn find_entry<'c>(
    config: &'c Config,
    name: &str,
) -> Result<std::borrow::Cow<'c, crate::config::ServiceConfig>, UsageError> {
    if let Some(entry) = config.entry(name) {
        return Ok(entry);
    }
    let found = find_service(config, name).map(std::borrow::Cow::Borrowed);
    match (&config.all_services, found) {
        (_, Ok(found)) => Ok(found),
        (None, Err(err)) => Err(err),
        (Some(_), Err(_)) => Err(UsageError(format!(
            "{name:?} is neither in monitored_services nor covered by all_services: (an exclude glob, or one of selfheal's own units)"
        ))),
    }
}

/// A monitored service by the name a person typed: its `name`, with or without `.service`.
/// Anything else is a usage error that lists the known names.
pub(crate) fn find_service<'c>(
    config: &'c Config,
    name: &str,
) -> Result<&'c crate::config::ServiceConfig, UsageError> {
    let known = || config.service_names().join(", ");
    let bare = name.strip_suffix(".service").unwrap_or(name);
    if !crate::config::is_valid_service_name(bare) {
        return Err(UsageError(format!(
            "invalid service name {name:?}; known services: {}",
            known()
        )));
    }
    config.service(bare).ok_or_else(|| {
        UsageError(format!(
            "unknown service {name:?}; known services: {}",
            known()
        ))
    })
}
