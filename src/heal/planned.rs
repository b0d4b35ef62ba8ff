//! What is planned for a service now: a pause (`selfheal pause`) or one of its maintenance
//! windows (`maintenance:`). Either way selfheal holds back (`heal::hold`'s `Planned`): a run
//! records `paused` and changes and tells nothing, the probes do not count, and once nothing
//! is planned a service still down is healed (the watch's round).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::maintenance::MaintenanceWindow;
use crate::config::{Config, ServiceConfig};
use crate::state::StateDir;
use crate::ui::when::Timestamp;

/// Why a service is held back now, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Planned {
    pub until: SystemTime,
    /// "paused until 14:00 UTC by selfheal pause: deploy; healed then if still down".
    pub why: String,
    /// For the dashboard: the pause's reason, or the window ("maintenance window Sun 03:00
    /// for 1h (backups)").
    pub reason: Option<String>,
}

/// What is planned for `service` at `now`: its pause, or a window it is in (the one that ends
/// last). `remember`: keep what systemd said of the windows in the state directory (not on a
/// dry run).
pub(crate) fn planned(
    config: &Config,
    state: &StateDir,
    service: &ServiceConfig,
    now: SystemTime,
    remember: bool,
) -> Option<Planned> {
    let mut plans = Plans::read(config, state);
    let planned = plans.of(service, now);
    if remember {
        plans.keep(state);
    }
    planned
}

/// The pauses and what systemd said of the windows, read once for many services (a probe
/// round, the dashboard).
pub(crate) struct Plans<'c> {
    config: &'c Config,
    pub pauses: crate::state::pauses::Pauses,
    cache: WindowCache,
}

impl<'c> Plans<'c> {
    pub(crate) fn read(config: &'c Config, state: &StateDir) -> Plans<'c> {
        let any_window = !config.maintenance.is_empty()
            || config
                .monitored_services
                .iter()
                .any(|service| !service.maintenance.is_empty());
        Plans {
            config,
            pauses: state.pauses(),
            cache: if any_window {
                WindowCache::read(state)
            } else {
                WindowCache::default()
            },
        }
    }

    /// What is planned for `service` at `now` (see `planned`).
    pub(crate) fn of(&mut self, service: &ServiceConfig, now: SystemTime) -> Option<Planned> {
        let pause = self.pauses.of(&service.name, now).map(|pause| Planned {
            until: pause.until.time(),
            why: why_paused(pause),
            reason: pause.reason.clone(),
        });
        let in_window = windows_of(self.config, service)
            .into_iter()
            .filter_map(|window| {
                let until = self.cache.now(window, now).on_until?;
                Some(Planned {
                    until,
                    why: format!(
                        "in its maintenance window {} until {}; healed then if still down",
                        window.describe(),
                        Timestamp::seconds(until).readable()
                    ),
                    reason: Some(format!("maintenance window {}", window.describe())),
                })
            })
            .max_by_key(|planned| planned.until);
        pause
            .into_iter()
            .chain(in_window)
            .max_by_key(|planned| planned.until)
    }

    /// When the next of `service`'s windows begins (none on now), for the dashboard.
    pub(crate) fn next_window(
        &mut self,
        service: &ServiceConfig,
        now: SystemTime,
    ) -> Option<SystemTime> {
        windows_of(self.config, service)
            .into_iter()
            .filter_map(|window| self.cache.now(window, now).next)
            .min()
    }

    /// Keeps what systemd said of the windows in the state directory.
    pub(crate) fn keep(&self, state: &StateDir) {
        self.cache.save(state);
    }
}

/// A pause in words, for a run's reason and a probe's detail.
fn why_paused(pause: &crate::state::pauses::Pause) -> String {
    let why = pause
        .reason
        .as_ref()
        .map(|reason| format!(": {reason}"))
        .unwrap_or_default();
    format!(
        "paused until {} by selfheal pause{why}; healed then if still down",
        pause.until.readable()
    )
}

/// The windows of `service`: the top-level ones and its own.
pub(crate) fn windows_of<'c>(
    config: &'c Config,
    service: &'c ServiceConfig,
) -> Vec<&'c MaintenanceWindow> {
    config
        .maintenance
        .iter()
        .chain(&service.maintenance)
        .collect()
}

/// A window at one time: on until when, or when it begins next (`None`: never again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WindowNow {
    pub on_until: Option<SystemTime>,
    pub next: Option<SystemTime>,
}

/// `window` at `now`, asked of systemd: the first occurrence after `now - for` is on when it
/// began by `now` (an occurrence lasts `for`), else it is the next.
pub(crate) fn window_now(window: &MaintenanceWindow, now: SystemTime) -> Result<WindowNow, String> {
    let lasts = Duration::from(window.lasts);
    let first = crate::host::calendar::next_elapse(&window.on, now - lasts)?;
    Ok(match first {
        Some(began) if began <= now => WindowNow {
            on_until: Some(began + lasts),
            next: None,
        },
        next => WindowNow {
            on_until: None,
            next,
        },
    })
}

/// `<state>/windows.json`: what systemd said of each window, kept until it can change (the
/// window begins or ends), at most an hour: asking costs ~15 ms a window, and a probe round
/// asks every 10 s.
#[derive(Debug, Default, Serialize, Deserialize)]
struct WindowCache {
    windows: BTreeMap<String, Answer>,
    #[serde(skip)]
    changed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Answer {
    asked_at: Timestamp,
    on_until: Option<Timestamp>,
    next: Option<Timestamp>,
}

const CACHE: &str = "windows.json";
/// A zone or clock change is seen within this.
const CACHE_FOR: Duration = Duration::from_secs(3600);

impl WindowCache {
    fn read(state: &StateDir) -> WindowCache {
        state.file(CACHE).ok().flatten().unwrap_or_default()
    }

    /// `window` at `now`: kept, or asked (a window systemd cannot read is never on, and said
    /// in the journal: `selfheal check` refuses it).
    fn now(&mut self, window: &MaintenanceWindow, now: SystemTime) -> WindowNow {
        let key = format!("{}\u{1f}{}", window.on, window.lasts);
        if let Some(answer) = self.windows.get(&key).filter(|answer| {
            let asked = answer.asked_at.time();
            let changes = [answer.on_until, answer.next]
                .into_iter()
                .flatten()
                .map(Timestamp::time)
                .chain([asked + CACHE_FOR])
                .min()
                .unwrap_or(asked);
            asked <= now && now < changes
        }) {
            return WindowNow {
                on_until: answer.on_until.map(Timestamp::time),
                next: answer.next.map(Timestamp::time),
            };
        }
        let answer = match window_now(window, now) {
            Ok(answer) => answer,
            // Not kept: asked again next time (a spawn that failed under load must not turn a
            // window off for an hour).
            Err(err) => {
                tracing::error!("maintenance window {}: {err}", window.describe());
                return WindowNow::default();
            }
        };
        self.windows.insert(
            key,
            Answer {
                asked_at: Timestamp::seconds(now),
                on_until: answer.on_until.map(Timestamp::seconds),
                next: answer.next.map(Timestamp::seconds),
            },
        );
        self.changed = true;
        answer
    }

    fn save(&self, state: &StateDir) {
        if self.changed
            && let Err(err) = state.save_file(CACHE, self)
        {
            tracing::debug!("the maintenance windows' answers cannot be kept: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(on: &str, lasts: u64) -> MaintenanceWindow {
        MaintenanceWindow {
            on: on.into(),
            lasts: crate::ui::duration::HumanDuration(Duration::from_secs(lasts)),
            reason: None,
        }
    }

    /// A daily window at 03:00 UTC for an hour, asked of systemd at 02:59, 03:00, 03:59:59 and
    /// 04:00 of one day.
    #[test]
    fn a_window_is_on_from_its_event_for_its_length() {
        // Midnight UTC, 2026-12-14.
        let day = std::time::UNIX_EPOCH + Duration::from_secs(1_797_120_000);
        let at = |h: u64, m: u64, s: u64| day + Duration::from_secs(h * 3600 + m * 60 + s);
        let daily = window("*-*-* 03:00:00 UTC", 3600);
        assert_eq!(
            window_now(&daily, at(2, 59, 0)).unwrap(),
            WindowNow {
                on_until: None,
                next: Some(at(3, 0, 0))
            }
        );
        for inside in [at(3, 0, 0), at(3, 59, 59)] {
            assert_eq!(
                window_now(&daily, inside).unwrap(),
                WindowNow {
                    on_until: Some(at(4, 0, 0)),
                    next: None
                },
                "{inside:?}"
            );
        }
        let after = window_now(&daily, at(4, 0, 0)).unwrap();
        assert_eq!(after.on_until, None);
        assert_eq!(after.next, Some(at(27, 0, 0)));
        assert_eq!(
            window_now(&window("2020-01-01", 60), at(4, 0, 0)).unwrap(),
            WindowNow::default()
        );
    }

    /// The state directory keeps the answer until the window can change: a second look asks
    /// systemd nothing (an answer planted in the cache is the one given).
    #[test]
    fn an_answer_is_kept_until_the_window_begins_or_ends() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let now = SystemTime::now();
        let daily = window("*-*-* 03:00:00 UTC", 3600);
        let mut cache = WindowCache::read(&state);
        cache.now(&daily, now);
        assert!(cache.changed, "asked of systemd");
        cache.save(&state);
        let mut kept = WindowCache::read(&state);
        let answer = kept.windows.values_mut().next().unwrap();
        let planted = now + Duration::from_secs(1800);
        answer.next = Some(Timestamp::seconds(planted));
        answer.on_until = None;
        assert_eq!(
            kept.now(&daily, now).next,
            Some(Timestamp::seconds(planted).time())
        );
        assert!(!kept.changed);
        // Once the planted time is reached, systemd is asked again.
        kept.now(&daily, planted);
        assert!(kept.changed);
    }
}
