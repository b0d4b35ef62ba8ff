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
use crate::heal::diagnose::Diagnosis;
use crate::heal::facts::{PostStatus, RunClock, RunFacts, finish};
use crate::outcome::Outcome;
use crate::state::StateDir;
use crate::systemd::UnitSnapshot;
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

/// Compares `snapshot` with what was `seen`, and updates it. The first look only takes note.
/// `NRestarts` counts automatic restarts since the unit was last started by hand (a manual
/// start or a restart by selfheal resets it), so a lower count means a reset and then that many
/// restarts.
pub(crate) fn look(
    seen: &mut Seen,
    snapshot: &UnitSnapshot,
    now: SystemTime,
    rule: CrashLoopConfig,
) -> Look {
    let first = seen.invocation_id.is_empty();
    let new_restarts = if first {
        0
    } else if snapshot.n_restarts >= seen.n_restarts {
        snapshot.n_restarts - seen.n_restarts
    } else {
        snapshot.n_restarts
    };
    seen.invocation_id.clone_from(&snapshot.invocation_id);
    seen.n_restarts = snapshot.n_restarts;
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

    fn unit(invocation: &str, n_restarts: u32) -> UnitSnapshot {
        UnitSnapshot {
            invocation_id: invocation.into(),
            n_restarts,
            ..UnitSnapshot::default()
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
            look(&mut seen, &unit("a", 4), now, RULE).new_restarts,
            0,
            "first look"
        );
        assert_eq!(look(&mut seen, &unit("a", 4), now, RULE).new_restarts, 0);
        assert_eq!(look(&mut seen, &unit("b", 5), now, RULE).new_restarts, 1);
        // Started by hand (or by selfheal): NRestarts back to 0, no restart by systemd.
        assert_eq!(look(&mut seen, &unit("c", 0), now, RULE).new_restarts, 0);
        // Reset, then two automatic restarts before this round.
        seen.n_restarts = 7;
        assert_eq!(look(&mut seen, &unit("d", 2), now, RULE).new_restarts, 2);
    }

    #[test]
    fn a_crash_loop_is_reported_once_until_a_whole_window_passes_without_a_restart() {
        let start = SystemTime::now();
        let mut seen = Seen::default();
        look(&mut seen, &unit("a", 0), start, RULE);
        let first = look(&mut seen, &unit("b", 2), start, RULE);
        assert_eq!(first.crash_loop, None, "2 of 3");
        let looped = look(
            &mut seen,
            &unit("c", 3),
            start + Duration::from_secs(30),
            RULE,
        );
        assert_eq!(looped.crash_loop, Some(3));
        let again = look(
            &mut seen,
            &unit("d", 6),
            start + Duration::from_secs(60),
            RULE,
        );
        assert_eq!(again.crash_loop, None, "reported once");
        assert!(again.looping, "its restarts are the loop's, not recoveries");
        // A quiet window: the loop is over, and the next loop is a new one.
        let later = start + Duration::from_secs(60 + 601);
        let quiet = look(&mut seen, &unit("d", 6), later, RULE);
        assert_eq!((quiet.crash_loop, quiet.loop_over), (None, true));
        assert_eq!(seen.reported_at, None);
        let relooped = look(&mut seen, &unit("e", 9), later, RULE);
        assert_eq!(relooped.crash_loop, Some(3));
    }

    #[test]
    fn the_hook_sees_restarts_on_254_and_later_unless_restart_mode_is_direct() {
        assert!(!hook_sees_restarts(252, None));
        assert!(hook_sees_restarts(257, None));
        assert!(hook_sees_restarts(257, Some("normal")));
        assert!(!hook_sees_restarts(257, Some("direct")));
    }
}
