//! `selfheal completions <shell>`: the registration that makes the shell ask selfheal itself.

use clap::CommandFactory;

use crate::cli::Cli;
use crate::exit_code::ExitCode;
use crate::{Error, UsageError};

/// The shell code that asks `selfheal` itself for completions (`COMPLETE=<shell> selfheal`),
/// so service names come from the config at the moment of completing.
pub(super) fn execute(shell: clap_complete::Shell) -> Result<ExitCode, Error> {
    use clap_complete::env::{Bash, Elvish, EnvCompleter, Fish, Powershell, Zsh};
    let completer: &dyn EnvCompleter = match shell {
        clap_complete::Shell::Bash => &Bash,
        clap_complete::Shell::Elvish => &Elvish,
        clap_complete::Shell::Fish => &Fish,
        clap_complete::Shell::PowerShell => &Powershell,
        clap_complete::Shell::Zsh => &Zsh,
        other => {
            return Err(UsageError(format!("no completions for {other}")).into());
        }
    };
    let name = Cli::command().get_name().to_owned();
    completer.write_registration("COMPLETE", &name, &name, &name, &mut std::io::stdout())?;
    Ok(ExitCode::Success)
}
