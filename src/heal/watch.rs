//! `selfheal watch` (every 30 s, `selfheal-watch.timer`): the restarts systemd makes by itself.
//!
//! `Restart=` absorbs a crash without a failure, and systemd before 254 (or with
//! `RestartMode=direct`) starts no `OnFailure=` unit for it: the crash would leave no trace.
//! Each round compares every service's `NRestarts` and invocation with the last round's. Where
//! the hook does not fire for such restarts, they are recorded (`restarted_by_systemd`, not
//! mailed); on every systemd, `crash_loop.restarts` of them within `crash_loop.within` are a
//! crash loop, reported once (until a whole window passes without a restart).

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::{Config, CrashLoopConfig, ServiceConfig};
use crate::heal::HealError;
use crate::heal::diagnose::Diagnosis;
use crate::heal::facts::{PostStatus, RunClock, RunFacts, finish};
use crate::host::journal::JournalSource;
use crate::outcome::Outcome;
use crate::state::{HistoryRecord, StateDir};
use crate::systemd::UnitSnapshot;
use crate::systemd::{RestartFacts, UnitControl};
use crate::ui::when::Timestamp;

/// What the last round saw of one service (`<state>/watch/<service>.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Seen {
    pub invocation_id: String,
    pub n_restarts: u32,
    /// When restarts were seen (one entry per restart), within the window.
    pub restarts_at: Vec<Timestamp>,
    /// When its crash loop was reported; cleared once a whole window passes without a restart.
    pub reported_at: Option<Timestamp>,
    /// Its invocation's mark when systemd was last asked (`UnitControl::invocation_marks`):
    /// while it stays the same, the unit was not restarted and systemd is not asked again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<String>,
}

/// What one round found for one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Look {
    /// Automatic restarts since the last round.
    pub new_restarts: u32,
    /// Set when this round finds a crash loop not reported yet: the restarts in the window.
    pub crash_loop: Option<usize>,
    /// A crash loop was reported and is still going (or found now): its restarts are not
    /// recoveries.
    pub looping: bool,
    /// The crash loop reported earlier is over: a whole window without a restart.
    pub loop_over: bool,
}

/// Compares `facts` with what was `seen`, and updates it. The `first` look (no record of the
/// service yet) only takes note; after it, a unit that had not started yet (no invocation) is
/// counted like any other. `NRestarts` counts automatic restarts since the unit was last started by hand (a manual
/// start or a restart by selfheal resets it), so a lower count means a reset and then that many
/// restarts.
pub(crate) fn look(
    seen: &mut Seen,
    first: bool,
    facts: &RestartFacts,
    now: SystemTime,
    rule: CrashLoopConfig,
) -> Look {
    let new_restarts = if first {
        0
    } else if facts.n_restarts >= seen.n_restarts {
        facts.n_restarts - seen.n_restarts
    } else {
        facts.n_restarts
    };
    seen.invocation_id.clone_from(&facts.invocation_id);
    seen.n_restarts = facts.n_restarts;
    let stamp = Timestamp::seconds(now);
    seen.restarts_at.extend((0..new_restarts).map(|_| stamp));
    let window = Duration::from(rule.within);
    seen.restarts_at.retain(|at| at.time() + window > now);
    let loop_over = seen.restarts_at.is_empty() && seen.reported_at.is_some();
    if seen.restarts_at.is_empty() {
        seen.reported_at = None;
    }
    let crash_loop = (seen.restarts_at.len() >= rule.restarts as usize
        && seen.reported_at.is_none())
    .then(|| {
        seen.reported_at = Some(stamp);
        seen.restarts_at.len()
    });
    Look {
        new_restarts,
        crash_loop,
        looping: seen.reported_at.is_some(),
        loop_over,
    }
}

/// Whether the watch reported a crash loop of `service` that is still going (no whole window
/// without a restart yet).
pub(crate) fn crash_loop_ongoing(state: &crate::state::StateDir, service: &str) -> bool {
    state
        .service_file::<Seen>("watch", service)
        .ok()
        .flatten()
        .is_some_and(|seen| seen.reported_at.is_some())
}

/// Whether `OnFailure=` fires at each automatic restart, so the heal unit's runs record them:
/// systemd >= 254, unless the unit has `RestartMode=direct`.
pub(crate) fn hook_sees_restarts(systemd_version: u32, restart_mode: Option<&str>) -> bool {
    systemd_version >= 254 && restart_mode != Some("direct")
}

/// How long the evidence of a crash loop (the unit's last journal lines) may take.
const JOURNAL_TIMEOUT: Duration = Duration::from_secs(3);

/// What one round found for one service that the command prints or tells.
#[derive(Debug)]
pub(crate) struct Found<'c> {
    pub service: &'c ServiceConfig,
    /// "systemd restarted web.service 2 time(s) since the last look (Restart=always)".
    pub restarted: Option<String>,
    /// A crash loop found now, recorded: its report to tell.
    pub crash_loop: Option<RunFacts>,
    /// The crash loop told earlier is over: the facts of its all-clear, for the command to
    /// send once it sees the service serve.
    pub loop_over: Option<RunFacts>,
}

/// One round of the watch: every monitored service's restarts since the last round (taking
/// its watch lock, so two rounds at once never count the same restarts twice), recorded where
/// no hook run records them, and the crash loops it finds or sees end. A service systemd
/// cannot describe is skipped (the next round looks again).
pub(crate) fn round<'c, U: UnitControl>(
    config: &'c Config,
    state: &StateDir,
    systemd: &U,
    journal: &dyn JournalSource,
    now: SystemTime,
) -> Result<Vec<Found<'c>>, HealError> {
    // One round at a time, under a lock of its own, not the services': a heal run must never
    // find a service taken by the watch (and yield to it). (Not a service's name: those start
    // with a letter or digit.)
    let Ok(Some(_round)) = state.try_lock(".watch") else {
        return Ok(Vec::new());
    };
    let version = systemd.version()?;
    let units: Vec<String> = config
        .monitored_services
        .iter()
        .map(ServiceConfig::unit_name)
        .collect();
    let names: Vec<&str> = units.iter().map(String::as_str).collect();
    // The whole snapshot only of one whose crash loop is found or over.
    let (all_facts, all_seen, marks) = current_facts(config, state, systemd, &names)?;
    let mut found = Vec::new();
    let each = config.monitored_services.iter().zip(&units).zip(marks);
    for (((service, unit), mark), (facts, seen)) in each.zip(all_facts.into_iter().zip(all_seen)) {
        let Some(facts) = facts else {
            continue;
        };
        let (restart, restart_mode) = (&facts.restart, facts.restart_mode.as_deref());
        let first = seen.is_none();
        let mut seen = seen.unwrap_or_default();
        let before = seen.clone();
        seen.mark = mark;
        let look = look(&mut seen, first, &facts, now, config.crash_loop);
        // What is told needs the unit as it is; without it, this round's look is not kept
        // (the next one finds the same).
        let snapshot = if look.crash_loop.is_some() || look.loop_over {
            match systemd.snapshot(unit) {
                Ok(snapshot) => Some(snapshot),
                Err(_) => continue,
            }
        } else {
            None
        };
        // Written only when it changed (or is new): a quiet round writes nothing (300 atomic
        // writes were most of a round).
        if first || seen != before {
            state.save_service_file("watch", &service.name, &seen)?;
        }
        let restarted = (look.new_restarts > 0).then(|| {
            format!(
                "systemd restarted {unit} {} time(s) since the last look (Restart={restart})",
                look.new_restarts
            )
        });
        // Where the hook fires at each restart, its runs record them; a crash loop's restarts
        // are the loop's (recorded with its report), not recoveries.
        if look.new_restarts > 0 && !look.looping && !hook_sees_restarts(version, restart_mode) {
            state.append_history(&unseen_restarts(
                service,
                unit,
                &facts,
                look.new_restarts,
                now,
            ))?;
        }
        // Restart= ended it: whoever heard CRASH LOOP hears that it is over.
        let loop_over = snapshot
            .as_ref()
            .filter(|_| look.loop_over)
            .map(|snapshot| loop_over(config, unit, snapshot));
        // A FAILED or SUPPRESSED report of this episode told the owner already.
        let told_by_episode = || {
            state
                .episode(&service.name)
                .ok()
                .flatten()
                .is_some_and(|episode| !episode.is_watching())
        };
        let crash_loop = look
            .crash_loop
            .zip(snapshot.as_ref())
            .filter(|_| !told_by_episode())
            .map(|(restarts, snapshot)| {
                let lines = journal.start(unit, None).collect(JOURNAL_TIMEOUT);
                crash_loop(config, state, service, snapshot, restarts, restart, lines)
            });
        if restarted.is_some() || crash_loop.is_some() || loop_over.is_some() {
            found.push(Found {
                service,
                restarted,
                crash_loop,
                loop_over,
            });
        }
    }
    Ok(found)
}

/// Each monitored service's restart facts now (`names`: their units), what the watch saw of
/// it last, and its invocation's mark now. systemd is asked (in one batch) only of the units
/// whose invocation moved since the last look, or that are new to the watch: a restart makes
/// a new invocation, and one question a unit costs systemd ~0.3 ms (at 300 units, most of a
/// round); the others' facts are those seen.
type Current = (
    Vec<Option<RestartFacts>>,
    Vec<Option<Seen>>,
    Vec<Option<String>>,
);
fn current_facts<U: UnitControl>(
    config: &Config,
    state: &StateDir,
    systemd: &U,
    names: &[&str],
) -> Result<Current, HealError> {
    let all_seen: Vec<Option<Seen>> = config
        .monitored_services
        .iter()
        .map(|service| {
            state
                .service_file("watch", &service.name)
                .unwrap_or_default()
        })
        .collect();
    let marks = systemd.invocation_marks(names);
    let asked: Vec<usize> = (0..names.len())
        .filter(|&index| {
            marks[index].is_none()
                || all_seen[index].as_ref().and_then(|seen| seen.mark.as_ref())
                    != marks[index].as_ref()
        })
        .collect();
    let asked_names: Vec<&str> = asked.iter().map(|&index| names[index]).collect();
    let mut answers = systemd.restart_facts(&asked_names)?.into_iter();
    let mut all_facts: Vec<Option<RestartFacts>> = all_seen
        .iter()
        .map(|seen| {
            seen.as_ref().map(|seen| RestartFacts {
                invocation_id: seen.invocation_id.clone(),
                n_restarts: seen.n_restarts,
                restart: String::new(),
                restart_mode: None,
            })
        })
        .collect();
    for &index in &asked {
        all_facts[index] = answers.next().flatten();
    }
    Ok((all_facts, all_seen, marks))
}

/// The history record of `restarts` that systemd's `Restart=` made of `service` (its unit
/// `unit`) by itself and no hook run recorded.
fn unseen_restarts(
    service: &ServiceConfig,
    unit: &str,
    facts: &RestartFacts,
    restarts: u32,
    now: SystemTime,
) -> HistoryRecord {
    HistoryRecord {
        service: service.name.clone(),
        outcome: Outcome::RestartedBySystemd,
        started_at: Timestamp::millis(now),
        duration_ms: 0,
        healed_by: None,
        summary: format!(
            "systemd's Restart={} restarted {unit} {restarts} time(s) by itself; seen by selfheal watch",
            facts.restart
        ),
        manual: false,
        relapse: false,
        restarts,
    }
}

/// The facts of the end of `unit`'s crash loop: `Restart=` brought it back, and it has run a
/// whole window without another restart.
fn loop_over(config: &Config, unit: &str, snapshot: &UnitSnapshot) -> RunFacts {
    RunFacts::observed(
        Outcome::RestartedBySystemd,
        format!(
            "{unit}'s crash loop is over: systemd restarted it by itself and it has run {} without another restart; it is {} now",
            config.crash_loop.within,
            snapshot.state()
        ),
        Some(PostStatus::from(snapshot)),
    )
}

/// The facts of a crash loop `selfheal watch` found: systemd restarted `service` `restarts`
/// times within `crash_loop.within` (its `Restart=` is `restart_setting`) and it crashed again
/// each time. Nothing is healed (each restart "worked"); the owner gets the evidence: the last
/// exit systemd logged and the unit's last journal lines. Recorded like a run.
pub(crate) fn crash_loop(
    config: &Config,
    state: &StateDir,
    service: &ServiceConfig,
    snapshot: &UnitSnapshot,
    restarts: usize,
    restart_setting: &str,
    journal: Vec<crate::host::journal::JournalLine>,
) -> RunFacts {
    let clock = RunClock::start();
    let unit = &snapshot.unit;
    let last_exit = journal
        .iter()
        .rev()
        .find(|line| line.pid == 1 && line.message.contains("exited, code="))
        .map(|line| line.message.clone());
    let mut diagnosis = Diagnosis::new(snapshot, None, journal);
    diagnosis.summary = format!(
        "systemd restarted {unit} {restarts} times within {} (Restart={restart_setting}) and it crashed again each time",
        config.crash_loop.within
    );
    if let Some(last_exit) = last_exit {
        diagnosis.root_cause = format!("its last crash, as systemd logged it: {last_exit}");
    }
    let mut facts = clock
        .facts(Outcome::CrashLoop, false)
        .diagnosis(diagnosis)
        .reason(format!(
            "systemd's Restart= keeps {unit} coming back, so nothing failed for selfheal to heal; it is {} now. Find why it crashes (the journal lines below), then fix it",
            snapshot.state()
        ));
    facts.post_status = Some(PostStatus::from(snapshot));
    finish(state, &service.name, facts, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::duration::HumanDuration;

    fn unit(invocation: &str, n_restarts: u32) -> RestartFacts {
        RestartFacts {
            invocation_id: invocation.into(),
            n_restarts,
            ..RestartFacts::default()
        }
    }

    const RULE: CrashLoopConfig = CrashLoopConfig {
        restarts: 3,
        within: HumanDuration(Duration::from_secs(600)),
    };

    #[test]
    fn restarts_are_counted_from_nrestarts_and_a_reset_is_not_a_restart() {
        let now = SystemTime::now();
        let mut seen = Seen::default();
        assert_eq!(
            look(&mut seen, true, &unit("a", 4), now, RULE).new_restarts,
            0,
            "first look"
        );
        assert_eq!(
            look(&mut seen, false, &unit("a", 4), now, RULE).new_restarts,
            0
        );
        assert_eq!(
            look(&mut seen, false, &unit("b", 5), now, RULE).new_restarts,
            1
        );
        // Started by hand (or by selfheal): NRestarts back to 0, no restart by systemd.
        assert_eq!(
            look(&mut seen, false, &unit("c", 0), now, RULE).new_restarts,
            0
        );
        // Reset, then two automatic restarts before this round.
        seen.n_restarts = 7;
        assert_eq!(
            look(&mut seen, false, &unit("d", 2), now, RULE).new_restarts,
            2
        );
    }

    #[test]
    fn a_crash_loop_is_reported_once_until_a_whole_window_passes_without_a_restart() {
        let start = SystemTime::now();
        let mut seen = Seen::default();
        look(&mut seen, true, &unit("a", 0), start, RULE);
        let first = look(&mut seen, false, &unit("b", 2), start, RULE);
        assert_eq!(first.crash_loop, None, "2 of 3");
        let looped = look(
            &mut seen,
            false,
            &unit("c", 3),
            start + Duration::from_secs(30),
            RULE,
        );
        assert_eq!(looped.crash_loop, Some(3));
        let again = look(
            &mut seen,
            false,
            &unit("d", 6),
            start + Duration::from_secs(60),
            RULE,
        );
        assert_eq!(again.crash_loop, None, "reported once");
        assert!(again.looping, "its restarts are the loop's, not recoveries");
        // A quiet window: the loop is over, and the next loop is a new one.
        let later = start + Duration::from_secs(60 + 601);
        let quiet = look(&mut seen, false, &unit("d", 6), later, RULE);
        assert_eq!((quiet.crash_loop, quiet.loop_over), (None, true));
        assert_eq!(seen.reported_at, None);
        let relooped = look(&mut seen, false, &unit("e", 9), later, RULE);
        assert_eq!(relooped.crash_loop, Some(3));
    }

    #[test]
    fn the_hook_sees_restarts_on_254_and_later_unless_restart_mode_is_direct() {
        assert!(!hook_sees_restarts(252, None));
        assert!(hook_sees_restarts(257, None));
        assert!(hook_sees_restarts(257, Some("normal")));
        assert!(!hook_sees_restarts(257, Some("direct")));
    }

    /// A journal with nothing in it.
    struct NoJournal;

    impl JournalSource for NoJournal {
        fn start(
            &self,
            _unit: &str,
            _invocation: Option<&str>,
        ) -> crate::host::journal::PendingJournal {
            crate::host::journal::PendingJournal::ready(Vec::new())
        }
        fn read_invocation(
            &self,
            _unit: &str,
            _invocation_id: &str,
            _pending: Option<crate::host::journal::PendingJournal>,
            _timeout: Duration,
        ) -> Vec<crate::host::journal::JournalLine> {
            Vec::new()
        }
    }

    /// Rounds of the watch against a scripted systemd whose `NRestarts` reads `restarts`, one
    /// value per round, each round a minute after the last: what each round found, as
    /// (restarted, crash loop, loop over), and the outcomes history holds after them.
    fn rounds(
        version: u32,
        mode: Option<&str>,
        restarts: &[u32],
    ) -> (Vec<(bool, bool, bool)>, Vec<Outcome>) {
        let script = restarts.iter().map(|&n| (format!("i{n}"), n)).collect();
        scripted_rounds(version, mode, script)
    }

    /// `rounds` against a systemd whose invocation and `NRestarts` read `script`.
    fn scripted_rounds(
        version: u32,
        mode: Option<&str>,
        script: Vec<(String, u32)>,
    ) -> (Vec<(bool, bool, bool)>, Vec<Outcome>) {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        let config = Config::parse(
            "crash_loop: { restarts: 3, within: 90s }\nmonitored_services:\n  - name: web\n",
            std::path::Path::new("test.yml"),
        )
        .unwrap();
        let rounds = script.len();
        let script = script
            .into_iter()
            .map(|(invocation, n)| UnitSnapshot {
                n_restarts: n,
                ..crate::systemd::fake::unit("active", "running", &invocation)
            })
            .collect();
        let mut systemd = crate::systemd::fake::FakeSystemd::scripted(
            script,
            crate::systemd::fake::FakeJob::Done,
        );
        systemd.version = version;
        systemd.restart = ("always".to_owned(), mode.map(str::to_owned));
        let start = SystemTime::now();
        let found = (0..rounds as u64)
            .map(|minute| {
                let now = start + Duration::from_secs(60 * minute);
                let found = round(&config, &state, &systemd, &NoJournal, now).unwrap();
                found.first().map_or((false, false, false), |found| {
                    (
                        found.restarted.is_some(),
                        found.crash_loop.is_some(),
                        found.loop_over.is_some(),
                    )
                })
            })
            .collect();
        let history = state
            .history()
            .unwrap()
            .iter()
            .map(|record| record.outcome)
            .collect();
        (found, history)
    }

    /// On 252 the hook never sees a restart `Restart=` made: the round records it. Three in
    /// the window are a crash loop, reported once and recorded as such (its restarts are not
    /// recoveries); a whole window without one ends it.
    #[test]
    fn a_round_records_unseen_restarts_and_reports_a_crash_loop_once_until_it_is_over() {
        let (found, history) = rounds(252, None, &[0, 1, 3, 5, 5, 5, 5]);
        assert_eq!(
            found,
            [
                (false, false, false),
                (true, false, false),
                (true, true, false),
                (true, false, false),
                (false, false, false),
                (false, false, true),
                (false, false, false),
            ]
        );
        assert_eq!(
            history,
            [Outcome::RestartedBySystemd, Outcome::CrashLoop],
            "one restart recorded before the loop, the loop once"
        );
    }

    /// A unit that had never started when the watch first saw it (no invocation yet) is
    /// known from then on: restarts after it starts are counted, not taken as a second first
    /// look (a crash loop that ended between those rounds went untold).
    #[test]
    fn restarts_of_a_unit_first_seen_before_it_ever_started_are_counted() {
        let script = vec![(String::new(), 0), ("i3".to_owned(), 3)];
        let (found, history) = scripted_rounds(252, None, script);
        assert_eq!(found, [(false, false, false), (true, true, false)]);
        assert_eq!(history, [Outcome::CrashLoop]);
    }

    /// On 257 (RestartMode=normal) the hook's runs record each restart: the round records
    /// none of them, and still finds the loop. With RestartMode=direct the hook sees nothing.
    #[test]
    fn where_the_hook_sees_restarts_the_round_records_only_the_crash_loop() {
        let (found, history) = rounds(257, Some("normal"), &[0, 1, 3]);
        assert_eq!(found[2], (true, true, false));
        assert_eq!(history, [Outcome::CrashLoop]);
        let (_, history) = rounds(257, Some("direct"), &[0, 1]);
        assert_eq!(history, [Outcome::RestartedBySystemd]);
    }
}
