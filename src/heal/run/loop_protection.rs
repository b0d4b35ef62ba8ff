//! Loop protection in a run: the one hold decision (`heal::hold`) asked with this run's facts,
//! and its effects applied (the episode's next step, the reason, whether to tell).

use std::ops::ControlFlow;
use std::time::{Duration, SystemTime};

use crate::config::{Config, ServiceConfig};
use crate::heal::HealError;
use crate::heal::diagnose::Diagnosis;
use crate::heal::episode;
use crate::heal::facts::{PostStatus, RunFacts};
use crate::heal::hold::{
    self, ActReason, Condition, Decision, HoldReason, Rules, Starter, UnitNow,
};
use crate::outcome::Outcome;
use crate::state::{StateDir, StateError};
use crate::systemd::{ActiveState, UnitControl, UnitSnapshot};
use crate::ui::duration::HumanDuration;
use crate::ui::when::Timestamp;

use super::{Look, Retry, Run};

impl Run<'_> {
    /// The hold decision's records: the service's history (one that others could have written
    /// decides nothing; an unreadable one must not stop healing: systemd's own start limit
    /// still bounds a loop) and its episode.
    pub(super) fn recorded(&self) -> Result<hold::Recorded, HealError> {
        match hold::Recorded::read(self.state, &self.service.name) {
            Ok(recorded) => Ok(recorded),
            Err(err @ StateError::Untrusted { .. }) => Err(err.into()),
            Err(err) => {
                tracing::error!(selfheal_service = %self.service.name, "loop protection cannot read the history, healing anyway: {err}");
                Ok(hold::Recorded {
                    records: Vec::new(),
                    episode: self.state.episode(&self.service.name).ok().flatten(),
                })
            }
        }
    }

    /// Who started this run, as the hold decision asks.
    pub(super) fn starter<U>(&self, look: &Look<U>) -> Starter {
        if self.options.manual {
            Starter::Person
        } else if self.alert.is_some() {
            Starter::Alert
        } else if self.options.from_hook {
            Starter::Hook
        } else if look.by_probes {
            Starter::Probe
        } else {
            Starter::Other
        }
    }

    /// Loop protection: the one hold decision (`heal::hold`), made by a dry run too (reading
    /// history changes nothing: it must tell the whole truth, and "suppressed" is what the real
    /// run would say), and its effects applied here. Ends the run when it holds; otherwise says
    /// whether this run is the episode's timed retry.
    pub(super) fn loop_protection<U: UnitControl>(
        &self,
        look: &Look<U>,
        diagnosis: &Diagnosis,
    ) -> Result<ControlFlow<RunFacts, Option<Retry>>, HealError> {
        let (config, state, service, options) =
            (self.config, self.state, self.service, self.options);
        let recorded = self.recorded()?;
        let starter = self.starter(look);
        let unit_now = unit_now(&look.systemd, &look.snapshot, || {
            starter == Starter::Alert
                || matches!(starter, Starter::Hook | Starter::Other) && recorded.episode.is_some()
        });
        let now = SystemTime::now();
        let planned = crate::heal::planned::planned(config, state, service, now, !options.dry_run);
        let decision = recorded.decide(
            Rules::of(config),
            starter,
            Some(unit_now),
            planned.as_ref(),
            now,
        );
        tracing::debug!(selfheal_service = %service.name, "hold decision for a {starter:?} run of a unit {unit_now:?}: {decision:?}");
        let episode = recorded.episode;
        let hold = match decision {
            Decision::Act(act) => {
                if act.why == ActReason::Retry
                    && let Some(episode) = episode
                {
                    tracing::info!(selfheal_service = %service.name, "the timed retry of loop protection's episode since {}", episode.suppressed_at);
                    return Ok(ControlFlow::Continue(Some((episode, act.failures))));
                }
                if let Some(why) = act.ends_episode
                    && !options.dry_run
                {
                    episode::end(state, &look.systemd, service, why);
                }
                return Ok(ControlFlow::Continue(None));
            }
            Decision::Hold(hold::Hold {
                why: HoldReason::Planned { why },
                ..
            }) => {
                return Ok(ControlFlow::Break(
                    self.end(self.planned(look, diagnosis, &why)),
                ));
            }
            Decision::Hold(hold) => hold,
        };
        let facts = self.held(look, diagnosis, &hold, episode);
        Ok(ControlFlow::Break(self.end(facts)))
    }

    /// A run held by a pause or a maintenance window: recorded `paused` with the diagnosis,
    /// nothing told; a service it leaves failed is healed when the plan is over (the watch).
    fn planned<U: UnitControl>(
        &self,
        look: &Look<U>,
        diagnosis: &Diagnosis,
        why: &str,
    ) -> RunFacts {
        let service = &self.service.name;
        tracing::info!(selfheal_service = %service, "{why}");
        // Failed: what the watch heals when the plan is over (a unit stopped cleanly is a
        // person's).
        let down = look.snapshot.active_state == ActiveState::Failed;
        if down && !self.options.dry_run {
            let held = self.state.change_pauses(|pauses| {
                pauses.held.insert(service.clone());
            });
            if let Err(err) = held {
                tracing::error!(selfheal_service = %service, "cannot note that it waits for the plan's end: {err}");
            }
        }
        let would = self.would();
        let mut facts = self
            .facts(Outcome::Paused)
            .diagnosis(Self::told(look, diagnosis))
            .reason(format!("{would}{why}"));
        facts.post_status = Some(PostStatus::from(&look.snapshot));
        facts
    }

    /// How a dry run's reason begins: what it says is what a real run would do.
    fn would(&self) -> &'static str {
        if self.options.dry_run {
            "a real run would stop: "
        } else {
            ""
        }
    }

    /// The effects of a hold: the episode's next step, the reason, and whether to tell.
    pub(super) fn held<U: UnitControl>(
        &self,
        look: &Look<U>,
        diagnosis: &Diagnosis,
        hold: &hold::Hold,
        mut episode: Option<crate::state::Episode>,
    ) -> RunFacts {
        let (config, state, service, options) =
            (self.config, self.state, self.service, self.options);
        let rules = Rules::of(config);
        let unit = &self.unit;
        let snapshot = &look.snapshot;
        let schedule = |episode| {
            episode::schedule_retry(
                config,
                state,
                &look.systemd,
                service,
                episode,
                options.dry_run,
            )
        };
        let would = self.would();
        let mut facts = self
            .facts(Outcome::Suppressed)
            .diagnosis(Self::told(look, diagnosis));
        facts.post_status = Some(PostStatus::from(snapshot));
        facts.episode_reported = !hold.tell;
        facts.reason = Some(match &hold.why {
            HoldReason::Threshold { failures } => {
                // A hold that is told begins a new episode: one left from an earlier incident
                // (over, as the decision found) does not lend it its longer waits.
                let episode = episode.filter(|_| !hold.tell);
                // Without retries an episode still records that this hold was told: the
                // failures after it are held quietly, not told (or started) again and again.
                if episode.is_none() && episode::retry_after(config).is_none() && !options.dry_run {
                    let opened =
                        crate::state::Episode::opened(Timestamp::seconds(SystemTime::now()));
                    if let Err(err) = state.save_episode(&service.name, &opened) {
                        tracing::error!(selfheal_service = %service.name, "the episode cannot be recorded: {err}");
                    }
                }
                let next = schedule(episode);
                format!(
                    "{would}loop protection: {failures} healing runs of this incident within {} (failure_threshold {}); {next}",
                    config.threshold_window, config.failure_threshold
                )
            }
            // Down again soon after recovering: the healing did not hold. The episode goes on
            // with the next, longer wait, and the owner hears of it now.
            HoldReason::Relapse { recovered_at } => {
                if let Some(episode) = episode.as_mut()
                    && !options.dry_run
                {
                    episode.recovered_at = None;
                    episode.relapses += 1;
                }
                let step = episode.as_ref().map_or(1, |e| e.retries + 1);
                let recovered_at = *recovered_at;
                let next = schedule(episode);
                facts.relapse = true;
                format!(
                    "{would}{unit} failed again within {} of recovering at {}: the healing did not hold, so selfheal backs off (step {step}); {next}",
                    HumanDuration(rules.new_incident_after),
                    recovered_at.readable()
                )
            }
            // Within a back-off step whose retry is still to come: the retry heals it, this
            // run heals nothing and tells nothing (the owner was told when the step began).
            HoldReason::RetryPending { .. } => {
                let since = episode
                    .as_ref()
                    .map(|e| e.suppressed_at.readable())
                    .unwrap_or_default();
                let next = schedule(episode);
                format!("part of the episode since {since}, already reported: {next}")
            }
            HoldReason::Planned { why } => why.clone(),
            HoldReason::StoppedByPerson | HoldReason::DisabledByPerson => {
                self.left_down(look, &hold.why, episode.is_some())
            }
        });
        facts
    }

    /// Why a service a person stopped or disabled is left down: their decision since it
    /// failed, which the timed retry does not overrule (its episode ends), or, outside any
    /// episode, which an alert does not overrule.
    fn left_down<U: UnitControl>(
        &self,
        look: &Look<U>,
        why: &HoldReason,
        in_episode: bool,
    ) -> String {
        let unit = &self.unit;
        let ended = |because| {
            if !self.options.dry_run {
                episode::end(self.state, &look.systemd, self.service, because);
            }
        };
        match (why, in_episode) {
            (HoldReason::DisabledByPerson, _) => {
                ended("its unit is disabled");
                format!(
                    "{unit} is disabled (UnitFileState=disabled): selfheal's timed retry leaves it down and its episode is over"
                )
            }
            (_, true) => {
                ended("a person stopped it");
                format!(
                    "{unit} was stopped on purpose (systemctl stop) since it failed: selfheal leaves it stopped and its episode is over"
                )
            }
            (_, false) => format!(
                "{unit} was stopped on purpose (systemctl stop): an alert does not start it, selfheal leaves it stopped"
            ),
        }
    }
}

/// Records a timed retry in its episode: healed, the report says RECOVERED and the episode
/// ends; still down, the next retry is scheduled (after twice the wait) and the report says
/// when.
pub(super) fn after_retry(
    config: &Config,
    state: &StateDir,
    systemd: &dyn UnitControl,
    service: &ServiceConfig,
    mut episode: crate::state::Episode,
    failures: usize,
    facts: &mut RunFacts,
) {
    episode.retries += 1;
    episode.next_retry_at = None;
    if facts.outcome == Outcome::Resolved {
        facts.recovered = Some(crate::heal::facts::Recovery {
            failures,
            since: episode.suppressed_at.readable(),
            relapses: episode.relapses,
            watched_for: HumanDuration(config.new_incident_after()).to_string(),
        });
        episode::watch_or_end(
            config,
            state,
            systemd,
            service,
            episode,
            "RECOVERED by its timed retry",
        );
    } else {
        let next = episode::schedule_retry(config, state, systemd, service, Some(episode), false);
        let reason = facts.reason.take().unwrap_or_default();
        facts.reason = Some(format!("{reason}; timed retry of loop protection: {next}"));
    }
}

/// Why loop protection would hold a run of `service` now (the sentence a person is asked
/// about at a terminal), or `None` when it would not: the one hold decision, for a run
/// started by hand without `--force`.
pub(crate) fn held_by_loop_protection(
    config: &Config,
    state: &StateDir,
    service: &ServiceConfig,
) -> Option<String> {
    let recorded = hold::Recorded::read(state, &service.name).ok()?;
    let rules = Rules::of(config);
    let now = SystemTime::now();
    let planned = crate::heal::planned::planned(config, state, service, now, false);
    match recorded.decide(rules, Starter::Other, None, planned.as_ref(), now) {
        Decision::Hold(hold) => Some(hold.why.sentence(&service.name, rules)),
        Decision::Act(_) => None,
    }
}

/// Whether a unit `snapshot`'s unit requires (`Requires=`, `BindsTo=`) is failed or inactive.
pub(super) fn requires_a_down_unit(systemd: &dyn UnitControl, snapshot: &UnitSnapshot) -> bool {
    let names: Vec<&str> = snapshot.requires.iter().map(String::as_str).collect();
    !names.is_empty()
        && systemd.unit_states(&names).is_ok_and(|states| {
            states.iter().any(|state| {
                matches!(
                    state.active_state,
                    ActiveState::Failed | ActiveState::Inactive
                )
            })
        })
}

/// The unit's condition for the hold decision. Whether a person stopped or disabled it is
/// asked only when `disabled_matters` (within an episode: more round trips, and systemd reads
/// the unit file).
pub(super) fn unit_now(
    systemd: &dyn UnitControl,
    snapshot: &UnitSnapshot,
    disabled_matters: impl FnOnce() -> bool,
) -> UnitNow {
    let condition = if snapshot.active_state == ActiveState::Failed || snapshot.restart_pending() {
        Condition::Failed
    } else if snapshot.is_down() {
        Condition::Stopped
    } else {
        Condition::Active
    };
    let asks = condition != Condition::Active && disabled_matters();
    // Inactive because a unit it requires failed is down by a failure, not by a person.
    let condition =
        if condition == Condition::Stopped && asks && requires_a_down_unit(systemd, snapshot) {
            Condition::Failed
        } else {
            condition
        };
    let disabled = asks
        && systemd
            .unit_file_state(&snapshot.unit)
            .is_ok_and(|state| state == "disabled");
    // How long it has run is known only while it runs (a hang the probes saw): a unit that is
    // down entered `active` at its last start, which says nothing of when it failed (a retry's
    // run sees the hook's facts of a failure long past). History says the rest.
    let active_since = (snapshot.active_enter_timestamp_us > 0 && condition == Condition::Active)
        .then(|| std::time::UNIX_EPOCH + Duration::from_micros(snapshot.active_enter_timestamp_us));
    UnitNow {
        condition,
        disabled,
        active_since,
    }
}

/// True when `service`'s episode waits for a retry whose time has passed: its timer fired
/// while a run of the heal unit went on, and systemd merged that start into the running unit.
/// (Not `episode::is_due`, which lets a timer that fires early make the retry: a run that has
/// just scheduled a retry a second or two away must not make it at once.)
pub(crate) fn retry_came_due(state: &StateDir, service: &ServiceConfig) -> bool {
    state
        .episode(&service.name)
        .ok()
        .flatten()
        .and_then(|episode| episode.next_retry_at)
        .is_some_and(|at| at.time() <= SystemTime::now())
}

/// A FAILED run is not final: it opens (or continues) an episode whose timed retry tries again
/// after `retry_after`, doubling, and says so in the report.
pub(super) fn retry_after_failure(
    config: &Config,
    state: &StateDir,
    systemd: &dyn UnitControl,
    service: &ServiceConfig,
    facts: &mut RunFacts,
) {
    if facts.outcome != Outcome::Failed || facts.dry_run {
        return;
    }
    let episode = state.episode(&service.name).ok().flatten();
    let next = episode::schedule_retry(config, state, systemd, service, episode, false);
    let reason = facts.reason.take().unwrap_or_default();
    facts.reason = Some(format!(
        "{}. Not final: {next}",
        reason.trim_end_matches('.')
    ));
}
