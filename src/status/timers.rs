//! Whether selfheal itself is alive: each timer the config needs (the watch and the flush
//! always, the probe with `probe:`, the digest with `digest: daily`) is active, and its round
//! ran within two of its intervals. `status` and `check` say when not; the metrics carry the
//! last round of each.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::Config;
use crate::config::units::{DIGEST_TIMER, FLUSH_TIMER, PROBE_TIMER, WATCH_TIMER};
use crate::state::{StateDir, Timestamp};
use crate::systemd::{ActiveState, UnitControl};

/// One of selfheal's timers, as the dashboard shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TimerStatus {
    /// The round's name (`watch`, `probe`, `flush`, `digest`).
    pub round: &'static str,
    pub timer: &'static str,
    /// The timer's ActiveState (`unknown` when systemd did not say).
    pub active_state: String,
    /// When its round last ran.
    pub last_round: Option<Timestamp>,
    /// What is wrong, in words; null when all is well.
    pub problem: Option<String>,
}

/// The rounds the config needs: name, timer, how often it runs.
pub(crate) fn needed(config: &Config) -> Vec<(&'static str, &'static str, Duration)> {
    let mut rounds = vec![
        ("watch", WATCH_TIMER, Duration::from_secs(30)),
        ("flush", FLUSH_TIMER, Duration::from_secs(5 * 60)),
    ];
    if let Some(probe) = &config.probe {
        rounds.push(("probe", PROBE_TIMER, Duration::from(probe.interval)));
    }
    if config.digest.is_some() {
        rounds.push(("digest", DIGEST_TIMER, Duration::from_secs(24 * 3600)));
    }
    rounds
}

/// Each needed timer's state and last round, with what is wrong; `systemd: None` when it
/// could not be asked (the timers' states are then unknown, not wrong).
pub(crate) fn look(
    config: &Config,
    state: &StateDir,
    systemd: Option<&dyn UnitControl>,
    now: SystemTime,
) -> Vec<TimerStatus> {
    let rounds = needed(config);
    let timers: Vec<&str> = rounds.iter().map(|(_, timer, _)| *timer).collect();
    let states = systemd.and_then(|systemd| systemd.unit_states(&timers).ok());
    rounds
        .iter()
        .enumerate()
        .map(|(index, (round, timer, every))| {
            let active_state = states
                .as_ref()
                .and_then(|states| states.get(index))
                .map(|unit| (unit.load_state.clone(), unit.active_state.clone()));
            let last_round = state.last_round(round);
            let problem = match &active_state {
                Some((load, _)) if load == "not-found" => Some(format!(
                    "{timer} is not installed: its rounds do not run (selfheal install)"
                )),
                Some((_, active)) if *active != ActiveState::Active => Some(format!(
                    "{timer} is {active}: its rounds do not run (systemctl start {timer}, or selfheal install)"
                )),
                _ => last_round
                    .filter(|at| now.duration_since(*at).unwrap_or_default() > *every * 2 + Duration::from_secs(60))
                    .map(|at| {
                        format!(
                            "the last {round} round ran {} ago; it runs every {}",
                            crate::ui::duration::approx(now.duration_since(at).unwrap_or_default()),
                            crate::ui::duration::HumanDuration(*every)
                        )
                    }),
            };
            TimerStatus {
                round,
                timer,
                active_state: active_state.map_or_else(|| "unknown".to_owned(), |(_, active)| active.to_string()),
                last_round: last_round.map(Timestamp::seconds),
                problem,
            }
        })
        .collect()
}
