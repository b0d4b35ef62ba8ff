//! The strategy seam: one small trait, a registry, and the chain runner. The runner knows
//! nothing about any single strategy. Adding one is a file here (the `Strategy`), its name and
//! settings (with their load-time checks) in `config/strategies.rs`, and its line in
//! `registry` below, which the compiler asks for once the name exists.

mod before_restart;
mod config_validation;
mod database_check;
mod environment_check;
#[cfg(test)]
mod mock_tests;
mod port_conflict;
mod service_restart;

pub(crate) use crate::config::strategies::StrategyName;
pub(crate) use before_restart::BeforeRestart;
/// The env-file parser, for the fuzz target.
pub(crate) use environment_check::keys_with_values as env_file_keys;
pub(crate) use environment_check::required_values as env_file_secrets;

use std::time::{Duration, Instant};

use serde::Serialize;

use std::fmt;

use crate::config::ServiceConfig;
use crate::heal::diagnose::{Diagnosis, Symptom};
use crate::heal::verify::{self, HealthTarget};
use crate::systemd::{ActiveState, UnitControl, UnitSnapshot};

/// How one strategy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StepResult {
    /// The service is back and verified: stop, report RESOLVED.
    Healed,
    /// The strategy does not apply to this failure: next one.
    NotApplicable,
    /// It applied and acted, but the service is still not healthy: next one.
    NoFix,
    /// Only a person can fix this: stop the chain and escalate.
    NeedsHuman,
    /// Dry run: this is what it would do.
    Planned,
}

impl StepResult {
    /// The one spelling of a result in JSON, logs and history; reports show it upper-cased
    /// with spaces (`NOT APPLICABLE`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StepResult::Healed => "healed",
            StepResult::NotApplicable => "not_applicable",
            StepResult::NoFix => "no_fix",
            StepResult::NeedsHuman => "needs_human",
            StepResult::Planned => "planned",
        }
    }
}

impl fmt::Display for StepResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of the chain, as reports and `--json` show it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Step {
    pub strategy: StrategyName,
    /// What it did (or would do), in words.
    pub action: String,
    pub result: StepResult,
    /// Evidence: what was found and checked.
    pub detail: String,
    /// Every change made on the host (or, on a dry run, that would be made), one per entry.
    pub changes: Vec<String>,
    pub duration_ms: u64,
}

/// What a strategy returns; the runner adds name and duration.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    pub result: StepResult,
    pub action: String,
    pub detail: String,
    pub changes: Vec<String>,
}

impl Attempt {
    pub(crate) fn new(
        result: StepResult,
        action: impl Into<String>,
        detail: impl Into<String>,
    ) -> Attempt {
        Attempt {
            result,
            action: action.into(),
            detail: detail.into(),
            changes: Vec::new(),
        }
    }

    /// Records the changes this attempt made.
    pub(crate) fn with_changes(mut self, changes: Vec<String>) -> Attempt {
        self.changes = changes;
        self
    }
}

/// Everything a strategy may look at or act through.
pub(crate) struct Context<'a> {
    pub service: &'a ServiceConfig,
    pub diagnosis: &'a Diagnosis,
    /// The unit as selfheal found it (cgroup, ExecStart=, EnvironmentFile=, …).
    pub snapshot: &'a UnitSnapshot,
    pub units: &'a dyn UnitControl,
    pub target: &'a HealthTarget,
    /// Decide and describe, change nothing.
    pub dry_run: bool,
    /// What the first restart does before it (the service's evidence signal, the end of a
    /// hang), and what came of it.
    pub before_restart: &'a std::cell::RefCell<BeforeRestart>,
}

/// A healing strategy.
pub(crate) trait Strategy: Sync {
    /// What would make this strategy fail on this host at run time although the config is
    /// valid (a validator that is not installed, an owner that does not exist): what
    /// `selfheal check` reports, like `nginx -t`. Each problem names its key.
    fn preflight(&self, _service: &ServiceConfig) -> Vec<String> {
        Vec::new()
    }

    /// How long this strategy may take for `service` besides the restart and verification
    /// (a validator's timeout, a holder's grace): for the heal unit's `TimeoutStartSec=`.
    fn extra_time(&self, _service: &ServiceConfig) -> Duration {
        Duration::ZERO
    }

    /// Looks at the diagnosis, acts if it applies, and says how it ended.
    fn attempt(&self, context: &Context<'_>) -> Attempt;
}

/// The implementation of a strategy name.
fn registry(name: StrategyName) -> &'static dyn Strategy {
    match name {
        StrategyName::ServiceRestart => &service_restart::ServiceRestart,
        StrategyName::PortConflict => &port_conflict::PortConflict,
        StrategyName::ConfigValidation => &config_validation::ConfigValidation,
        StrategyName::DatabaseCheck => &database_check::DatabaseCheck,
        StrategyName::EnvironmentCheck => &environment_check::EnvironmentCheck,
    }
}

/// The longest `service`'s chain can take: each strategy's own time plus a restart and a full
/// verification after it.
pub(crate) fn worst_case(service: &ServiceConfig) -> Duration {
    let verify = Duration::from(service.verify_timeout);
    service
        .healing_strategies
        .iter()
        .map(|name| verify + registry(*name).extra_time(service))
        .sum()
}

/// What would fail at run time for `service`'s listed strategies on this host.
pub(crate) fn preflight(service: &ServiceConfig) -> Vec<String> {
    service
        .healing_strategies
        .iter()
        .flat_map(|name| registry(*name).preflight(service))
        .collect()
}

/// What the chain achieved.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChainResult {
    pub steps: Vec<Step>,
    /// The strategy that healed the service.
    pub healed_by: Option<StrategyName>,
    /// Why a person is needed, when a strategy said so.
    pub escalation: Option<String>,
}

/// The order strategies actually run in: the configured order, except that evidence in the
/// diagnosis may move the strategy that matches it to the front (an "Address already in use"
/// goes to `port_conflict` before another blind restart).
pub(crate) fn plan(configured: &[StrategyName], diagnosis: &Diagnosis) -> Vec<StrategyName> {
    let mut order = configured.to_vec();
    let preferred = diagnosis
        .symptoms
        .iter()
        .find_map(|symptom| promoted_by(*symptom))
        .filter(|name| order.contains(name));
    if let Some(name) = preferred {
        order.retain(|n| *n != name);
        order.insert(0, name);
    }
    order
}

/// The strategy that evidence of `symptom` moves to the front of the chain.
fn promoted_by(symptom: Symptom) -> Option<StrategyName> {
    match symptom {
        Symptom::AddressInUse => Some(StrategyName::PortConflict),
        Symptom::PermissionDenied | Symptom::MissingFile => Some(StrategyName::DatabaseCheck),
        Symptom::OutOfMemory | Symptom::DiskFull => None,
    }
}

/// Whether journal evidence could change what runs first. When it cannot, healing need not
/// wait for the journal: it is read in parallel, for the report.
pub(crate) fn evidence_can_reorder(configured: &[StrategyName]) -> bool {
    Symptom::ALL
        .into_iter()
        .filter_map(promoted_by)
        .any(|name| configured.contains(&name) && configured.first() != Some(&name))
}

/// Runs the strategies in order until one heals the service or asks for a human.
pub(crate) fn run_chain(order: &[StrategyName], context: &Context<'_>) -> ChainResult {
    let mut chain = ChainResult::default();
    for &name in order {
        let started = Instant::now();
        let attempt = registry(name).attempt(context);
        tracing::info!(strategy = %name, result = %attempt.result, "{}: {}", attempt.action, attempt.detail);
        chain.steps.push(Step {
            strategy: name,
            action: attempt.action,
            result: attempt.result,
            detail: attempt.detail.clone(),
            changes: attempt.changes,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
        match attempt.result {
            StepResult::Healed => {
                chain.healed_by = Some(name);
                break;
            }
            StepResult::NeedsHuman => {
                chain.escalation = Some(attempt.detail);
                break;
            }
            StepResult::NotApplicable | StepResult::NoFix | StepResult::Planned => {}
        }
    }
    chain
}

/// The end of a strategy that checked or repaired something: restart + verify, reported as one
/// step whose action and detail say what was done first and whose changes list each repair.
pub(crate) fn then_restart(
    context: &Context<'_>,
    first: &str,
    found: &str,
    changes: Vec<String>,
) -> Attempt {
    let restart = restart_and_verify(context);
    let action = if context.dry_run {
        format!("would {first}, then restart and verify")
    } else {
        format!("{first}, then restart and verify")
    };
    Attempt::new(
        restart.result,
        action,
        format!("{found}; {}", restart.detail),
    )
    .with_changes(changes)
}

/// The common end of every fix: reset a failed / start-limit-hit unit, restart it, await the
/// job, verify. Strategies call this after their own repair.
pub(crate) fn restart_and_verify(context: &Context<'_>) -> Attempt {
    let unit = &context.target.unit;
    let action = format!("restart {unit} and verify");
    if context.dry_run {
        return Attempt::new(
            StepResult::Planned,
            format!("would {action}"),
            format!(
                "would {}reset-failed and restart {unit}, then verify within {:?}",
                context.before_restart.borrow().plan(
                    unit,
                    context.snapshot.is_active() && context.snapshot.main_pid > 1
                ),
                context.target.timeout
            ),
        );
    }
    let started = Instant::now();
    let mut detail = context.before_restart.borrow_mut().act(context.units, unit);
    if context.diagnosis.active_state == ActiveState::Failed
        || context.diagnosis.result == "start-limit-hit"
    {
        match context.units.reset_failed(unit) {
            Ok(()) => detail.push("reset-failed".to_owned()),
            Err(err) => {
                return Attempt::new(
                    StepResult::NoFix,
                    action,
                    format!("reset-failed failed: {err}"),
                );
            }
        }
    }
    tracing::debug!("restarting {unit}");
    let restart = context.units.restart(unit, context.target.timeout);
    tracing::debug!("restart job of {unit} done");
    match restart {
        Ok(job) if job.is_done() => detail.push(format!(
            "restart job done after {} ms",
            started.elapsed().as_millis()
        )),
        Ok(job) => {
            detail.push(format!("restart job ended `{}`", job.0));
            return Attempt::new(StepResult::NoFix, action, detail.join("; "));
        }
        Err(err) => {
            detail.push(format!("restart failed: {err}"));
            return Attempt::new(StepResult::NoFix, action, detail.join("; "));
        }
    }
    let verification = verify::verify(context.units, context.target, started);
    detail.push(verification.detail);
    let result = if verification.healthy {
        StepResult::Healed
    } else {
        StepResult::NoFix
    };
    Attempt::new(result, action, detail.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::systemd::UnitSnapshot;

    fn diagnosis_with(symptoms: Vec<Symptom>) -> Diagnosis {
        let mut diagnosis = Diagnosis::new(&UnitSnapshot::default(), None, vec![]);
        diagnosis.symptoms = symptoms;
        diagnosis
    }

    #[test]
    fn address_in_use_moves_port_conflict_first() {
        use StrategyName::*;
        let configured = [ServiceRestart, EnvironmentCheck, PortConflict];
        let order = plan(&configured, &diagnosis_with(vec![Symptom::AddressInUse]));
        assert_eq!(order, [PortConflict, ServiceRestart, EnvironmentCheck]);
        // Without the evidence, the configured order stands.
        assert_eq!(plan(&configured, &diagnosis_with(vec![])), configured);
        // Evidence for a strategy that is not configured changes nothing.
        assert_eq!(
            plan(
                &[ServiceRestart],
                &diagnosis_with(vec![Symptom::AddressInUse])
            ),
            [ServiceRestart]
        );
    }

    #[test]
    fn evidence_matters_only_when_it_can_change_the_first_step() {
        use StrategyName::*;
        assert!(!evidence_can_reorder(&[ServiceRestart]));
        assert!(!evidence_can_reorder(&[ServiceRestart, EnvironmentCheck]));
        assert!(!evidence_can_reorder(&[PortConflict, ServiceRestart]));
        assert!(evidence_can_reorder(&[ServiceRestart, PortConflict]));
        assert!(evidence_can_reorder(&[ServiceRestart, DatabaseCheck]));
    }
}
