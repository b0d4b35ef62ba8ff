//! Reminders (`notify_policy: remind: 4h`): while a service people were told is down
//! (FAILED, SUPPRESSED, or an unlisted unit's report) stays down, one report per interval,
//! from the watch's round. A crash loop has its own all-clear and no reminders.

use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::config::notify_policy::Remind;
use crate::heal::facts::{PostStatus, RunFacts};
use crate::outcome::Outcome;
use crate::report::{Report, ReportHeader};
use crate::state::StateDir;
use crate::systemd::{ActiveState, UnitControl};

/// The reminders due at `now`: a report each, for `Teller::tell` (which records it as the
/// last told, so the next is an interval later).
pub(crate) fn due(
    config: &Config,
    state: &StateDir,
    systemd: &dyn UnitControl,
    now: SystemTime,
) -> Vec<Report> {
    let mut due = Vec::new();
    for name in crate::notify::tell::told_services(state) {
        let Remind::Every(every) = config.notify_policy_of(&name).remind else {
            continue;
        };
        let Some(told) = crate::notify::tell::told(state, &name) else {
            continue;
        };
        if told.is_crash_loop() || told.at.time() + Duration::from(every) > now {
            continue;
        }
        let Some(entry) = config.entry(&name) else {
            continue;
        };
        // Paused, or in a maintenance window: nothing is told.
        if crate::heal::planned::planned(config, state, &entry, now, true).is_some() {
            continue;
        }
        let unit = entry.unit_name();
        let Ok(snapshot) = systemd.snapshot(&unit) else {
            continue;
        };
        // Back (or coming back): its all-clear is the next run's or `flush`'s.
        if matches!(
            snapshot.active_state,
            ActiveState::Active | ActiveState::Activating | ActiveState::Reloading
        ) {
            continue;
        }
        let since = told.since.unwrap_or(told.at).readable();
        let outcome = if told.word == "SUPPRESSED" {
            Outcome::Suppressed
        } else {
            Outcome::Failed
        };
        let mut facts = RunFacts::observed(
            outcome,
            format!(
                "{unit} is still {}: people were told {} at {since} and it has not come back (a reminder every {every}, notify_policy remind)",
                snapshot.state(),
                told.word
            ),
            Some(PostStatus::from(&snapshot)),
        );
        facts.reminder = Some(since);
        due.push(Report::new(ReportHeader::new(config, &entry), facts));
    }
    due
}
