//! One module per command, each with one `execute` that returns the exit code; `execute` here
//! dispatches, one line per command. Clap's types end here: below, commands hand plain values
//! and the loaded `Config` to the library.

mod check;
mod digest;
mod flush;
mod history;
mod install;
mod manual;
mod probe;
mod run;
mod test_email;
mod test_notify;
mod watch;

use std::path::PathBuf;

use clap::CommandFactory;

use crate::cli::{Cli, Command};
use crate::config::{Config, ServiceConfig};
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
        Command::Status(args) => status(&paths, &args),
        Command::History(args) => history::execute(&paths, &args),
        Command::Install(args) => install::install(&paths, &args),
        Command::Uninstall(args) => install::uninstall(&paths, &args),
        Command::Flush => flush::execute(&paths),
        Command::Watch => watch::execute(&paths),
        Command::Probe(args) => probe::execute(&paths, &args),
        Command::Digest(args) => digest::execute(&paths, &args),
        Command::TestEmail => test_email::execute(&paths),
        Command::TestNotify => test_notify::execute(&paths),
        Command::Demo => demo(),
        Command::Completions { shell } => print_completions(shell),
        Command::Man(args) => man(&args),
        Command::ServeDemo { port, say, status } => serve_demo(port, say.as_deref(), status),
        Command::SandboxInit(args) => sandbox_init(args),
    }
}

fn sandbox_init(args: crate::cli::SandboxInitArgs) -> Result<ExitCode, Error> {
    let boot = crate::sandbox::Boot {
        units: args.units,
        unified_only: args.unified_only,
        root: args.root,
        bind: args.bind,
    };
    match crate::sandbox::init(&boot) {
        Ok(()) => Ok(ExitCode::Success),
        // Anywhere but PID 1 it is a wrong use (exit 2), not a failure of the machinery.
        Err(err) => Err(match err.downcast::<crate::sandbox::NotPidOne>() {
            Ok(refusal) => crate::UsageError(refusal.to_string()).into(),
            Err(err) => Error::Internal(err),
        }),
    }
}

fn status(paths: &Paths, args: &crate::cli::StatusArgs) -> Result<ExitCode, Error> {
    let config = paths.load_config()?;
    let only = args
        .services
        .iter()
        .map(|name| find_service(&config, name))
        .collect::<Result<Vec<_>, _>>()?;
    // All monitored services when none is named.
    let services: Vec<&ServiceConfig> = if only.is_empty() {
        config.monitored_services.iter().collect()
    } else {
        only
    };
    let status = crate::status::gather(&config, &paths.state(), &services)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!(
            "{}",
            crate::status::dashboard(
                &status,
                crate::ui::terminal::Terminal::stdout(),
                std::time::SystemTime::now()
            )
        );
    }
    // 0 when every shown service is active and healthy.
    Ok(if status.services.iter().all(|s| s.healthy) {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}

fn man(args: &crate::cli::ManArgs) -> Result<ExitCode, Error> {
    use std::io::Write as _;
    let pages = crate::commands::manual::pages()?;
    if let Some(dir) = &args.dir {
        for page in &pages {
            let section = dir.join(format!("man{}", page.section()));
            std::fs::create_dir_all(&section)?;
            let path = section.join(&page.file);
            std::fs::write(&path, &page.roff)?;
            println!("wrote {}", path.display());
        }
        return Ok(ExitCode::Success);
    }
    // `selfheal man run` is `selfheal man selfheal-run`.
    let wanted = [
        format!("{}.", args.page),
        format!("selfheal-{}.", args.page),
    ];
    let page = pages
        .iter()
        .find(|page| wanted.iter().any(|w| page.file.starts_with(w)))
        .ok_or_else(|| {
            let names: Vec<&str> = pages
                .iter()
                .filter_map(|page| page.file.rsplit_once('.').map(|(name, _)| name))
                .collect();
            UsageError(format!(
                "no man page {:?}; the pages: {}",
                args.page,
                names.join(", ")
            ))
        })?;
    // A person at a terminal reads the page, as `git help` shows one; a pipe or a file gets
    // the roff itself (to install or convert).
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) && show_with_man(&page.roff) {
        return Ok(ExitCode::Success);
    }
    std::io::stdout().write_all(&page.roff)?;
    Ok(ExitCode::Success)
}

/// Shows `roff` through `man -l -` (man-db reads the page from stdin); false when there is no
/// `man` to run.
fn show_with_man(roff: &[u8]) -> bool {
    use std::io::Write as _;
    let Ok(mut man) = std::process::Command::new("man")
        .args(["-l", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
    else {
        return false;
    };
    if let Some(mut stdin) = man.stdin.take() {
        // A pager that quits early closes the pipe: that is the reader's choice, not an error.
        let _ = stdin.write_all(roff);
    }
    man.wait().is_ok()
}

fn serve_demo(port: u16, say: Option<&str>, status: u16) -> Result<ExitCode, Error> {
    crate::sandbox::demo_service::serve(port, say, status).map_err(Error::Internal)?;
    Ok(ExitCode::Success)
}

fn demo() -> Result<ExitCode, Error> {
    let exe = std::env::current_exe().map_err(Error::Output)?;
    crate::sandbox::demo::run(&exe).map_err(Error::Internal)?;
    Ok(ExitCode::Success)
}

/// The shell code that asks `selfheal` itself for completions (`COMPLETE=<shell> selfheal`),
/// so service names come from the config at the moment of completing.
fn print_completions(shell: clap_complete::Shell) -> Result<ExitCode, Error> {
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
