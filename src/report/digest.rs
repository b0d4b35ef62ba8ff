//! The daily digest (`selfheal digest`, `digest: daily`): one mail summing up the last 24 h
//! per service (runs by outcome, success rate, mean time to heal), the services that needed
//! nothing, loop protection's open episodes and the outbox. Data first (`DigestReport`), then
//! the `digest*.j2` templates.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::Config;
use crate::outcome::Outcome;
use crate::state::stats::ServiceStats;
use crate::state::{Episode, HistoryRecord};
use crate::ui::when::Timestamp;

/// What a digest covers.
pub(crate) const PERIOD: Duration = Duration::from_secs(24 * 60 * 60);

/// One mail for a day.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DigestReport {
    pub system_name: String,
    pub host: String,
    /// When it was made (the end of the period).
    pub generated_at: Timestamp,
    /// The period, UTC, readable.
    pub since: String,
    pub until: String,
    /// Healing runs in the period (healthy no-ops and dry runs left out).
    pub runs: usize,
    pub services: Vec<DigestRow>,
    /// Monitored services without a healing run.
    pub quiet: Vec<String>,
    pub episodes: Vec<OpenEpisode>,
    /// Reports waiting in the outbox, and when the oldest was queued.
    pub outbox: usize,
    pub oldest_queued: Option<String>,
}

/// A service's figures, with the text the templates print.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DigestRow {
    #[serde(flatten)]
    pub stats: ServiceStats,
    /// `80%`, or `-` without a healing attempt.
    pub success: String,
    /// `412 ms`, or `-` without a resolved run.
    pub mean_to_heal: String,
}

impl From<ServiceStats> for DigestRow {
    fn from(stats: ServiceStats) -> DigestRow {
        DigestRow {
            success: stats
                .success_rate
                .map_or("-".to_owned(), |rate| format!("{:.0}%", rate * 100.0)),
            mean_to_heal: stats
                .mean_time_to_heal_ms
                .map_or("-".to_owned(), |ms| format!("{ms} ms")),
            stats,
        }
    }
}

/// A service that loop protection stopped healing.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct OpenEpisode {
    pub service: String,
    pub since: String,
    pub retries: u32,
    pub next_retry_at: Option<String>,
}

impl DigestReport {
    /// The digest of `history` for the period ending at `now`.
    pub(crate) fn new(
        config: &Config,
        history: &[HistoryRecord],
        episodes: Vec<(String, Episode)>,
        (outbox, oldest_queued): (usize, Option<SystemTime>),
        now: SystemTime,
    ) -> DigestReport {
        let since = now - PERIOD;
        // The runs of the period as `history --since 24h --stats` counts them (its RUNS
        // include the healthy no-ops); the digest's headline counts the healing ones.
        let period: Vec<&HistoryRecord> = history
            .iter()
            .filter(|r| r.outcome != Outcome::Planned)
            .filter(|r| (since..=now).contains(&r.started()))
            .collect();
        let healing = period
            .iter()
            .filter(|r| r.outcome != Outcome::Healthy)
            .count();
        let services: Vec<DigestRow> = crate::state::stats::per_service(&period)
            .into_iter()
            .filter(|stats| stats.runs > stats.healthy)
            .map(DigestRow::from)
            .collect();
        let quiet = config
            .monitored_services
            .iter()
            .map(|s| s.name.clone())
            .filter(|name| !services.iter().any(|row| &row.stats.service == name))
            .collect();
        // Only the episodes that hold the service back now, by the one hold decision: one
        // whose retry is overdue, or that is over, is no longer loop protection's.
        let rules = crate::heal::hold::Rules::of(config);
        let holds = |service: &str, episode: &Episode| {
            let runs: Vec<&HistoryRecord> =
                history.iter().filter(|r| r.service == service).collect();
            crate::heal::hold::decide(&crate::heal::hold::Inputs {
                runs: &runs,
                episode: Some(episode),
                rules,
                starter: crate::heal::hold::Starter::Hook,
                unit: None,
                // Loop protection's episodes: a plan is the dashboard's to show.
                planned: None,
                now,
            })
            .holds()
        };
        let episodes: Vec<(String, Episode)> = episodes
            .into_iter()
            .filter(|(service, episode)| holds(service, episode))
            .collect();
        let readable = |at: SystemTime| Timestamp::seconds(at).readable();
        DigestReport {
            system_name: config.system_name(),
            host: crate::host::hostname(),
            generated_at: Timestamp::seconds(now),
            since: readable(since),
            until: readable(now),
            runs: healing,
            services,
            quiet,
            episodes: episodes
                .into_iter()
                .map(|(service, episode)| OpenEpisode {
                    service,
                    since: episode.suppressed_at.readable(),
                    retries: episode.retries,
                    next_retry_at: episode.next_retry_at.map(Timestamp::readable),
                })
                .collect(),
            outbox,
            oldest_queued: oldest_queued.map(readable),
        }
    }
}

impl DigestReport {
    /// A digest of `report`'s run alone (what `check` renders the templates with).
    pub(crate) fn sample(report: &crate::report::Report) -> DigestReport {
        let now = SystemTime::now();
        let record = HistoryRecord {
            service: report.header.service.clone(),
            outcome: Outcome::Resolved,
            started_at: Timestamp::millis(now),
            duration_ms: 400,
            healed_by: None,
            summary: String::new(),
            manual: false,
            relapse: false,
            restarts: 0,
        };
        let mut digest = DigestReport {
            system_name: report.header.system_name.clone(),
            host: report.header.host.clone(),
            generated_at: Timestamp::seconds(now),
            since: String::new(),
            until: String::new(),
            runs: 0,
            services: Vec::new(),
            quiet: vec!["another".to_owned()],
            episodes: Vec::new(),
            outbox: 1,
            oldest_queued: Some(String::new()),
        };
        digest.runs = 1;
        digest.services = crate::state::stats::per_service(&[&record])
            .into_iter()
            .map(DigestRow::from)
            .collect();
        digest
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn record(service: &str, outcome: Outcome, hours_ago: u64, ms: u64) -> HistoryRecord {
        let at = SystemTime::now() - Duration::from_secs(hours_ago * 3600);
        HistoryRecord {
            service: service.into(),
            outcome,
            started_at: Timestamp::millis(at),
            duration_ms: ms,
            healed_by: None,
            summary: String::new(),
            manual: false,
            relapse: false,
            restarts: 0,
        }
    }

    #[test]
    fn sums_up_the_last_24_hours_per_service() {
        let config = Config::parse(
            "system_name: Sys\nmonitored_services:\n  - name: web\n  - name: db\n  - name: mail\n",
            Path::new("t.yml"),
        )
        .unwrap();
        let history = vec![
            record("web", Outcome::Resolved, 30, 100), // before the period
            record("web", Outcome::Resolved, 20, 300),
            record("web", Outcome::Resolved, 10, 500),
            record("web", Outcome::Failed, 5, 9000),
            record("web", Outcome::Healthy, 4, 1), // did nothing
            record("db", Outcome::Failed, 3, 2000),
            record("db", Outcome::Suppressed, 2, 3),
        ];
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let episode = Episode {
            retries: 1,
            next_retry_at: Some(Timestamp::seconds(now + hour)),
            ..Episode::opened(Timestamp::seconds(now - hour))
        };
        // A retry that is overdue holds nothing back: not listed as loop protection's.
        let overdue = Episode {
            next_retry_at: Some(Timestamp::seconds(now - hour)),
            ..episode.clone()
        };
        let digest = DigestReport::new(
            &config,
            &history,
            vec![("db".into(), episode.clone()), ("web".into(), overdue)],
            (2, None),
            now,
        );
        assert_eq!(digest.runs, 5);
        let web = &digest.services[0];
        assert_eq!(
            (
                web.stats.service.as_str(),
                web.stats.runs,
                web.stats.resolved,
                web.stats.failed
            ),
            ("web", 4, 2, 1)
        );
        assert_eq!(web.stats.healthy, 1, "as history --stats counts it");
        assert_eq!(web.success, "67%");
        assert_eq!(web.mean_to_heal, "400 ms");
        let db = &digest.services[1];
        assert_eq!((db.stats.failed, db.stats.suppressed), (1, 1));
        assert_eq!((db.success.as_str(), db.mean_to_heal.as_str()), ("0%", "-"));
        assert_eq!(digest.quiet, ["mail"]);
        assert_eq!(digest.episodes.len(), 1, "{:?}", digest.episodes);
        assert_eq!(
            digest.episodes[0].next_retry_at,
            episode.next_retry_at.map(Timestamp::readable)
        );
        assert_eq!(digest.outbox, 2);

        let renderer = crate::report::Renderer::new(None);
        assert_eq!(
            renderer.subject(&digest).unwrap(),
            "📋 Sys: digest - 5 healing runs in 24h"
        );
        let text = renderer.text(&digest).unwrap();
        assert!(
            text.contains(
                "web         4         2       1         0           0        1           0      67%        400 ms"
            ),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "db: suppressed since {}",
                episode.suppressed_at.readable()
            )),
            "{text}"
        );
        let html = renderer.html(&digest).unwrap();
        assert!(html.contains("<td>67%</td>"), "{html}");
    }

    /// A unit all_services: covers that failed and was reported (not healed) has its own
    /// column: not a failed heal, not a success.
    #[test]
    fn reported_failures_of_unlisted_units_have_a_column() {
        let config = Config::parse(
            "system_name: Sys\nall_services: {}\nmonitored_services:\n  - name: web\n",
            Path::new("t.yml"),
        )
        .unwrap();
        let history = vec![
            record("batch-import", Outcome::Reported, 3, 40),
            record("batch-import", Outcome::Reported, 2, 40),
        ];
        let digest = DigestReport::new(&config, &history, Vec::new(), (0, None), SystemTime::now());
        let batch = &digest.services[0];
        assert_eq!(
            (batch.stats.runs, batch.stats.reported, batch.stats.failed),
            (2, 2, 0)
        );
        assert_eq!(batch.success, "-");
        let renderer = crate::report::Renderer::new(None);
        let text = renderer.text(&digest).unwrap();
        assert!(
            text.contains("RESOLVED  FAILED  REPORTED  SUPPRESSED"),
            "{text}"
        );
        assert!(
            text.contains("batch-import     2         0       0         2           0"),
            "{text}"
        );
        let html = renderer.html(&digest).unwrap();
        assert!(html.contains("<th style="), "{html}");
        assert!(html.contains("Reported</th>"), "{html}");
    }
}
