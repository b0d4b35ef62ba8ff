//! A later retry instead of "down forever". When loop protection stops healing a service, an
//! episode begins (`<state>/episodes/<service>.json`) and a transient systemd timer named like
//! its heal unit (`selfheal@web.timer` starts `selfheal@web.service`) gives it one more run
//! after `retry_after`; each retry that fails doubles the wait, up to `RETRY_CAP`, whatever
//! loop protection's count says by then. A retry that heals it is reported as RECOVERED and
//! ends the episode; so does a run that finds it healthy, and a person's `selfheal run` at a
//! terminal (always allowed, and it resets the count).
//!
//! Transient timers do not survive a reboot: a retry that is overdue is made by the next run
//! of the service's heal unit, whatever started it.

use std::time::{Duration, SystemTime};

use crate::config::{Config, RetryAfter, ServiceConfig};
use crate::state::{Episode, StateDir};
use crate::systemd::UnitControl;

/// `retry_after` when the config does not say.
pub(crate) const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);
/// The longest wait between two retries (unless `retry_after` itself is longer).
pub(crate) const RETRY_CAP: Duration = Duration::from_secs(2 * 60 * 60);
/// A timer may fire this much before its time (its accuracy) and still make the retry.
const EARLY: Duration = Duration::from_secs(2);

/// The first wait, or `None` for `retry_after: never`.
pub(crate) fn retry_after(config: &Config) -> Option<Duration> {
    match config.retry_after {
        None => Some(DEFAULT_RETRY_AFTER),
        Some(RetryAfter::After(after)) => Some(after.into()),
        Some(RetryAfter::Never) => None,
    }
}

/// The wait before retry number `retries + 1`: `retry_after`, doubled per earlier retry,
/// capped.
pub(crate) fn retry_delay(retry_after: Duration, retries: u32) -> Duration {
    let cap = RETRY_CAP.max(retry_after);
    retry_after
        .checked_mul(1 << retries.min(16))
        .map_or(cap, |delay| delay.min(cap))
}

/// Whether the episode's scheduled retry is due at `now`.
pub(crate) fn is_due(episode: &Episode, now: SystemTime) -> bool {
    episode
        .next_retry_at
        .as_deref()
        .and_then(|at| humantime::parse_rfc3339_weak(at).ok())
        .is_some_and(|at| at <= now + EARLY)
}

/// The transient timer that starts `service`'s heal unit later.
pub(crate) fn timer_name(service: &ServiceConfig) -> String {
    format!("selfheal@{}.timer", service.name)
}

/// Makes sure the next retry of a service that loop protection stopped is scheduled, and
/// returns the sentence the report ends with. Starts the episode when there is none; a retry
/// already waiting is left as it is. A dry run schedules and writes nothing.
pub(crate) fn schedule_retry(
    config: &Config,
    state: &StateDir,
    units: &dyn UnitControl,
    service: &ServiceConfig,
    episode: Option<Episode>,
    dry_run: bool,
) -> String {
    let now = SystemTime::now();
    let Some(first) = retry_after(config) else {
        return "retry_after is never: it stays down until a person runs `selfheal run` for it"
            .to_owned();
    };
    let mut episode = episode.unwrap_or_else(|| Episode {
        suppressed_at: humantime::format_rfc3339_seconds(now).to_string(),
        retries: 0,
        next_retry_at: None,
    });
    // A retry already scheduled keeps its time, but its timer is set again: a transient timer
    // does not survive a reboot, and setting it replaces the old one.
    let scheduled = episode
        .next_retry_at
        .as_deref()
        .and_then(|at| humantime::parse_rfc3339_weak(at).ok())
        .filter(|at| *at > now);
    let delay = scheduled.map_or_else(
        || retry_delay(first, episode.retries),
        |at| at.duration_since(now).unwrap_or_default(),
    );
    let at = humantime::format_rfc3339_seconds(now + delay).to_string();
    let when = format!(
        "{} (in {})",
        readable(&at),
        crate::duration::HumanDuration(delay)
    );
    if dry_run {
        return format!("a real run would schedule a retry at {when}");
    }
    episode.next_retry_at = Some(at);
    if let Err(err) = state.save_episode(&service.name, &episode) {
        tracing::error!(selfheal_service = %service.name, "the retry cannot be recorded: {err}");
    }
    match units.start_later(&timer_name(service), delay, None) {
        Ok(()) => format!("selfheal tries again at {when}"),
        Err(err) => {
            tracing::error!(selfheal_service = %service.name, "the retry timer cannot be started: {err}");
            format!(
                "the retry timer could not be started ({err}); the next run of {} after {when} makes the retry",
                service.heal_unit_name()
            )
        }
    }
}

/// `2026-11-29T10:02:03Z` → `2026-11-29 10:02:03 UTC`.
pub(crate) fn readable(rfc3339: &str) -> String {
    rfc3339
        .replacen('T', " ", 1)
        .strip_suffix('Z')
        .map_or_else(|| rfc3339.to_owned(), |time| format!("{time} UTC"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_per_retry_and_is_capped() {
        let minute = Duration::from_secs(60);
        assert_eq!(retry_delay(15 * minute, 0), 15 * minute);
        assert_eq!(retry_delay(15 * minute, 1), 30 * minute);
        assert_eq!(retry_delay(15 * minute, 2), 60 * minute);
        assert_eq!(retry_delay(15 * minute, 3), RETRY_CAP);
        assert_eq!(retry_delay(15 * minute, 400), RETRY_CAP);
        // A retry_after longer than the cap is kept as it is.
        assert_eq!(retry_delay(300 * minute, 2), 300 * minute);
    }

    #[test]
    fn a_retry_is_due_from_just_before_its_time() {
        let now = SystemTime::now();
        let at = |t: SystemTime| Episode {
            suppressed_at: String::new(),
            retries: 0,
            next_retry_at: Some(humantime::format_rfc3339_millis(t).to_string()),
        };
        assert!(is_due(&at(now - Duration::from_secs(60)), now));
        assert!(is_due(&at(now + Duration::from_secs(1)), now));
        assert!(!is_due(&at(now + Duration::from_secs(30)), now));
        let unscheduled = Episode {
            next_retry_at: None,
            ..at(now)
        };
        assert!(!is_due(&unscheduled, now));
    }

    #[test]
    fn times_read_as_utc() {
        assert_eq!(readable("2026-11-29T10:02:03Z"), "2026-11-29 10:02:03 UTC");
    }
}
