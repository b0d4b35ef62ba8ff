//! `selfheal status [SERVICE…] [--json]`: the dashboard an operator opens first. systemd's
//! truth about every monitored unit (one batched D-Bus round trip), whether the unit's own
//! process listens on its port (one sock_diag dump, one walk of /proc), health URLs (checked
//! concurrently, each with a short timeout), whether the `OnFailure=` hook is armed, loop
//! protection and the last healing (one read of the history), the host's vital signs and the
//! configuration. Exit 0 when every shown service is active and healthy, 1 otherwise.

pub(crate) mod discover;
pub(crate) mod metrics;
mod render;
mod system;
pub(crate) mod timers;
mod units;

pub(crate) use render::dashboard;

use std::time::{Duration, SystemTime};

use serde::Serialize;

use std::collections::BTreeMap;

use crate::config::{Config, ServiceConfig};
use crate::heal::probe::ProbeRecord;
use crate::heal::verify::UrlFailure;
use crate::host::listeners::Listeners;
use crate::outcome::Outcome;
use crate::state::{HistoryRecord, StateDir};
use crate::systemd::ActiveState;
use crate::ui::terminal::SlowNotice;
use crate::ui::when::Timestamp;

pub(crate) use system::SystemOverview;
use units::{UnitAnswer, ask_systemd};

/// How long systemd may take to answer the whole dashboard's question.
const SYSTEMD_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one health URL may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Health URLs checked at once.
const HEALTH_CONCURRENCY: usize = 32;

/// The whole dashboard, as `--json` prints it.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    pub system: SystemInfo,
    pub services: Vec<ServiceStatus>,
    /// Healing runs of the last 24 h, newest first.
    pub recent: Vec<HistoryRecord>,
    pub summary: Summary,
    pub config: ConfigInfo,
}

/// Who and where, and the host's vital signs.
#[derive(Debug, Serialize)]
pub(crate) struct SystemInfo {
    pub name: String,
    pub host: String,
    pub owner: Option<String>,
    pub time: Timestamp,
    #[serde(flatten)]
    pub overview: SystemOverview,
}

/// One monitored service.
// The booleans are the JSON interface's own fields (`healthy`, `hook_armed`, …).
#[allow(clippy::struct_excessive_bools)]
#[derive(Default, Debug, Serialize)]
pub(crate) struct ServiceStatus {
    pub name: String,
    pub unit: String,
    /// systemd's ActiveState; `unknown` when systemd did not answer.
    pub active_state: String,
    pub sub_state: String,
    /// `loaded`, `not-found`, `masked`, … (`unknown` when systemd did not answer).
    pub load_state: String,
    /// Active, its own process listening on `port`, `health_url` answering 2xx.
    pub healthy: bool,
    pub port: Option<u16>,
    /// The unit's own process listens on `port` (null without a port, or when something
    /// listens but its owner cannot be read, e.g. when not run as root).
    pub port_listening: Option<bool>,
    /// Something else holds `port` while the unit's own process does not.
    pub port_taken_by_other: bool,
    /// The health URL answered 2xx (null without a health URL, or when not asked: the unit is
    /// not active).
    pub health_ok: Option<bool>,
    /// What the health URL answered, or why it failed.
    pub health_detail: Option<String>,
    pub domain: Option<String>,
    pub critical: bool,
    /// The unit `OnFailure=` should start (`selfheal@<name>.service`).
    pub heal_unit: String,
    /// systemd's LoadState of the heal unit (`loaded`, `not-found`, `masked`, `bad-setting`,
    /// …; `unknown` when systemd did not answer).
    pub heal_unit_load_state: String,
    /// The unit's `OnFailure=` starts its heal unit, and that unit loads as written.
    pub hook_armed: bool,
    /// The heal unit is masked: healing is disabled by hand.
    pub healing_masked: bool,
    /// The heal unit is not installed.
    pub heal_unit_missing: bool,
    /// Healing runs within `threshold_window`.
    pub recent_runs: usize,
    /// Automatic restarts systemd made in the last 24 h (`Restart=`), as runs and
    /// `selfheal watch` recorded them.
    pub restarts_by_systemd_24h: usize,
    /// The next failure would not be healed (loop protection).
    pub suppressed: bool,
    /// When loop protection lets a run through again.
    pub suppressed_until: Option<Timestamp>,
    /// When loop protection's timed retry runs, while one is scheduled.
    pub next_retry_at: Option<Timestamp>,
    pub last_healing: Option<LastHealing>,
    /// What the probes saw last (null when it is not probed).
    pub probe: Option<ProbeStatus>,
    /// Why the state is not known (systemd did not answer in time).
    pub unknown_reason: Option<String>,
    /// Not in `monitored_services`: a unit `all_services:` covers, shown while it is failed.
    pub unlisted: bool,
    /// While a person's pause holds its healing back (`selfheal pause`): until when, and why.
    pub paused_until: Option<Timestamp>,
    pub pause_reason: Option<String>,
    /// When its next maintenance window begins (none while one is on, or when it has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_maintenance: Option<Timestamp>,
}

/// A probed service's last probe round (`selfheal probe`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ProbeStatus {
    /// The last judged round passed (null before the first, when it was not judged, or when
    /// it is older than two intervals: no longer current).
    pub ok: Option<bool>,
    /// Failed rounds in a row ...
    pub failures: u32,
    /// ... and how many start its heal unit.
    pub failures_to_heal: u32,
    /// What the last round saw, or why it did not judge.
    pub detail: String,
    /// The last round.
    pub checked_at: Option<Timestamp>,
    /// The last failed round.
    pub last_failed_at: Option<Timestamp>,
}

/// The service's last healing run.
#[derive(Debug, Serialize)]
pub(crate) struct LastHealing {
    pub outcome: Outcome,
    pub started_at: Timestamp,
    pub healed_by: Option<String>,
    pub summary: String,
}

/// The counts of the summary line.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub(crate) struct Summary {
    /// Active and healthy.
    pub running: usize,
    /// Active but not listening or not answering, or activating / reloading.
    pub unhealthy: usize,
    pub failed: usize,
    /// Inactive, activating, deactivating, …
    pub inactive: usize,
    pub not_found: usize,
    /// systemd did not answer.
    pub unknown: usize,
}

/// The configuration that matters at a glance.
#[derive(Debug, Serialize)]
pub(crate) struct ConfigInfo {
    pub monitored: usize,
    pub failure_threshold: u32,
    pub threshold_window: String,
    /// `smtp`, `sendmail`, `file`, or null without an `email:` section.
    pub email_transport: Option<String>,
    /// Where SMTP goes (`host:port`), when it does.
    pub email_relay: Option<String>,
    pub outbox_queued: usize,
    /// When the oldest queued report was queued.
    pub outbox_oldest: Option<Timestamp>,
    /// The channels beside email, each with its backlog.
    pub channels: Vec<ChannelStatus>,
    /// Services whose Alertmanager alert is firing.
    pub open_alerts: Vec<String>,
    pub metrics_file: Option<String>,
    /// selfheal's own timers the config needs, each with its state and last round (empty when
    /// only some services were asked for).
    pub timers: Vec<timers::TimerStatus>,
    /// With `all_services:`: how many loaded service units it arms beside the monitored ones,
    /// and how many it keeps off (null without it, or when systemd did not list them).
    pub all_services: Option<CoveredUnits>,
    /// The host guard's storm, while one is worked through (null otherwise).
    pub guard_storm: Option<GuardStormStatus>,
}

/// A storm the host guard works through: who has the turn, who waits.
#[derive(Debug, Serialize)]
pub(crate) struct GuardStormStatus {
    pub since: Option<Timestamp>,
    pub turn: Option<String>,
    pub waiting: Vec<String>,
}

impl GuardStormStatus {
    /// The storm in `<state>/guard.json`, when one is on.
    fn read(state: &StateDir) -> Option<GuardStormStatus> {
        let guard = crate::heal::guard::read(state)?;
        (!guard.over()).then(|| GuardStormStatus {
            since: guard.began_at,
            turn: guard.turn.map(|(service, _)| service),
            waiting: guard.waiting,
        })
    }
}

/// What `all_services:` covers among the loaded service units.
#[derive(Debug, Serialize)]
pub(crate) struct CoveredUnits {
    pub armed: usize,
    pub excluded: usize,
}

/// One channel of `notify:` and what waits for it.
#[derive(Debug, Serialize)]
pub(crate) struct ChannelStatus {
    /// `webhook (slack, URL in …)`, `alertmanager http://…`.
    pub channel: String,
    pub queued: usize,
    /// When the first waiting message was queued, its attempts and last error.
    pub oldest: Option<Timestamp>,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Messages the channel refused for good (HTTP 400, 413, 422), set aside in the outbox.
    pub refused: usize,
}

/// What the state directory adds to each row: loop protection's retry and the probes' last
/// round.
fn follow_ups(
    config: &Config,
    state: &StateDir,
    services: &[&ServiceConfig],
    rows: &mut [ServiceStatus],
) {
    let probe_records = crate::heal::probe::last_records(state);
    for (row, service) in rows.iter_mut().zip(services) {
        // A suppressed service, or one whose FAILED run scheduled a retry.
        row.next_retry_at = state
            .episode(&row.name)
            .ok()
            .flatten()
            .and_then(|episode| episode.next_retry_at);
        row.probe = probe_status(config, &probe_records, service);
    }
}

/// What the probes last saw of `service` (`None` when it is not probed).
fn probe_status(
    config: &Config,
    records: &BTreeMap<String, ProbeRecord>,
    service: &ServiceConfig,
) -> Option<ProbeStatus> {
    let probe = config.probe_of(service)?;
    let record = records.get(&service.name).cloned().unwrap_or_default();
    // A verdict is current while the next rounds could still have changed it: with its timer
    // stopped, an old failure says nothing about now.
    let current = config.probe.as_ref().is_some_and(|top| {
        let stale_after = Duration::from(top.interval) * 2 + probe.timeout;
        record
            .checked_at
            .and_then(|at| SystemTime::now().duration_since(at.time()).ok())
            .is_some_and(|age| age <= stale_after)
    });
    Some(ProbeStatus {
        ok: record.ok.filter(|_| current),
        failures: record.failures,
        failures_to_heal: probe.failures,
        detail: record.detail,
        checked_at: record.checked_at,
        last_failed_at: record.last_failed_at,
    })
}

/// Everything the dashboard shows, read now.
pub(crate) fn gather(
    config: &Config,
    state: &StateDir,
    services: &[&ServiceConfig],
) -> Result<Status, crate::state::StateError> {
    let now = SystemTime::now();
    // systemd, sockets, history and the host in parallel: none waits for another.
    let started = std::time::Instant::now();
    let (units, listeners, history, overview) = std::thread::scope(|scope| {
        let units = scope.spawn(|| {
            let answer = ask_systemd(config, state, services);
            tracing::debug!("systemd answered after {:?}", started.elapsed());
            answer
        });
        // The walk of /proc is for ports: without one, there is nothing to look for.
        let any_port = services.iter().any(|service| service.port.is_some());
        let listeners = scope.spawn(move || {
            if any_port {
                Listeners::read()
            } else {
                Listeners::default()
            }
        });
        let overview = scope.spawn(|| SystemOverview::read(state.root()));
        let history = state.history();
        (
            units.join().expect("the systemd query does not panic"),
            listeners.join().expect("reading sockets does not panic"),
            history,
            overview.join().expect("reading /proc does not panic"),
        )
    });
    let history = history?;
    let mut rows = rows(config, state, services, &units, &listeners, &history, now);
    follow_ups(config, state, services, &mut rows);
    tracing::debug!(
        "units, sockets, history and host read after {:?}",
        started.elapsed()
    );
    check_health(services, &mut rows);
    // A hang the probes see (a port that accepts but never answers) is not healthy either.
    let hung = |row: &&mut ServiceStatus| {
        row.probe
            .as_ref()
            .is_some_and(|probe| probe.ok == Some(false))
    };
    rows.iter_mut()
        .filter(hung)
        .for_each(|row| row.healthy = false);
    tracing::debug!("health URLs checked after {:?}", started.elapsed());
    let day_ago = now - Duration::from_secs(86_400);
    let recent: Vec<HistoryRecord> = history
        .iter()
        .rev()
        .filter(|r| r.started() >= day_ago)
        .filter(|r| r.outcome != Outcome::Planned)
        .cloned()
        .collect();
    let (queued, oldest) = crate::notify::email::Outbox::backlog(state);
    Ok(Status {
        system: SystemInfo {
            name: config.system_name(),
            host: crate::host::hostname(),
            owner: config.owner.clone(),
            time: Timestamp::seconds(now),
            overview,
        },
        summary: summarize(&rows),
        services: rows,
        recent,
        config: ConfigInfo::of(config, state, queued, oldest),
    })
}

impl ConfigInfo {
    /// The config's figures the dashboard shows, with the outbox's `queued` reports and its
    /// `oldest`.
    fn of(
        config: &Config,
        state: &StateDir,
        queued: usize,
        oldest: Option<SystemTime>,
    ) -> ConfigInfo {
        ConfigInfo {
            monitored: config.monitored_services.len(),
            failure_threshold: config.failure_threshold,
            threshold_window: config.threshold_window.to_string(),
            email_transport: config
                .email
                .as_ref()
                .map(|email| email.transport.as_str().to_owned()),
            email_relay: config
                .email
                .as_ref()
                .and_then(|email| email.smtp.as_ref())
                .filter(|_| {
                    config.email.as_ref().map(|e| e.transport)
                        == Some(crate::notify::email::Transport::Smtp)
                })
                .map(|smtp| format!("{}:{}", smtp.host, smtp.port())),
            outbox_queued: queued,
            outbox_oldest: oldest.map(Timestamp::seconds),
            channels: channels(config, state),
            open_alerts: crate::notify::channel::alerts::open_alerts(state)
                .into_iter()
                .map(|alert| alert.service)
                .collect(),
            metrics_file: config
                .metrics_file
                .as_ref()
                .map(|path| path.display().to_string()),
            all_services: None,
            timers: Vec::new(),
            guard_storm: GuardStormStatus::read(state),
        }
    }
}

/// Each channel of `notify:` and its backlog.
fn channels(config: &Config, state: &StateDir) -> Vec<ChannelStatus> {
    config
        .notify
        .iter()
        .map(|channel| {
            let (queued, first) = crate::notify::channel::Queue::backlog(state, &channel.id());
            ChannelStatus {
                channel: channel.describe(),
                queued,
                oldest: first.as_ref().map(|message| message.queued_at),
                attempts: first.as_ref().map_or(0, |message| message.attempts),
                last_error: first.and_then(|message| message.last_error),
                refused: crate::notify::channel::Queue::refused(state, &channel.id()),
            }
        })
        .collect()
}

/// What a failure now would meet, by the one hold decision (as for a run from the hook): the
/// healing runs of this incident, whether it holds, and until when when it is at the threshold
/// (a run is let through once the run that filled it leaves the window: the
/// (len - threshold + 1)-th oldest of the counted runs).
fn held(
    config: &Config,
    runs: &[&HistoryRecord],
    episode: Option<&crate::state::Episode>,
    now: SystemTime,
    window: Duration,
) -> (usize, bool, Option<Timestamp>) {
    use crate::heal::hold::{Decision, Hold, HoldReason, Inputs, Rules, Starter};
    let inputs = Inputs {
        runs,
        episode,
        rules: Rules::of(config),
        starter: Starter::Hook,
        unit: None,
        // Loop protection's hold; a pause or a window is shown as paused, apart.
        planned: None,
        now,
    };
    let mut counted = crate::heal::hold::incident_failures(&inputs);
    let decision = crate::heal::hold::decide(&inputs);
    let until = match decision {
        Decision::Hold(Hold {
            why: HoldReason::Threshold { .. },
            ..
        }) => {
            counted.sort();
            let threshold = config.failure_threshold as usize;
            counted
                .get(counted.len().saturating_sub(threshold))
                .map(|t| Timestamp::seconds(*t + window))
        }
        _ => None,
    };
    (counted.len(), decision.holds(), until)
}

/// One row per service, from what systemd answered and what the state directory holds.
fn rows(
    config: &Config,
    state: &StateDir,
    services: &[&ServiceConfig],
    units: &[UnitAnswer],
    listeners: &Listeners,
    history: &[HistoryRecord],
    now: SystemTime,
) -> Vec<ServiceStatus> {
    let episodes: BTreeMap<String, crate::state::Episode> =
        state.episodes().unwrap_or_default().into_iter().collect();
    let mut plans = crate::heal::planned::Plans::read(config, state);
    let rows = services
        .iter()
        .zip(units)
        .map(|(service, unit)| {
            let seen = Seen {
                listeners,
                history,
                episode: episodes.get(&service.name),
            };
            let planned = plans.of(service, now);
            let next_maintenance = planned
                .is_none()
                .then(|| plans.next_window(service, now))
                .flatten();
            ServiceStatus {
                paused_until: planned
                    .as_ref()
                    .map(|planned| Timestamp::seconds(planned.until)),
                pause_reason: planned.and_then(|planned| planned.reason),
                next_maintenance: next_maintenance.map(Timestamp::seconds),
                ..row(config, service, unit, &seen, now)
            }
        })
        .collect();
    // What systemd said of the windows is kept for the next look (best effort: the
    // dashboard may run as a user who cannot write there).
    plans.keep(state);
    rows
}

/// What the state directory and the sockets say, for every row.
struct Seen<'a> {
    listeners: &'a Listeners,
    history: &'a [HistoryRecord],
    episode: Option<&'a crate::state::Episode>,
}

fn row(
    config: &Config,
    service: &ServiceConfig,
    answer: &UnitAnswer,
    seen: &Seen<'_>,
    now: SystemTime,
) -> ServiceStatus {
    let window = Duration::from(config.threshold_window);
    let (listeners, history, episode) = (seen.listeners, seen.history, seen.episode);
    let runs: Vec<&HistoryRecord> = history
        .iter()
        .filter(|r| r.service == service.name)
        .collect();
    let (counted, suppressed, suppressed_until) = held(config, &runs, episode, now, window);
    let day_ago = now - Duration::from_secs(86_400);
    let restarts_by_systemd_24h = runs
        .iter()
        .filter(|r| r.outcome == Outcome::RestartedBySystemd)
        .filter(|r| r.started() >= day_ago)
        .map(|r| r.restarts.max(1) as usize)
        .sum();
    let last_healing = runs
        .iter()
        .rev()
        .find(|r| r.outcome != Outcome::Planned && r.outcome != Outcome::Healthy)
        .map(|r| LastHealing {
            outcome: r.outcome,
            started_at: r.started_at,
            healed_by: r.healed_by.clone(),
            summary: r.summary.clone(),
        });
    let base = ServiceStatus {
        name: service.name.clone(),
        unit: service.unit_name(),
        active_state: "unknown".into(),
        sub_state: String::new(),
        load_state: "unknown".into(),
        healthy: false,
        port: service.port,
        port_listening: None,
        port_taken_by_other: false,
        health_ok: None,
        health_detail: None,
        domain: service.domain.clone(),
        critical: service.critical,
        heal_unit: service.heal_unit_name(),
        heal_unit_load_state: "unknown".into(),
        hook_armed: false,
        healing_masked: false,
        heal_unit_missing: false,
        recent_runs: counted,
        restarts_by_systemd_24h,
        suppressed,
        suppressed_until,
        next_retry_at: None,
        last_healing,
        probe: None,
        unknown_reason: None,
        unlisted: config.is_unlisted(&service.name),
        ..ServiceStatus::default()
    };
    let (unit, heal) = match answer {
        Ok(pair) => pair,
        Err(why) => {
            return ServiceStatus {
                unknown_reason: Some(why.clone()),
                ..base
            };
        }
    };
    let port_listening = service
        .port
        .and_then(|port| listeners.held_by_unit(port, &unit.id));
    let port_taken_by_other = service
        .port
        .is_some_and(|port| listeners.is_listening(port) && port_listening == Some(false));
    let active = unit.active_state == ActiveState::Active;
    ServiceStatus {
        active_state: if unit.load_state == "not-found" {
            "not-found".into()
        } else {
            unit.active_state.to_string()
        },
        sub_state: unit.sub_state.clone(),
        load_state: unit.load_state.clone(),
        // Health URLs are checked afterwards, all at once.
        healthy: active && port_listening != Some(false),
        port_listening,
        port_taken_by_other,
        heal_unit_load_state: heal.load_state.clone(),
        hook_armed: heal.load_state == "loaded"
            && unit
                .on_failure
                .iter()
                .any(|u| *u == service.heal_unit_name()),
        healing_masked: heal.load_state == "masked",
        heal_unit_missing: heal.load_state == "not-found",
        ..base
    }
}

/// Checks the health URLs of the active services, `HEALTH_CONCURRENCY` at a time, each within
/// `HEALTH_TIMEOUT`.
fn check_health(services: &[&ServiceConfig], rows: &mut [ServiceStatus]) {
    let mut pending: Vec<(usize, &crate::heal::verify::HealthUrl)> = services
        .iter()
        .enumerate()
        .filter(|(index, _)| rows[*index].active_state == "active")
        .filter_map(|(index, service)| service.health_url.as_ref().map(|url| (index, url)))
        .collect();
    if pending.is_empty() {
        return;
    }
    let _waiting = SlowNotice::new("waiting for health URLs to answer");
    while !pending.is_empty() {
        let batch: Vec<_> = pending
            .drain(..pending.len().min(HEALTH_CONCURRENCY))
            .collect();
        let answers: Vec<(usize, Result<u16, UrlFailure>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = batch
                .iter()
                .map(|(index, url)| (*index, scope.spawn(|| url.check(HEALTH_TIMEOUT))))
                .collect();
            handles
                .into_iter()
                .map(|(index, handle)| {
                    let answer = handle
                        .join()
                        .unwrap_or_else(|_| Err(UrlFailure::Failed("the check panicked".into())));
                    (index, answer)
                })
                .collect()
        });
        for (index, answer) in answers {
            let row = &mut rows[index];
            // A name that does not resolve says nothing of the service: not judged.
            let (ok, detail) = match answer {
                Ok(status) => (Some(true), format!("answered {status}")),
                Err(UrlFailure::Failed(why)) => (Some(false), why),
                Err(UrlFailure::Unresolved(why)) => (None, format!("{why} (not judged)")),
            };
            row.health_detail = Some(detail);
            row.health_ok = ok;
            row.healthy &= ok != Some(false);
        }
    }
}

/// Where a service counts in the summary line; the dashboard's mark follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Category {
    Running,
    /// Active but not serving, or starting / reloading: up, but not (yet) serving.
    Unhealthy,
    Failed,
    Inactive,
    NotFound,
    /// systemd did not answer.
    Unknown,
}

impl ServiceStatus {
    pub(crate) fn category(&self) -> Category {
        match self.active_state.as_str() {
            _ if self.unknown_reason.is_some() => Category::Unknown,
            "active" if self.healthy => Category::Running,
            "active" | "activating" | "reloading" => Category::Unhealthy,
            "failed" => Category::Failed,
            "not-found" => Category::NotFound,
            _ => Category::Inactive,
        }
    }
}

fn summarize(rows: &[ServiceStatus]) -> Summary {
    let mut summary = Summary::default();
    for row in rows {
        let count = match row.category() {
            Category::Running => &mut summary.running,
            Category::Unhealthy => &mut summary.unhealthy,
            Category::Failed => &mut summary.failed,
            Category::Inactive => &mut summary.inactive,
            Category::NotFound => &mut summary.not_found,
            Category::Unknown => &mut summary.unknown,
        };
        *count += 1;
    }
    summary
}
