//! The host guard (`guard: {max_failing: 5, within: 2m}`): when more than `max_failing`
//! services fail within `within`, the cause is likely shared (a full disk, the network, a
//! database) and restarting them all at once only adds load. The run that finds the storm
//! tells the host once (`⚠ <system>: host guard - N services failing`); from then on the
//! services are healed one at a time: a run takes the guard's one turn, heals and verifies,
//! and hands the turn to the next waiting service by starting its heal unit. A run that finds
//! the turn taken records `held` (exit 3) and waits in line; the watch's round hands on a turn
//! whose holder died. A person's `run --force` does not wait.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::GuardConfig;
use crate::state::{StateDir, StateError};
use crate::systemd::UnitControl;
use crate::ui::when::Timestamp;

/// `<state>/guard.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Guard {
    /// The services that failed within the window and were neither healed nor given their
    /// turn since, and when each was first seen.
    #[serde(default)]
    pub failing: std::collections::BTreeMap<String, Timestamp>,
    /// The service whose run has the turn, and since when.
    pub turn: Option<(String, Timestamp)>,
    /// The services waiting for the turn, in order.
    #[serde(default)]
    pub waiting: Vec<String>,
    /// When this storm was told (one report a storm).
    pub told_at: Option<Timestamp>,
    /// When this storm began, for its all-clear.
    pub began_at: Option<Timestamp>,
}

/// What the guard says to a run about to heal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// No storm: heal as usual.
    Clear,
    /// A storm, and this run has the turn: heal, then `leave`. `tell`: the services failing,
    /// when this run is the one to tell the host.
    Turn { tell: Option<Vec<String>> },
    /// A storm, and another service has the turn: this one waits (outcome `held`).
    Wait {
        turn: String,
        failing: Vec<String>,
        tell: Option<Vec<String>>,
    },
}

/// A turn that a run took this long ago and never handed on was its last (the run died).
const TURN_STALE: Duration = Duration::from_secs(180);
const FILE: &str = "guard.json";
const LOCK: &str = ".guard.lock";

impl Guard {
    /// Whether a storm is on: too many failing, or a line still being worked through.
    fn storm(&self, rule: GuardConfig) -> bool {
        self.failing.len() > rule.max_failing as usize
            || !self.waiting.is_empty()
            || self.turn.is_some()
    }

    /// `service` is about to heal at `now`.
    pub(crate) fn enter(&mut self, rule: GuardConfig, service: &str, now: SystemTime) -> Entry {
        let within = Duration::from(rule.within);
        self.failing.retain(|_, at| at.time() + within > now);
        self.failing
            .entry(service.to_owned())
            .or_insert_with(|| Timestamp::seconds(now));
        self.requeue_stale(now);
        if !self.storm(rule) {
            self.told_at = None;
            self.began_at = None;
            return Entry::Clear;
        }
        self.began_at.get_or_insert_with(|| Timestamp::seconds(now));
        let tell = self.told_at.is_none().then(|| {
            self.told_at = Some(Timestamp::seconds(now));
            self.failing.keys().cloned().collect()
        });
        match &self.turn {
            Some((holder, _)) if holder != service => {
                if !self.waiting.iter().any(|waiting| waiting == service) {
                    self.waiting.push(service.to_owned());
                }
                Entry::Wait {
                    turn: holder.clone(),
                    failing: self.failing.keys().cloned().collect(),
                    tell,
                }
            }
            _ => {
                self.waiting.retain(|waiting| waiting != service);
                self.turn = Some((service.to_owned(), Timestamp::seconds(now)));
                Entry::Turn { tell }
            }
        }
    }

    /// `service`'s run is over (healed and verified, or not): the turn goes to the next
    /// waiting service, which is returned (its heal unit is to be started). `None` when the
    /// line is empty: then the storm is over when `over` says so.
    pub(crate) fn leave(&mut self, service: &str, now: SystemTime) -> Option<String> {
        self.failing.remove(service);
        if self
            .turn
            .as_ref()
            .is_some_and(|(holder, _)| holder == service)
        {
            self.turn = None;
        }
        self.hand_on(now)
    }

    /// A turn whose run never came or died (held past `TURN_STALE`, or stamped while the
    /// clock was ahead) is taken back, and its service goes to the front of the line: it is
    /// never dropped while it may still be down.
    fn requeue_stale(&mut self, now: SystemTime) {
        let stale = self
            .turn
            .as_ref()
            .is_some_and(|(_, at)| at.time() + TURN_STALE <= now || at.time() > now + TURN_STALE);
        if stale && let Some((holder, _)) = self.turn.take() {
            self.waiting.retain(|waiting| *waiting != holder);
            self.waiting.insert(0, holder);
        }
    }

    /// Gives a free turn to the first waiting service.
    fn hand_on(&mut self, now: SystemTime) -> Option<String> {
        if self.turn.is_some() || self.waiting.is_empty() {
            return None;
        }
        let next = self.waiting.remove(0);
        self.turn = Some((next.clone(), Timestamp::seconds(now)));
        Some(next)
    }

    /// Whether the storm is over: nobody has the turn and nobody waits.
    pub(crate) fn over(&self) -> bool {
        self.turn.is_none() && self.waiting.is_empty()
    }
}

/// Changes the guard under its lock. Written without fsyncs: every acting run passes here
/// before its restart, and a guard lost to a power cut only forgets a storm.
fn change<T>(state: &StateDir, change: impl FnOnce(&mut Guard) -> T) -> Result<T, StateError> {
    let _lock = state.lock_exclusive(LOCK)?;
    let mut guard: Guard = state.file(FILE)?.unwrap_or_default();
    let answer = change(&mut guard);
    state.save_file_volatile(FILE, &guard)?;
    Ok(answer)
}

/// `service` is about to heal: the guard's answer (no storm when the guard cannot be read:
/// it must never stop healing).
pub(crate) fn enter(state: &StateDir, rule: GuardConfig, service: &str) -> Entry {
    change(state, |guard| guard.enter(rule, service, SystemTime::now())).unwrap_or_else(|err| {
        tracing::error!(selfheal_service = %service, "the host guard cannot be read, healing as usual: {err}");
        Entry::Clear
    })
}

/// `service`'s run with the turn is over: the next waiting service's heal unit is started.
/// Returns the next service, and whether the storm is over (then: since when it ran).
pub(crate) fn leave(
    config: &crate::config::Config,
    state: &StateDir,
    systemd: &dyn UnitControl,
    service: &str,
) -> (Option<String>, Option<Timestamp>) {
    let left = change(state, |guard| {
        let next = guard.leave(service, SystemTime::now());
        let over = guard.over().then(|| guard.began_at.take()).flatten();
        if over.is_some() {
            guard.told_at = None;
        }
        (next, over)
    });
    match left {
        Ok((next, over)) => {
            if let Some(next) = &next {
                start(config, systemd, next);
            }
            (next, over)
        }
        Err(err) => {
            tracing::error!(selfheal_service = %service, "the host guard cannot hand on its turn: {err}");
            (None, None)
        }
    }
}

/// A run that healed `service` without the turn (no storm when it began): it no longer
/// counts as failing.
pub(crate) fn healed(state: &StateDir, service: &str) {
    if let Err(err) = change(state, |guard| guard.failing.remove(service)) {
        tracing::warn!(selfheal_service = %service, "the host guard cannot note the heal: {err}");
    }
}

/// The guard's record (none when there is none, or it cannot be read).
pub(crate) fn read(state: &StateDir) -> Option<Guard> {
    state.file::<Guard>(FILE).ok().flatten()
}

/// Whether a storm was told at or after `since` (a run that began before the storm was found
/// is one of its services: its heal is the storm's).
pub(crate) fn told_since(state: &StateDir, since: SystemTime) -> bool {
    read(state)
        .and_then(|guard| guard.told_at)
        .is_some_and(|told| told.time() + Duration::from_secs(1) >= since)
}

/// The watch's round: a turn whose run never came or died (stale) is given again, from the
/// front of the line: its service's heal unit is started again (one whose unit is up by now
/// ends at its first look and hands the turn on).
pub(crate) fn nudge(config: &crate::config::Config, state: &StateDir, systemd: &dyn UnitControl) {
    if !state.root().join(FILE).is_file() {
        return;
    }
    let now = SystemTime::now();
    let next = change(state, |guard| {
        guard.requeue_stale(now);
        guard.hand_on(now)
    });
    if let Ok(Some(next)) = next {
        start(config, systemd, &next);
    }
}

/// A run of `service` ended without taking the turn that was given to it (it found the
/// service up, loop protection or a plan held it, it met another run): the turn goes on, so
/// the line does not wait for it to go stale. Not for a run that recorded `held` (it asked
/// for the turn while another service had it: given to it since, its heal unit is started
/// again once the turn goes stale).
pub(crate) fn pass_if_given<U: UnitControl>(
    config: &crate::config::Config,
    state: &StateDir,
    service: &str,
    connect: &dyn Fn() -> Result<U, crate::systemd::SystemdError>,
) {
    let given = read(state)
        .and_then(|guard| guard.turn)
        .is_some_and(|(holder, _)| holder == service);
    if !given {
        return;
    }
    match connect() {
        Ok(systemd) => {
            let (next, _) = leave(config, state, &systemd, service);
            tracing::info!(selfheal_service = %service, "host guard: the turn given to it passes to {}", next.as_deref().unwrap_or("nobody"));
        }
        Err(err) => {
            tracing::warn!(selfheal_service = %service, "host guard: the turn given to it waits to go stale: {err}");
        }
    }
}

/// Starts `service`'s heal unit: its turn.
fn start(config: &crate::config::Config, systemd: &dyn UnitControl, service: &str) {
    let Some(entry) = config.entry(service) else {
        return;
    };
    let heal_unit = entry.heal_unit_name();
    match systemd.start_no_wait(&heal_unit) {
        Ok(()) => {
            tracing::info!(selfheal_service = %service, "host guard: its turn, {heal_unit} started");
        }
        Err(err) => {
            tracing::error!(selfheal_service = %service, "host guard: its turn, but {heal_unit} did not start: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::duration::HumanDuration;

    const RULE: GuardConfig = GuardConfig {
        max_failing: 2,
        within: HumanDuration(Duration::from_secs(120)),
    };

    /// Three failing with max_failing 2: the third trips the guard and tells the host; from
    /// then on one turn at a time, handed on in order, until the line is empty.
    #[test]
    fn a_storm_is_told_once_and_healed_one_at_a_time() {
        let now = SystemTime::now();
        let mut guard = Guard::default();
        assert_eq!(guard.enter(RULE, "a", now), Entry::Clear);
        assert_eq!(guard.enter(RULE, "b", now), Entry::Clear);
        let names = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            guard.enter(RULE, "c", now),
            Entry::Turn {
                tell: Some(names(&["a", "b", "c"]))
            }
        );
        assert_eq!(
            guard.enter(RULE, "d", now),
            Entry::Wait {
                turn: "c".into(),
                failing: names(&["a", "b", "c", "d"]),
                tell: None
            }
        );
        assert!(matches!(guard.enter(RULE, "e", now), Entry::Wait { .. }));
        assert_eq!(guard.leave("c", now), Some("d".into()));
        assert_eq!(guard.enter(RULE, "d", now), Entry::Turn { tell: None });
        assert_eq!(guard.leave("d", now), Some("e".into()));
        assert_eq!(guard.leave("e", now), None);
        assert!(guard.over());
    }

    /// A turn held past its time by a run that died (or never came) is taken back, and its
    /// service goes to the front of the line: given again next, never dropped.
    #[test]
    fn a_stale_turn_is_given_again_not_dropped() {
        let now = SystemTime::now();
        let mut guard = Guard::default();
        for service in ["a", "b", "c", "d", "e"] {
            guard.enter(RULE, service, now);
        }
        assert_eq!(guard.turn.as_ref().map(|(s, _)| s.as_str()), Some("c"));
        let later = now + TURN_STALE;
        assert_eq!(guard.enter(RULE, "d", later), Entry::Turn { tell: None });
        assert_eq!(guard.waiting, ["c", "e"], "c is next, not dropped");
        assert_eq!(guard.leave("d", later), Some("c".into()));
        // Its run never comes: the watch gives the turn again to c.
        let stale = later + TURN_STALE;
        guard.requeue_stale(stale);
        assert_eq!(guard.hand_on(stale), Some("c".into()));
        assert_eq!(guard.waiting, ["e"]);
    }
}
