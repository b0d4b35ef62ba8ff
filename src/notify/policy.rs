//! The notification policy (`notify_policy:`) applied to one report about to be told: whether
//! it goes out now, and what it carries of the reports folded before it. Bad news is never
//! held: a down report goes out at once unless people were told the service is down already;
//! an all-clear, a CRASH LOOP and a guard report always go out. What is held is counted
//! (`<state>/notifications.json`, the metrics' `selfheal_notifications_held_total{reason}`)
//! and stays in history, so the digest has it.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::notify_policy::{NotifyPolicy, ResolvedPolicy};
use crate::outcome::Outcome;
use crate::report::Report;
use crate::state::StateDir;
use crate::ui::when::Timestamp;

/// Why a report was not told now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// `resolved: digest`: a RESOLVED heal nobody was told the service was down for.
    ResolvedDigest,
    /// `min_interval`: within the interval of the last report told of the service.
    MinInterval,
}

impl Held {
    /// Its label in the metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Held::ResolvedDigest => "resolved_digest",
            Held::MinInterval => "min_interval",
        }
    }
}

/// What the policy says of one report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Told now, with the line of what was folded into it, if anything.
    Tell {
        folded: Option<String>,
    },
    Held(Held),
}

/// One service's reports as the policy sees them (`<state>/folded/<service>.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Folding {
    /// When a report of it was last told.
    last_told_at: Option<Timestamp>,
    /// The reports folded since: their word and time.
    folded: Vec<(String, Timestamp)>,
}

const FOLDED: &str = "folded";
const COUNTS: &str = "notifications.json";

/// The counts of held reports, by reason (`notifications.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct HeldCounts {
    pub held: BTreeMap<String, u64>,
}

/// The policy's verdict on `report` (marked by `mark_all_clear`), and its effect recorded: a
/// held report is counted (and folded, for `min_interval`); a told one ends the folding.
/// `down_told`: people were told the service is down and have not heard it is back.
pub(crate) fn judge(
    state: &StateDir,
    report: &Report,
    policy: NotifyPolicy,
    down_told: bool,
    now: SystemTime,
) -> Verdict {
    let service = &report.header.service;
    let mut folding: Folding = state
        .service_file(FOLDED, service)
        .ok()
        .flatten()
        .unwrap_or_default();
    let verdict = verdict(report, policy, down_told, &folding, now);
    // Without a min_interval nothing is folded: no record to keep for each report told.
    let folds = !Duration::from(policy.min_interval).is_zero() || !folding.folded.is_empty();
    match &verdict {
        Verdict::Held(why) => {
            if *why == Held::MinInterval {
                folding
                    .folded
                    .push((word(report.facts.outcome), report.facts.started_at));
            }
            count(state, *why);
        }
        Verdict::Tell { .. } => {
            folding = Folding {
                last_told_at: Some(Timestamp::seconds(now)),
                folded: Vec::new(),
            };
        }
    }
    if folds && let Err(err) = state.save_service_file(FOLDED, service, &folding) {
        tracing::warn!(selfheal_service = %service, "the notification policy's record cannot be written: {err}");
    }
    verdict
}

/// The rule, on what is known (see the module's header).
fn verdict(
    report: &Report,
    policy: NotifyPolicy,
    down_told: bool,
    folding: &Folding,
    now: SystemTime,
) -> Verdict {
    let outcome = report.facts.outcome;
    // A reminder is paced by `remind` itself.
    let never_held = report.facts.all_clear.is_some()
        || report.facts.guard.is_some()
        || report.facts.reminder.is_some()
        || matches!(outcome, Outcome::CrashLoop);
    let down = matches!(
        outcome,
        Outcome::Failed | Outcome::Suppressed | Outcome::Reported
    );
    if !never_held {
        if outcome == Outcome::Resolved && policy.resolved == ResolvedPolicy::Digest {
            return Verdict::Held(Held::ResolvedDigest);
        }
        let interval = Duration::from(policy.min_interval);
        let recent = folding
            .last_told_at
            .is_some_and(|at| at.time() + interval > now && at.time() <= now);
        // New bad news goes out at once; more of what people know already may wait.
        if recent && !interval.is_zero() && (!down || down_told) {
            return Verdict::Held(Held::MinInterval);
        }
    }
    Verdict::Tell {
        folded: folded_line(&folding.folded),
    }
}

/// "Folded into this report (notify_policy min_interval): FAILED at …, RESOLVED at …".
fn folded_line(folded: &[(String, Timestamp)]) -> Option<String> {
    if folded.is_empty() {
        return None;
    }
    let each: Vec<String> = folded
        .iter()
        .map(|(word, at)| format!("{word} at {}", at.readable()))
        .collect();
    Some(format!(
        "{} earlier report(s) within notify_policy's min_interval, folded into this one: {}",
        folded.len(),
        each.join(", ")
    ))
}

fn word(outcome: Outcome) -> String {
    outcome.as_str().replace('_', " ").to_uppercase()
}

/// Counts one held report.
fn count(state: &StateDir, why: Held) {
    let counted = state
        .lock_exclusive(".notifications.lock")
        .and_then(|_lock| {
            let mut counts: HeldCounts = state.file(COUNTS)?.unwrap_or_default();
            *counts.held.entry(why.label().to_owned()).or_default() += 1;
            state.save_file(COUNTS, &counts)
        });
    if let Err(err) = counted {
        tracing::warn!("a held report cannot be counted: {err}");
    }
}

/// The counts of held reports, by reason (none when nothing was held).
pub(crate) fn held_counts(state: &StateDir) -> HeldCounts {
    state.file(COUNTS).ok().flatten().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::notify_policy::Remind;
    use crate::report::fixture;
    use crate::ui::duration::HumanDuration;

    fn policy(resolved: ResolvedPolicy, min_interval: u64) -> NotifyPolicy {
        NotifyPolicy {
            resolved,
            min_interval: HumanDuration(Duration::from_secs(min_interval)),
            remind: Remind::Never,
        }
    }

    #[test]
    fn resolved_digest_holds_a_heal_but_never_bad_news_or_an_all_clear() {
        let now = SystemTime::now();
        let digest = policy(ResolvedPolicy::Digest, 0);
        let none = Folding::default();
        let resolved = fixture::report(Outcome::Resolved);
        assert_eq!(
            verdict(&resolved, digest, false, &none, now),
            Verdict::Held(Held::ResolvedDigest)
        );
        let mut all_clear = fixture::report(Outcome::Resolved);
        all_clear.facts.all_clear = Some("FAILED".into());
        for told in [
            all_clear,
            fixture::report(Outcome::Failed),
            fixture::report(Outcome::Suppressed),
            fixture::report(Outcome::CrashLoop),
        ] {
            assert_eq!(
                verdict(&told, digest, false, &none, now),
                Verdict::Tell { folded: None },
                "{:?}",
                told.facts.outcome
            );
        }
        assert_eq!(
            verdict(
                &fixture::report(Outcome::Resolved),
                policy(ResolvedPolicy::Now, 0),
                false,
                &none,
                now
            ),
            Verdict::Tell { folded: None }
        );
    }

    /// Within min_interval of the last report told: more of what people know waits and is
    /// folded into the next; new bad news does not.
    #[test]
    fn min_interval_folds_what_people_know_already_into_the_next_report() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let ten_minutes = policy(ResolvedPolicy::Now, 600);
        let start = SystemTime::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let failed = fixture::report(Outcome::Failed);
        let resolved = fixture::report(Outcome::Resolved);
        assert_eq!(
            judge(&state, &resolved, ten_minutes, false, at(0)),
            Verdict::Tell { folded: None }
        );
        assert_eq!(
            judge(&state, &resolved, ten_minutes, false, at(60)),
            Verdict::Held(Held::MinInterval)
        );
        // Bad news nobody was told of yet goes out at once, with what was folded.
        let Verdict::Tell { folded: Some(line) } =
            judge(&state, &failed, ten_minutes, false, at(120))
        else {
            panic!("a new FAILED waits for nothing");
        };
        assert!(line.starts_with("1 earlier report(s)"), "{line}");
        assert!(line.contains("RESOLVED at"), "{line}");
        // The same bad news again, people know it: folded.
        assert_eq!(
            judge(&state, &failed, ten_minutes, true, at(180)),
            Verdict::Held(Held::MinInterval)
        );
        assert!(matches!(
            judge(&state, &resolved, ten_minutes, true, at(121 + 600)),
            Verdict::Tell { folded: Some(_) }
        ));
        assert_eq!(held_counts(&state).held["min_interval"], 2);
    }
}
