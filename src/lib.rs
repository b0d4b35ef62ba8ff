//! selfheal: heal failed systemd services and tell their owner what happened.
//!
//! `main.rs` parses the command line and calls [`run`]; everything else lives here, one
//! concept per module.

pub mod bounded_read;
pub mod cli;
pub mod config;
pub mod demo;
pub mod demo_service;
pub mod diagnose;
pub mod duration;
pub mod email;
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

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context as _;
use clap::CommandFactory;

use cli::{Cli, Command};
use config::{Config, ConfigError};
use exit_code::ExitCode;
use state::{StateDir, StateError};
use systemd::{SystemdError, UnitControl};

/// A mistake on the command line, reported with exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs one command and returns its exit code. Errors are returned, not printed.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config_path = cli
        .config
        .clone()
        .or_else(|| std::env::var_os("SELFHEAL_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_CONFIG_PATH));
    let state_path = cli
        .state_dir
        .clone()
        .or_else(|| std::env::var_os("SELFHEAL_STATE_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(state::DEFAULT_STATE_DIR));
    let state = StateDir::new(&state_path);
    let load = || Config::load(&config_path);

    match cli.command {
        Command::Run(args) => {
            let config = load()?;
            let service = find_service(&config, &args.service)?;
            let mut options = run::RunOptions {
                dry_run: args.dry_run,
                ignore_monitor_facts: false,
            };
            let renderer = report::Renderer::new(config.templates_dir.as_deref())?;
            loop {
                let report = run::run(&config, &state, service, options)?;
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    print!("{}", renderer.text(&report)?);
                }
                if !args.dry_run && !args.no_email && email::worth_mailing(&report) {
                    mail_report(&config, &state, &renderer, &report);
                }
                if !args.json && run::failed_again_while_finishing(&report, service)? {
                    options.ignore_monitor_facts = true;
                    continue;
                }
                return Ok(report.outcome.exit_code());
            }
        }
        Command::Check => {
            let config = load()?;
            println!(
                "{}: valid, {} monitored service(s): {}",
                config_path.display(),
                config.monitored_services.len(),
                config.service_names().join(", ")
            );
            Ok(ExitCode::Success)
        }
        Command::Status { json } => {
            let config = load()?;
            status::show(&config, &state, json)
        }
        Command::History {
            service,
            since,
            json,
        } => {
            let since = since.map(|d| SystemTime::now() - d.0);
            let records = state.history()?;
            let shown = records.iter().filter(|r| {
                service
                    .as_deref()
                    .is_none_or(|s| r.service == s.strip_suffix(".service").unwrap_or(s))
                    && since.is_none_or(|since| r.started().is_some_and(|t| t >= since))
            });
            for record in shown {
                if json {
                    println!("{}", serde_json::to_string(record)?);
                } else {
                    println!(
                        "{}  {:<24} {:<10} {:>7} ms  {}",
                        record.started_at,
                        record.service,
                        record.outcome,
                        record.duration_ms,
                        record.healed_by.as_deref().unwrap_or("-")
                    );
                }
            }
            Ok(ExitCode::Success)
        }
        Command::Install(args) => {
            let config = load()?;
            let files = install::planned_files(
                &config,
                &invocation(&config_path, &state_path)?,
                &args.unit_dir,
            );
            if args.dry_run {
                for file in &files {
                    println!("# {}\n{}", file.path.display(), file.contents);
                }
                return Ok(ExitCode::Success);
            }
            install::write_files(&files)?;
            for file in &files {
                println!("wrote {}", file.path.display());
            }
            if !args.no_reload {
                systemd::Systemd::connect()?.reload()?;
                println!("reloaded systemd");
            }
            Ok(ExitCode::Success)
        }
        Command::Uninstall(args) => {
            let config = load()?;
            let files = install::planned_files(
                &config,
                &invocation(&config_path, &state_path)?,
                &args.unit_dir,
            );
            for path in install::remove_files(&files)? {
                println!("removed {}", path.display());
            }
            if !args.no_reload {
                systemd::Systemd::connect()?.reload()?;
                println!("reloaded systemd");
            }
            Ok(ExitCode::Success)
        }
        Command::Flush => {
            let config = load()?;
            let summary = email::flush(&config, &state)?;
            for meta in &summary.delivered {
                println!("delivered {} ({})", meta.message_id, meta.subject);
            }
            for (meta, error) in &summary.failed {
                eprintln!(
                    "still queued {} ({}, {} attempt(s)): {error}",
                    meta.message_id,
                    meta.subject,
                    meta.attempts + 1
                );
            }
            if summary.busy > 0 {
                println!(
                    "{} message(s) are being sent by another selfheal",
                    summary.busy
                );
            }
            for skipped in &summary.unreadable {
                eprintln!(
                    "skipped {}: {}; deliver or remove it by hand",
                    skipped.eml.display(),
                    skipped.why
                );
            }
            if summary.failed.is_empty() && summary.busy == 0 && summary.unreadable.is_empty() {
                if summary.delivered.is_empty() {
                    println!("outbox empty: nothing to deliver");
                }
                Ok(ExitCode::Success)
            } else {
                Ok(ExitCode::Failure)
            }
        }
        Command::TestEmail => {
            let config = load()?;
            let email_config = config
                .email
                .as_ref()
                .ok_or(email::EmailError::NotConfigured)?;
            let renderer = report::Renderer::new(config.templates_dir.as_deref())?;
            let report = report::Report::test_email(&config);
            let composed =
                email::compose(email_config, config.owner.as_deref(), &renderer, &report)?;
            email::Sender::from_config(email_config)?.send_composed(&composed)?;
            println!(
                "sent {} to {} ({})",
                composed.message_id,
                composed.to.join(", "),
                composed.subject
            );
            Ok(ExitCode::Success)
        }
        Command::Demo => {
            let exe = std::env::current_exe().context("locating the selfheal binary")?;
            demo::run(&exe)?;
            Ok(ExitCode::Success)
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "selfheal",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::Success)
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(ExitCode::Success)
        }
        Command::ServeDemo { port, say, status } => {
            demo_service::serve(port, say.as_deref(), status)?;
            Ok(ExitCode::Success)
        }
        Command::SandboxInit(args) => {
            sandbox::init(&args)?;
            Ok(ExitCode::Success)
        }
    }
}

/// Mails a run's report. Delivery never changes the run's outcome or exit code: a report that
/// cannot be sent now stays in the outbox for `selfheal flush`, and the reason is logged.
fn mail_report(
    config: &Config,
    state: &StateDir,
    renderer: &report::Renderer,
    report: &report::Report,
) {
    match email::deliver_report(config, state, renderer, report) {
        Ok(None) => {}
        Ok(Some(email::Delivery::Sent { message_id })) => {
            tracing::info!(selfheal_service = %report.service, "report {message_id} sent");
        }
        Ok(Some(email::Delivery::SentWithoutOutbox {
            message_id,
            outbox_error,
        })) => {
            tracing::error!(selfheal_service = %report.service, "report {message_id} sent directly: the outbox cannot be written ({outbox_error})");
        }
        Ok(Some(email::Delivery::Queued { message_id, error })) => {
            tracing::warn!(selfheal_service = %report.service, "report {message_id} kept in the outbox for `selfheal flush`: {error}");
        }
        Err(err) => {
            tracing::error!(selfheal_service = %report.service, "the report could not even be queued: {err:#}");
        }
    }
}

fn find_service<'c>(
    config: &'c Config,
    name: &str,
) -> Result<&'c config::ServiceConfig, UsageError> {
    let known = || config.service_names().join(", ");
    let bare = name.strip_suffix(".service").unwrap_or(name);
    if !config::is_valid_service_name(bare) {
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

/// The ExecStart= of heal units: this binary, plus the paths only when they are not defaults.
fn invocation(config: &Path, state_dir: &Path) -> anyhow::Result<install::Invocation> {
    let absolute = |path: &Path| {
        std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
    };
    let config = Some(config).filter(|p| *p != Path::new(config::DEFAULT_CONFIG_PATH));
    let state_dir = Some(state_dir).filter(|p| *p != Path::new(state::DEFAULT_STATE_DIR));
    Ok(install::Invocation {
        executable: std::env::current_exe().context("locating the selfheal binary")?,
        config: config.map(absolute).transpose()?,
        state_dir: state_dir.map(absolute).transpose()?,
    })
}

/// The exit code for an error: the most specific cause in its chain decides.
pub fn exit_code_for(error: &anyhow::Error) -> ExitCode {
    for cause in error.chain() {
        if cause.is::<UsageError>() || cause.is::<ConfigError>() || cause.is::<clap::Error>() {
            return ExitCode::Usage;
        }
        if cause.is::<SystemdError>() {
            return ExitCode::SystemdUnavailable;
        }
        if cause.is::<StateError>() {
            return ExitCode::StateError;
        }
        if cause.is::<email::EmailError>() {
            return ExitCode::EmailError;
        }
    }
    ExitCode::Internal
}
