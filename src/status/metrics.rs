//! The Prometheus textfile for node_exporter's textfile collector (`metrics_file:`), rewritten
//! atomically (a temporary file renamed over it in the same directory) after every run and
//! every flush. Figures come from the history and the outbox, so they never disagree with
//! `selfheal history`; labels are only `service` and `outcome` (no high-cardinality values).
//!
//! History is compacted past 1 MiB to the last runs of each service: a counter may then go
//! down, which Prometheus' `rate()`/`increase()` read as a counter reset.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::config::Config;
use crate::outcome::Outcome;
use crate::state::{Compacted, HistoryRecord, StateDir};

// Upper bounds (seconds) of the heal-duration histogram, kept with the counts of compacted runs.
use crate::state::HEAL_DURATION_BUCKETS as DURATION_BUCKETS;

/// Rewrites the metrics file when the config asks for one. A failure is logged, never fatal:
/// metrics must not cost a heal or a report.
pub(crate) fn update(config: &Config, state: &StateDir) {
    let Some(path) = &config.metrics_file else {
        return;
    };
    let written = state
        .history()
        .map_err(|err| err.to_string())
        .and_then(|history| {
            let (queued, _) = crate::notify::email::Outbox::backlog(state);
            // Found healthy since (a person or a retry fixed it; `flush` looks every 5
            // minutes): the episode is only watched, nobody is needed.
            let watched: Vec<String> = state
                .episodes()
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, episode)| episode.is_watching())
                .map(|(service, _)| service)
                .collect();
            let compacted = state.compacted();
            let mut text = render(config, &history, &compacted, &watched, queued);
            channel_backlog(&mut text, config, state);
            last_rounds(&mut text, config, state);
            held_back(&mut text, state);
            // Through the directory's descriptor, reached without following a link: the
            // directory is often another user's (Debian chowns /var/lib/prometheus to
            // prometheus), who could otherwise swap a part of it for a symlink.
            crate::host::nofollow::open_parent(path)
                .map_err(|err| err.to_string())?
                .replace_file(text.as_bytes(), 0o644)
                .map_err(|err| err.to_string())
        });
    if let Err(err) = written {
        tracing::error!("metrics file {} not written: {err}", path.display());
    }
}

/// What the history says, per service: runs by outcome, the last run's start, the last
/// healing outcome; and every healing run's duration.
#[derive(Default)]
struct Tally<'a> {
    runs: BTreeMap<(&'a str, &'a str), u64>,
    last_run: BTreeMap<&'a str, f64>,
    last_outcome: BTreeMap<&'a str, Outcome>,
    durations: Vec<f64>,
}

impl<'a> Tally<'a> {
    fn of(history: &'a [HistoryRecord]) -> Tally<'a> {
        let Tally {
            mut runs,
            mut last_run,
            mut last_outcome,
            mut durations,
        } = Tally::default();
        for record in history {
            *runs
                .entry((&record.service, record.outcome.as_str()))
                .or_default() += 1;
            let seconds = record
                .started()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            let latest = last_run.entry(&record.service).or_insert(seconds);
            *latest = latest.max(seconds);
            // A run that yielded to a concurrent one is `suppressed` too, but has no diagnosis
            // (no summary): the other run's outcome is the one that counts.
            let yielded = record.outcome == Outcome::Suppressed && record.summary.is_empty();
            if record.outcome.is_healing_attempt()
                || (record.outcome == Outcome::Suppressed && !yielded)
            {
                last_outcome.insert(&record.service, record.outcome);
            }
            if record.outcome.is_healing_attempt() {
                durations.push(record.duration_ms as f64 / 1000.0);
            }
        }
        Tally {
            runs,
            last_run,
            last_outcome,
            durations,
        }
    }
}

/// The outcomes whose counters start at 0 for every monitored service (`prometheus/`'s rules
/// count them with `increase()`).
const COUNTED_FROM_ZERO: [Outcome; 4] = [
    Outcome::Resolved,
    Outcome::Failed,
    Outcome::Suppressed,
    Outcome::CrashLoop,
];

/// The heal duration histogram's buckets, sum and count: of `durations` in history and of the
/// runs compaction dropped.
fn write_durations(out: &mut String, durations: &[f64], compacted: &Compacted) {
    for (index, bound) in DURATION_BUCKETS.into_iter().enumerate() {
        let below = durations.iter().filter(|d| **d <= bound).count() as u64
            + compacted.durations_below.get(index).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "selfheal_heal_duration_seconds_bucket{{le=\"{bound}\"}} {below}"
        );
    }
    let count = durations.len() as u64 + compacted.durations_count;
    let _ = writeln!(
        out,
        "selfheal_heal_duration_seconds_bucket{{le=\"+Inf\"}} {count}\nselfheal_heal_duration_seconds_sum {:.3}\nselfheal_heal_duration_seconds_count {count}",
        durations.iter().sum::<f64>() + compacted.durations_sum,
    );
}

/// The textfile for `history`, the services whose episode is only `watched` (healthy again)
/// and `queued` reports in the outbox.
pub(crate) fn render<'a>(
    config: &'a Config,
    history: &'a [HistoryRecord],
    compacted: &'a Compacted,
    watched: &[String],
    queued: usize,
) -> String {
    let Tally {
        mut runs,
        last_run,
        last_outcome,
        durations,
    } = Tally::of(history);
    // The outcomes alert rules count start at 0 for every monitored service (and every unit
    // `all_services:` covered that has a run): a counter that first appears at 1 has no
    // increase to Prometheus, and its first failure would page no one.
    let services: std::collections::BTreeSet<&str> = config
        .monitored_services
        .iter()
        .map(|service| service.name.as_str())
        .chain(history.iter().map(|record| record.service.as_str()))
        .collect();
    for service in services {
        for outcome in COUNTED_FROM_ZERO {
            runs.entry((service, outcome.as_str())).or_insert(0);
        }
    }
    // What compaction dropped counts on: a counter never goes down.
    for (service, outcomes) in &compacted.runs {
        for (outcome, count) in outcomes {
            *runs
                .entry((service.as_str(), outcome.as_str()))
                .or_insert(0) += count;
        }
    }
    let mut out = String::new();
    family(
        &mut out,
        "selfheal_runs_total",
        "counter",
        "selfheal runs by service and outcome (from the history).",
    );
    for ((service, outcome), count) in &runs {
        let _ = writeln!(
            out,
            "selfheal_runs_total{{service=\"{service}\",outcome=\"{outcome}\"}} {count}"
        );
    }
    family(
        &mut out,
        "selfheal_last_run_timestamp_seconds",
        "gauge",
        "When the service's last selfheal run started (Unix time).",
    );
    for (service, seconds) in &last_run {
        let _ = writeln!(
            out,
            "selfheal_last_run_timestamp_seconds{{service=\"{service}\"}} {seconds:.3}"
        );
    }
    family(
        &mut out,
        "selfheal_heal_duration_seconds",
        "histogram",
        "How long healing runs (resolved or failed) took.",
    );
    write_durations(&mut out, &durations, compacted);
    family(
        &mut out,
        "selfheal_episode_open",
        "gauge",
        "1 while the service's last healing run failed or was suppressed (a person is needed), else 0.",
    );
    for service in &config.monitored_services {
        let open = matches!(
            last_outcome.get(service.name.as_str()),
            Some(Outcome::Failed | Outcome::Suppressed)
        ) && !watched.contains(&service.name);
        let _ = writeln!(
            out,
            "selfheal_episode_open{{service=\"{}\"}} {}",
            service.name,
            u8::from(open)
        );
    }
    family(
        &mut out,
        "selfheal_outbox_messages",
        "gauge",
        "Reports waiting in the outbox for `selfheal flush`.",
    );
    let _ = writeln!(out, "selfheal_outbox_messages {queued}");
    out
}

/// When each round the config needs last ran: an alert rule sees a host whose selfheal
/// stopped (`time() - selfheal_last_round_timestamp_seconds{round="watch"} > 120`).
fn last_rounds(out: &mut String, config: &Config, state: &StateDir) {
    family(
        out,
        "selfheal_last_round_timestamp_seconds",
        "gauge",
        "When selfheal's round (watch, probe, flush, digest) last ran (Unix time).",
    );
    for (round, _, _) in super::timers::needed(config) {
        if let Some(at) = state.last_round(round) {
            let seconds = at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            let _ = writeln!(
                out,
                "selfheal_last_round_timestamp_seconds{{round=\"{round}\"}} {seconds:.3}"
            );
        }
    }
}

/// The reports the notification policy held back, by reason (they stay in history and the
/// digest): both reasons always, so a rate can be taken from zero.
fn held_back(out: &mut String, state: &StateDir) {
    use crate::notify::policy::Held;
    family(
        out,
        "selfheal_notifications_held_total",
        "counter",
        "Reports notify_policy held back (resolved_digest: told in the digest; min_interval: folded into the next report).",
    );
    let counts = crate::notify::policy::held_counts(state);
    for reason in [Held::ResolvedDigest, Held::MinInterval] {
        let count = counts.held.get(reason.label()).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "selfheal_notifications_held_total{{reason=\"{}\"}} {count}",
            reason.label()
        );
    }
}

/// Messages waiting in each channel's queue (`notify:`), by the channel's outbox directory
/// (its kind and a digest, never its URL), and the alerts firing.
fn channel_backlog(out: &mut String, config: &Config, state: &StateDir) {
    if config.notify.is_empty() {
        return;
    }
    family(
        out,
        "selfheal_notify_queued_messages",
        "gauge",
        "Messages waiting in a channel's queue for `selfheal flush` (webhooks, Alertmanager).",
    );
    for channel in &config.notify {
        let id = channel.id();
        let (queued, _) = crate::notify::channel::Queue::backlog(state, &id);
        let _ = writeln!(
            out,
            "selfheal_notify_queued_messages{{channel=\"{id}\"}} {queued}"
        );
    }
    family(
        out,
        "selfheal_alerts_firing",
        "gauge",
        "Services whose SelfhealFailed alert is firing.",
    );
    let _ = writeln!(
        out,
        "selfheal_alerts_firing {}",
        crate::notify::channel::alerts::open_alerts(state).len()
    );
}

/// The `# HELP` and `# TYPE` lines of a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use prometheus_parse::Value;

    use super::*;

    fn record(service: &str, outcome: Outcome, duration_ms: u64) -> HistoryRecord {
        HistoryRecord {
            service: service.into(),
            outcome,
            started_at: "2026-11-29T10:00:00.000Z".parse().unwrap(),
            duration_ms,
            healed_by: None,
            // A yielded run (a web suppressed run of 1 ms here) has no diagnosis.
            summary: if duration_ms == 1 {
                String::new()
            } else {
                format!("{service}.service failed")
            },
            manual: false,
            relapse: false,
            restarts: 0,
        }
    }

    /// History's compaction dropped 40 resolved runs of web: its counter and the histogram
    /// count on from them, never down.
    #[test]
    fn the_runs_compaction_dropped_count_on() {
        let config = Config::parse(
            "monitored_services:\n  - name: web\n",
            std::path::Path::new("x.yml"),
        )
        .unwrap();
        let history = [
            record("web", Outcome::Resolved, 400),
            record("web", Outcome::Resolved, 1_500),
        ];
        let mut compacted = Compacted::default();
        compacted
            .runs
            .entry("web".into())
            .or_default()
            .insert("resolved".into(), 40);
        compacted.durations_below = vec![0, 10, 40, 40, 40, 40, 40, 40, 40];
        compacted.durations_count = 40;
        compacted.durations_sum = 60.0;
        let carried = render(&config, &history, &compacted, &[], 0);
        for line in [
            "selfheal_runs_total{service=\"web\",outcome=\"resolved\"} 42\n",
            "selfheal_heal_duration_seconds_bucket{le=\"0.5\"} 1\n",
            "selfheal_heal_duration_seconds_bucket{le=\"1\"} 11\n",
            "selfheal_heal_duration_seconds_bucket{le=\"+Inf\"} 42\n",
            "selfheal_heal_duration_seconds_count 42\n",
        ] {
            assert!(carried.contains(line), "{line}{carried}");
        }
    }

    #[test]
    fn counts_runs_and_durations_in_prometheus_text_format() {
        let config = Config::parse(
            "monitored_services:\n  - name: web\n  - name: db\n  - name: idle\n",
            std::path::Path::new("x.yml"),
        )
        .unwrap();
        let history = [
            record("web", Outcome::Resolved, 400),
            record("web", Outcome::Resolved, 2_000),
            record("db", Outcome::Failed, 40_000),
            record("db", Outcome::Suppressed, 5),
            record("web", Outcome::Healthy, 3),
            // web yielded to a concurrent run: no summary, and its episode stays closed.
            record("web", Outcome::Suppressed, 1),
        ];
        let text = render(&config, &history, &Compacted::default(), &[], 2);
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        let value = |metric: &str, labels: &[(&str, &str)]| {
            scrape
                .samples
                .iter()
                .find(|s| {
                    s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
                })
                .map_or_else(
                    || panic!("{metric} {labels:?} missing in\n{text}"),
                    |s| s.value.clone(),
                )
        };
        assert_eq!(
            value(
                "selfheal_runs_total",
                &[("service", "web"), ("outcome", "resolved")]
            ),
            Value::Counter(2.0)
        );
        assert_eq!(
            value(
                "selfheal_runs_total",
                &[("service", "db"), ("outcome", "suppressed")]
            ),
            Value::Counter(1.0)
        );
        assert_eq!(
            value("selfheal_episode_open", &[("service", "db")]),
            Value::Gauge(1.0)
        );
        assert_eq!(
            value("selfheal_episode_open", &[("service", "web")]),
            Value::Gauge(0.0)
        );
        // The outcomes the shipped rules count start at 0.
        assert_eq!(
            value(
                "selfheal_runs_total",
                &[("service", "web"), ("outcome", "failed")]
            ),
            Value::Counter(0.0)
        );
        // A person fixed db since: its episode is watched, nobody is needed.
        let fixed = render(
            &config,
            &history,
            &Compacted::default(),
            &["db".to_owned()],
            2,
        );
        assert!(
            fixed.contains("selfheal_episode_open{service=\"db\"} 0\n"),
            "{fixed}"
        );
        assert_eq!(
            value("selfheal_episode_open", &[("service", "idle")]),
            Value::Gauge(0.0)
        );
        assert_eq!(value("selfheal_outbox_messages", &[]), Value::Gauge(2.0));
        assert_eq!(
            value("selfheal_last_run_timestamp_seconds", &[("service", "web")]),
            Value::Gauge(1_795_946_400.0)
        );
        let Value::Histogram(buckets) = value("selfheal_heal_duration_seconds", &[]) else {
            panic!("no histogram in\n{text}");
        };
        let count_at = |bound: f64| {
            buckets
                .iter()
                .find(|b| (b.less_than - bound).abs() < 1e-9)
                .map(|b| b.count)
        };
        // 0.4 s, 2 s and 40 s: three healing runs (healthy and suppressed ones are not).
        assert_eq!(count_at(0.5), Some(1.0));
        assert_eq!(count_at(2.5), Some(2.0));
        assert_eq!(count_at(60.0), Some(3.0));
        for family in [
            "selfheal_runs_total",
            "selfheal_last_run_timestamp_seconds",
            "selfheal_heal_duration_seconds",
            "selfheal_episode_open",
            "selfheal_outbox_messages",
        ] {
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
            assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
        }
    }
}
