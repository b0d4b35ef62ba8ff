//! The Alertmanager alerts that started (or joined) a heal of a service within the hour
//! (`<state>/alerts/<service>.json`, newest last): written by the receiver before it starts the
//! heal unit, read by that run, whose report names the alert; a repeat of one starts nothing.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{StateDir, StateError};
use crate::ui::when::Timestamp;

const ALERTS: &str = "alerts";

/// The lock of every change to the files (the receiver records while a run takes).
const ALERTS_LOCK: &str = ".alerts-received.lock";

/// How long after it arrived an alert still explains a run that starts (the heal unit starts
/// within milliseconds; a run much later was started by something else).
const EXPLAINS_A_RUN_FOR: Duration = Duration::from_secs(120);

/// Alertmanager sends a firing alert again and again (each `group_interval` when its group
/// changes, each `repeat_interval`): the same alert starts no second run within this time.
/// A heal that did not help is loop protection's to retry, not the repeats'.
pub(crate) const SAME_ALERT_STARTS_ONCE_IN: Duration = Duration::from_secs(3600);

/// At most this many alerts are kept per service (the newest).
const KEPT: usize = 64;

/// One firing alert as the receiver took it in: what the report names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FiringAlert {
    pub alertname: String,
    /// Its `summary` annotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The Prometheus expression browser link of the rule that fired (`generatorURL`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
    /// When it began firing, as Alertmanager sent it (`startsAt`).
    pub starts_at: String,
    /// Alertmanager's fingerprint of its labels: with `starts_at`, what makes it this alert.
    pub fingerprint: String,
    pub received_at: Timestamp,
    /// A run has taken it (its report names it), or it joined a heal already going: it
    /// explains no other run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub taken: bool,
}

impl FiringAlert {
    /// The same alert: Alertmanager's fingerprint of its labels, and the same start.
    fn same(&self, other: &FiringAlert) -> bool {
        self.fingerprint == other.fingerprint && self.starts_at == other.starts_at
    }

    /// When it began firing (`startsAt`), if Alertmanager's timestamp reads.
    pub(crate) fn started_firing(&self) -> Option<SystemTime> {
        let at: jiff::Timestamp = self.starts_at.parse().ok()?;
        Some(SystemTime::from(at))
    }
}

/// What a file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Recent {
    alerts: Vec<FiringAlert>,
}

impl StateDir {
    /// The alerts recorded for `service` within the hour. Reading creates nothing (a dry run
    /// changes nothing, not even the state directory); one that cannot be read is none.
    fn recent_alerts(&self, service: &str, now: SystemTime) -> Vec<FiringAlert> {
        if !self
            .root()
            .join(ALERTS)
            .join(format!("{service}.json"))
            .is_file()
        {
            return Vec::new();
        }
        let recent: Recent = self
            .service_file(ALERTS, service)
            .ok()
            .flatten()
            .unwrap_or_default();
        recent
            .alerts
            .into_iter()
            .filter(|alert| alert.received_at.time() + SAME_ALERT_STARTS_ONCE_IN > now)
            .collect()
    }

    /// The recorded alert `alert` repeats (the same one, within the hour), if any.
    pub(crate) fn repeated_alert(
        &self,
        service: &str,
        alert: &FiringAlert,
        now: SystemTime,
    ) -> Option<FiringAlert> {
        self.recent_alerts(service, now)
            .into_iter()
            .rev()
            .find(|recorded| recorded.same(alert))
    }

    /// Changes the alerts of `service` under the lock.
    fn change_alerts(
        &self,
        service: &str,
        change: impl FnOnce(&mut Vec<FiringAlert>),
    ) -> Result<(), StateError> {
        let _lock = self.lock_exclusive(ALERTS_LOCK)?;
        let mut alerts = self.recent_alerts(service, SystemTime::now());
        change(&mut alerts);
        let keep_from = alerts.len().saturating_sub(KEPT);
        self.save_service_file(
            ALERTS,
            service,
            &Recent {
                alerts: alerts.split_off(keep_from),
            },
        )
    }

    /// Records that `alert` starts (or, `taken`, joins) a heal of `service` now.
    pub(crate) fn record_alert(
        &self,
        service: &str,
        alert: &FiringAlert,
    ) -> Result<(), StateError> {
        self.change_alerts(service, |alerts| alerts.push(alert.clone()))
    }

    /// Forgets `alert`: the heal it was to start did not start.
    pub(crate) fn forget_alert(
        &self,
        service: &str,
        alert: &FiringAlert,
    ) -> Result<(), StateError> {
        self.change_alerts(service, |alerts| alerts.retain(|kept| kept != alert))
    }

    /// The alert that started the run of `service` beginning now: the newest one no run has
    /// taken (an alert that joined the heal since is recorded as taken, after it), that
    /// arrived moments ago.
    pub(crate) fn alert_for_run(&self, service: &str, now: SystemTime) -> Option<FiringAlert> {
        self.recent_alerts(service, now)
            .into_iter()
            .rev()
            .find(|alert| !alert.taken)
            .filter(|alert| {
                now.duration_since(alert.received_at.time())
                    .is_ok_and(|age| age <= EXPLAINS_A_RUN_FOR)
            })
    }

    /// Marks `alert` (that one only) as taken by the run that read it.
    pub(crate) fn take_alert(&self, service: &str, alert: &FiringAlert) -> Result<(), StateError> {
        self.change_alerts(service, |alerts| {
            for kept in alerts.iter_mut().filter(|kept| *kept == alert) {
                kept.taken = true;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(fingerprint: &str, received_at: SystemTime) -> FiringAlert {
        FiringAlert {
            alertname: "HighErrorRate".into(),
            summary: Some("5xx above 5%".into()),
            generator_url: None,
            starts_at: "2026-12-07T10:00:00Z".into(),
            fingerprint: fingerprint.into(),
            received_at: Timestamp::seconds(received_at),
            taken: false,
        }
    }

    #[test]
    fn an_alert_explains_only_the_run_that_starts_right_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let now = SystemTime::now();
        assert_eq!(state.alert_for_run("web", now), None);
        assert!(!dir.path().join(ALERTS).exists(), "reading created nothing");
        state.record_alert("web", &alert("a1", now)).unwrap();
        assert_eq!(state.alert_for_run("web", now), Some(alert("a1", now)));
        assert_eq!(state.alert_for_run("db", now), None);
        let later = now + EXPLAINS_A_RUN_FOR + Duration::from_secs(1);
        assert_eq!(state.alert_for_run("web", later), None);
        // Another alert arrives before the run takes the first: only the first is taken.
        state.record_alert("web", &alert("b2", now)).unwrap();
        state.take_alert("web", &alert("a1", now)).unwrap();
        assert_eq!(state.alert_for_run("web", now), Some(alert("b2", now)));
        state.take_alert("web", &alert("b2", now)).unwrap();
        assert_eq!(
            state.alert_for_run("web", now),
            None,
            "taken by the run that read it"
        );
        // An alert that joins a heal whose run has not read its alert yet is recorded as taken,
        // after it: the run still finds the one that started it.
        state.record_alert("web", &alert("c3", now)).unwrap();
        let joined = FiringAlert {
            taken: true,
            ..alert("d4", now)
        };
        state.record_alert("web", &joined).unwrap();
        assert_eq!(state.alert_for_run("web", now), Some(alert("c3", now)));
    }

    #[test]
    fn a_repeat_is_the_same_fingerprint_and_start_within_the_hour() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let now = SystemTime::now();
        state.record_alert("web", &alert("a1", now)).unwrap();
        state.record_alert("web", &alert("b2", now)).unwrap();
        assert!(
            state
                .repeated_alert("web", &alert("a1", now), now)
                .is_some(),
            "not only the last one"
        );
        let in_an_hour = now + SAME_ALERT_STARTS_ONCE_IN;
        assert!(
            state
                .repeated_alert("web", &alert("a1", now), in_an_hour)
                .is_none()
        );
        let fired_again = FiringAlert {
            starts_at: "2026-12-07T11:00:00Z".into(),
            ..alert("a1", now)
        };
        assert!(state.repeated_alert("web", &fired_again, now).is_none());
        assert!(
            state
                .repeated_alert("web", &alert("c3", now), now)
                .is_none()
        );
        // A heal that did not start is forgotten: its repeat may start it.
        state.forget_alert("web", &alert("a1", now)).unwrap();
        assert!(
            state
                .repeated_alert("web", &alert("a1", now), now)
                .is_none()
        );
    }

    #[test]
    fn alertmanagers_start_reads_as_a_time() {
        let at = FiringAlert {
            starts_at: "2026-12-07T10:00:00.123456789Z".into(),
            ..alert("a1", SystemTime::now())
        };
        let since_epoch = at
            .started_firing()
            .unwrap()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(since_epoch.as_millis(), 1_796_637_600_123);
        let unreadable = FiringAlert {
            starts_at: "soon".into(),
            ..at
        };
        assert_eq!(unreadable.started_firing(), None);
    }
}
