//! Whether selfheal itself is alive: each timer the config needs (the watch and the flush
//! always, the probe with `probe:`, the digest with `digest: daily`) is active, and its round
//! ran within two of its intervals; with `receiver:`, the receiver's socket listens.
//! `status` and `check` say when not; the metrics carry the last round of each timer.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::Config;
use crate::config::units::{DIGEST_TIMER, FLUSH_TIMER, PROBE_TIMER, RECEIVER_SOCKET, WATCH_TIMER};
use crate::state::{StateDir, Timestamp};
use crate::systemd::{ActiveState, Systemd, UnitControl, UnitOverview};

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

/// The states of the timers the config needs, asked on a thread that is given up on after
/// the dashboard's timeout (a frozen systemd must not hold `status` or `check`); `None` when
/// systemd did not answer in time.
pub(crate) fn ask(config: &Config) -> Option<Vec<UnitOverview>> {
    let mut timers: Vec<&'static str> = needed(config).iter().map(|(_, timer, _)| *timer).collect();
    if config.receiver.is_some() {
        timers.push(RECEIVER_SOCKET);
    }
    let (answer_to, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let states = Systemd::connect().and_then(|systemd| systemd.unit_states(&timers));
        let _ = answer_to.send(states);
    });
    answer
        .recv_timeout(super::SYSTEMD_TIMEOUT + Duration::from_millis(500))
        .ok()
        .and_then(Result::ok)
}

/// Each needed timer's state (`states`, in `needed`'s order: `ask`; `None` when systemd did
/// not say, and they are then unknown, not wrong) and last round, with what is wrong.
pub(crate) fn look(
    config: &Config,
    state: &StateDir,
    states: Option<&[UnitOverview]>,
    now: SystemTime,
) -> Vec<TimerStatus> {
    let rounds = needed(config);
    let state_of = |index: usize| {
        states
            .and_then(|states| states.get(index))
            .map(|unit| (unit.load_state.clone(), unit.active_state.clone()))
    };
    let mut looks: Vec<TimerStatus> = rounds
        .iter()
        .enumerate()
        .map(|(index, (round, timer, every))| {
            let active_state = state_of(index);
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
        .collect();
    if config.receiver.is_some() {
        looks.push(receiver_socket(state_of(rounds.len())));
    }
    looks
}

/// The receiver's socket (asked after the timers): while it does not listen, Alertmanager's
/// posts go unheard.
fn receiver_socket(active_state: Option<(String, ActiveState)>) -> TimerStatus {
    let socket = RECEIVER_SOCKET;
    let problem = match &active_state {
        Some((load, _)) if load == "not-found" => Some(format!(
            "{socket} is not installed: Alertmanager's posts go unheard (selfheal install)"
        )),
        Some((_, active)) if *active != ActiveState::Active => Some(format!(
            "{socket} is {active}: Alertmanager's posts go unheard (systemctl start {socket}, or selfheal install)"
        )),
        _ => None,
    };
    TimerStatus {
        round: "receiver",
        timer: socket,
        active_state: active_state
            .map_or_else(|| "unknown".to_owned(), |(_, active)| active.to_string()),
        last_round: None,
        problem,
    }
}
