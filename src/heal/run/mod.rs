//! `selfheal run <service>`: one heal of one service, in five phases, each of which either
//! hands the next what it found or ends the run with its report:
//!
//! 1. **the service's lock** (`Run::lock`): another run healing it ends this one;
//! 2. **the first look** (`Run::first_look`): a service that serves is left alone, and when
//!    systemd's own `Restart=` is at work the run waits for it ([`follow`]);
//! 3. **the diagnosis** (`Run::diagnose`): systemd's facts, the failed run's journal, and what
//!    the host adds ([`host_facts`]);
//! 4. **loop protection** ([`loop_protection`]): the one hold decision, and its effects;
//! 5. **the heal** (`Run::heal`): what the service depends on first ([`upstream`]), then the
//!    strategy chain, verified, recorded (`heal::facts::finish`).

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use crate::config::{Config, ServiceConfig};
use crate::heal::HealError;
use crate::heal::diagnose::{Diagnosis, MonitorFacts};
use crate::heal::episode;
use crate::heal::facts::{PostStatus, RunClock, RunFacts, finish};
use crate::heal::strategy::{self, Context};
use crate::heal::verify::{self, HealthTarget};
use crate::host::journal::JournalSource;
use crate::outcome::Outcome;
use crate::state::alerts::FiringAlert;
use crate::state::{ServiceLock, StateDir, StateError};
use crate::systemd::{ActiveState, SystemdError, UnitControl, UnitSnapshot};
use crate::ui::terminal::SlowNotice;

mod alert;
mod evidence;
mod follow;
mod guard_turn;
mod host_facts;
mod loop_protection;
mod upstream;

use follow::{Followed, describing, follow_systemd, still_acting, systemd_restarting};
use host_facts::{full_disk, host_facts, kernel_oom, memory_hogs};
use loop_protection::{after_retry, retry_after_failure};
pub(crate) use loop_protection::{held_by_loop_protection, retry_came_due};
use upstream::upstream_problems;

/// The outside world a run acts on (the command gives systemd over the system bus, and
/// journald; the tests a scripted systemd). `connect` is called after the service lock is
/// taken (a run that yields to another never needs the bus).
pub(crate) struct Host<'a, U: UnitControl> {
    pub connect: &'a dyn Fn() -> Result<U, SystemdError>,
    pub journal: &'a dyn JournalSource,
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
        alert: None,
    };
    let _lock = match run.lock()? {
        ControlFlow::Continue(lock) => lock,
        ControlFlow::Break(report) => return Ok(report),
    };
    let run = Run {
        alert: alert::started_by(state, service, options),
        ..run
    };
    tracing::debug!("service lock taken");
    let mut asked_the_guard = false;
    let facts = run.phases(host, &mut asked_the_guard);
    // A run that ended before asking the host guard (up already, held by loop protection or a
    // plan) passes on a turn that was given to its service: the line must not wait for it.
    if !asked_the_guard && !options.dry_run && !options.manual {
        crate::heal::guard::pass_if_given(config, state, &service.name, host.connect);
    }
    facts
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
    /// The Alertmanager alert that started this run (`selfheal receive`), when one did.
    alert: Option<FiringAlert>,
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
    /// The phases after the lock (see `run`); `asked_the_guard` says whether the run got as far
    /// as the host guard.
    fn phases<U: UnitControl>(
        &self,
        host: &Host<'_, U>,
        asked_the_guard: &mut bool,
    ) -> Result<RunFacts, HealError> {
        let mut look = match self.first_look(host)? {
            ControlFlow::Continue(look) => look,
            ControlFlow::Break(report) => return Ok(report),
        };
        let diagnosis = self.diagnose(host, &mut look);
        let retry = match self.loop_protection(&look, &diagnosis)? {
            ControlFlow::Continue(retry) => retry,
            ControlFlow::Break(report) => return Ok(report),
        };
        *asked_the_guard = true;
        let guarded = match self.guard_turn(&look, &diagnosis) {
            ControlFlow::Continue(guarded) => guarded,
            ControlFlow::Break(report) => return Ok(report),
        };
        let mut facts = self.heal(host, &look, diagnosis, retry);
        if let Some(guarded) = guarded {
            self.hand_on(&look, guarded, &mut facts);
        }
        Ok(facts)
    }

    fn facts(&self, outcome: Outcome) -> RunFacts {
        self.clock.facts(outcome, self.options.dry_run)
    }

    /// The diagnosis as a report that restarts nothing tells it: with the kernel's account of
    /// an OOM kill, which a healing run reads only after acting.
    fn told<U>(look: &Look<U>, diagnosis: &Diagnosis) -> Diagnosis {
        kernel_oom(&look.snapshot, diagnosis.clone())
    }

    /// The run's report, recorded in history.
    fn end(&self, mut facts: RunFacts) -> RunFacts {
        facts.alert.clone_from(&self.alert);
        finish(self.state, &self.service.name, facts, self.options.manual)
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
        let (systemd, target, mut snapshot) = self.connect_and_look(host)?;
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
        let (probes_saw, probed) = if !waited && snapshot.is_active() {
            self.seen_by_others(&snapshot)
        } else {
            (None, false)
        };
        let not_serving = not_serving(followed, probes_saw.is_some(), &mut snapshot, &target);
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
        // A hang the probes found is no failure of systemd's: stale hook facts of the same
        // invocation (systemd keeps a unit's last activation details) would call it one.
        let monitor = describing(monitor, &snapshot).filter(|_| probes_saw.is_none());
        if monitor.is_none() {
            pending_journal = None;
        }
        let unhealthy = Some(not_serving)
            .filter(|_| snapshot.is_active())
            .map(|missing| match &probes_saw {
                Some(seen) => format!("active, but {seen}"),
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
            by_probes: probed,
        }))
    }

    /// Connects (after the lock: a run that yields never needs the bus) and takes the unit's
    /// snapshot.
    fn connect_and_look<U: UnitControl>(
        &self,
        host: &Host<'_, U>,
    ) -> Result<(U, HealthTarget, UnitSnapshot), HealError> {
        let asking = SlowNotice::new("waiting for systemd to answer on the D-Bus system bus");
        let systemd = (host.connect)()?;
        tracing::debug!(
            "connected to the system bus after {} µs",
            self.clock.elapsed_us()
        );
        let target = HealthTarget::of(self.config, self.service);
        let snapshot = systemd.snapshot(&self.unit)?;
        drop(asking);
        tracing::debug!("unit snapshot after {} µs", self.clock.elapsed_us());
        Ok((systemd, target, snapshot))
    }

    /// What the probes saw, else what an alert says, of a unit that is active: the evidence
    /// that it does not serve; and whether it was the probes'.
    fn seen_by_others(&self, snapshot: &UnitSnapshot) -> (Option<String>, bool) {
        if let Some(seen) = self.probes_saw(snapshot) {
            return (Some(format!("the probes saw it fail: {seen}")), true);
        }
        (alert::seen(self.alert.as_ref(), snapshot), false)
    }

    /// What the probes saw, when they started this run a moment ago on the instance still
    /// running: over several rounds, that is the evidence, and one more look (which may pass
    /// by chance, or take the whole timeout of a hang) adds nothing but its wait.
    fn probes_saw(&self, snapshot: &UnitSnapshot) -> Option<String> {
        let active_since =
            std::time::UNIX_EPOCH + Duration::from_micros(snapshot.active_enter_timestamp_us);
        crate::heal::probe::account_for_run(self.state, &self.service.name, active_since)
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
        let diagnosis = host_facts(self.service, diagnosis);
        tracing::info!(selfheal_service = %self.service.name, "diagnosis: {}", diagnosis.summary);
        diagnosis
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
        // An unlisted unit of `all_services:` without strategies: diagnosed and reported,
        // nothing changed (not even a monitored upstream unit healed on its behalf).
        let report_only = service.healing_strategies.is_empty();
        // What it depends on comes first: a monitored upstream unit that is down is healed (by
        // its own heal unit, or that run is awaited) before this one is restarted into the
        // same wall.
        let upstream = upstream_problems(
            config,
            systemd,
            &look.snapshot,
            &look.target,
            options,
            !report_only,
        );
        diagnosis = diagnosis.upstream(upstream.clone());

        let order = strategy::plan(&service.healing_strategies, &diagnosis);
        // What its processes are doing dies with them: taken before anything acts on them.
        // The values the config names as secrets: no command line or quote shows them.
        let hidden = strategy::env_file_secrets(service, &look.snapshot);
        let mut evidence = (!report_only)
            .then(|| evidence::capture(service, &look.snapshot, &hidden))
            .flatten();
        let hung = evidence::hung(look.by_probes, &look.snapshot, look.unhealthy.as_deref());
        let before_restart = std::cell::RefCell::new(strategy::BeforeRestart::new(hung, service));
        let context = Context {
            service,
            diagnosis: &diagnosis,
            snapshot: &look.snapshot,
            units: systemd,
            target: &look.target,
            dry_run: options.dry_run,
            before_restart: &before_restart,
        };
        // A full file system is not healed by restarting into it: a person frees space.
        let chain = match &diagnosis.full_disk {
            _ if report_only => strategy::ChainResult::default(),
            Some(_) if look.unhealthy.is_none() => strategy::ChainResult {
                escalation: Some(diagnosis.root_cause.clone()),
                ..strategy::ChainResult::default()
            },
            _ => strategy::run_chain(&order, &context),
        };
        if let Some(left) = before_restart.into_inner().left {
            evidence
                .get_or_insert_with(crate::host::evidence::Evidence::not_taken)
                .left = Some(left);
        }
        let diagnosis = self.after_acting(host, look, diagnosis, upstream, &mut evidence, &hidden);
        let outcome = match (options.dry_run, chain.healed_by) {
            (true, _) => Outcome::Planned,
            (false, Some(_)) => Outcome::Resolved,
            (false, None) if report_only => Outcome::Reported,
            (false, None) => Outcome::Failed,
        };
        let post = systemd.snapshot(&self.unit).ok();
        let reason = if report_only {
            Some(format!(
                "{} is not in monitored_services and all_services: lists no healing_strategies, so selfheal diagnosed and reported it and changed nothing",
                self.unit
            ))
        } else {
            chain.escalation.clone().or_else(|| {
                (outcome == Outcome::Failed)
                    .then(|| still_down(&self.unit, post.as_ref(), &chain, &diagnosis))
            })
        };
        let mut facts = self.facts(outcome).diagnosis(diagnosis);
        facts.steps = chain.steps;
        facts.healed_by = chain.healed_by.map(|name| name.to_string());
        facts.reason = reason;
        facts.post_status = post.as_ref().map(PostStatus::from);
        facts.evidence = evidence;
        if report_only {
            // Nothing to retry: a retry would report the same failure again.
        } else if let Some((episode, failures)) = retry.filter(|_| !options.dry_run) {
            after_retry(
                config, state, systemd, service, episode, failures, &mut facts,
            );
        } else {
            retry_after_failure(config, state, systemd, service, &mut facts);
        }
        self.end(facts)
    }
}

impl Run<'_> {
    /// What is read after acting, since it does not change what runs first: the failed run's
    /// journal (unless it was read before), what held the memory after an OOM kill, the core
    /// of a crash, what the main process left when asked with a signal; and the root cause of
    /// a hang as the evidence taken before the restart tells it.
    fn after_acting<U: UnitControl>(
        &self,
        host: &Host<'_, U>,
        look: &Look<U>,
        mut diagnosis: Diagnosis,
        upstream: Vec<crate::heal::diagnose::Upstream>,
        evidence: &mut Option<crate::host::evidence::Evidence>,
        hidden: &[String],
    ) -> Diagnosis {
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
        diagnosis = kernel_oom(&look.snapshot, diagnosis);
        diagnosis.memory_hogs = memory_hogs(&look.snapshot, &diagnosis);
        diagnosis.core = evidence::crash_core(&diagnosis, &look.snapshot);
        if let Some(left) = evidence.as_mut().and_then(|taken| taken.left.as_mut()) {
            evidence::cite(host.journal, hidden, &look.snapshot, left);
        }
        diagnosis.before_the_restart(evidence.as_ref())
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

/// What is wrong with the unit after the first look (`None`: it serves). After systemd's own
/// restart (`followed`) it was verified over time, as after our own restart, and `snapshot`
/// becomes the unit as systemd left it; when the probes saw it fail, that is the answer;
/// otherwise one look decides ("port 5002 is not listening"; empty: it is down).
fn not_serving(
    followed: Option<Followed>,
    probes_saw: bool,
    snapshot: &mut UnitSnapshot,
    target: &HealthTarget,
) -> Option<String> {
    match followed {
        Some(Followed::Up { now, problem }) => {
            *snapshot = now;
            problem
        }
        Some(Followed::Down(now)) => {
            *snapshot = now;
            Some(String::new())
        }
        None if probes_saw => Some(String::new()),
        Some(Followed::StillActing(_)) | None => verify::check_now(snapshot, target).err(),
    }
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

/// True when a run started by the OnFailure= hook healed the service, but it has failed again
/// since (while the report was printed and mailed). systemd merges that failure's OnFailure=
/// start into this still-running heal unit, so nobody else will heal it: the caller runs
/// again, and loop protection bounds how often.
pub(crate) fn failed_again_while_finishing<U: UnitControl>(
    facts: &RunFacts,
    service: &ServiceConfig,
    connect: impl FnOnce() -> Result<U, SystemdError>,
) -> Result<bool, HealError> {
    let from_hook = crate::heal::diagnose::started_by_hook();
    if !from_hook || facts.outcome != Outcome::Resolved {
        return Ok(false);
    }
    let unit = service.unit_name();
    let snapshot = connect()?.snapshot(&unit)?;
    let again = snapshot.is_down() && snapshot.active_state == ActiveState::Failed;
    if again {
        tracing::warn!(
            selfheal_service = %service.name,
            "{unit} failed again while its heal unit was finishing; healing it again"
        );
    }
    Ok(again)
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

#[cfg(test)]
mod tests;
