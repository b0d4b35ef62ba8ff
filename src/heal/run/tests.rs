//! `run`'s branches against a scripted systemd and an empty journal: the decisions, in
//! milliseconds and without root. `tests/run.rs` proves them against a real systemd.

use std::path::Path;
use std::time::SystemTime;

use crate::report::{Report, ReportHeader};

use super::*;
use crate::host::journal::{JournalLine, PendingJournal};
use crate::state::HistoryRecord;
use crate::systemd::fake::{FakeJob, FakeSystemd, unit};
use crate::ui::when::Timestamp;

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
