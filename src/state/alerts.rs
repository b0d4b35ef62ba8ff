//! The Alertmanager alert that started a service's heal (`<state>/alerts/<service>.json`):
//! written by the receiver before it starts the heal unit, read by that run, whose report
//! names the alert.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{StateDir, StateError};
use crate::ui::when::Timestamp;

const ALERTS: &str = "alerts";

/// How long after it arrived an alert still explains a run that starts (the heal unit starts
/// within milliseconds; a run much later was started by something else).
const EXPLAINS_A_RUN_FOR: Duration = Duration::from_secs(120);

/// Alertmanager sends a firing alert again and again (each `group_interval` when its group
/// changes, each `repeat_interval`): the same alert starts no second run within this time.
/// A heal that did not help is loop protection's to retry, not the repeats'.
pub(crate) const SAME_ALERT_STARTS_ONCE_IN: Duration = Duration::from_secs(3600);

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
    /// A run has taken it (its report names it): it explains no other run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub taken: bool,
}

impl FiringAlert {
    /// The same alert (a repeat of the one recorded), within the time it starts one run.
    pub(crate) fn repeats(&self, recorded: &FiringAlert, now: SystemTime) -> bool {
        self.fingerprint == recorded.fingerprint
            && self.starts_at == recorded.starts_at
            && recorded.received_at.time() + SAME_ALERT_STARTS_ONCE_IN > now
    }
}

impl StateDir {
    /// The alert that last started a heal of `service`. Reading creates nothing (a dry run
    /// changes nothing, not even the state directory).
    pub(crate) fn last_alert(&self, service: &str) -> Result<Option<FiringAlert>, StateError> {
        if !self
            .root()
            .join(ALERTS)
            .join(format!("{service}.json"))
            .is_file()
        {
            return Ok(None);
        }
        self.service_file(ALERTS, service)
    }

    /// Records that `alert` starts a heal of `service` now.
    pub(crate) fn record_alert(
        &self,
        service: &str,
        alert: &FiringAlert,
    ) -> Result<(), StateError> {
        self.save_service_file(ALERTS, service, alert)
    }

    /// The alert that started the run of `service` beginning now: one that arrived moments
    /// ago (none when it cannot be read: the run heals anyway).
    pub(crate) fn alert_for_run(&self, service: &str, now: SystemTime) -> Option<FiringAlert> {
        let alert = self
            .last_alert(service)
            .ok()?
            .filter(|alert| !alert.taken)?;
        let age = now.duration_since(alert.received_at.time()).ok()?;
        (age <= EXPLAINS_A_RUN_FOR).then_some(alert)
    }

    /// Marks the alert of `service` as taken by the run that read it.
    pub(crate) fn take_alert(&self, service: &str) -> Result<(), StateError> {
        match self.last_alert(service)? {
            Some(alert) => self.record_alert(
                service,
                &FiringAlert {
                    taken: true,
                    ..alert
                },
            ),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(received_at: SystemTime) -> FiringAlert {
        FiringAlert {
            alertname: "HighErrorRate".into(),
            summary: Some("5xx above 5%".into()),
            generator_url: None,
            starts_at: "2026-12-07T10:00:00Z".into(),
            fingerprint: "a1b2".into(),
            received_at: Timestamp::seconds(received_at),
            taken: false,
        }
    }

    #[test]
    fn an_alert_explains_only_the_run_that_starts_right_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let now = SystemTime::now();
        state.record_alert("web", &alert(now)).unwrap();
        assert_eq!(state.alert_for_run("web", now), Some(alert(now)));
        assert_eq!(state.alert_for_run("db", now), None);
        let later = now + EXPLAINS_A_RUN_FOR + Duration::from_secs(1);
        assert_eq!(state.alert_for_run("web", later), None);
        state.take_alert("web").unwrap();
        assert_eq!(
            state.alert_for_run("web", now),
            None,
            "taken by the run that read it"
        );
    }

    #[test]
    fn a_repeat_is_the_same_fingerprint_and_start_within_the_hour() {
        let now = SystemTime::now();
        let recorded = alert(now);
        assert!(alert(now).repeats(&recorded, now + Duration::from_secs(60)));
        assert!(!alert(now).repeats(&recorded, now + SAME_ALERT_STARTS_ONCE_IN));
        let fired_again = FiringAlert {
            starts_at: "2026-12-07T11:00:00Z".into(),
            ..alert(now)
        };
        assert!(!fired_again.repeats(&recorded, now));
        let other_labels = FiringAlert {
            fingerprint: "c3d4".into(),
            ..alert(now)
        };
        assert!(!other_labels.repeats(&recorded, now));
    }
}
