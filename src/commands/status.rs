//! `selfheal status`: the dashboard (`crate::status` gathers and renders it), or its JSON.
//! Exit 0 when every shown service is active and healthy, 1 otherwise.

use crate::Error;
use crate::config::ServiceConfig;
use crate::exit_code::ExitCode;
use crate::status::CoveredUnits;

use super::{Paths, find_service};

pub(super) fn execute(paths: &Paths, args: &crate::cli::StatusArgs) -> Result<ExitCode, Error> {
    let config = paths.load_config()?;
    let only = args
        .services
        .iter()
        .map(|name| find_service(&config, name))
        .collect::<Result<Vec<_>, _>>()?;
    // All monitored services when none is named, and the failed units all_services: covers.
    let everything = only.is_empty();
    // selfheal's own timers are asked beside the dashboard, not after it (each question has
    // the dashboard's timeout; a frozen systemd must cost one timeout, not two).
    let timer_states = everything.then(|| {
        let config = config.clone();
        std::thread::spawn(move || crate::status::timers::ask(&config))
    });
    let (unlisted, covered) = if everything {
        failed_unlisted(&config)
    } else {
        (Vec::new(), None)
    };
    let services: Vec<&ServiceConfig> = if only.is_empty() {
        config.monitored_services.iter().chain(&unlisted).collect()
    } else {
        only
    };
    let mut status = crate::status::gather(&config, &paths.state(), &services)?;
    status.config.all_services = covered;
    if everything {
        // Whether selfheal itself is alive: its timers and their last rounds.
        let states = timer_states.and_then(|asking| asking.join().ok()).flatten();
        status.config.timers = crate::status::timers::look(
            &config,
            &paths.state(),
            states.as_deref(),
            std::time::SystemTime::now(),
        );
    }
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
    // 0 when every shown service is active and healthy (a failed unlisted unit counts).
    Ok(if status.services.iter().all(|s| s.healthy) {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}

/// With `all_services:`: the entries of the covered units that are failed now (shown while
/// they are), and how many units it covers; one question to systemd.
fn failed_unlisted(config: &crate::config::Config) -> (Vec<ServiceConfig>, Option<CoveredUnits>) {
    if config.all_services.is_none() {
        return (Vec::new(), None);
    }
    // On a thread given up on after the dashboard's timeout: a frozen systemd must not hold it.
    let (answer_to, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ =
            answer_to.send(crate::systemd::Systemd::connect().and_then(|s| s.loaded_services()));
    });
    let loaded = match answer.recv_timeout(std::time::Duration::from_millis(2500)) {
        Ok(Ok(loaded)) => loaded,
        Ok(Err(err)) => {
            tracing::warn!("systemd did not list its units: {err}");
            return (Vec::new(), None);
        }
        Err(_) => {
            tracing::warn!("systemd did not list its units in time");
            return (Vec::new(), None);
        }
    };
    let names: Vec<String> = loaded.iter().map(|(name, _)| name.clone()).collect();
    let Some(coverage) = config.coverage(&names) else {
        return (Vec::new(), None);
    };
    let failed: Vec<ServiceConfig> = loaded
        .iter()
        .filter(|(name, state)| state == "failed" && coverage.armed.contains(&name.as_str()))
        .filter_map(|(name, _)| config.entry(name).map(std::borrow::Cow::into_owned))
        .collect();
    let covered = CoveredUnits {
        armed: coverage.armed.len(),
        excluded: coverage.excluded.len(),
    };
    (failed, Some(covered))
}
