//! `selfheal probe [SERVICE...]`: one round of health probes (what `selfheal-probe.timer`
//! runs), printed one line per service.

use crate::Error;
use crate::cli::ProbeArgs;
use crate::exit_code::ExitCode;
use crate::heal::probe::{self, ProbeOutcome};
use crate::systemd::Systemd;

use super::{Paths, find_service};

pub(super) fn execute(paths: &Paths, args: &ProbeArgs) -> Result<ExitCode, Error> {
    let config = paths.load_config()?;
    let state = paths.state();
    let only = args
        .services
        .iter()
        .map(|name| find_service(&config, name))
        .collect::<Result<Vec<_>, _>>()?;
    // One round at a time: a slow round and the timer's next must not count a failure twice.
    let Some(_round) = state.try_lock(".probe-round")? else {
        eprintln!("selfheal: another probe round is running; this one is skipped");
        return Ok(ExitCode::Success);
    };
    let outcomes = probe::round(&config, &state, &only, Systemd::connect)?;
    state.mark_round("probe");
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcomes)?);
    } else if outcomes.is_empty() {
        println!(
            "nothing to probe: probing needs a top-level probe: section and services with a port or health_url"
        );
    } else {
        // Under its timer (every few seconds), the journal gets what needs a look, not every
        // passing service.
        let under_systemd = std::env::var_os("INVOCATION_ID").is_some();
        for outcome in &outcomes {
            if !under_systemd || !outcome.ok || outcome.healing_started.is_some() {
                println!("{}", line(outcome));
            }
        }
    }
    Ok(if outcomes.iter().all(|outcome| outcome.ok) {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}

/// `web  FAIL 2/3  health URL http://…: no answer: timed out after 2s` (the detail says when
/// the round started the heal unit).
fn line(outcome: &ProbeOutcome) -> String {
    let verdict = match (outcome.judged, outcome.ok) {
        (false, _) => "-".to_owned(),
        (true, true) => "ok".to_owned(),
        (true, false) => format!("FAIL {}/{}", outcome.failures, outcome.failures_to_heal),
    };
    // The detail quotes what a service answered: never raw to a terminal.
    format!(
        "{:<20} {verdict:<8} {}",
        outcome.name,
        crate::ui::terminal::printable(&outcome.detail)
    )
}
