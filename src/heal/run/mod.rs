//! `selfheal run <service>`: lock, diagnose, leave a healthy service alone, wait for systemd
//! when it is already acting, run the strategy chain, verify, record.

use std::ops::ControlFlow;
use std::time::{Duration, Instant, SystemTime};

use crate::config::{Config, ServiceConfig};
use crate::heal::HealError;
use crate::heal::diagnose::{Diagnosis, MonitorFacts, Upstream};
use crate::heal::episode;
use crate::heal::facts::{PostStatus, Recovery, RunFacts};
use crate::heal::hold::{
    self, ActReason, Condition, Decision, HoldReason, Rules, Starter, UnitNow,
};
use crate::heal::strategy::{self, Context};
use crate::heal::verify::{self, HealthTarget};
use crate::host::journal::{JournalSource, Journald};
use crate::outcome::Outcome;
use crate::state::{HistoryRecord, ServiceLock, StateDir, StateError};
use crate::systemd::{ActiveState, Systemd, SystemdError, UnitControl, UnitSnapshot};
use crate::ui::duration::HumanDuration;
use crate::ui::terminal::SlowNotice;
use crate::ui::when::Timestamp;

/// The outside world a run acts on. `connect` is called after the service lock is taken (a
/// run that yields to another never needs the bus).
pub(crate) struct Host<'a, U: UnitControl> {
    pub connect: &'a dyn Fn() -> Result<U, SystemdError>,
    pub journal: &'a dyn JournalSource,
}

impl Host<'static, Systemd> {
    /// systemd over the system bus, and journald.
    pub(crate) fn real() -> Host<'static, Systemd> {
        Host {
            connect: &Systemd::connect,
            journal: &Journald,
        }
    }
}

/// How `run` was asked to behave.
#[derive(Debug, Clone, Copy, Default)]
// Four independent facts about one run; `manual` and `from_hook` could become one "started by"
// enum when a third starter (the probe) arrives.
#[allow(clippy::struct_excessive_bools)]
pub(crate) struct RunOptions {
    /// Decide and print the plan, change nothing (no restart, kill, file change, mail, state).
    pub dry_run: bool,
    /// The `MONITOR_*` variables describe an earlier failure than the one to heal now.
    pub ignore_monitor_facts: bool,
    /// A person's run (`--force`, or a `y` typed at a terminal when loop protection held it):
    /// always allowed, and it ends loop protection's episode.
    pub manual: bool,
    /// The `OnFailure=` hook started it (`$MONITOR_UNIT` is set): within an episode such a run
    /// waits for the episode's retry. A run started any other way (the retry's timer, a
    /// person's `systemctl start` of the heal unit, an upstream heal) heals.
    pub from_hook: bool,
}

/// How long the journal of the failed run may take to read before the report goes with what
/// it has.
const JOURNAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Heals `service` and returns what happened (recorded in history). The phases, in the order they
/// happen: the service's lock; the first look (waiting for systemd's own restart when it is
/// at work); the diagnosis; loop protection's decision; the chain and its record. Each phase
/// either hands the next what it found or ends the run with its report.
pub(crate) fn run<U: UnitControl>(
    config: &Config,
    state: &StateDir,
    service: &ServiceConfig,
    options: RunOptions,
    host: &Host<'_, U>,
) -> Result<RunFacts, HealError> {
    let run = Run {
        config,
        state,
        service,
        options,
        clock: RunClock::start(),
        unit: service.unit_name(),
    };
    let _lock = match run.lock()? {
        ControlFlow::Continue(lock) => lock,
        ControlFlow::Break(report) => return Ok(report),
    };
    tracing::debug!("service lock taken");
    let mut look = match run.first_look(host)? {
        ControlFlow::Continue(look) => look,
        ControlFlow::Break(report) => return Ok(report),
    };
    let diagnosis = run.diagnose(host, &mut look);
    let retry = match run.loop_protection(&look, &diagnosis)? {
        ControlFlow::Continue(retry) => retry,
        ControlFlow::Break(report) => return Ok(report),
    };
    Ok(run.heal(host, &look, diagnosis, retry))
}

/// One run's fixed facts, and how it ends: with one report, recorded.
struct Run<'a> {
    config: &'a Config,
    state: &'a StateDir,
    service: &'a ServiceConfig,
    options: RunOptions,
    clock: RunClock,
    /// The service's unit.
    unit: String,
}

/// What the first look found: the unit as it is now (after systemd's own restart, when it was
/// at work) and what is wrong with it.
struct Look<U> {
    systemd: U,
    snapshot: UnitSnapshot,
    monitor: Option<MonitorFacts>,
    target: HealthTarget,
    /// "active, but port 5002 is not listening", when it is active but does not serve.
    unhealthy: Option<String>,
    /// The journal read started early, when its evidence can change what runs first.
    pending_journal: Option<crate::host::journal::PendingJournal>,
    evidence_matters: bool,
    /// The probes started this run: what they saw is the evidence.
    by_probes: bool,
}

/// A due timed retry: its episode, and the healing runs counted in the window.
type Retry = (crate::state::Episode, usize);

impl Run<'_> {
    fn facts(&self, outcome: Outcome) -> RunFacts {
        self.clock.facts(outcome, self.options)
    }

    /// The run's report, recorded in history.
    fn end(&self, facts: RunFacts) -> RunFacts {
        finish(self.state, &self.service.name, facts, self.options)
    }

    /// The service's lock (none on a dry run, or when the state directory cannot hold one);
    /// another run holding it ends this one.
    fn lock(&self) -> Result<ControlFlow<RunFacts, Option<ServiceLock>>, HealError> {
        if self.options.dry_run {
            return Ok(ControlFlow::Continue(None));
        }
        match lock_within(self.state, &self.service.name, LOCK_PATIENCE) {
            Ok(Some(lock)) => Ok(ControlFlow::Continue(Some(lock))),
            // A full or read-only state directory must not stop healing; only another run
            // holding the lock (or a state directory others could tamper with) does.
            Err(err @ StateError::Io { .. }) => {
                tracing::error!(selfheal_service = %self.service.name, "healing without the service lock: {err}");
                Ok(ControlFlow::Continue(None))
            }
            Err(err) => Err(err.into()),
            Ok(None) => {
                let facts = self.facts(Outcome::Suppressed).reason(format!(
                    "another selfheal run is healing {} right now",
                    self.service.name
                ));
                Ok(ControlFlow::Break(self.end(facts)))
            }
        }
    }

    /// Connects, looks at the unit, lets systemd finish what it is doing, and ends the run when
    /// the unit serves (healthy, or brought back by systemd's own `Restart=`) or when systemd
    /// never stops acting.
    fn first_look<U: UnitControl>(
        &self,
        host: &Host<'_, U>,
    ) -> Result<ControlFlow<RunFacts, Look<U>>, HealError> {
        let (unit, service, options) = (&self.unit, self.service, self.options);
        // When the journal's evidence can change what runs first, start reading it right away
        // (with the OnFailure= facts we know the invocation): journalctl runs while we talk to
        // systemd. Otherwise it is read after acting, so it does not compete with the restart
        // for the CPU.
        let monitor = MonitorFacts::from_env(unit).filter(|_| !options.ignore_monitor_facts);
        let evidence_matters = strategy::evidence_can_reorder(&service.healing_strategies);
        let mut pending_journal = monitor
            .as_ref()
            .and_then(|facts| facts.invocation_id.as_deref())
            .filter(|_| evidence_matters)
            .map(|id| host.journal.start(unit, Some(id)));

        let asking = SlowNotice::new("waiting for systemd to answer on the D-Bus system bus");
        let systemd = (host.connect)()?;
        tracing::debug!(
            "connected to the system bus after {} µs",
            self.clock.elapsed_us()
        );
        let target = HealthTarget::of(self.config, service);
        let mut snapshot = systemd.snapshot(unit)?;
        drop(asking);
        tracing::debug!("unit snapshot after {} µs", self.clock.elapsed_us());
        // systemd's own `Restart=` may be at work: it is its turn, not ours. systemd >= 254
        // starts the heal unit at every failed attempt of a `Restart=` unit, so most hook runs
        // of such a unit see this; on 252 a run sees it only when it races a restart.
        let restarting = systemd_restarting(&snapshot, monitor.as_ref());
        let restarts_before = snapshot.n_restarts;
        let mut followed = None;
        let waiting_since = Instant::now();
        if snapshot.systemd_is_acting() || restarting {
            let _waiting = SlowNotice::new(format!(
                "waiting for systemd's own start of {unit} to finish (up to verify_timeout, {})",
                service.verify_timeout
            ));
            match follow_systemd(&systemd, &target)? {
                // systemd's own start hangs (an ExecStartPre= waiting on a mount, a lock, …), or
                // it keeps restarting a service that does not stay up: the run ends `failed`
                // with what is known, and the owner is told; exit 4 stays for a bus that cannot
                // be reached.
                Followed::StillActing(now) => {
                    let facts = self.never_done(
                        host,
                        &systemd,
                        &now,
                        monitor,
                        pending_journal,
                        restarts_before,
                    );
                    return Ok(ControlFlow::Break(self.end(facts)));
                }
                other => followed = Some(other),
            }
        }

        // After systemd's own restart it was verified over time, as after our own restart.
        // Otherwise one look decides. What is wrong with a unit that is active: "active, but
        // port 5002 is not listening".
        let waited = followed.is_some();
        // Started by the probes a moment ago, on the instance still running: what they saw
        // over several rounds is the evidence, and one more look (which may pass by chance,
        // or take the whole timeout of a hang) adds nothing but its wait.
        let probes_saw = (followed.is_none() && snapshot.is_active())
            .then(|| {
                let active_since = std::time::UNIX_EPOCH
                    + Duration::from_micros(snapshot.active_enter_timestamp_us);
                crate::heal::probe::account_for_run(self.state, &self.service.name, active_since)
            })
            .flatten();
        let not_serving = match followed {
            Some(Followed::Up { now, problem }) => {
                snapshot = now;
                problem
            }
            Some(Followed::Down(now)) => {
                snapshot = now;
                Some(String::new())
            }
            None if probes_saw.is_some() => Some(String::new()),
            Some(Followed::StillActing(_)) | None => verify::check_now(&snapshot, &target).err(),
        };
        let Some(not_serving) = not_serving else {
            let by_systemd = restarting || snapshot.n_restarts > restarts_before;
            let waited_ms = waited.then(|| waiting_since.elapsed().as_millis());
            return Ok(ControlFlow::Break(self.serving(
                &systemd,
                &snapshot,
                monitor.as_ref(),
                by_systemd,
                waited_ms,
            )));
        };
        // From here on the facts describe `snapshot`'s invocation; the hook's facts count only
        // when they are of that one (see `describing`).
        // (The run is still the hook's for the hold decision: on systemd >= 254 the hook of a
        // crash loop's attempt describes that attempt, and the loop's later ones are its own.)
        let monitor = describing(monitor, &snapshot);
        if monitor.is_none() {
            pending_journal = None;
        }
        let unhealthy = Some(not_serving)
            .filter(|_| snapshot.is_active())
            .map(|missing| match &probes_saw {
                Some(seen) => format!("active, but the probes saw it fail: {seen}"),
                None => format!("active, but {missing}"),
            });
        Ok(ControlFlow::Continue(Look {
            systemd,
            snapshot,
            monitor,
            target,
            unhealthy,
            pending_journal,
            evidence_matters,
            by_probes: probes_saw.is_some(),
        }))
    }

    /// The report of a run that waited for systemd until `verify_timeout` while its start hung
    /// or its restarts never held: `failed`, with what is known, and a timed retry. The failing
    /// invocation is the last attempt's (`now`), not the one whose failure started this run.
    fn never_done<U: UnitControl>(
        &self,
        host: &Host<'_, U>,
        systemd: &U,
        now: &UnitSnapshot,
        monitor: Option<MonitorFacts>,
        pending_journal: Option<crate::host::journal::PendingJournal>,
        restarts_before: u32,
    ) -> RunFacts {
        let current = describing(monitor, now);
        let pending = pending_journal.filter(|_| current.is_some());
        let lines =
            host.journal
                .read_invocation(&self.unit, &now.invocation_id, pending, JOURNAL_TIMEOUT);
        let reason = still_acting(now, restarts_before, self.service);
        let mut facts = self
            .facts(Outcome::Failed)
            .diagnosis(Diagnosis::new(now, current.as_ref(), lines))
            .reason(reason);
        facts.post_status = Some(PostStatus::from(now));
        retry_after_failure(self.config, self.state, systemd, self.service, &mut facts);
        facts
    }

    /// The report of a run that found the unit serving: healthy, or brought back by systemd's
    /// own restart (`waited_ms`: how long selfheal waited for systemd's start).
    fn serving(
        &self,
        systemd: &dyn UnitControl,
        snapshot: &UnitSnapshot,
        monitor: Option<&MonitorFacts>,
        by_systemd: bool,
        waited_ms: Option<u128>,
    ) -> RunFacts {
        let unit = &self.unit;
        let mut diagnosis = Diagnosis::new(snapshot, monitor, Vec::new());
        // Nothing failed (no hook's facts, no restart of systemd's awaited): the diagnosis says
        // so, instead of reading a healthy unit's Result=success as a clean stop.
        if monitor.is_none() && !by_systemd && waited_ms.is_none() {
            diagnosis.summary = format!("{unit} is {}: nothing failed", snapshot.state());
            diagnosis.root_cause = format!(
                "Nothing failed: {unit} is active and serves ({}).",
                self.serves_as()
            );
        }
        let outcome = if by_systemd {
            Outcome::RestartedBySystemd
        } else {
            Outcome::Healthy
        };
        let mut facts = self.facts(outcome).diagnosis(diagnosis);
        facts.reason = match (by_systemd, waited_ms) {
            (true, _) => Some(format!(
                "systemd's own Restart= brought {unit} back ({} automatic restart(s)); selfheal restarted nothing",
                snapshot.n_restarts
            )),
            (false, Some(ms)) => Some(format!(
                "systemd was already starting {unit}; selfheal waited {ms} ms for it instead of racing it"
            )),
            (false, None) => None,
        };
        facts.post_status = Some(PostStatus::from(snapshot));
        // Healthy again (a person or systemd fixed it): the episode is watched until it has
        // stayed healthy for threshold_window.
        if !self.options.dry_run
            && let Ok(Some(episode)) = self.state.episode(&self.service.name)
        {
            episode::watch_or_end(
                self.config,
                self.state,
                systemd,
                self.service,
                episode,
                "found healthy",
            );
        }
        self.end(facts)
    }

    /// What "serves" was checked as: the unit active, and its port and health URL when set.
    fn serves_as(&self) -> String {
        let mut checked = vec!["active".to_owned()];
        if let Some(port) = self.service.port {
            checked.push(format!("its own process listening on port {port}"));
        }
        if let Some(url) = &self.service.health_url {
            checked.push(format!("{} answering 2xx", url.raw));
        }
        checked.join(", ")
    }

    /// What systemd's facts and, when its evidence matters before acting, the failed run's
    /// journal say.
    fn diagnose<U: UnitControl>(&self, host: &Host<'_, U>, look: &mut Look<U>) -> Diagnosis {
        let journal_lines = if look.evidence_matters {
            host.journal.read_invocation(
                &self.unit,
                &look.invocation(),
                look.pending_journal.take(),
                JOURNAL_TIMEOUT,
            )
        } else {
            Vec::new()
        };
        tracing::debug!("ready to act after {} µs", self.clock.elapsed_us());
        let diagnosis = Diagnosis::new(&look.snapshot, look.monitor.as_ref(), journal_lines)
            .not_serving(look.unhealthy.clone());
        let diagnosis = host_facts(self.service, &look.snapshot, diagnosis);
        tracing::info!(selfheal_service = %self.service.name, "diagnosis: {}", diagnosis.summary);
        diagnosis
    }

    /// The hold decision's records: the service's history (one that others could have written
    /// decides nothing; an unreadable one must not stop healing: systemd's own start limit
    /// still bounds a loop) and its episode.
    fn recorded(&self) -> Result<hold::Recorded, HealError> {
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
    fn starter<U>(&self, look: &Look<U>) -> Starter {
        if self.options.manual {
            Starter::Person
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
    fn loop_protection<U: UnitControl>(
        &self,
        look: &Look<U>,
        diagnosis: &Diagnosis,
    ) -> Result<ControlFlow<RunFacts, Option<Retry>>, HealError> {
        let (config, state, service, options) =
            (self.config, self.state, self.service, self.options);
        let recorded = self.recorded()?;
        let starter = self.starter(look);
        let unit_now = unit_now(&look.systemd, &look.snapshot, || {
            matches!(starter, Starter::Hook | Starter::Other) && recorded.episode.is_some()
        });
        let decision = recorded.decide(
            Rules::of(config),
            starter,
            Some(unit_now),
            SystemTime::now(),
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
            Decision::Hold(hold) => hold,
        };
        let facts = self.held(look, diagnosis, &hold, episode);
        Ok(ControlFlow::Break(self.end(facts)))
    }

    /// The effects of a hold: the episode's next step, the reason, and whether to tell.
    fn held<U: UnitControl>(
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
        let would = if options.dry_run {
            "a real run would stop: "
        } else {
            ""
        };
        let mut facts = self.facts(Outcome::Suppressed).diagnosis(diagnosis.clone());
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
            // A stopped or disabled service is left down: a person's decision since it
            // failed, which the timed retry does not overrule.
            HoldReason::StoppedByPerson => {
                if !options.dry_run {
                    episode::end(state, &look.systemd, service, "a person stopped it");
                }
                format!(
                    "{unit} was stopped on purpose (systemctl stop) since it failed: selfheal leaves it stopped and its episode is over"
                )
            }
            HoldReason::DisabledByPerson => {
                if !options.dry_run {
                    episode::end(state, &look.systemd, service, "its unit is disabled");
                }
                format!(
                    "{unit} is disabled (UnitFileState=disabled): selfheal's timed retry leaves it down and its episode is over"
                )
            }
        });
        facts
    }

    /// Heals: what it depends on first, then the strategy chain; records the outcome in the
    /// episode (a retry's RECOVERED, or the next retry after a failure) and ends the run.
    fn heal<U: UnitControl>(
        &self,
        host: &Host<'_, U>,
        look: &Look<U>,
        mut diagnosis: Diagnosis,
        retry: Option<Retry>,
    ) -> RunFacts {
        let (config, state, service, options) =
            (self.config, self.state, self.service, self.options);
        let systemd = &look.systemd;
        // What it depends on comes first: a monitored upstream unit that is down is healed (by
        // its own heal unit, or that run is awaited) before this one is restarted into the
        // same wall.
        let upstream = upstream_problems(config, systemd, &look.snapshot, &look.target, options);
        diagnosis = diagnosis.upstream(upstream.clone());

        let order = strategy::plan(&service.healing_strategies, &diagnosis);
        let context = Context {
            service,
            diagnosis: &diagnosis,
            snapshot: &look.snapshot,
            units: systemd,
            target: &look.target,
            dry_run: options.dry_run,
        };
        // A full file system is not healed by restarting into it: a person frees space.
        let chain = match &diagnosis.full_disk {
            Some(_) if look.unhealthy.is_none() => strategy::ChainResult {
                escalation: Some(diagnosis.root_cause.clone()),
                ..strategy::ChainResult::default()
            },
            _ => strategy::run_chain(&order, &context),
        };
        if !look.evidence_matters {
            let lines =
                host.journal
                    .read_invocation(&self.unit, &look.invocation(), None, JOURNAL_TIMEOUT);
            // What the host said before acting still holds; only the journal is new.
            let (full, oom) = (diagnosis.full_disk.take(), diagnosis.oom_kill.take());
            diagnosis = Diagnosis::new(&look.snapshot, look.monitor.as_ref(), lines)
                .not_serving(look.unhealthy.clone())
                .upstream(upstream);
            let full = full.or_else(|| full_disk(self.service, &diagnosis));
            diagnosis = diagnosis.full_disk(full).killed_by_oom(&look.snapshot, oom);
        }
        let outcome = match (options.dry_run, chain.healed_by) {
            (true, _) => Outcome::Planned,
            (false, Some(_)) => Outcome::Resolved,
            (false, None) => Outcome::Failed,
        };
        let post = systemd.snapshot(&self.unit).ok();
        let reason = chain.escalation.clone().or_else(|| {
            (outcome == Outcome::Failed)
                .then(|| still_down(&self.unit, post.as_ref(), &chain, &diagnosis))
        });
        let mut facts = self.facts(outcome).diagnosis(diagnosis);
        facts.steps = chain.steps;
        facts.healed_by = chain.healed_by.map(|name| name.to_string());
        facts.reason = reason;
        facts.post_status = post.as_ref().map(PostStatus::from);
        if let Some((episode, failures)) = retry.filter(|_| !options.dry_run) {
            after_retry(
                config, state, systemd, service, episode, failures, &mut facts,
            );
        } else {
            retry_after_failure(config, state, systemd, service, &mut facts);
        }
        self.end(facts)
    }
}

/// Why a FAILED run left the service down: its state now, and what the last strategy that
/// acted found (a strategy that did not apply says nothing about it), else the root cause.
fn still_down(
    unit: &str,
    post: Option<&UnitSnapshot>,
    chain: &strategy::ChainResult,
    diagnosis: &Diagnosis,
) -> String {
    let state = post.map_or_else(|| "down".to_owned(), UnitSnapshot::state);
    let acted = chain
        .steps
        .iter()
        .rev()
        .find(|step| step.result == strategy::StepResult::NoFix);
    match acted {
        Some(step) => format!(
            "{unit} is still {state}; {}: {}",
            step.strategy, step.detail
        ),
        None => format!("{unit} is still {state}: {}", diagnosis.root_cause),
    }
}

/// What the host adds to systemd's facts: a full file system the service writes to, and the
/// kernel's account of an OOM kill where systemd saw only a SIGKILL.
fn host_facts(service: &ServiceConfig, snapshot: &UnitSnapshot, diagnosis: Diagnosis) -> Diagnosis {
    let full = full_disk(service, &diagnosis);
    let sigkill = matches!(
        &diagnosis.termination,
        crate::heal::diagnose::Termination::Killed { signal } if signal == "SIGKILL"
    );
    let oom = (sigkill && diagnosis.result != "oom-kill")
        .then(|| {
            crate::host::kernel_log::oom_kill_in(&snapshot.unit, snapshot.main_started_monotonic_us)
        })
        .flatten();
    diagnosis.full_disk(full).killed_by_oom(snapshot, oom)
}

/// A full file system among those the service writes to: its unit's directories, the files
/// `database_check` looks after (those its ENOSPC messages name first; a journal line never
/// makes root look at a path of its choosing: an automount, a hung share), and,
/// when it says the disk is full but none of those is, the host's usual places.
fn full_disk(
    service: &ServiceConfig,
    diagnosis: &Diagnosis,
) -> Option<crate::host::disk::DiskUsage> {
    use crate::heal::diagnose::Symptom;
    let mut own: Vec<std::path::PathBuf> = diagnosis.write_paths.clone();
    if let Some(check) = &service.database_check {
        own.extend(check.files.iter().map(|file| file.path.clone()));
    }
    let mut paths = own.clone();
    let mut says_full = false;
    for line in &diagnosis.journal {
        if Symptom::detect(std::slice::from_ref(line)).contains(&Symptom::DiskFull) {
            says_full = true;
            // The declared directory a named path is in is what is measured, never the
            // named path itself (a `..` or a symlink the service made could lead anywhere).
            for named in crate::host::disk::paths_in(&line.message) {
                if let Some(dir) = own.iter().find(|dir| named.starts_with(dir))
                    && !paths.contains(dir)
                {
                    paths.push(dir.clone());
                }
            }
        }
    }
    if says_full {
        paths.extend(
            crate::host::disk::USUAL_PLACES
                .iter()
                .map(std::path::PathBuf::from),
        );
    }
    crate::host::disk::first_full(paths.iter().map(std::path::PathBuf::as_path))
}

impl<U> Look<U> {
    /// The failed run's invocation: the hook's, else the unit's current (or last) one.
    fn invocation(&self) -> String {
        self.monitor
            .as_ref()
            .and_then(|facts| facts.invocation_id.clone())
            .unwrap_or_else(|| self.snapshot.invocation_id.clone())
    }
}

/// Records a timed retry in its episode: healed, the report says RECOVERED and the episode
/// ends; still down, the next retry is scheduled (after twice the wait) and the report says
/// when.
fn after_retry(
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
        facts.recovered = Some(Recovery {
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
    match recorded.decide(rules, Starter::Other, None, SystemTime::now()) {
        Decision::Hold(hold) => Some(hold.why.sentence(&service.name, rules)),
        Decision::Act(_) => None,
    }
}

/// Whether a unit `snapshot`'s unit requires (`Requires=`, `BindsTo=`) is failed or inactive.
fn requires_a_down_unit(systemd: &dyn UnitControl, snapshot: &UnitSnapshot) -> bool {
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
fn unit_now(
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

/// The facts of a crash loop `selfheal watch` found: systemd restarted `service` `restarts`
/// times within `crash_loop.within` (its `Restart=` is `restart_setting`) and it crashed again
/// each time. Nothing is healed (each restart "worked"); the owner gets the evidence: the last
/// exit systemd logged and the unit's last journal lines. Recorded like a run.
pub(crate) fn crash_loop(
    config: &Config,
    state: &StateDir,
    service: &ServiceConfig,
    snapshot: &UnitSnapshot,
    restarts: usize,
    restart_setting: &str,
    journal: Vec<crate::host::journal::JournalLine>,
) -> RunFacts {
    let clock = RunClock::start();
    let unit = &snapshot.unit;
    let last_exit = journal
        .iter()
        .rev()
        .find(|line| line.pid == 1 && line.message.contains("exited, code="))
        .map(|line| line.message.clone());
    let mut diagnosis = Diagnosis::new(snapshot, None, journal);
    diagnosis.summary = format!(
        "systemd restarted {unit} {restarts} times within {} (Restart={restart_setting}) and it crashed again each time",
        config.crash_loop.within
    );
    if let Some(last_exit) = last_exit {
        diagnosis.root_cause = format!("its last crash, as systemd logged it: {last_exit}");
    }
    let options = RunOptions::default();
    let mut facts = clock
        .facts(Outcome::CrashLoop, options)
        .diagnosis(diagnosis)
        .reason(format!(
            "systemd's Restart= keeps {unit} coming back, so nothing failed for selfheal to heal; it is {} now. Find why it crashes (the journal lines below), then fix it",
            snapshot.state()
        ));
    facts.post_status = Some(PostStatus::from(snapshot));
    finish(state, &service.name, facts, options)
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

/// True when a run started by the OnFailure= hook healed the service, but it has failed again
/// since (while the report was printed and mailed). systemd merges that failure's OnFailure=
/// start into this still-running heal unit, so nobody else will heal it: the caller runs
/// again, and loop protection bounds how often.
pub(crate) fn failed_again_while_finishing(
    facts: &RunFacts,
    service: &ServiceConfig,
) -> Result<bool, HealError> {
    let from_hook = crate::heal::diagnose::started_by_hook();
    if !from_hook || facts.outcome != Outcome::Resolved {
        return Ok(false);
    }
    let unit = service.unit_name();
    let snapshot = Systemd::connect()?.snapshot(&unit)?;
    let again = snapshot.is_down() && snapshot.active_state == ActiveState::Failed;
    if again {
        tracing::warn!(
            selfheal_service = %service.name,
            "{unit} failed again while its heal unit was finishing; healing it again"
        );
    }
    Ok(again)
}

/// The units `snapshot`'s service depends on that are down: a `Requires=`/`BindsTo=` unit
/// that is failed, inactive or missing, a `Wants=`+`After=` unit that failed. One that is
/// itself monitored is healed first through its own heal unit (a start of a heal unit that
/// is already running waits for that run), within twice this service's `verify_timeout`;
/// the entry says what came of it. Nothing here stops the run: a question systemd cannot
/// answer leaves the list empty.
fn upstream_problems(
    config: &Config,
    systemd: &dyn UnitControl,
    snapshot: &UnitSnapshot,
    target: &HealthTarget,
    options: RunOptions,
) -> Vec<Upstream> {
    // Targets and slices are synchronization points and resource groups, not causes (every
    // service requires sysinit.target and its slice): leaving them out usually leaves
    // nothing to ask, and the restart waits for no extra round trip.
    let cause = |unit: &&String| {
        !matches!(
            unit.rsplit_once('.').map(|(_, kind)| kind),
            Some("target" | "slice")
        )
    };
    let mut asked: Vec<(&str, &'static str)> = Vec::new();
    for unit in snapshot.requires.iter().filter(cause) {
        if !asked.iter().any(|(u, _)| u == unit) {
            asked.push((unit, "requires"));
        }
    }
    for unit in snapshot.ordered_wants.iter().filter(cause) {
        if !asked.iter().any(|(u, _)| u == unit) {
            asked.push((unit, "wants"));
        }
    }
    if asked.is_empty() {
        return Vec::new();
    }
    let names: Vec<&str> = asked.iter().map(|(unit, _)| *unit).collect();
    let states = match systemd.unit_states(&names) {
        Ok(states) => states,
        Err(err) => {
            tracing::warn!(
                "cannot read the states of {}'s dependencies: {err}",
                snapshot.unit
            );
            return Vec::new();
        }
    };
    let mut problems = Vec::new();
    for ((unit, relation), state) in asked.iter().zip(&states) {
        // What it cannot run without must exist and be up; what it merely wants must not
        // have failed. A wanted unit that does not exist is no cause: systemd starts the
        // service without it (Debian ships no tmp.mount, which every PrivateTmp= unit wants).
        let down = state.active_state == ActiveState::Failed
            || (*relation == "requires"
                && (state.load_state == "not-found"
                    || state.active_state == ActiveState::Inactive));
        if !down {
            continue;
        }
        let described = |state: &crate::systemd::UnitOverview| {
            if state.load_state == "not-found" {
                "not-found".to_owned()
            } else {
                format!("{}/{}", state.active_state, state.sub_state)
            }
        };
        let monitored = config
            .monitored_services
            .iter()
            .find(|other| other.unit_name() == *unit);
        let action = monitored.map(|other| {
            let heal = other.heal_unit_name();
            if options.dry_run {
                return format!("A real run would heal {unit} first with {heal}");
            }
            tracing::info!("healing {unit} first: {} depends on it", snapshot.unit);
            let ran = systemd.start(&heal, target.timeout * 2);
            let now = systemd
                .unit_states(&[unit])
                .ok()
                .and_then(|states| states.into_iter().next());
            match (ran, now) {
                (Ok(_), Some(now)) => format!(
                    "selfheal healed {unit} first with {heal}; it is now {}",
                    described(&now)
                ),
                (Err(err), _) => format!("healing {unit} first with {heal} failed: {err}"),
                (Ok(_), None) => format!("{heal} ran for {unit}"),
            }
        });
        problems.push(Upstream {
            unit: (*unit).to_owned(),
            relation,
            state: described(state),
            action,
        });
    }
    problems
}

/// How long a run waits for its service's lock: `flush` holds it for a look at the unit (a few
/// ms); another run holds it for its whole heal, and this one then yields to it.
const LOCK_PATIENCE: Duration = Duration::from_secs(2);

/// The service's lock, waiting up to `patience` for it (flock has no timed wait: it is tried
/// again every 20 ms); `None` when it stays held.
fn lock_within(
    state: &StateDir,
    service: &str,
    patience: Duration,
) -> Result<Option<ServiceLock>, StateError> {
    let until = Instant::now() + patience;
    loop {
        match state.try_lock(service)? {
            Some(lock) => return Ok(Some(lock)),
            None if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            None => return Ok(None),
        }
    }
}

/// The hook's facts, when they describe `snapshot`'s invocation. systemd keeps a heal unit's
/// `MONITOR_*` variables from its last start by a failure: a later start by the retry's timer
/// sees them still, and on systemd >= 254 a crash loop's later attempts are other invocations.
/// Facts of an earlier run would put its journal and its cause in this run's report.
fn describing(monitor: Option<MonitorFacts>, snapshot: &UnitSnapshot) -> Option<MonitorFacts> {
    monitor.filter(|facts| {
        facts
            .invocation_id
            .as_deref()
            .is_none_or(|id| id == snapshot.invocation_id)
    })
}

/// systemd's own `Restart=` is at work on the unit: an automatic restart is pending, or has
/// happened since the failure that started this run (a newer invocation, `NRestarts` > 0).
fn systemd_restarting(snapshot: &UnitSnapshot, monitor: Option<&MonitorFacts>) -> bool {
    snapshot.restart_pending()
        || (snapshot.n_restarts > 0
            && monitor
                .and_then(|facts| facts.invocation_id.as_deref())
                .is_some_and(|failed| failed != snapshot.invocation_id))
}

/// What came of letting systemd finish what it was doing with the unit.
enum Followed {
    /// It is up; `problem` says what is wrong when it is not healthy.
    Up {
        now: UnitSnapshot,
        problem: Option<String>,
    },
    /// systemd stopped acting and the unit is down: it gave up (a start limit, no `Restart=`).
    Down(UnitSnapshot),
    /// Still acting at `verify_timeout`: a start that hangs, or restarts that never hold.
    StillActing(UnitSnapshot),
}

/// Waits for systemd's own start or restart, verifies the result over `stable_for` as after
/// selfheal's own restart, and keeps waiting while systemd restarts it again: selfheal never
/// restarts a unit whose automatic restart is pending. Bounded by `verify_timeout`.
fn follow_systemd(
    systemd: &dyn UnitControl,
    target: &HealthTarget,
) -> Result<Followed, SystemdError> {
    let started = Instant::now();
    let deadline = started + target.timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let now = match wait_for_systemd(systemd, &target.unit, left) {
            Ok(now) => now,
            Err(SystemdError::Timeout(_)) => {
                return Ok(Followed::StillActing(systemd.snapshot(&target.unit)?));
            }
            Err(other) => return Err(other),
        };
        if now.is_down() {
            return Ok(Followed::Down(now));
        }
        let verification = verify::verify(systemd, target, started);
        let now = systemd.snapshot(&target.unit)?;
        if verification.healthy {
            return Ok(Followed::Up { now, problem: None });
        }
        if now.systemd_is_acting() {
            if Instant::now() < deadline {
                continue;
            }
            return Ok(Followed::StillActing(now));
        }
        if now.is_down() {
            return Ok(Followed::Down(now));
        }
        // It may have failed again while it was verified: say how it is now.
        let problem = verify::check_now(&now, target)
            .err()
            .unwrap_or(verification.detail);
        return Ok(Followed::Up {
            now,
            problem: Some(problem),
        });
    }
}

/// Why a run that waited for systemd until `verify_timeout` did nothing of its own.
fn still_acting(now: &UnitSnapshot, restarts_before: u32, service: &ServiceConfig) -> String {
    let unit = &now.unit;
    if now.n_restarts > restarts_before || now.restart_pending() {
        format!(
            "systemd keeps restarting {unit} ({} automatic restarts so far) and it does not stay up within verify_timeout ({}): selfheal started none of its own. Why it dies is in its journal (systemctl status {unit})",
            now.n_restarts, service.verify_timeout
        )
    } else {
        let job = now
            .job_id
            .map_or("automatic restart".to_owned(), |id| format!("job {id}"));
        format!(
            "systemd's own {job} for {unit} was still running after verify_timeout ({}); {unit} is {}: selfheal started no second one. Look at what its start waits for (ExecStartPre=, a mount, a lock): systemctl status {unit}",
            service.verify_timeout,
            now.state()
        )
    }
}

/// A FAILED run is not final: it opens (or continues) an episode whose timed retry tries again
/// after `retry_after`, doubling, and says so in the report.
fn retry_after_failure(
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

/// systemd already has a job queued or an automatic restart pending: let it finish rather
/// than race it, then look again.
/// Still acting at the deadline is `SystemdError::Timeout`.
fn wait_for_systemd(
    systemd: &dyn UnitControl,
    unit: &str,
    timeout: Duration,
) -> Result<UnitSnapshot, SystemdError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        systemd.wait_for_job(unit, left)?;
        let snapshot = systemd.snapshot(unit)?;
        if !snapshot.systemd_is_acting() {
            return Ok(snapshot);
        }
        if left.is_zero() {
            return Err(SystemdError::Timeout(timeout));
        }
        // auto-restart has no job until RestartSec= passes; poll until it does.
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Logs, records and returns the run's facts (records nothing on a dry run).
fn finish(state: &StateDir, service: &str, facts: RunFacts, options: RunOptions) -> RunFacts {
    tracing::info!(
        selfheal_service = %service,
        selfheal_outcome = %facts.outcome,
        selfheal_healed_by = facts.healed_by.as_deref().unwrap_or(""),
        "{} {} in {} ms",
        service,
        facts.outcome,
        facts.duration_ms
    );
    if !options.dry_run {
        let record = HistoryRecord {
            service: service.to_owned(),
            outcome: facts.outcome,
            started_at: facts.started_at,
            duration_ms: facts.duration_ms,
            healed_by: facts.healed_by.clone(),
            summary: facts
                .diagnosis
                .as_ref()
                .map(|d| d.summary.clone())
                .unwrap_or_default(),
            manual: options.manual,
            relapse: facts.relapse,
            restarts: 0,
        };
        // Recording never blocks telling: the report is still printed and mailed, and only
        // this history line is lost (loop protection then undercounts by one run).
        if let Err(err) = state.append_history(&record) {
            tracing::error!(
                selfheal_service = %service,
                "this run could not be recorded in history.jsonl: {err}"
            );
        }
    }
    facts
}

/// When the run started, for `started_at` and `duration_ms`.
struct RunClock {
    wall: SystemTime,
    monotonic: Instant,
}

impl RunClock {
    fn start() -> RunClock {
        RunClock {
            wall: SystemTime::now(),
            monotonic: Instant::now(),
        }
    }

    fn elapsed_us(&self) -> u128 {
        self.monotonic.elapsed().as_micros()
    }

    fn facts(&self, outcome: Outcome, options: RunOptions) -> RunFacts {
        RunFacts {
            outcome,
            started_at: Timestamp::millis(self.wall),
            duration_ms: u64::try_from(self.monotonic.elapsed().as_millis()).unwrap_or(u64::MAX),
            diagnosis: None,
            steps: Vec::new(),
            healed_by: None,
            reason: None,
            post_status: None,
            dry_run: options.dry_run,
            recovered: None,
            relapse: false,
            episode_reported: false,
            all_clear: None,
        }
    }
}

impl RunFacts {
    fn diagnosis(mut self, diagnosis: Diagnosis) -> RunFacts {
        self.diagnosis = Some(diagnosis);
        self
    }

    fn reason(mut self, reason: String) -> RunFacts {
        self.reason = Some(reason);
        self
    }
}

#[cfg(test)]
mod tests {
    //! `run`'s branches against a scripted systemd and an empty journal: the decisions, in
    //! milliseconds and without root. `tests/run.rs` proves them against a real systemd.

    use std::path::Path;

    use crate::report::{Report, ReportHeader};

    use super::*;
    use crate::host::journal::{JournalLine, PendingJournal};
    use crate::state::HistoryRecord;
    use crate::systemd::fake::{FakeJob, FakeSystemd, unit};

    struct NoJournal;

    impl JournalSource for NoJournal {
        fn start(&self, _unit: &str, _invocation_id: Option<&str>) -> PendingJournal {
            PendingJournal::ready(Vec::new())
        }
        fn read_invocation(
            &self,
            _unit: &str,
            _invocation_id: &str,
            _pending: Option<PendingJournal>,
            _timeout: Duration,
        ) -> Vec<JournalLine> {
            Vec::new()
        }
    }

    fn config() -> Config {
        Config::parse(
            "failure_threshold: 2\nmonitored_services:\n  - name: web\n    verify_timeout: 300ms\n    stable_for: 20ms\n",
            Path::new("test.yml"),
        )
        .unwrap()
    }

    fn run_against(systemd: &FakeSystemd, state: &StateDir, dry_run: bool) -> Report {
        let options = RunOptions {
            dry_run,
            ignore_monitor_facts: true,
            manual: false,
            from_hook: true,
        };
        run_with(&config(), systemd, state, options)
    }

    /// Why the run stopped where it did ("" without a reason).
    fn reason(report: &Report) -> &str {
        report.facts.reason.as_deref().unwrap_or_default()
    }

    /// `run` of the config's first service against `systemd` and no journal.
    fn run_with(
        config: &Config,
        systemd: &FakeSystemd,
        state: &StateDir,
        options: RunOptions,
    ) -> Report {
        let connect = || Ok(systemd);
        let host = Host {
            connect: &connect,
            journal: &NoJournal,
        };
        let service = &config.monitored_services[0];
        let facts = run(config, state, service, options, &host).unwrap();
        Report::new(ReportHeader::new(config, service), facts)
    }

    /// A unit that failed, and whose restart job fails too.
    fn failing() -> FakeSystemd {
        FakeSystemd::new(
            unit("failed", "failed", "a"),
            FakeJob::Ended("failed"),
            vec![],
        )
    }

    /// A failed unit that a restart heals (a run that ends `resolved`).
    fn healing() -> FakeSystemd {
        FakeSystemd::new(
            unit("failed", "failed", "a"),
            FakeJob::Done,
            vec![unit("active", "running", "b")],
        )
    }

    fn state() -> (tempfile::TempDir, StateDir) {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        (dir, state)
    }

    #[test]
    fn a_healthy_service_is_left_alone() {
        let (_dir, state) = state();
        let systemd = FakeSystemd::new(unit("active", "running", "a"), FakeJob::Done, vec![]);
        let report = run_against(&systemd, &state, false);
        assert_eq!(report.facts.outcome, Outcome::Healthy);
        assert!(systemd.calls().is_empty());
        assert_eq!(state.history().unwrap()[0].outcome, Outcome::Healthy);
        // A dry run on a healthy service says it is healthy, not "stopped cleanly".
        let dry = run_against(&systemd, &state, true);
        let diagnosis = dry.facts.diagnosis.as_ref().unwrap();
        assert_eq!(
            diagnosis.summary,
            "web.service is active/running (Result=success): nothing failed"
        );
        assert!(
            diagnosis.root_cause.starts_with("Nothing failed"),
            "{diagnosis:?}"
        );
        let text = crate::report::Renderer::new(None).text(&dry).unwrap();
        assert!(!text.contains("WHAT FAILED"), "{text}");
        assert!(text.contains("STATE"), "{text}");
    }

    /// The hook's facts of an earlier invocation (kept by systemd on the heal unit, seen by a
    /// start of its retry timer) describe nothing of the unit now.
    #[test]
    fn the_hooks_facts_count_only_for_the_invocation_they_describe() {
        let facts = |id: Option<&str>| MonitorFacts {
            result: "signal".into(),
            exit_code: "killed".into(),
            exit_status: "KILL".into(),
            invocation_id: id.map(str::to_owned),
        };
        let now = unit("failed", "failed", "b");
        assert!(describing(Some(facts(Some("a"))), &now).is_none());
        assert!(describing(Some(facts(Some("b"))), &now).is_some());
        assert!(describing(Some(facts(None)), &now).is_some());
    }

    #[test]
    fn a_restart_systemd_already_runs_is_awaited_not_raced() {
        let (_dir, state) = state();
        let mut restarting = unit("activating", "auto-restart", "a");
        restarting.job_id = Some(7);
        let systemd = FakeSystemd::scripted(
            vec![restarting, unit("active", "running", "b")],
            FakeJob::Done,
        );
        let report = run_against(&systemd, &state, false);
        assert_eq!(report.facts.outcome, Outcome::RestartedBySystemd);
        assert!(
            reason(&report).contains("systemd's own Restart= brought web.service back"),
            "{report:?}"
        );
        assert!(
            systemd.calls().is_empty(),
            "no restart of our own: {:?}",
            systemd.calls()
        );
    }

    #[test]
    fn a_failed_service_is_healed_and_recorded() {
        let (_dir, state) = state();
        let systemd = FakeSystemd::new(
            unit("failed", "failed", "a"),
            FakeJob::Done,
            vec![unit("active", "running", "b")],
        );
        let report = run_against(&systemd, &state, false);
        assert_eq!(report.facts.outcome, Outcome::Resolved);
        assert_eq!(report.facts.healed_by.as_deref(), Some("service_restart"));
        let history: Vec<HistoryRecord> = state.history().unwrap();
        assert_eq!(history[0].healed_by.as_deref(), Some("service_restart"));
    }

    #[test]
    fn a_service_that_stays_down_is_escalated_with_the_reason() {
        let (_dir, state) = state();
        let systemd = failing();
        let report = run_against(&systemd, &state, false);
        assert_eq!(report.facts.outcome, Outcome::Failed);
        assert!(
            reason(&report).contains("restart job ended `failed`"),
            "{report:?}"
        );
        assert!(!report.manual_steps.is_empty());
    }

    #[test]
    fn loop_protection_stops_at_the_threshold_without_acting() {
        let (_dir, state) = state();
        for _ in 0..2 {
            assert_eq!(
                run_against(&healing(), &state, false).facts.outcome,
                Outcome::Resolved
            );
        }
        let third = failing();
        let report = run_against(&third, &state, false);
        assert_eq!(report.facts.outcome, Outcome::Suppressed);
        assert!(reason(&report).contains("loop protection"));
        // Nothing is restarted; one retry is scheduled, after the default retry_after.
        assert_eq!(
            third.calls(),
            ["start_later selfheal@web.timer 900s"],
            "{report:?}"
        );
    }

    /// Runs `web` until loop protection stops it (threshold 2), returning the suppressed run's
    /// systemd.
    fn suppress(state: &StateDir) -> FakeSystemd {
        for _ in 0..2 {
            run_against(&healing(), state, false);
        }
        let stopped = failing();
        let report = run_against(&stopped, state, false);
        assert_eq!(report.facts.outcome, Outcome::Suppressed);
        stopped
    }

    /// Makes the episode's scheduled retry due now, as its timer would.
    fn make_retry_due(state: &StateDir) {
        let mut episode = state.episode("web").unwrap().expect("an episode");
        episode.next_retry_at = Some(Timestamp::now());
        state.save_episode("web", &episode).unwrap();
    }

    #[test]
    fn a_suppressed_service_keeps_its_retry_time_and_its_timer_is_set_again() {
        let (_dir, state) = state();
        suppress(&state);
        let episode = state.episode("web").unwrap().expect("an episode began");
        assert_eq!(episode.retries, 0);
        assert!(episode.next_retry_at.is_some());
        let again = failing();
        let report = run_against(&again, &state, false);
        assert_eq!(report.facts.outcome, Outcome::Suppressed);
        // The same time, not a later one; the timer set again (a reboot loses it).
        assert_eq!(state.episode("web").unwrap().unwrap(), episode);
        let calls = again.calls();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert!(
            calls[0].starts_with("start_later selfheal@web.timer 89"),
            "{calls:?}"
        );
        assert!(
            reason(&report).contains("selfheal tries again at"),
            "{report:?}"
        );
    }

    #[test]
    fn a_due_retry_that_heals_reports_recovered_and_one_that_fails_doubles_the_wait() {
        let (_dir, state) = state();
        suppress(&state);
        make_retry_due(&state);
        let report = run_against(&failing(), &state, false);
        assert_eq!(report.facts.outcome, Outcome::Failed);
        assert!(
            reason(&report).contains("timed retry of loop protection: selfheal tries again at"),
            "{report:?}"
        );
        let episode = state.episode("web").unwrap().unwrap();
        assert_eq!(episode.retries, 1);

        make_retry_due(&state);
        let healing = FakeSystemd::new(
            unit("failed", "failed", "a"),
            FakeJob::Done,
            vec![unit("active", "running", "b")],
        );
        let report = run_against(&healing, &state, false);
        assert_eq!(report.facts.outcome, Outcome::Resolved);
        let recovered = report.facts.recovered.as_ref().expect("RECOVERED");
        assert_eq!(recovered.failures, 3);
        assert!(
            state
                .episode("web")
                .unwrap()
                .unwrap()
                .recovered_at
                .is_some(),
            "RECOVERED: the episode is watched until it stays healthy"
        );
        let subject = crate::report::Renderer::new(None).subject(&report).unwrap();
        assert!(
            subject.contains("web - RECOVERED after 3 failures since"),
            "{subject}"
        );
    }

    /// A service that dies minutes after each recovery gets fewer and fewer restarts and one
    /// mail per back-off step: RECOVERED keeps the episode open (watched), a relapse within
    /// `new_incident_after` is the next step, told at once, and its retry waits twice as long.
    #[test]
    fn a_relapse_after_recovered_continues_the_episode_with_a_doubled_wait() {
        let (_dir, state) = state();
        suppress(&state);
        make_retry_due(&state);
        let report = run_against(&healing(), &state, false);
        assert!(report.facts.recovered.is_some(), "{report:?}");
        assert!(crate::notify::email::worth_mailing(&report));
        let watched = state
            .episode("web")
            .unwrap()
            .expect("watched after RECOVERED");
        assert!(watched.recovered_at.is_some(), "{watched:?}");
        assert_eq!(watched.next_retry_at, None);

        let relapse = failing();
        let report = run_against(&relapse, &state, false);
        assert_eq!(report.facts.outcome, Outcome::Suppressed, "{report:?}");
        assert!(report.facts.relapse);
        assert!(
            crate::notify::email::worth_mailing(&report),
            "the relapse begins the next back-off step: the owner hears of it now"
        );
        assert!(reason(&report).contains("failed again"), "{report:?}");
        assert_eq!(
            relapse.calls(),
            ["start_later selfheal@web.timer 1800s"],
            "nothing restarted; the retry after twice the wait"
        );
        let episode = state.episode("web").unwrap().unwrap();
        assert_eq!((episode.recovered_at, episode.relapses), (None, 1));

        make_retry_due(&state);
        let report = run_against(&healing(), &state, false);
        let recovered = report.facts.recovered.as_ref().expect("RECOVERED again");
        assert_eq!(recovered.relapses, 1);
        assert_eq!(state.episode("web").unwrap().unwrap().retries, 2);
        let renderer = crate::report::Renderer::new(None);
        let text = renderer.text(&report).unwrap();
        assert!(
            text.contains("Relapses:  it failed again 1 time after recovering"),
            "{text}"
        );
        assert!(
            renderer
                .html(&report)
                .unwrap()
                .contains("once it stays healthy for 10m"),
            "html"
        );
    }

    #[test]
    fn an_episode_ends_once_the_service_has_stayed_healthy_for_threshold_window() {
        let (_dir, state) = state();
        let long_ago = SystemTime::now() - Duration::from(config().threshold_window);
        state
            .save_episode(
                "web",
                &crate::state::Episode {
                    suppressed_at: "2026-11-28T08:00:00Z".parse().unwrap(),
                    retries: 3,
                    next_retry_at: None,
                    recovered_at: Some(Timestamp::seconds(long_ago)),
                    relapses: 0,
                },
            )
            .unwrap();
        // A failure now is a new one: healed as a first failure, mailed, no episode.
        let report = run_against(&healing(), &state, false);
        assert_eq!(report.facts.outcome, Outcome::Resolved, "{report:?}");
        assert!(report.facts.recovered.is_none());
        assert!(!report.facts.relapse);
        assert!(state.episode("web").unwrap().is_none());
    }

    /// The retry's timer fired during a quiet run of the episode: systemd merged that start
    /// into the running heal unit, so the run that ends finds the retry due and makes it.
    #[test]
    fn a_retry_that_came_due_during_a_run_is_not_lost() {
        let (_dir, state) = state();
        let service = &config().monitored_services[0];
        assert!(!retry_came_due(&state, service), "no episode");
        suppress(&state);
        assert!(!retry_came_due(&state, service), "due in 15 min");
        make_retry_due(&state);
        assert!(retry_came_due(&state, service));
        // Made: the next is scheduled later, so the run ends there.
        run_against(&failing(), &state, false);
        assert!(!retry_came_due(&state, service));
    }

    #[test]
    fn a_failed_retry_schedules_the_next_after_twice_the_wait() {
        let (_dir, state) = state();
        suppress(&state);
        make_retry_due(&state);
        let retried = failing();
        run_against(&retried, &state, false);
        assert!(
            retried
                .calls()
                .contains(&"start_later selfheal@web.timer 1800s".to_owned()),
            "{:?}",
            retried.calls()
        );
    }

    #[test]
    fn a_due_retry_is_made_even_when_older_runs_have_left_the_window() {
        let (_dir, state) = state();
        state
            .save_episode(
                "web",
                &crate::state::Episode {
                    retries: 3,
                    next_retry_at: Some("2026-11-28T12:00:00Z".parse().unwrap()),
                    ..crate::state::Episode::opened("2026-11-28T08:00:00Z".parse().unwrap())
                },
            )
            .unwrap();
        // No run in the window: loop protection alone would heal it as a first failure.
        let retried = failing();
        let report = run_against(&retried, &state, false);
        assert_eq!(report.facts.outcome, Outcome::Failed);
        assert!(
            reason(&report).contains("timed retry of loop protection"),
            "{report:?}"
        );
        let episode = state.episode("web").unwrap().expect("the episode goes on");
        assert_eq!(episode.retries, 4);
        assert!(
            retried.calls().contains(&format!(
                "start_later selfheal@web.timer {}s",
                episode::RETRY_CAP.as_secs()
            )),
            "{:?}",
            retried.calls()
        );
    }

    #[test]
    fn a_run_that_finds_the_service_healthy_watches_the_episode() {
        let (_dir, state) = state();
        suppress(&state);
        let healthy = FakeSystemd::new(unit("active", "running", "a"), FakeJob::Done, vec![]);
        assert_eq!(
            run_against(&healthy, &state, false).facts.outcome,
            Outcome::Healthy
        );
        let episode = state.episode("web").unwrap().expect("watched");
        assert!(episode.is_watching() && episode.next_retry_at.is_none());
    }

    #[test]
    fn a_person_at_a_terminal_always_heals_and_resets_loop_protection() {
        let (_dir, state) = state();
        suppress(&state);
        let healing = FakeSystemd::new(
            unit("failed", "failed", "a"),
            FakeJob::Done,
            vec![unit("active", "running", "b")],
        );
        let manual = RunOptions {
            manual: true,
            ignore_monitor_facts: true,
            ..RunOptions::default()
        };
        let report = run_with(&config(), &healing, &state, manual);
        assert_eq!(report.facts.outcome, Outcome::Resolved);
        assert!(state.episode("web").unwrap().is_none(), "the episode ended");
        // The automatic runs after it start counting from zero.
        let report = run_against(&failing(), &state, false);
        assert_eq!(report.facts.outcome, Outcome::Failed);
    }

    #[test]
    fn with_retry_after_never_nothing_is_scheduled() {
        let (_dir, state) = state();
        let config = Config::parse(
            "failure_threshold: 1\nretry_after: never\nmonitored_services:\n  - name: web\n    verify_timeout: 300ms\n    stable_for: 20ms\n",
            Path::new("test.yml"),
        )
        .unwrap();
        let options = RunOptions {
            ignore_monitor_facts: true,
            ..RunOptions::default()
        };
        for expected in [Outcome::Failed, Outcome::Suppressed] {
            let systemd = failing();
            let report = run_with(&config, &systemd, &state, options);
            assert_eq!(report.facts.outcome, expected);
            if expected == Outcome::Suppressed {
                assert!(systemd.calls().is_empty(), "{:?}", systemd.calls());
                assert!(reason(&report).contains("retry_after is never"));
            }
        }
    }

    #[test]
    fn a_dry_run_changes_nothing_and_records_nothing() {
        let (_dir, state) = state();
        let systemd = FakeSystemd::new(unit("failed", "failed", "a"), FakeJob::Done, vec![]);
        let report = run_against(&systemd, &state, true);
        assert_eq!(report.facts.outcome, Outcome::Planned);
        assert!(systemd.calls().is_empty());
        assert!(state.history().unwrap().is_empty());
    }

    #[test]
    fn a_run_that_finds_the_lock_taken_yields_without_the_bus() {
        let (_dir, state) = state();
        let _held = state.try_lock("web").unwrap().unwrap();
        let config = config();
        let connect = || -> Result<&FakeSystemd, SystemdError> { panic!("connected to the bus") };
        let host = Host {
            connect: &connect,
            journal: &NoJournal,
        };
        let facts = run(
            &config,
            &state,
            &config.monitored_services[0],
            RunOptions::default(),
            &host,
        )
        .unwrap();
        assert_eq!(facts.outcome, Outcome::Suppressed);
    }

    #[test]
    fn a_dry_run_says_when_loop_protection_would_stop_the_real_run() {
        let (_dir, state) = state();
        for _ in 0..2 {
            run_against(&healing(), &state, false);
        }
        let dry = failing();
        let report = run_against(&dry, &state, true);
        assert_eq!(report.facts.outcome, Outcome::Suppressed);
        assert_eq!(
            report.facts.outcome.exit_code(),
            crate::exit_code::ExitCode::Suppressed
        );
        assert!(
            reason(&report).starts_with("a real run would stop: loop protection"),
            "{report:?}"
        );
        assert!(dry.calls().is_empty());
        assert_eq!(
            state.history().unwrap().len(),
            2,
            "a dry run records nothing"
        );
    }

    #[test]
    fn a_start_job_that_hangs_ends_failed_with_the_job_named_not_exit_4() {
        let (_dir, state) = state();
        let mut hanging = unit("activating", "start-pre", "a");
        hanging.job_id = Some(42);
        let systemd = FakeSystemd::scripted(vec![hanging], FakeJob::Done);
        let report = run_against(&systemd, &state, false);
        assert_eq!(report.facts.outcome, Outcome::Failed);
        let reason = reason(&report);
        assert!(
            reason.contains("job 42 for web.service was still running"),
            "{reason}"
        );
        assert!(reason.contains("activating/start-pre"), "{reason}");
        assert_eq!(
            systemd.calls(),
            ["start_later selfheal@web.timer 900s"],
            "no second start, only the retry of a FAILED run"
        );
        assert_eq!(state.history().unwrap()[0].outcome, Outcome::Failed);
    }

    #[test]
    fn a_failed_run_schedules_a_retry_and_the_failures_before_it_are_quiet() {
        let (_dir, state) = state();
        let first = failing();
        let report = run_against(&first, &state, false);
        assert_eq!(report.facts.outcome, Outcome::Failed);
        assert!(reason(&report).contains(". Not final: selfheal tries again at"));
        assert!(crate::notify::email::worth_mailing(&report));
        let episode = state
            .episode("web")
            .unwrap()
            .expect("FAILED opens an episode");
        assert!(episode.next_retry_at.is_some());

        // It fails again before the retry: part of the episode, no restart, no mail.
        let again = failing();
        let report = run_against(&again, &state, false);
        assert_eq!(report.facts.outcome, Outcome::Suppressed);
        assert!(!crate::notify::email::worth_mailing(&report), "{report:?}");
        assert!(reason(&report).contains("part of the episode since"));
        assert_eq!(
            again.calls().len(),
            1,
            "only the retry's timer: {:?}",
            again.calls()
        );
        assert!(again.calls()[0].starts_with("start_later selfheal@web.timer 89"));
        assert_eq!(
            state.episode("web").unwrap().unwrap(),
            episode,
            "its retry keeps its time"
        );
    }

    #[test]
    fn a_due_retry_leaves_a_unit_a_person_stopped_alone() {
        use crate::notify::channel::alerts::{Change, change_for};
        let (_dir, state) = state();
        let failed = run_against(&failing(), &state, false);
        assert!(matches!(
            change_for(&state, &failed, "web - FAILED"),
            Some(Change::Fire(_))
        ));
        make_retry_due(&state);
        let mut stopped = unit("inactive", "dead", "b");
        stopped.result = "success".into();
        // It ran again after the failure (a person started it), then was stopped.
        stopped.active_enter_timestamp_us = u64::try_from(
            (SystemTime::now() + Duration::from_secs(5))
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_micros(),
        )
        .unwrap();
        let systemd = FakeSystemd::new(stopped, FakeJob::Done, vec![]);
        let report = run_against(&systemd, &state, false);
        assert_eq!(report.facts.outcome, Outcome::Suppressed);
        assert!(systemd.calls().is_empty(), "{:?}", systemd.calls());
        assert!(reason(&report).contains("stopped on purpose"), "{report:?}");
        assert!(state.episode("web").unwrap().is_none());
        assert!(!crate::notify::email::worth_mailing(&report));
        // A person took it down: its alert ends, instead of being sent again for ever.
        assert!(
            matches!(
                change_for(&state, &report, "web - SUPPRESSED"),
                Some(Change::Resolve(_))
            ),
            "{report:?}"
        );
    }
}
