//! What a pause (`selfheal pause`) means to everything that heals: a run records `paused`
//! and changes and tells nothing (a person's `run --force` still acts), the probes do not
//! count, and when a pause ends a service that is still failed is healed.

use std::time::SystemTime;

use crate::config::Config;
use crate::state::StateDir;
use crate::systemd::{ActiveState, UnitControl};

/// Why `service` is not healed now, when it is paused: "paused until 14:00 UTC: deploy".
pub(crate) fn paused(state: &StateDir, service: &str) -> Option<String> {
    state
        .pauses()
        .of(service, SystemTime::now())
        .map(why_paused)
}

/// A pause in words, for a run's reason and a probe's detail.
pub(crate) fn why_paused(pause: &crate::state::pauses::Pause) -> String {
    let why = pause
        .reason
        .as_ref()
        .map(|reason| format!(": {reason}"))
        .unwrap_or_default();
    format!(
        "paused until {} by selfheal pause{why}; healed then if still down",
        pause.until.readable()
    )
}

/// Starts the heal unit of each of `services` (names) whose unit is failed now; what it did,
/// in words.
pub(crate) fn heal_the_down(
    config: &Config,
    systemd: &dyn UnitControl,
    services: &[String],
) -> Vec<String> {
    let entries: Vec<_> = services
        .iter()
        .filter_map(|name| config.entry(name))
        .collect();
    let units: Vec<String> = entries.iter().map(|entry| entry.unit_name()).collect();
    let names: Vec<&str> = units.iter().map(String::as_str).collect();
    let Ok(states) = systemd.unit_states(&names) else {
        return vec!["systemd did not say which of them is down".to_owned()];
    };
    entries
        .iter()
        .zip(states)
        .filter(|(_, state)| state.active_state == ActiveState::Failed)
        .map(|(entry, _)| {
            let heal_unit = entry.heal_unit_name();
            match systemd.start_no_wait(&heal_unit) {
                Ok(()) => format!("{} is failed: {heal_unit} started", entry.unit_name()),
                Err(err) => format!(
                    "{} is failed, and starting {heal_unit} failed: {err}",
                    entry.unit_name()
                ),
            }
        })
        .collect()
}

/// Ends the pauses whose time is over (the watch's round, every 30 s) and heals what is
/// still failed of them: a pause that ended while nobody looked (a reboot) is met here too.
pub(crate) fn release_ended(
    config: &Config,
    state: &StateDir,
    systemd: &dyn UnitControl,
) -> Vec<String> {
    if state.pauses() == crate::state::pauses::Pauses::default() {
        return Vec::new();
    }
    let ended = state.change_pauses(|pauses| {
        let now = SystemTime::now();
        let (mut ended, all_ended) = pauses.take_ended(now);
        if all_ended {
            // Those still under a pause of their own wait for it.
            ended.extend(
                config
                    .service_names()
                    .into_iter()
                    .filter(|name| pauses.of(name, now).is_none())
                    .map(str::to_owned),
            );
        }
        ended.sort();
        ended.dedup();
        ended
    });
    match ended {
        Ok(ended) if !ended.is_empty() => {
            tracing::info!("pause over: {}", ended.join(", "));
            heal_the_down(config, systemd, &ended)
        }
        Ok(_) => Vec::new(),
        Err(err) => vec![format!("the pauses cannot be read: {err}")],
    }
}
