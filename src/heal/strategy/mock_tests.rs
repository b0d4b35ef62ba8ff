//! The chain runner and verification against a scripted systemd (`systemd::fake`): every
//! branch of "restart, await the job, verify, stay up" in milliseconds, without root. The
//! sandbox tests in `tests/` prove the same paths against a real systemd.

use std::path::Path;
use std::time::Duration;

use super::StrategyName;
use super::{Context, StepResult, restart_and_verify, run_chain};
use crate::config::Config;
use crate::heal::diagnose::Diagnosis;
use crate::heal::verify::HealthTarget;
use crate::systemd::UnitSnapshot;
use crate::systemd::fake::{FakeJob, FakeSystemd, unit};

fn config(extra: &str) -> Config {
    Config::parse(
        &format!("monitored_services:\n  - name: web\n{extra}"),
        Path::new("test.yml"),
    )
    .unwrap()
}

fn target() -> HealthTarget {
    HealthTarget {
        unit: "web.service".into(),
        port: None,
        health_url: None,
        timeout: Duration::from_millis(300),
        stable_for: Duration::from_millis(30),
        exchange: None,
        check_timeout: Duration::from_secs(2),
    }
}

/// Runs `act` with a context for a unit that is `before` now, configured with `extra`.
fn with_context<T>(
    extra: &str,
    before: &UnitSnapshot,
    systemd: &FakeSystemd,
    dry_run: bool,
    act: impl FnOnce(&Context<'_>) -> T,
) -> T {
    let config = config(extra);
    let diagnosis = Diagnosis::new(before, None, Vec::new());
    let target = target();
    act(&Context {
        service: &config.monitored_services[0],
        diagnosis: &diagnosis,
        snapshot: before,
        units: systemd,
        target: &target,
        dry_run,
        before_restart: &std::cell::RefCell::default(),
    })
}

/// Runs `restart_and_verify` for a unit that is `before` now, with this fake.
fn restart(before: &UnitSnapshot, systemd: &FakeSystemd, dry_run: bool) -> super::Attempt {
    with_context("", before, systemd, dry_run, restart_and_verify)
}

#[test]
fn a_failed_unit_is_reset_restarted_and_healed_when_it_stays_up() {
    let failed = unit("failed", "failed", "a");
    let systemd = FakeSystemd::new(
        failed.clone(),
        FakeJob::Done,
        vec![unit("active", "running", "b")],
    );
    let attempt = restart(&failed, &systemd, false);
    assert_eq!(attempt.result, StepResult::Healed, "{}", attempt.detail);
    assert_eq!(
        systemd.calls(),
        ["reset_failed web.service", "restart web.service"]
    );
    assert!(
        attempt.detail.contains("stayed up for 30ms"),
        "{}",
        attempt.detail
    );
}

#[test]
fn an_inactive_unit_is_restarted_without_a_reset() {
    let stopped = unit("inactive", "dead", "a");
    let systemd = FakeSystemd::new(
        stopped.clone(),
        FakeJob::Done,
        vec![unit("active", "running", "b")],
    );
    assert_eq!(
        restart(&stopped, &systemd, false).result,
        StepResult::Healed
    );
    assert_eq!(systemd.calls(), ["restart web.service"]);
}

#[test]
fn a_restart_job_that_fails_or_hangs_is_no_fix_and_nothing_is_verified() {
    let failed = unit("failed", "failed", "a");
    for (job, expected) in [
        (FakeJob::Ended("failed"), "restart job ended `failed`"),
        (FakeJob::Hangs, "restart failed: timed out"),
    ] {
        let systemd = FakeSystemd::new(failed.clone(), job, vec![]);
        let attempt = restart(&failed, &systemd, false);
        assert_eq!(attempt.result, StepResult::NoFix);
        assert!(attempt.detail.contains(expected), "{}", attempt.detail);
    }
}

#[test]
fn a_unit_that_comes_up_and_restarts_within_stable_for_is_not_healed() {
    // Active as invocation b, then as invocation c: systemd restarted it behind our back.
    let failed = unit("failed", "failed", "a");
    let systemd = FakeSystemd::new(
        failed.clone(),
        FakeJob::Done,
        vec![
            unit("active", "running", "b"),
            unit("active", "running", "c"),
        ],
    );
    let attempt = restart(&failed, &systemd, false);
    assert_eq!(attempt.result, StepResult::NoFix);
    assert!(
        attempt.detail.contains("came up, then went active/running"),
        "{}",
        attempt.detail
    );
}

#[test]
fn a_unit_that_fails_while_starting_is_no_fix_at_once() {
    let failed = unit("failed", "failed", "a");
    let systemd = FakeSystemd::new(
        failed.clone(),
        FakeJob::Done,
        vec![
            unit("activating", "start", "b"),
            unit("failed", "failed", "b"),
        ],
    );
    let attempt = restart(&failed, &systemd, false);
    assert_eq!(attempt.result, StepResult::NoFix);
    assert!(
        attempt.detail.contains("went failed/failed"),
        "{}",
        attempt.detail
    );
}

#[test]
fn a_unit_that_never_becomes_active_fails_at_verify_timeout() {
    let failed = unit("failed", "failed", "a");
    let systemd = FakeSystemd::new(
        failed.clone(),
        FakeJob::Done,
        vec![unit("activating", "start", "b")],
    );
    let attempt = restart(&failed, &systemd, false);
    assert_eq!(attempt.result, StepResult::NoFix);
    assert!(
        attempt.detail.contains("not healthy within 300ms"),
        "{}",
        attempt.detail
    );
}

#[test]
fn a_dry_run_plans_and_calls_nothing() {
    let failed = unit("failed", "failed", "a");
    let systemd = FakeSystemd::new(failed.clone(), FakeJob::Done, vec![]);
    let attempt = restart(&failed, &systemd, true);
    assert_eq!(attempt.result, StepResult::Planned);
    assert!(systemd.calls().is_empty());
}

#[test]
fn the_chain_goes_on_after_no_fix_and_stops_at_a_person() {
    use StrategyName::{EnvironmentCheck, ServiceRestart};
    let failed = unit("failed", "failed", "a");
    let systemd = FakeSystemd::new(failed.clone(), FakeJob::Ended("failed"), vec![]);

    // The restart does not fix it; the env check needs a person; the second restart never runs.
    let needs_key = "    environment_check: { required: [SECRET_KEY] }\n";
    let chain = with_context(needs_key, &failed, &systemd, false, |context| {
        run_chain(&[ServiceRestart, EnvironmentCheck, ServiceRestart], context)
    });

    let results: Vec<StepResult> = chain.steps.iter().map(|s| s.result).collect();
    assert_eq!(results, [StepResult::NoFix, StepResult::NeedsHuman]);
    assert_eq!(chain.healed_by, None);
    assert!(
        chain.escalation.as_deref().unwrap().contains("SECRET_KEY"),
        "{chain:?}"
    );
    assert_eq!(
        systemd
            .calls()
            .iter()
            .filter(|c| c.starts_with("restart"))
            .count(),
        1
    );
}

#[test]
fn the_chain_stops_at_the_first_strategy_that_heals() {
    use StrategyName::{EnvironmentCheck, ServiceRestart};
    let failed = unit("failed", "failed", "a");
    let systemd = FakeSystemd::new(
        failed.clone(),
        FakeJob::Done,
        vec![unit("active", "running", "b")],
    );
    let chain = with_context("", &failed, &systemd, false, |context| {
        run_chain(&[ServiceRestart, EnvironmentCheck], context)
    });
    assert_eq!(chain.steps.len(), 1);
    assert_eq!(chain.healed_by, Some(ServiceRestart));
}
