//! The one way a report reaches people, whoever made it (a run, the watch, `flush`): its
//! cascade, the mail, every channel and the alert lifecycle, and the all-clear.
//!
//! Every channel that was told FAILED, SUPPRESSED or CRASH LOOP is told when the service is
//! back, whoever brought it back: a report that shows the service up after such a one is its
//! all-clear (`RunFacts::all_clear`). Which report was told last lives in
//! `<state>/told/<service>.json`.

use serde::{Deserialize, Serialize};

use crate::notify::cascade::Arrival;
use crate::outcome::Outcome;
use crate::report::{Renderer, Report};
use crate::state::StateDir;
use crate::ui::when::Timestamp;

/// The last report people were told that the service is down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Told {
    /// Its word: `FAILED`, `SUPPRESSED`, `CRASH LOOP`.
    pub word: String,
    pub at: Timestamp,
    /// When people were first told it is down (reminders keep it; `at` is the last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
}

const TOLD: &str = "told";

impl Told {
    /// A crash loop's report: its all-clear is the watch's while the loop goes on.
    pub(crate) fn is_crash_loop(&self) -> bool {
        self.word == word(Outcome::CrashLoop)
    }
}

/// The word a report of `outcome` is told with: `CRASH LOOP` for `crash_loop`.
fn word(outcome: Outcome) -> String {
    match outcome {
        // An unlisted unit's failure, reported: its all-clear is "BACK UP after FAILED".
        Outcome::Reported => "FAILED".to_owned(),
        _ => outcome.as_str().replace('_', " ").to_uppercase(),
    }
}

/// What was told last of `service`, when it was that the service is down.
pub(crate) fn told(state: &StateDir, service: &str) -> Option<Told> {
    state.service_file(TOLD, service).ok().flatten()
}

/// Marks `report` as the all-clear of an earlier down report, when it shows the service up
/// and people were told it was down. Call before the report is rendered.
pub(crate) fn mark_all_clear(state: &StateDir, report: &mut Report) {
    let up = matches!(
        report.facts.outcome,
        Outcome::Resolved | Outcome::Healthy | Outcome::RestartedBySystemd
    );
    if up && !report.facts.dry_run {
        let service = &report.header.service;
        // Up between two crashes of a loop that is still going is no all-clear: the watch
        // sends it when a whole window has passed without a restart.
        report.facts.all_clear = told(state, service)
            .filter(|told| {
                !told.is_crash_loop() || !crate::heal::watch::crash_loop_ongoing(state, service)
            })
            .map(|told| told.word);
    }
}

/// Where reports go from this process.
pub(crate) struct Teller<'a> {
    pub config: &'a crate::config::Config,
    pub state: &'a StateDir,
    pub renderer: &'a Renderer,
    /// What a cascade's delivery timer runs: `selfheal flush` with this process' paths.
    pub flush_command: &'a [String],
    /// How to reach systemd when a cascade's delivery timer must be set (only then).
    pub systemd: fn() -> Result<crate::systemd::Systemd, crate::systemd::SystemdError>,
    /// Tell anyone at all (`run --no-email` says no: no mail, no channel).
    pub send: bool,
}

impl Teller<'_> {
    /// Tells people of `report` (marked by `mark_all_clear`): records what they are told, then
    /// the mail (or the cascade it joined, `arrival`) and every channel at once. A dry run
    /// tells nobody.
    pub(crate) fn tell(&self, report: &Report, arrival: Option<&Arrival>) {
        // A paused service's runs are recorded, never told.
        if report.facts.dry_run || !self.send || report.facts.outcome == Outcome::Paused {
            return;
        }
        let (config, state) = (self.config, self.state);
        let mails = config.email.is_some();
        let posts = !config.notify.is_empty();
        let mailing = crate::notify::mailing::Mailing {
            config,
            state,
            renderer: self.renderer,
            flush_command: self.flush_command,
            systemd: self.systemd,
        };
        // One report per crash loop: systemd >= 254 starts the heal unit at each attempt, and
        // those runs end FAILED (or RESOLVED for the moment the service stays up) for as long
        // as the loop the watch told goes on.
        if belongs_to_a_told_crash_loop(config, state, report) {
            tracing::info!(selfheal_service = %report.header.service, "not told: it belongs to the crash loop reported already");
            if let Some(arrival) = arrival {
                mailing.quiet(arrival);
            }
            return;
        }
        // One all-clear per down report: whoever removes the record first sends it (a run and
        // `flush` may both find the service up). A report worth telling on its own (RESOLVED)
        // still goes out; one that was only the all-clear does not.
        let plain;
        let report = if report.facts.all_clear.is_some() && !claim(state, &report.header.service) {
            tracing::info!(selfheal_service = %report.header.service, "its all-clear was sent by another selfheal");
            plain = Report {
                facts: crate::heal::facts::RunFacts {
                    all_clear: None,
                    ..report.facts.clone()
                },
                ..report.clone()
            };
            if !crate::notify::email::worth_mailing(&plain) {
                if let Some(arrival) = arrival {
                    mailing.quiet(arrival);
                }
                return;
            }
            &plain
        } else {
            report
        };
        let worth = crate::notify::email::worth_mailing(report);
        let report = if worth {
            let Some(report) = self.by_policy(report) else {
                if let Some(arrival) = arrival {
                    mailing.quiet(arrival);
                }
                return;
            };
            report
        } else {
            std::borrow::Cow::Borrowed(report)
        };
        let report = report.as_ref();
        let subject = match self.renderer.subject(report) {
            Ok(subject) => subject,
            Err(err) => {
                tracing::error!(selfheal_service = %report.header.service, "the report's subject cannot be rendered: {err}");
                return;
            }
        };
        // Recorded before it goes out (a message that cannot be sent waits in a queue): a
        // retry seconds later already knows people were told, and clears it.
        if worth {
            remember(state, report);
        }
        std::thread::scope(|posting| {
            let posted = posts.then(|| {
                posting.spawn(|| crate::notify::channel::deliver(config, state, report, &subject))
            });
            if mails && worth {
                mailing.mail(report, arrival);
            } else if let Some(arrival) = arrival {
                mailing.quiet(arrival);
            }
            if let Some(rounds) = posted.and_then(|thread| thread.join().ok()) {
                crate::notify::channel::log_rounds(&report.header.service, &rounds);
            }
        });
    }
}

impl Teller<'_> {
    /// What is worth a message now (`notify_policy:`): `None` when `report` is held (it stays
    /// in history, the digest has it, and it is counted), else the report to tell, with what
    /// was folded into it.
    fn by_policy<'r>(&self, report: &'r Report) -> Option<std::borrow::Cow<'r, Report>> {
        let service = &report.header.service;
        let policy = self.config.notify_policy_of(service);
        let down_told = told(self.state, service).is_some();
        let now = std::time::SystemTime::now();
        match crate::notify::policy::judge(self.state, report, policy, down_told, now) {
            crate::notify::policy::Verdict::Held(why) => {
                tracing::info!(selfheal_service = %service, "not told now: notify_policy ({})", why.label());
                None
            }
            crate::notify::policy::Verdict::Tell { folded: None } => {
                Some(std::borrow::Cow::Borrowed(report))
            }
            crate::notify::policy::Verdict::Tell { folded } => {
                Some(std::borrow::Cow::Owned(Report {
                    facts: crate::heal::facts::RunFacts {
                        folded,
                        ..report.facts.clone()
                    },
                    ..report.clone()
                }))
            }
        }
    }
}

/// Whether `report` is one of the runs of a crash loop the watch told (systemd >= 254 starts
/// the heal unit at each attempt): quiet, its all-clear comes when the watch sees the loop
/// over. An all-clear and the host guard's reports are never the loop's.
fn belongs_to_a_told_crash_loop(
    config: &crate::config::Config,
    state: &StateDir,
    report: &Report,
) -> bool {
    let service = &report.header.service;
    report.facts.all_clear.is_none()
        && report.facts.guard.is_none()
        && report.facts.guard_over.is_none()
        && matches!(
            report.facts.outcome,
            Outcome::Failed | Outcome::Resolved | Outcome::Suppressed
        )
        && told(state, service).is_some_and(|told| {
            told.is_crash_loop()
                && (told.at.time() + std::time::Duration::from(config.crash_loop.within)
                    > std::time::SystemTime::now()
                    || crate::heal::watch::crash_loop_ongoing(state, service))
        })
}

/// The services people were last told are down (listed or not), by name.
pub(crate) fn told_services(state: &StateDir) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(state.root().join(TOLD)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".json").map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

/// Removes `service`'s record of a down report; true when this process removed it (and so
/// sends its all-clear), false when it was gone already.
fn claim(state: &StateDir, service: &str) -> bool {
    let Ok(dir) = state.ensure(TOLD) else {
        return true;
    };
    match std::fs::remove_file(dir.join(format!("{service}.json"))) {
        Ok(()) => true,
        Err(err) => err.kind() != std::io::ErrorKind::NotFound,
    }
}

/// Records what people were just told of the service: down (FAILED, SUPPRESSED, CRASH LOOP),
/// or up again, which ends the need for an all-clear.
fn remember(state: &StateDir, report: &Report) {
    let service = &report.header.service;
    let word = match report.facts.outcome {
        Outcome::Failed | Outcome::Suppressed | Outcome::CrashLoop | Outcome::Reported => {
            word(report.facts.outcome)
        }
        Outcome::Resolved | Outcome::Healthy | Outcome::RestartedBySystemd => {
            if let Err(err) = state.remove_service_file(TOLD, service) {
                tracing::warn!(selfheal_service = %service, "what was told cannot be recorded: {err}");
            }
            return;
        }
        Outcome::Planned | Outcome::Paused | Outcome::Held => return,
    };
    let since = told(state, service).map_or(report.facts.started_at, |told| {
        told.since.unwrap_or(told.at)
    });
    let told = Told {
        word,
        at: report.facts.started_at,
        since: Some(since),
    };
    if let Err(err) = state.save_service_file(TOLD, service, &told) {
        tracing::warn!(selfheal_service = %service, "what was told cannot be recorded (no all-clear will follow): {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture;

    /// A down report that people were told makes the next up report its all-clear; once told,
    /// no more all-clears follow.
    #[test]
    fn an_up_report_after_a_told_down_one_is_its_all_clear_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let mut healthy = fixture::report(Outcome::Healthy);
        mark_all_clear(&state, &mut healthy);
        assert_eq!(healthy.facts.all_clear, None, "nothing was told");

        remember(&state, &fixture::report(Outcome::Failed));
        let mut healthy = fixture::report(Outcome::Healthy);
        mark_all_clear(&state, &mut healthy);
        assert_eq!(healthy.facts.all_clear.as_deref(), Some("FAILED"));
        assert!(crate::notify::email::worth_mailing(&healthy));
        let subject = Renderer::new(None).subject(&healthy).unwrap();
        assert_eq!(
            subject,
            "✅ MiracleMax: story-stages - BACK UP after FAILED"
        );

        remember(&state, &healthy);
        let mut again = fixture::report(Outcome::Healthy);
        mark_all_clear(&state, &mut again);
        assert_eq!(again.facts.all_clear, None, "told once");
        assert!(!crate::notify::email::worth_mailing(&again));
    }
}
