//! A pause (`selfheal pause`) in words, and its end: when a pause (or a maintenance window
//! that held a run) is over, a service that is still failed is healed. What a plan means to
//! a run and the probes is `heal::planned`'s.

use std::time::SystemTime;

use crate::config::Config;
use crate::state::StateDir;
use crate::systemd::{ActiveState, UnitControl};

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
/// still failed of them, and of the services a run held for a pause or a maintenance window
/// that is over now: a plan that ended while nobody looked (a reboot) is met here too.
pub(crate) fn release_ended(
    config: &Config,
    state: &StateDir,
    systemd: &dyn UnitControl,
) -> Vec<String> {
    if state.pauses() == crate::state::pauses::Pauses::default() {
        return Vec::new();
    }
    let now = SystemTime::now();
    let mut plans = crate::heal::planned::Plans::read(config, state);
    let ended = state.change_pauses(|pauses| {
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
        // Held by a run for a plan: released once neither a pause nor a window holds it.
        plans.pauses = pauses.clone();
        let released: Vec<String> = pauses
            .held
            .iter()
            .filter(|name| {
                config
                    .entry(name)
                    .is_none_or(|entry| plans.of(&entry, now).is_none())
            })
            .cloned()
            .collect();
        for name in &released {
            pauses.held.remove(name);
        }
        ended.extend(released);
        ended.sort();
        ended.dedup();
        ended
    });
    plans.keep(state);
    match ended {
        Ok(ended) if !ended.is_empty() => {
            tracing::info!("pause over: {}", ended.join(", "));
            heal_the_down(config, systemd, &ended)
        }
        Ok(_) => Vec::new(),
        Err(err) => vec![format!("the pauses cannot be read: {err}")],
    }
}
