//! A run that an Alertmanager alert started (`selfheal receive` recorded the alert, then
//! started the heal unit): the alert is its evidence while the unit still runs the instance
//! the alert was about, and its report names the alert.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::RunOptions;
use crate::config::ServiceConfig;
use crate::state::StateDir;
use crate::state::alerts::FiringAlert;
use crate::systemd::UnitSnapshot;

/// The alert that started this run, taken so that no later run claims it. Only a run systemd
/// started (the heal unit: `$INVOCATION_ID` is set) can be an alert's; a person's is not; a
/// dry run takes nothing. (The hook's variables say nothing here: systemd 252 sets
/// `MONITOR_*` at every start of a unit some unit's `OnFailure=` names, whoever starts it.)
pub(super) fn started_by(
    state: &StateDir,
    service: &ServiceConfig,
    options: RunOptions,
) -> Option<FiringAlert> {
    if options.manual || std::env::var_os("INVOCATION_ID").is_none() {
        return None;
    }
    let alert = state.alert_for_run(&service.name, SystemTime::now())?;
    if !options.dry_run
        && let Err(err) = state.take_alert(&service.name, &alert)
    {
        tracing::warn!(selfheal_service = %service.name, "the alert that started this run stays claimable: {err}");
    }
    Some(alert)
}

/// What the alert says is wrong with the unit as it runs now: its words, while the running
/// instance became active before the alert began firing (one started since, by a heal or a
/// person, may serve: one look decides, and a late alert restarts nothing).
pub(super) fn seen(alert: Option<&FiringAlert>, snapshot: &UnitSnapshot) -> Option<String> {
    let alert = alert?;
    let active_since = UNIX_EPOCH + Duration::from_micros(snapshot.active_enter_timestamp_us);
    let began = alert
        .started_firing()
        .unwrap_or_else(|| alert.received_at.time());
    (active_since < began).then(|| {
        let summary = alert
            .summary
            .as_deref()
            .map(|summary| format!(": {summary}"))
            .unwrap_or_default();
        format!(
            "Alertmanager's alert {} is firing{summary}",
            alert.alertname
        )
    })
}
