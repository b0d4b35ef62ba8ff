//! `selfheal run <service>`: heal, print the report, mail it, and heal again when the service
//! failed again while this run was finishing.

use crate::Error;
use crate::cli::RunArgs;
use crate::exit_code::ExitCode;
use crate::report::{Renderer, Report};
use crate::run::{self, RunOptions};

use super::{Paths, find_service};

pub(super) fn execute(paths: &Paths, args: &RunArgs) -> Result<ExitCode, Error> {
    if tracing::enabled!(tracing::Level::DEBUG) {
        // CLOCK_MONOTONIC is shared with systemd and journald: a timeline of one restore
        // (the restore benchmark prints one) starts from here.
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC);
        if let Ok(now) = now {
            tracing::debug!(
                "run started at CLOCK_MONOTONIC {} µs",
                now.tv_sec() * 1_000_000 + now.tv_nsec() / 1_000
            );
        }
    }
    let config = paths.load_config()?;
    tracing::debug!("config loaded");
    let state = paths.state();
    let service = find_service(&config, &args.service)?;
    let mut options = RunOptions {
        dry_run: args.dry_run,
        ignore_monitor_facts: false,
        manual: started_by_a_person(),
    };
    // Templates are compiled after healing: the service must not wait for its report.
    let mut renderer = None;
    loop {
        let report = run::run(&config, &state, service, options, &run::Host::real())?;
        let renderer =
            renderer.get_or_insert_with(|| Renderer::new(config.templates_dir.as_deref()));
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", renderer.text(&report)?);
        }
        if !args.dry_run && !args.no_email && crate::email::worth_mailing(&report) {
            mail(&config, &state, renderer, &report);
        }
        if !args.dry_run {
            // After the mail, so the outbox figure is what the run left behind.
            crate::metrics::update(&config, &state);
        }
        // systemd merged this failure's OnFailure= start into this run: nobody else heals it.
        if !args.json && run::failed_again_while_finishing(&report, service)? {
            options.ignore_monitor_facts = true;
            continue;
        }
        return Ok(report.facts.outcome.exit_code());
    }
}

/// A person at a terminal, not systemd (which sets `$INVOCATION_ID` in every unit it runs) nor
/// a script: such a run is always allowed and resets loop protection.
fn started_by_a_person() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("INVOCATION_ID").is_none() && std::io::stdin().is_terminal()
}

/// Mails a run's report. Delivery never changes the run's outcome or exit code: a report that
/// cannot be sent now stays in the outbox for `selfheal flush`, and the reason is logged.
fn mail(
    config: &crate::config::Config,
    state: &crate::state::StateDir,
    renderer: &Renderer,
    report: &Report,
) {
    use crate::email::{Delivery, deliver_report};
    let service = &report.header.service;
    match deliver_report(config, state, renderer, report) {
        Ok(None) => {}
        Ok(Some(Delivery::Sent { message_id })) => {
            tracing::info!(selfheal_service = %service, "report {message_id} sent");
        }
        Ok(Some(Delivery::SentWithoutOutbox {
            message_id,
            outbox_error,
        })) => {
            tracing::error!(selfheal_service = %service, "report {message_id} sent directly: the outbox cannot be written ({outbox_error})");
        }
        Ok(Some(Delivery::Queued { message_id, error })) => {
            tracing::warn!(selfheal_service = %service, "report {message_id} kept in the outbox for `selfheal flush`: {error}");
        }
        Err(err) => {
            tracing::error!(selfheal_service = %service, "the report could not even be queued: {err}");
        }
    }
}
