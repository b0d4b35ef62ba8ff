//! Alertmanager's alerts as selfheal keeps them: one open alert per service that a run left
//! down (`<state>/alerts/<service>.json`), fired when a run ends `failed` or `suppressed` and
//! resolved by the next run that finds it up. Alertmanager forgets a firing alert at its
//! `endsAt`, so a firing alert is sent with one a few flush intervals ahead, and `flush`
//! sends the open ones again.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ChannelError;
use super::brief::Brief;
use crate::outcome::Outcome;
use crate::report::Report;
use crate::state::StateDir;
use crate::ui::when::Timestamp;

/// How long a firing alert lasts unless sent again: four intervals of the flush timer (5 min),
/// as Prometheus sends `endsAt` four resend intervals ahead. A host that goes silent lets its
/// alerts end within this.
pub(crate) const ALERT_LIFETIME: Duration = Duration::from_secs(20 * 60);

/// The alert's name in Alertmanager.
pub(crate) const ALERT_NAME: &str = "SelfhealFailed";

/// The host guard's alert: one for the host while a storm lasts.
pub(crate) const GUARD_ALERT_NAME: &str = "SelfhealHostGuard";
/// Its `service` label: no service's (an alert's identity is its labels, and its name is its
/// own).
const GUARD_ALERT_SERVICE: &str = "host guard";

/// The host guard's alert a report fires (the storm's one report) or resolves (the run that
/// ended the storm), with its state. Not kept with the services' open alerts: it fires for
/// `ALERT_LIFETIME` (a storm is worked through one service at a time, in minutes) and the run
/// that ends the storm resolves it.
pub(crate) fn guard_change_for(report: &Report, subject: &str) -> Option<(Alert, AlertState)> {
    let state = if report.facts.guard.is_some() {
        AlertState::firing_now()
    } else if report.facts.guard_over.is_some() {
        AlertState::resolved_now()
    } else {
        return None;
    };
    let description = report.facts.guard.as_ref().map_or_else(
        || "The host guard's storm is over: every service it held was healed in turn.".to_owned(),
        |storm| {
            format!(
                "{} services failed within {} on {}: {}. They are healed one at a time.{}",
                storm.failing.len(),
                storm.within,
                report.header.host,
                storm.failing.join(", "),
                storm
                    .cause
                    .as_ref()
                    .map(|cause| format!(" Likely shared cause: {cause}."))
                    .unwrap_or_default()
            )
        },
    );
    let alert = Alert {
        alertname: GUARD_ALERT_NAME.to_owned(),
        service: GUARD_ALERT_SERVICE.to_owned(),
        host: report.header.host.clone(),
        severity: "critical".to_owned(),
        summary: subject.to_owned(),
        description,
        runbook_url: None,
        starts_at: report.facts.started_at,
    };
    Some((alert, state))
}

/// The alert `selfheal test-notify` sends.
pub(crate) const TEST_ALERT_NAME: &str = "SelfhealTest";
/// The `service` label of a test alert: no monitored service's, so a route that groups by
/// service never puts it beside a real alert.
const TEST_ALERT_SERVICE: &str = "selfheal-test";
/// How long a test alert fires: past Alertmanager's usual group_wait (30 s), so it is routed,
/// and not much longer.
const TEST_ALERT_LASTS: std::time::Duration = std::time::Duration::from_secs(120);

/// The alert `selfheal test-notify` sends, and when it ends by itself.
pub(crate) fn test_alert(host: &str, subject: &str) -> (Alert, Timestamp) {
    let now = std::time::SystemTime::now();
    let alert = Alert {
        alertname: TEST_ALERT_NAME.to_owned(),
        service: TEST_ALERT_SERVICE.to_owned(),
        host: host.to_owned(),
        severity: "info".to_owned(),
        summary: subject.to_owned(),
        description: format!(
            "A test alert sent by `selfheal test-notify` on {host}: it ends by itself in {}.",
            crate::ui::duration::HumanDuration(TEST_ALERT_LASTS)
        ),
        runbook_url: None,
        starts_at: Timestamp::seconds(now),
    };
    (alert, Timestamp::seconds(now + TEST_ALERT_LASTS))
}

/// An open alert: its labels (before a channel's own `labels:`), annotations and start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Alert {
    pub alertname: String,
    pub service: String,
    pub host: String,
    /// `critical` for a critical service, else `warning`.
    pub severity: String,
    pub summary: String,
    pub description: String,
    pub runbook_url: Option<String>,
    pub starts_at: Timestamp,
}

/// Whether an alert is sent firing (until when) or resolved (since when).
#[derive(Debug, Clone, Copy)]
pub(crate) enum AlertState {
    Firing { until: Timestamp },
    Resolved { at: Timestamp },
}

impl AlertState {
    pub(crate) fn firing_now() -> AlertState {
        AlertState::Firing {
            until: Timestamp::seconds(std::time::SystemTime::now() + ALERT_LIFETIME),
        }
    }

    /// Resolved now, to the millisecond (alerts start to the millisecond).
    pub(crate) fn resolved_now() -> AlertState {
        AlertState::Resolved {
            at: Timestamp::now_millis(),
        }
    }
}

/// What a run's report does to its service's alert.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    Fire(Alert),
    Resolve(Alert),
}

/// The alert change `report` makes, recorded: a `failed` or `suppressed` run, or a crash loop
/// the watch found, opens (or keeps open) its service's alert; a run that finds the service up (`resolved`, `healthy`, or
/// systemd's own restart) resolves the open one, and so does a `suppressed` run that ended
/// its episode (a person stopped the service: nobody is to be paged for it any more).
/// Nothing changes for the rest.
pub(crate) fn change_for(state: &StateDir, report: &Report, subject: &str) -> Option<Change> {
    let service = &report.header.service;
    let episode_over = || matches!(state.episode(service), Ok(None));
    match report.facts.outcome {
        Outcome::Suppressed if report.facts.diagnosis.is_some() && episode_over() => {
            resolve(state, service)
        }
        Outcome::Failed | Outcome::Suppressed | Outcome::CrashLoop
            if report.facts.diagnosis.is_some() =>
        {
            let open = open_alert(state, service);
            let brief = Brief::of(report, subject);
            let alert = Alert {
                alertname: ALERT_NAME.to_owned(),
                service: service.clone(),
                host: report.header.host.clone(),
                severity: if report.header.critical {
                    "critical"
                } else {
                    "warning"
                }
                .to_owned(),
                summary: subject.to_owned(),
                description: brief.lines.join("\n"),
                runbook_url: report.header.runbook.clone(),
                // The same alert for as long as the service stays down.
                starts_at: open.map_or(report.facts.started_at, |open| open.starts_at),
            };
            if let Err(err) = save(state, &alert) {
                tracing::warn!(selfheal_service = %service, "the open alert cannot be recorded ({err}): flush will not send it again");
            }
            Some(Change::Fire(alert))
        }
        Outcome::Resolved | Outcome::Healthy | Outcome::RestartedBySystemd => {
            resolve(state, service)
        }
        _ => None,
    }
}

/// Closes `service`'s open alert, if it has one, to be sent resolved.
fn resolve(state: &StateDir, service: &str) -> Option<Change> {
    let open = open_alert(state, service)?;
    close(state, service);
    Some(Change::Resolve(open))
}

/// Held while an alert changes and its message is queued (`locks/.alerts.lock`). Without
/// it (a state directory that cannot be used) the change is made anyway: the flush timer
/// resolves what a race leaves open.
pub(crate) fn lock(state: &StateDir) -> Option<nix::fcntl::Flock<std::fs::File>> {
    state
        .lock_exclusive(".alerts.lock")
        .inspect_err(|err| tracing::warn!("the alerts lock cannot be taken: {err}"))
        .ok()
}

/// Every open alert.
pub(crate) fn open_alerts(state: &StateDir) -> Vec<Alert> {
    let Ok(entries) = std::fs::read_dir(state.root().join("alerts")) else {
        return Vec::new();
    };
    let mut alerts: Vec<Alert> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            open_alert(state, name.strip_suffix(".json")?)
        })
        .collect();
    alerts.sort_by(|a, b| a.service.cmp(&b.service));
    alerts
}

/// `service`'s open alert; a torn file is none.
fn open_alert(state: &StateDir, service: &str) -> Option<Alert> {
    let (bytes, _) = crate::host::bounded_read::read(
        &path(state, service),
        crate::host::bounded_read::MAX_FILE_BYTES,
    )
    .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Forgets `service`'s open alert (it has been resolved).
pub(crate) fn close(state: &StateDir, service: &str) {
    match std::fs::remove_file(path(state, service)) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(selfheal_service = %service, "the resolved alert cannot be forgotten: {err}");
        }
        _ => {}
    }
}

fn save(state: &StateDir, alert: &Alert) -> Result<(), ChannelError> {
    state.ensure("alerts")?;
    let bytes = serde_json::to_vec_pretty(alert)?;
    let path = path(state, &alert.service);
    crate::host::atomic_file::write(&path, &bytes, 0o640)
        .map_err(crate::host::file_error::FileError::of("writing", &path))?;
    Ok(())
}

fn path(state: &StateDir, service: &str) -> PathBuf {
    state.root().join("alerts").join(format!("{service}.json"))
}
