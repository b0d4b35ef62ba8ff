//! The one answer to "does selfheal hold back from healing this service now?", for the run,
//! the terminal prompt, the probe round and the dashboard. A pure function of the service's
//! history, its episode, the rules, who asks, what systemd says and the time: it decides, and
//! the callers apply the effects (schedule a retry, end an episode, tell the owner).
//!
//! The rule, never quieter than systemd:
//! - A failure after the service ran healthy for `new_incident_after` (default 10 min, as
//!   Kubernetes resets a container's back-off) is a **new incident**, healed at once; an
//!   episode left from an earlier one is over.
//! - Only the healing runs of the current incident within `threshold_window` count toward
//!   `failure_threshold`. At the threshold a back-off step begins: the owner is told at once
//!   (SUPPRESSED, with the next try) and a timed retry is scheduled.
//! - A service that dies again within `new_incident_after` of being healed by a retry is a
//!   **relapse**: the next, longer back-off step, told at once too.
//! - Within a step (its retry still to come) a failure is held quietly: the owner was told
//!   when the step began. The retry, when due, heals.
//! - A person's run always acts. A service a person stopped or disabled while it waited for
//!   its retry is left alone.
//! - While something is planned for it (a pause, a maintenance window: `heal::planned`),
//!   nothing else acts: held quietly, healed once the plan is over.

use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::heal::planned::Planned;
use crate::outcome::Outcome;
use crate::state::{Episode, HistoryRecord};
use crate::ui::when::Timestamp;

/// Who asks for the heal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Starter {
    /// `OnFailure=`: the service failed just now.
    Hook,
    /// The probe round: the service is active but failed its probes.
    Probe,
    /// An Alertmanager alert naming the service (`selfheal receive`): Prometheus sees it
    /// fail.
    Alert,
    /// A person who overrides loop protection (`run --force`, or a `y` at the prompt).
    Person,
    /// Anything else: the retry's timer, `systemctl start selfheal@…`, an upstream heal, a
    /// person's run without `--force`.
    Other,
}

/// Loop protection's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rules {
    pub failure_threshold: u32,
    pub threshold_window: Duration,
    pub new_incident_after: Duration,
    /// The longest one back-off step waits: a retry dated further ahead was scheduled while
    /// the clock was ahead.
    pub longest_wait: Duration,
}

impl Rules {
    pub(crate) fn of(config: &Config) -> Rules {
        Rules {
            failure_threshold: config.failure_threshold,
            threshold_window: config.threshold_window.into(),
            new_incident_after: config.new_incident_after(),
            longest_wait: crate::heal::episode::longest_wait(config),
        }
    }
}

/// The unit's condition, as far as the decision goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Condition {
    /// Active (or activating): running, perhaps hung.
    Active,
    /// Failed, or an automatic restart pending: down by a failure.
    Failed,
    /// Inactive after a clean stop: `systemctl stop`, or unloaded and loaded again.
    Stopped,
}

/// What systemd says of the unit now (a run knows it; the dashboard and the prompt do not ask).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnitNow {
    pub condition: Condition,
    /// `UnitFileState=disabled`: a person disabled it, or never enabled it.
    pub disabled: bool,
    /// While it runs, when it entered `active` (`None`: down, never started, or systemd forgot).
    pub active_since: Option<SystemTime>,
}

/// Everything the decision reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inputs<'a> {
    /// The service's history records, oldest first.
    pub runs: &'a [&'a HistoryRecord],
    pub episode: Option<&'a Episode>,
    pub rules: Rules,
    pub starter: Starter,
    pub unit: Option<UnitNow>,
    /// A pause or a maintenance window it is in now.
    pub planned: Option<&'a Planned>,
    pub now: SystemTime,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    Act(Act),
    Hold(Hold),
}

/// Heal now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Act {
    pub why: ActReason,
    /// The open episode ends, saying this in the journal.
    pub ends_episode: Option<&'static str>,
    /// Healing runs of this incident counted so far.
    pub failures: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ActReason {
    /// Below the threshold (the first failure, or one more of this incident).
    Heal,
    /// It ran healthy for `new_incident_after` since the last problem: counting starts afresh.
    NewIncident,
    /// The episode's timed retry is due.
    Retry,
    /// A person overrides loop protection.
    Person,
}

/// Do not heal now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hold {
    pub why: HoldReason,
    /// Tell the owner now: a back-off step begins. `false` when this step was told already, or
    /// a person's own act is respected.
    pub tell: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HoldReason {
    /// `failure_threshold` healing runs of this incident within `threshold_window`: a timed
    /// retry is scheduled (the episode begins, when there is none).
    Threshold { failures: usize },
    /// It failed again within `new_incident_after` of recovering: the next back-off step.
    Relapse { recovered_at: Timestamp },
    /// Within a back-off step whose retry is still to come (`None`: none is scheduled, as with
    /// `retry_after: never`).
    RetryPending { at: Option<Timestamp> },
    /// A person stopped it (`systemctl stop`) while it waited for its retry: left stopped,
    /// the episode is over.
    StoppedByPerson,
    /// A person disabled it (or it was never enabled) while it waited for its retry: told,
    /// since the retry the owner was promised is not made.
    DisabledByPerson,
    /// Paused, or in a maintenance window (`why` says which, until when).
    Planned { why: String },
}

impl Decision {
    /// Whether it holds (what `status` calls suppressed).
    pub(crate) fn holds(&self) -> bool {
        matches!(self, Decision::Hold(_))
    }
}

impl HoldReason {
    /// The sentence for a person (the prompt, the probe's detail, the dashboard).
    pub(crate) fn sentence(&self, service: &str, rules: Rules) -> String {
        match self {
            HoldReason::Threshold { failures } => format!(
                "loop protection holds {service}: {failures} healing runs of this incident within {} (failure_threshold {})",
                crate::ui::duration::HumanDuration(rules.threshold_window),
                rules.failure_threshold
            ),
            HoldReason::Relapse { recovered_at } => format!(
                "{service} recovered at {} and failed again within {}: a relapse, the next back-off step",
                recovered_at.readable(),
                crate::ui::duration::HumanDuration(rules.new_incident_after)
            ),
            HoldReason::RetryPending { at: Some(at) } => format!(
                "loop protection holds {service} until its timed retry at {}",
                at.readable()
            ),
            HoldReason::RetryPending { at: None } => {
                format!("loop protection holds {service}; no retry is scheduled")
            }
            HoldReason::StoppedByPerson => format!(
                "{service} was stopped on purpose (systemctl stop): selfheal leaves it stopped"
            ),
            HoldReason::DisabledByPerson => {
                format!("{service}'s unit is disabled (systemctl disable): selfheal leaves it down")
            }
            HoldReason::Planned { why } => format!("{service} is {why}"),
        }
    }
}

/// What the state directory holds for the decision: the service's history and its episode.
#[derive(Debug, Default)]
pub(crate) struct Recorded {
    pub records: Vec<HistoryRecord>,
    pub episode: Option<Episode>,
}

impl Recorded {
    /// Reads `service`'s history and episode. History that others could have written is an
    /// error; an unreadable episode counts as none.
    pub(crate) fn read(
        state: &crate::state::StateDir,
        service: &str,
    ) -> Result<Recorded, crate::state::StateError> {
        let mut records = state.history()?;
        records.retain(|record| record.service == service);
        let episode = state.episode(service).unwrap_or_else(|err| {
            tracing::error!(selfheal_service = %service, "loop protection's episode cannot be read: {err}");
            None
        });
        Ok(Recorded { records, episode })
    }

    /// The decision on these records.
    pub(crate) fn decide(
        &self,
        rules: Rules,
        starter: Starter,
        unit: Option<UnitNow>,
        planned: Option<&Planned>,
        now: SystemTime,
    ) -> Decision {
        let runs: Vec<&HistoryRecord> = self.records.iter().collect();
        decide(&Inputs {
            runs: &runs,
            episode: self.episode.as_ref(),
            rules,
            starter,
            unit,
            planned,
            now,
        })
    }
}

/// A timer may fire this much before its time (its accuracy) and still make the retry.
const EARLY: Duration = Duration::from_secs(2);

/// Whether the episode's scheduled retry is due at `now`. One dated further ahead than the
/// whole back-off could wait was scheduled while the clock was ahead: it is due.
pub(crate) fn retry_is_due(episode: &Episode, now: SystemTime, longest_wait: Duration) -> bool {
    episode.next_retry_at.is_some_and(|at| {
        let at = at.time();
        at <= now + EARLY || at > now + longest_wait + EARLY
    })
}

/// The decision. See the module's header for the rule.
pub(crate) fn decide(inputs: &Inputs<'_>) -> Decision {
    let Inputs {
        episode,
        rules,
        starter,
        unit,
        now,
        ..
    } = *inputs;
    let began = incident_began(inputs);
    let failures = failures_since(inputs, began).len();
    if starter == Starter::Person {
        return act(
            ActReason::Person,
            episode.map(|_| "a person's run"),
            failures,
        );
    }
    if let Some(planned) = inputs.planned {
        return hold(
            HoldReason::Planned {
                why: planned.why.clone(),
            },
            false,
        );
    }
    // An alert ("down", "not serving") never starts what a person stopped: a unit stopped
    // cleanly is a decision, not a failure.
    if starter == Starter::Alert && unit.is_some_and(|unit| unit.condition == Condition::Stopped) {
        return hold(HoldReason::StoppedByPerson, false);
    }
    // A service waiting for its retry that a person stopped or disabled meanwhile is theirs:
    // whatever else is true of the episode, nothing starts it.
    if episode.is_some_and(|episode| episode.recovered_at.is_none())
        && matches!(starter, Starter::Hook | Starter::Other)
        && let Some(unit) = unit
    {
        if unit.condition == Condition::Stopped {
            return hold(HoldReason::StoppedByPerson, false);
        }
        // Told: the retry the owner was promised is not made.
        if unit.disabled && unit.condition == Condition::Failed {
            return hold(HoldReason::DisabledByPerson, true);
        }
    }
    // An episode is over once the service has run healthy for new_incident_after since it
    // began (or since it recovered): this failure is a new incident.
    let over = |episode: &&Episode| {
        episode
            .recovered_at
            .is_some_and(|at| at.time() + rules.new_incident_after <= now)
            || began.is_some_and(|began| began > episode.suppressed_at.time())
    };
    let earlier_incident_left = episode.as_ref().is_some_and(over)
        || crate::state::counted_attempts(inputs.runs, now - rules.threshold_window).len()
            > failures;
    if let Some(episode) = episode.filter(|episode| !over(episode)) {
        let waiting = episode.recovered_at.is_none();
        if waiting && retry_is_due(episode, now, rules.longest_wait) {
            return act(ActReason::Retry, None, failures);
        }
        let from_service = matches!(starter, Starter::Hook | Starter::Probe | Starter::Alert);
        match episode.recovered_at {
            Some(recovered_at) if from_service => {
                return hold(HoldReason::Relapse { recovered_at }, true);
            }
            None if from_service => {
                return hold(
                    HoldReason::RetryPending {
                        at: episode.next_retry_at,
                    },
                    false,
                );
            }
            _ => {}
        }
        if failures >= rules.failure_threshold as usize {
            return hold(HoldReason::Threshold { failures }, false);
        }
        let ends = episode.next_retry_at.is_none().then_some("a run healed it");
        return act(ActReason::Heal, ends, failures);
    }
    if failures >= rules.failure_threshold as usize {
        return hold(HoldReason::Threshold { failures }, true);
    }
    if earlier_incident_left {
        let ends = episode.map(|_| "it ran healthy since: a new incident");
        return act(ActReason::NewIncident, ends, failures);
    }
    act(ActReason::Heal, None, failures)
}

fn act(why: ActReason, ends_episode: Option<&'static str>, failures: usize) -> Decision {
    Decision::Act(Act {
        why,
        ends_episode,
        failures,
    })
}

fn hold(why: HoldReason, tell: bool) -> Decision {
    Decision::Hold(Hold { why, tell })
}

/// When the current incident began: after the last time the service is known to have run
/// healthy for `new_incident_after`. From history (a run that left it up, and nothing for that
/// long after it) and from systemd (active since that long before now). `None`: no such time,
/// every run counts.
fn incident_began(inputs: &Inputs<'_>) -> Option<SystemTime> {
    let Inputs {
        runs,
        rules,
        unit,
        now,
        ..
    } = *inputs;
    let reset = rules.new_incident_after;
    let from_systemd = unit
        .and_then(|unit| unit.active_since)
        .filter(|since| *since + reset <= now);
    let mut later = now;
    let mut from_history = None;
    for run in runs.iter().rev() {
        let ended = run.started() + Duration::from_millis(run.duration_ms);
        if left_it_up(run.outcome) && ended + reset <= later {
            from_history = Some(ended);
            break;
        }
        later = run.started();
    }
    from_history.max(from_systemd)
}

/// A run after which the service was up.
fn left_it_up(outcome: Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Resolved | Outcome::Healthy | Outcome::RestartedBySystemd
    )
}

/// When the healing runs that loop protection counts started: those of the current incident,
/// within `threshold_window`, after the last person's run.
pub(crate) fn incident_failures(inputs: &Inputs<'_>) -> Vec<SystemTime> {
    failures_since(inputs, incident_began(inputs))
}

/// `incident_failures`, with the incident's beginning already known.
fn failures_since(inputs: &Inputs<'_>, began: Option<SystemTime>) -> Vec<SystemTime> {
    let since =
        (inputs.now - inputs.rules.threshold_window).max(began.unwrap_or(SystemTime::UNIX_EPOCH));
    crate::state::counted_attempts(inputs.runs, since)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn rules() -> Rules {
        Rules {
            failure_threshold: 3,
            threshold_window: 60 * MIN,
            new_incident_after: 10 * MIN,
            longest_wait: 120 * MIN,
        }
    }

    fn record(outcome: Outcome, ago: Duration, now: SystemTime) -> HistoryRecord {
        HistoryRecord {
            service: "web".into(),
            outcome,
            started_at: Timestamp::millis(now - ago),
            duration_ms: 500,
            healed_by: None,
            summary: String::new(),
            manual: false,
            relapse: false,
            restarts: 0,
        }
    }

    fn failed_unit(disabled: bool, active_for: Duration, now: SystemTime) -> UnitNow {
        UnitNow {
            condition: Condition::Failed,
            disabled,
            active_since: Some(now - active_for),
        }
    }

    /// One row of the table: the history (outcome, minutes ago), the episode, who asks and the
    /// unit's condition, and the expected decision.
    struct Row {
        name: &'static str,
        history: Vec<(Outcome, u32)>,
        episode: Option<Episode>,
        starter: Starter,
        unit: Option<UnitNow>,
        expected: Decision,
    }

    #[test]
    // One table, read top to bottom: splitting it would hide which cases it covers.
    #[allow(clippy::too_many_lines)]
    fn the_hold_decision_table() {
        let now = SystemTime::now();
        let ago = |minutes: u32| Timestamp::seconds(now - minutes * MIN);
        let from_now = |minutes: u32| Timestamp::seconds(now + minutes * MIN);
        let waiting = |next: Option<Timestamp>| Episode {
            next_retry_at: next,
            ..Episode::opened(ago(20))
        };
        let recovered = |minutes_ago: u32| Episode {
            recovered_at: Some(ago(minutes_ago)),
            ..Episode::opened(ago(40))
        };
        let short = Duration::from_secs(20);
        let rows = vec![
            Row {
                name: "first failure",
                history: vec![],
                episode: None,
                starter: Starter::Hook,
                unit: Some(failed_unit(false, 5 * MIN, now)),
                expected: act(ActReason::Heal, None, 0),
            },
            Row {
                name: "one more failure of the same incident, below the threshold",
                history: vec![(Outcome::Resolved, 3), (Outcome::Resolved, 1)],
                episode: None,
                starter: Starter::Hook,
                unit: Some(failed_unit(false, short, now)),
                expected: act(ActReason::Heal, None, 2),
            },
            Row {
                name: "at the threshold: a back-off step begins, told",
                history: vec![
                    (Outcome::Resolved, 5),
                    (Outcome::Resolved, 3),
                    (Outcome::Resolved, 1),
                ],
                episode: None,
                starter: Starter::Hook,
                unit: Some(failed_unit(false, short, now)),
                expected: hold(HoldReason::Threshold { failures: 3 }, true),
            },
            Row {
                name: "a new incident after a healthy while: three old heals do not count",
                history: vec![
                    (Outcome::Resolved, 50),
                    (Outcome::Resolved, 48),
                    (Outcome::Resolved, 46),
                ],
                episode: None,
                starter: Starter::Hook,
                unit: Some(failed_unit(false, 45 * MIN, now)),
                expected: act(ActReason::NewIncident, None, 0),
            },
            Row {
                name: "a new incident seen from history alone (systemd forgot when it started)",
                history: vec![
                    (Outcome::Resolved, 30),
                    (Outcome::Resolved, 28),
                    (Outcome::Resolved, 26),
                ],
                episode: None,
                starter: Starter::Hook,
                unit: None,
                expected: act(ActReason::NewIncident, None, 0),
            },
            Row {
                name: "a new incident ends an episode that recovered long ago",
                history: vec![(Outcome::Failed, 40), (Outcome::Resolved, 25)],
                episode: Some(recovered(25)),
                starter: Starter::Hook,
                unit: Some(failed_unit(false, 25 * MIN, now)),
                expected: act(
                    ActReason::NewIncident,
                    Some("it ran healthy since: a new incident"),
                    0,
                ),
            },
            Row {
                name: "relapse shortly after a heal: the next step, told",
                history: vec![(Outcome::Failed, 40), (Outcome::Resolved, 2)],
                episode: Some(recovered(2)),
                starter: Starter::Hook,
                unit: Some(failed_unit(false, 2 * MIN, now)),
                expected: hold(
                    HoldReason::Relapse {
                        recovered_at: ago(2),
                    },
                    true,
                ),
            },
            Row {
                name: "a hang that comes back shortly after a heal is a relapse too",
                history: vec![(Outcome::Failed, 40), (Outcome::Resolved, 1)],
                episode: Some(recovered(1)),
                starter: Starter::Probe,
                unit: Some(UnitNow {
                    condition: Condition::Active,
                    disabled: false,
                    active_since: Some(now - MIN),
                }),
                expected: hold(
                    HoldReason::Relapse {
                        recovered_at: ago(1),
                    },
                    true,
                ),
            },
            Row {
                name: "retry pending: held quietly, the step was told",
                history: vec![(Outcome::Failed, 20)],
                episode: Some(waiting(Some(from_now(10)))),
                starter: Starter::Hook,
                unit: Some(failed_unit(false, short, now)),
                expected: hold(
                    HoldReason::RetryPending {
                        at: Some(from_now(10)),
                    },
                    false,
                ),
            },
            Row {
                name: "retry pending below the threshold: the dashboard says held too",
                history: vec![(Outcome::Failed, 20)],
                episode: Some(waiting(Some(from_now(10)))),
                starter: Starter::Hook,
                unit: None,
                expected: hold(
                    HoldReason::RetryPending {
                        at: Some(from_now(10)),
                    },
                    false,
                ),
            },
            Row {
                name: "retry due",
                history: vec![(Outcome::Failed, 20)],
                episode: Some(waiting(Some(ago(0)))),
                starter: Starter::Other,
                unit: Some(failed_unit(false, short, now)),
                expected: act(ActReason::Retry, None, 1),
            },
            Row {
                name: "a retry dated beyond any back-off (clock stepped back) is due",
                history: vec![(Outcome::Failed, 20)],
                episode: Some(waiting(Some(Timestamp::seconds(
                    now + Duration::from_secs(30 * 86_400),
                )))),
                starter: Starter::Other,
                unit: Some(failed_unit(false, short, now)),
                expected: act(ActReason::Retry, None, 1),
            },
            Row {
                name: "a person's run acts and ends the episode",
                history: vec![
                    (Outcome::Resolved, 5),
                    (Outcome::Resolved, 3),
                    (Outcome::Suppressed, 1),
                ],
                episode: Some(waiting(Some(from_now(10)))),
                starter: Starter::Person,
                unit: Some(failed_unit(false, short, now)),
                expected: act(ActReason::Person, Some("a person's run"), 2),
            },
            Row {
                name: "stopped by a person while the retry waited",
                history: vec![(Outcome::Failed, 20)],
                episode: Some(waiting(Some(ago(0)))),
                starter: Starter::Other,
                unit: Some(UnitNow {
                    condition: Condition::Stopped,
                    disabled: false,
                    active_since: None,
                }),
                expected: hold(HoldReason::StoppedByPerson, false),
            },
            Row {
                name: "disabled by a person while the retry waited",
                history: vec![(Outcome::Failed, 20)],
                episode: Some(waiting(Some(ago(0)))),
                starter: Starter::Other,
                unit: Some(failed_unit(true, short, now)),
                expected: hold(HoldReason::DisabledByPerson, true),
            },
            Row {
                name: "a retry after a person stopped it, long after the last start, leaves it stopped",
                history: vec![(Outcome::Failed, 40), (Outcome::Resolved, 25)],
                episode: Some(waiting(Some(ago(0)))),
                starter: Starter::Other,
                unit: Some(UnitNow {
                    condition: Condition::Stopped,
                    disabled: false,
                    active_since: None,
                }),
                expected: hold(HoldReason::StoppedByPerson, false),
            },
            Row {
                name: "the hook of a disabled service that crashed heals it",
                history: vec![],
                episode: None,
                starter: Starter::Hook,
                unit: Some(failed_unit(true, 5 * MIN, now)),
                expected: act(ActReason::Heal, None, 0),
            },
            Row {
                name: "a person's start of the heal unit within a back-off step below the threshold heals",
                history: vec![(Outcome::Failed, 20)],
                episode: Some(waiting(Some(from_now(10)))),
                starter: Starter::Other,
                unit: Some(failed_unit(false, short, now)),
                expected: act(ActReason::Heal, None, 1),
            },
        ];
        for row in rows {
            let records: Vec<HistoryRecord> = row
                .history
                .iter()
                .map(|&(outcome, minutes)| record(outcome, minutes * MIN, now))
                .collect();
            let runs: Vec<&HistoryRecord> = records.iter().collect();
            let inputs = Inputs {
                runs: &runs,
                episode: row.episode.as_ref(),
                rules: rules(),
                starter: row.starter,
                unit: row.unit,
                planned: None,
                now,
            };
            assert_eq!(decide(&inputs), row.expected, "{}", row.name);
        }
    }

    /// A pause or a maintenance window holds every run quietly, whatever loop protection
    /// would say (even a due retry waits for it); a person's run still acts.
    #[test]
    fn a_plan_holds_every_run_but_a_persons() {
        let now = SystemTime::now();
        let planned = Planned {
            until: now + Duration::from_secs(600),
            why: "paused until 12:10 UTC by selfheal pause: deploy; healed then if still down"
                .into(),
            reason: Some("deploy".into()),
        };
        let due = Episode {
            next_retry_at: Some(Timestamp::seconds(now - Duration::from_secs(5))),
            ..Episode::opened(Timestamp::seconds(now - Duration::from_secs(900)))
        };
        for (starter, episode) in [
            (Starter::Hook, None),
            (Starter::Probe, None),
            (Starter::Other, Some(&due)),
        ] {
            let decision = decide(&Inputs {
                runs: &[],
                episode,
                rules: rules(),
                starter,
                unit: None,
                planned: Some(&planned),
                now,
            });
            assert_eq!(
                decision,
                Decision::Hold(Hold {
                    why: HoldReason::Planned {
                        why: planned.why.clone()
                    },
                    tell: false,
                }),
                "{starter:?}"
            );
        }
        let person = decide(&Inputs {
            runs: &[],
            episode: None,
            rules: rules(),
            starter: Starter::Person,
            unit: None,
            planned: Some(&planned),
            now,
        });
        assert!(!person.holds());
    }

    #[test]
    fn the_runs_of_an_earlier_incident_and_before_a_persons_run_are_not_counted() {
        let now = SystemTime::now();
        let mut person = record(Outcome::Resolved, 8 * MIN, now);
        person.manual = true;
        let records = [
            record(Outcome::Resolved, 40 * MIN, now),
            // Up for 25 minutes: the incident before ends here.
            record(Outcome::Failed, 15 * MIN, now),
            record(Outcome::Resolved, 12 * MIN, now),
            person,
            record(Outcome::Resolved, 6 * MIN, now),
            record(Outcome::Resolved, 4 * MIN, now),
        ];
        let runs: Vec<&HistoryRecord> = records.iter().collect();
        let inputs = Inputs {
            runs: &runs,
            episode: None,
            rules: rules(),
            starter: Starter::Hook,
            unit: None,
            planned: None,
            now,
        };
        assert_eq!(incident_failures(&inputs).len(), 2);
    }
}
