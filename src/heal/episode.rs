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
use crate::systemd::{Fires, UnitControl};
use crate::ui::when::Timestamp;

/// `retry_after` when the config does not say.
pub(crate) const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);
/// The longest wait between two retries (unless `retry_after` itself is longer).
pub(crate) const RETRY_CAP: Duration = Duration::from_secs(2 * 60 * 60);

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

/// The longest one back-off step can wait.
pub(crate) fn longest_wait(config: &Config) -> Duration {
    retry_after(config).map_or(RETRY_CAP, |first| RETRY_CAP.max(first))
}

/// The transient timer that starts `service`'s heal unit later.
pub(crate) fn timer_name(service: &ServiceConfig) -> String {
    service.retry_timer_name(false)
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
    let mut episode = episode.unwrap_or_else(|| Episode::opened(Timestamp::seconds(now)));
    // A retry already scheduled keeps its time, but its timer is set again: a transient timer
    // does not survive a reboot, and setting it replaces the old one.
    let scheduled = episode
        .next_retry_at
        .map(Timestamp::time)
        .filter(|at| *at > now && *at <= now + retry_delay(first, episode.retries));
    let delay = scheduled.map_or_else(
        || retry_delay(first, episode.retries),
        |at| at.duration_since(now).unwrap_or_default(),
    );
    let at = Timestamp::seconds(now + delay);
    let when = format!(
        "{} (in {})",
        at.readable(),
        crate::ui::duration::approx(delay)
    );
    if dry_run {
        return format!("a real run would schedule a retry at {when}");
    }
    episode.next_retry_at = Some(at);
    if let Err(err) = state.save_episode(&service.name, &episode) {
        tracing::error!(selfheal_service = %service.name, "the retry cannot be recorded: {err}");
    }
    match units.start_later(&timer_name(service), delay, Fires::ItsService) {
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

/// The service is healthy again: the episode is watched from now on, or over once it has
/// been watched for `new_incident_after` already (a failure after that is a new incident). (A
/// retry timer still set finds it healthy and does nothing.)
pub(crate) fn watch_or_end(
    config: &Config,
    state: &StateDir,
    units: &dyn UnitControl,
    service: &ServiceConfig,
    mut episode: Episode,
    why: &str,
) {
    let now = SystemTime::now();
    if episode.has_stayed_healthy(config.new_incident_after(), now) {
        end(
            state,
            units,
            service,
            "it stayed healthy for new_incident_after",
        );
        return;
    }
    if episode.is_watching() {
        return;
    }
    episode.recovered_at = Some(Timestamp::seconds(now));
    episode.next_retry_at = None;
    disarm(units, service);
    match state.save_episode(&service.name, &episode) {
        Ok(()) => tracing::info!(
            selfheal_service = %service.name,
            "{why}: the episode ends if it stays healthy for {}",
            crate::ui::duration::HumanDuration(config.new_incident_after())
        ),
        Err(err) => {
            tracing::error!(selfheal_service = %service.name, "the episode cannot be recorded: {err}");
        }
    }
}

/// Stops the episode's retry timer: a retry that is no longer wanted must not start the heal
/// unit later (a person may have stopped the service by then).
fn disarm(units: &dyn UnitControl, service: &ServiceConfig) {
    if let Err(err) = units.stop_unit(&timer_name(service)) {
        tracing::warn!(selfheal_service = %service.name, "the retry timer cannot be stopped: {err}");
    }
}

/// Closes `service`'s episode, saying why in the journal, and stops its retry timer.
pub(crate) fn end(state: &StateDir, units: &dyn UnitControl, service: &ServiceConfig, why: &str) {
    disarm(units, service);
    match state.end_episode(&service.name) {
        Ok(()) => {
            tracing::info!(selfheal_service = %service.name, "loop protection's episode is over: {why}");
        }
        Err(err) => {
            tracing::error!(selfheal_service = %service.name, "loop protection's episode cannot be closed: {err}");
        }
    }
}

/// What `flush` (every 5 minutes) does for the episodes: one whose service is healthy again
/// (a person fixed it, systemd restarted it) is watched, and one watched for
/// `new_incident_after` ends. A service whose run holds its lock is left to that run.
/// Healthy as a run would judge it: active, its own port, its health URL, and systemd not in
/// the middle of a restart.
pub(crate) fn healthy_now(
    config: &Config,
    service: &crate::config::ServiceConfig,
    units: &dyn UnitControl,
) -> bool {
    units.snapshot(&service.unit_name()).is_ok_and(|snapshot| {
        !snapshot.systemd_is_acting()
            && crate::heal::verify::check_now(
                &snapshot,
                &crate::heal::verify::HealthTarget::of(config, service),
            )
            .is_ok()
    })
}

pub(crate) fn housekeeping(config: &Config, state: &StateDir, units: &dyn UnitControl) {
    for (name, _) in state.episodes().unwrap_or_default() {
        let Some(service) = config.entry(&name) else {
            continue;
        };
        let Ok(Some(_lock)) = state.try_lock(&service.name) else {
            continue;
        };
        // Read again under the lock: a run may have changed it since the listing.
        let Ok(Some(episode)) = state.episode(&service.name) else {
            continue;
        };
        if healthy_now(config, &service, units) {
            watch_or_end(
                config,
                state,
                units,
                &service,
                episode,
                "found healthy by flush",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::systemd::fake::{FakeJob, FakeSystemd, unit};

    /// A person fixed it (`systemctl start`, no run): the next flush sees it active and the
    /// episode is only watched; once watched for `new_incident_after` it ends. A service still
    /// down keeps its episode as it is.
    #[test]
    fn flush_watches_the_episode_of_a_service_that_is_up_again_and_ends_it_later() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let config = Config::parse(
            "monitored_services:\n  - name: web\n",
            std::path::Path::new("t.yml"),
        )
        .unwrap();
        let open = Episode {
            next_retry_at: Some("2026-11-29T09:00:00Z".parse().unwrap()),
            ..Episode::opened("2026-11-29T08:00:00Z".parse().unwrap())
        };
        state.save_episode("web", &open).unwrap();
        let down = FakeSystemd::new(unit("failed", "failed", "a"), FakeJob::Done, vec![]);
        housekeeping(&config, &state, &down);
        assert_eq!(state.episode("web").unwrap().unwrap(), open);

        let up = FakeSystemd::new(unit("active", "running", "a"), FakeJob::Done, vec![]);
        housekeeping(&config, &state, &up);
        let watched = state.episode("web").unwrap().unwrap();
        assert!(
            watched.is_watching() && watched.next_retry_at.is_none(),
            "{watched:?}"
        );

        let long_ago = SystemTime::now() - config.new_incident_after();
        let stale = Episode {
            recovered_at: Some(Timestamp::seconds(long_ago)),
            ..watched
        };
        state.save_episode("web", &stale).unwrap();
        housekeeping(&config, &state, &up);
        assert_eq!(state.episode("web").unwrap(), None);
    }

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
    fn a_retry_is_due_from_just_before_its_time_or_when_dated_beyond_any_wait() {
        let config =
            Config::parse("monitored_services: []\n", std::path::Path::new("t.yml")).unwrap();
        let now = SystemTime::now();
        let is_due = |config: &Config, episode: &Episode, now: SystemTime| {
            crate::heal::hold::retry_is_due(episode, now, longest_wait(config))
        };
        let at = |t: SystemTime| Episode {
            next_retry_at: Some(Timestamp::millis(t)),
            ..Episode::opened(Timestamp::seconds(t))
        };
        assert!(is_due(&config, &at(now - Duration::from_secs(60)), now));
        assert!(is_due(&config, &at(now + Duration::from_secs(1)), now));
        assert!(!is_due(&config, &at(now + Duration::from_secs(30)), now));
        assert!(!is_due(&config, &at(now + RETRY_CAP), now));
        // Scheduled while the clock was a day ahead: the wait would be the clock's step.
        assert!(is_due(&config, &at(now + Duration::from_secs(86_400)), now));
        let unscheduled = Episode {
            next_retry_at: None,
            ..at(now)
        };
        assert!(!is_due(&config, &unscheduled, now));
    }

    /// L11: a retry scheduled while the clock was ahead is set again no further ahead than
    /// the step's own wait.
    #[test]
    fn a_retry_dated_beyond_its_wait_is_scheduled_again_within_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let config = Config::parse(
            "retry_after: 1m\nmonitored_services:\n  - name: web\n",
            std::path::Path::new("t.yml"),
        )
        .unwrap();
        let service = &config.monitored_services[0];
        let ahead = Episode {
            next_retry_at: Some(Timestamp::seconds(
                SystemTime::now() + Duration::from_secs(86_400),
            )),
            ..Episode::opened(Timestamp::seconds(SystemTime::now()))
        };
        let units = FakeSystemd::new(unit("failed", "failed", "a"), FakeJob::Done, vec![]);
        schedule_retry(&config, &state, &units, service, Some(ahead), false);
        assert_eq!(units.calls(), ["start_later selfheal@web.timer 60s"]);
    }
}
