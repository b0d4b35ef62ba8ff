//! The report: data first (`Report`), then text by templates (`render`), then delivery
//! elsewhere. Nothing here performs I/O except reading template overrides.

mod cascade;
pub(crate) mod digest;
mod render;

use serde::Serialize;

use crate::config::{Config, ServiceConfig};
use crate::heal::diagnose::Termination;
use crate::heal::strategy::{StepResult, StrategyName};
use crate::outcome::Outcome;
use crate::ui::when::Timestamp;

use crate::heal::facts::RunFacts;

pub(crate) use cascade::CascadeReport;
pub(crate) use render::{Recipients, RenderError, Renderer, Templated};

/// Everything a report says about one run: where (from the config), what happened (from the
/// run), and the advice derived from both. The JSON and the templates see one flat object.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    #[serde(flatten)]
    pub header: ReportHeader,
    #[serde(flatten)]
    pub facts: RunFacts,
    pub recommendations: Vec<String>,
    /// Commands for a person, when the service is still down.
    pub manual_steps: Vec<String>,
    /// How a RESOLVED run healed, in words ("a restart, after config_validation found nothing
    /// to repair"); `healed_by` stays the strategy's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healed_how: Option<String>,
    /// Sent by `selfheal test-email`: no service failed.
    pub test: bool,
}

/// The parts of a report that come from the config, before the run starts.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ReportHeader {
    pub system_name: String,
    pub host: String,
    pub service: String,
    pub unit: String,
    pub domain: Option<String>,
    pub port: Option<u16>,
    pub critical: bool,
    /// The service's `runbook:`.
    pub runbook: Option<String>,
    /// The service's own recipients (`to:`), in place of `email.to`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// A unit `all_services:` covers, which no `monitored_services` entry names: the entry
    /// that would list it (its name, and its listening port when it has one now).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unlisted: Option<String>,
}

impl ReportHeader {
    pub(crate) fn new(config: &Config, service: &ServiceConfig) -> ReportHeader {
        ReportHeader {
            system_name: config.system_name(),
            host: crate::host::hostname(),
            service: service.name.clone(),
            unit: service.unit_name(),
            domain: service.domain.clone(),
            port: service.port,
            critical: service.critical,
            runbook: service.runbook.clone(),
            to: service.to.clone(),
            unlisted: config
                .is_unlisted(&service.name)
                .then(|| entry_to_add(service)),
        }
    }
}

/// The `monitored_services` entry that lists an unlisted unit: its name, and the first port
/// its processes listen on, when it runs.
fn entry_to_add(service: &ServiceConfig) -> String {
    let unit = service.unit_name();
    let port = crate::host::listeners::Listeners::read()
        .by_service()
        .get(&unit)
        .and_then(|ports| ports.first().copied());
    match port {
        Some(port) => format!("- {{name: {}, port: {port}}}", service.name),
        None => format!("- {{name: {}}}", service.name),
    }
}

impl Report {
    pub(crate) fn new(header: ReportHeader, facts: RunFacts) -> Report {
        let recommendations = recommendations(&header, &facts);
        let manual_steps = if matches!(
            facts.outcome,
            Outcome::Failed | Outcome::Suppressed | Outcome::CrashLoop
        ) {
            manual_steps(&header, &facts)
        } else {
            Vec::new()
        };
        let healed_how = healed_how(&facts);
        Report {
            header,
            facts,
            recommendations,
            manual_steps,
            healed_how,
            test: false,
        }
    }

    /// The report `selfheal test-email` sends: the config's real names, no failure.
    pub(crate) fn test_email(config: &Config) -> Report {
        let host = crate::host::hostname();
        let (service, unit) = config
            .monitored_services
            .first()
            .map_or(("selfheal".to_owned(), "selfheal".to_owned()), |s| {
                (s.name.clone(), s.unit_name())
            });
        Report {
            header: ReportHeader {
                system_name: config.system_name(),
                host: host.clone(),
                service,
                unit,
                domain: None,
                port: None,
                critical: false,
                runbook: None,
                to: Vec::new(),
                unlisted: None,
            },
            facts: RunFacts {
                outcome: Outcome::Healthy,
                started_at: Timestamp::now_millis(),
                duration_ms: 0,
                diagnosis: None,
                steps: Vec::new(),
                healed_by: None,
                reason: Some(format!(
                    "This is a test report sent by `selfheal test-email` on {host}: if you read it, reports reach you."
                )),
                post_status: None,
                dry_run: false,
                recovered: None,
                relapse: false,
                episode_reported: false,
                all_clear: None,
                folded: None,
                reminder: None,
                guard: None,
                guard_over: None,
                evidence: None,
                alert: None,
            },
            recommendations: Vec::new(),
            manual_steps: Vec::new(),
            healed_how: None,
            test: true,
        }
    }
}

/// Advice that follows from the facts; nothing generic.
fn recommendations(header: &ReportHeader, facts: &RunFacts) -> Vec<String> {
    let mut advice = Vec::new();
    let unit = &header.unit;
    if let Some(entry) = &header.unlisted {
        advice.push(format!(
            "{unit} is not in monitored_services (all_services: covers it). To have it healed and verified, add under monitored_services: {entry}"
        ));
    }
    if let Some(diagnosis) = &facts.diagnosis {
        if let Some(id) = &diagnosis.invocation_id {
            advice.push(format!(
                "Full log of the failed run: journalctl _SYSTEMD_INVOCATION_ID={id}"
            ));
        }
        match (&diagnosis.termination, diagnosis.result.as_str()) {
            (_, "oom-kill") => advice.push(format!(
                "It ran out of memory: check its usage (systemctl status {unit}) and MemoryMax=, or fix the leak."
            )),
            (Termination::Killed { signal }, _) if signal == "SIGKILL" => advice.push(
                "Something outside the service sent SIGKILL: look for the OOM killer in `journalctl -k` and for scripts or people that kill it.".into(),
            ),
            (Termination::Dumped { .. }, _) => advice.push(format!("It crashed: inspect the core with `coredumpctl info {unit}`.")),
            (Termination::Exited { status }, _) => advice.push(format!(
                "It exited with status {status} on its own: the journal lines above are the program's own explanation."
            )),
            _ => {}
        }
        // systemd gave up only when the unit is left failed after its restarts; a unit it is
        // still restarting (or brought back) was not given up on.
        if diagnosis.restarts > 0 {
            advice.push(if diagnosis.active_state == crate::systemd::ActiveState::Failed {
                format!(
                    "systemd had already restarted it {} time(s) before giving up: this is recurring, not a one-off.",
                    diagnosis.restarts
                )
            } else {
                format!(
                    "systemd's Restart= has restarted it {} time(s) since it was last started by hand: look for what keeps ending it.",
                    diagnosis.restarts
                )
            });
        }
    }
    if facts.outcome == Outcome::Resolved {
        advice.push(format!(
            "Watch for a recurrence: selfheal history {}",
            header.service
        ));
    }
    advice
}

fn manual_steps(header: &ReportHeader, facts: &RunFacts) -> Vec<String> {
    let unit = &header.unit;
    // A strategy that found what only a person can fix (an invalid config, a missing file or
    // key): a restart now fails the same way, so it comes after that fix.
    let restart = match facts
        .steps
        .iter()
        .find(|step| step.result == StepResult::NeedsHuman)
    {
        Some(step) => format!(
            "sudo systemctl restart {unit}   # only once what {} found is fixed",
            step.strategy
        ),
        None => format!("sudo systemctl restart {unit}"),
    };
    vec![
        format!("ssh {}", header.host),
        format!("sudo systemctl status {unit}"),
        format!("sudo journalctl -u {unit} -n 100"),
        "free -h && df -h".to_owned(),
        restart,
        format!("sudo selfheal run {} --dry-run", header.service),
    ]
}

/// How a RESOLVED run healed, naming the step that changed something: a strategy's repairs,
/// or the restart (after a check that found nothing to repair, it was the restart that
/// healed, not the check).
fn healed_how(facts: &RunFacts) -> Option<String> {
    let step = facts
        .steps
        .iter()
        .find(|step| step.result == StepResult::Healed)?;
    Some(match (step.strategy, step.changes.is_empty()) {
        (StrategyName::ServiceRestart, _) => "a restart (service_restart)".to_owned(),
        (strategy, false) => format!("{strategy} ({}), then a restart", step.changes.join("; ")),
        (strategy, true) => format!("a restart, after {strategy} found nothing to repair"),
    })
}

/// A fixed report for snapshot tests and previews.
#[cfg(test)]
pub(crate) mod fixture {
    use super::*;
    use crate::heal::diagnose::{Diagnosis, FactSource, Symptom};
    use crate::heal::facts::PostStatus;
    use crate::heal::strategy::StepResult;
    use crate::heal::strategy::StrategyName;
    use crate::host::journal::JournalLine;
    use crate::systemd::ActiveState;

    pub(crate) fn report(outcome: Outcome) -> Report {
        let healed = outcome == Outcome::Resolved;
        let header = ReportHeader {
            system_name: "MiracleMax".into(),
            host: "miraclemax.local".into(),
            service: "story-stages".into(),
            unit: "story-stages.service".into(),
            domain: Some("books.jbyrd.org".into()),
            port: Some(5002),
            critical: true,
            runbook: Some("https://wiki.example.org/story-stages".into()),
            to: Vec::new(),
            unlisted: None,
        };
        let diagnosis = Diagnosis {
            unit: "story-stages.service".into(),
            active_state: ActiveState::Failed,
            sub_state: "failed".into(),
            result: "exit-code".into(),
            termination: Termination::Exited { status: 1 },
            restarts: 2,
            memory_bytes: Some(47_185_920),
            memory_max: None,
            memory_high: None,
            service_type: "simple".into(),
            failed_command: None,
            full_disk: None,
            oom_kill: None,
            memory_hogs: None,
            core: Vec::new(),
            write_paths: Vec::new(),
            invocation_id: Some("0f1e2d3c4b5a69788796a5b4c3d2e1f0".into()),
            source: FactSource::Monitor,
            symptoms: vec![Symptom::AddressInUse],
            journal: vec![
                JournalLine { timestamp_us: 1_763_433_923_100_000, pid: 812, message: "Starting story-stages on :5002".into(), invocation_id: None },
                JournalLine { timestamp_us: 1_763_433_923_250_000, pid: 812, message: "OSError: [Errno 98] Address already in use <script>alert(1)</script>".into(), invocation_id: None },
            ],
            summary: "story-stages.service is failed/failed (Result=exit-code); the main process exited with status 1".into(),
            root_cause: "The service failed because its port was already taken by another process (\"Address already in use\").".into(),
            unhealthy: None,
            upstream: Vec::new(),
        };
        let step = crate::heal::strategy::Step {
            strategy: StrategyName::ServiceRestart,
            action: "restart story-stages.service and verify".into(),
            result: if healed {
                StepResult::Healed
            } else {
                StepResult::NoFix
            },
            detail: if healed {
                "reset-failed; restart job done after 14 ms; story-stages.service active/running, port 5002 listening; stayed up for 2s".into()
            } else {
                "reset-failed; restart job done after 14 ms; story-stages.service went failed/failed (Result=exit-code)".into()
            },
            changes: Vec::new(),
            duration_ms: if healed { 2031 } else { 356 },
        };
        let facts = RunFacts {
            outcome,
            started_at: "2025-11-18T02:45:23.300Z".parse().unwrap(),
            duration_ms: if healed { 2087 } else { 402 },
            diagnosis: Some(diagnosis),
            steps: vec![step],
            healed_by: healed.then(|| "service_restart".into()),
            reason: (!healed).then(|| {
                "service_restart: story-stages.service went failed/failed (Result=exit-code)".into()
            }),
            post_status: Some(PostStatus {
                active_state: if healed {
                    ActiveState::Active
                } else {
                    ActiveState::Failed
                },
                sub_state: if healed { "running" } else { "failed" }.into(),
                main_pid: if healed { 845 } else { 0 },
                memory_bytes: healed.then_some(44_040_192),
                active_since: Some("2025-11-18T02:45:23Z".parse().unwrap()),
            }),
            dry_run: false,
            recovered: None,
            relapse: false,
            episode_reported: false,
            all_clear: None,
            folded: None,
            reminder: None,
            guard: None,
            guard_over: None,
            evidence: None,
            alert: None,
        };
        Report::new(header, facts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The facts of `fixture::report(outcome)` with one step of `strategy` ending `result`
    /// with `changes`, and the unit in `active_state` after `restarts` restarts by systemd.
    fn with_step(
        outcome: Outcome,
        strategy: StrategyName,
        result: StepResult,
        changes: &[&str],
    ) -> Report {
        let mut facts = fixture::report(outcome).facts;
        facts.steps[0].strategy = strategy;
        facts.steps[0].result = result;
        facts.steps[0].changes = changes.iter().map(|c| (*c).to_owned()).collect();
        Report::new(fixture::report(outcome).header, facts)
    }

    /// "Healed by" names the step that changed something: a check that found nothing did
    /// not heal it, the restart after it did.
    #[test]
    fn healed_by_names_what_changed_something() {
        let checked = with_step(
            Outcome::Resolved,
            StrategyName::ConfigValidation,
            StepResult::Healed,
            &[],
        );
        assert_eq!(
            checked.healed_how.as_deref(),
            Some("a restart, after config_validation found nothing to repair")
        );
        let repaired = with_step(
            Outcome::Resolved,
            StrategyName::DatabaseCheck,
            StepResult::Healed,
            &["chmod 0640 /srv/app.db"],
        );
        assert_eq!(
            repaired.healed_how.as_deref(),
            Some("database_check (chmod 0640 /srv/app.db), then a restart")
        );
        let text = Renderer::new(None).text(&checked).unwrap();
        assert!(
            text.contains("Healed by a restart, after config_validation found nothing to repair"),
            "{text}"
        );
    }

    /// A FAILED report whose strategy found what only a person can fix does not hand them a
    /// plain restart, which would fail the same way.
    #[test]
    fn manual_steps_restart_only_after_the_fix_a_strategy_asked_for() {
        let invalid = with_step(
            Outcome::Failed,
            StrategyName::ConfigValidation,
            StepResult::NeedsHuman,
            &[],
        );
        assert!(
            invalid
                .manual_steps
                .contains(&"sudo systemctl restart story-stages.service   # only once what config_validation found is fixed".to_owned()),
            "{:?}",
            invalid.manual_steps
        );
        let plain = fixture::report(Outcome::Failed);
        assert!(
            plain
                .manual_steps
                .contains(&"sudo systemctl restart story-stages.service".to_owned())
        );
    }

    /// "Before giving up" only when systemd did: the unit is left failed.
    #[test]
    fn gave_up_is_said_only_of_a_unit_systemd_left_failed() {
        let failed = fixture::report(Outcome::Failed);
        assert!(
            failed
                .recommendations
                .iter()
                .any(|r| r.contains("2 time(s) before giving up")),
            "{:?}",
            failed.recommendations
        );
        let mut facts = fixture::report(Outcome::RestartedBySystemd).facts;
        if let Some(diagnosis) = facts.diagnosis.as_mut() {
            diagnosis.active_state = crate::systemd::ActiveState::Active;
        }
        let restarted = Report::new(fixture::report(Outcome::Failed).header, facts);
        assert!(
            !restarted
                .recommendations
                .iter()
                .any(|r| r.contains("giving up")),
            "{:?}",
            restarted.recommendations
        );
        assert!(
            restarted
                .recommendations
                .iter()
                .any(|r| r.contains("Restart= has restarted it 2 time(s)")),
            "{:?}",
            restarted.recommendations
        );
    }

    #[test]
    fn text_reports_are_pinned() {
        let renderer = Renderer::new(Some(std::path::Path::new("/nonexistent")));
        insta::assert_snapshot!(
            "resolved_text",
            renderer.text(&fixture::report(Outcome::Resolved)).unwrap()
        );
        insta::assert_snapshot!(
            "failed_text",
            renderer.text(&fixture::report(Outcome::Failed)).unwrap()
        );
    }

    #[test]
    fn a_text_report_ends_with_a_newline_and_spells_results_in_words() {
        let renderer = Renderer::new(Some(std::path::Path::new("/nonexistent")));
        let text = renderer.text(&fixture::report(Outcome::Failed)).unwrap();
        assert!(text.ends_with("═\n"), "{text:?}");
        assert!(text.contains("→ NO FIX ("), "{text}");
        assert!(
            !text.contains("NO_FIX") && !text.contains("NoFix"),
            "{text}"
        );
        let html = renderer.html(&fixture::report(Outcome::Failed)).unwrap();
        assert!(html.contains(">NO FIX<"), "{html}");
    }

    #[test]
    fn subjects_follow_the_contract() {
        let renderer = Renderer::new(Some(std::path::Path::new("/nonexistent")));
        assert_eq!(
            renderer
                .subject(&fixture::report(Outcome::Resolved))
                .unwrap(),
            "✅ MiracleMax: story-stages - RESOLVED"
        );
        assert_eq!(
            renderer.subject(&fixture::report(Outcome::Failed)).unwrap(),
            "❌ MiracleMax: story-stages - FAILED"
        );
    }

    /// The outcomes added since the pinned reports have their mark and their own result line,
    /// in the subject, the text and the HTML.
    #[test]
    fn reported_and_paused_runs_say_what_they_are() {
        let renderer = Renderer::new(Some(std::path::Path::new("/nonexistent")));
        let mut reported = fixture::report(Outcome::Reported);
        reported.facts.reason = Some("story-stages.service is not in monitored_services".into());
        assert_eq!(
            renderer.subject(&reported).unwrap(),
            "⚠ MiracleMax: story-stages - FAILED (reported, not healed)"
        );
        assert!(
            renderer
                .text(&reported)
                .unwrap()
                .contains("⚠️  Reported, not healed: story-stages.service is not in")
        );
        let mut paused = fixture::report(Outcome::Paused);
        paused.facts.reason = Some("paused until 14:00 UTC by selfheal pause: deploy".into());
        assert_eq!(
            renderer.subject(&paused).unwrap(),
            "⏸️ MiracleMax: story-stages - PAUSED"
        );
        let text = renderer.text(&paused).unwrap();
        assert!(
            text.contains("⏸️  Not healed, not told: paused until 14:00 UTC"),
            "{text}"
        );
        let html = renderer.html(&paused).unwrap();
        assert!(
            html.contains("⏸️ Not healed, not told: paused until 14:00 UTC"),
            "{html}"
        );
        assert!(html.contains("background:#57606a"), "{html}");
    }

    #[test]
    fn html_reports_are_pinned_and_escape_what_services_print() {
        let renderer = Renderer::new(Some(std::path::Path::new("/nonexistent")));
        let resolved = renderer.html(&fixture::report(Outcome::Resolved)).unwrap();
        let failed = renderer.html(&fixture::report(Outcome::Failed)).unwrap();
        for html in [&resolved, &failed] {
            assert!(!html.contains("<script>"), "unescaped journal line");
            assert!(html.contains("&lt;script&gt;alert(1)"));
            // Nothing is loaded from elsewhere; the one link is the runbook a person follows
            // (escaped as every value is; a browser reads the entities in an attribute).
            assert!(!html.contains("src=\"http"), "external resource");
            assert_eq!(
                html.matches("href=").count(),
                html.matches("href=\"https:&#x2f;&#x2f;wiki.example.org&#x2f;story-stages\"")
                    .count(),
                "a link other than the runbook"
            );
        }
        assert!(
            failed.contains("STILL DOWN")
                && failed.contains("journalctl -u story-stages.service -n 100")
        );
        insta::assert_snapshot!("resolved_html", resolved);
        insta::assert_snapshot!("failed_html", failed);
    }
}
