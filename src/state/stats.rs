//! Figures per service over a set of runs (`history --stats`, the daily digest): runs by
//! outcome, success rate, mean time to heal.

use crate::outcome::Outcome;
use crate::state::HistoryRecord;

/// One service's figures over a set of runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct ServiceStats {
    pub service: String,
    pub runs: usize,
    pub resolved: usize,
    pub failed: usize,
    pub suppressed: usize,
    /// Failures of units `all_services:` covers that were reported, not healed.
    pub reported: usize,
    pub healthy: usize,
    /// Runs that found systemd's own `Restart=` had brought it back.
    pub restarted_by_systemd: usize,
    /// Failures within `threshold_window` of a healing: that healing did not hold.
    pub relapsed: usize,
    /// Crash loops reported (systemd kept restarting it; `selfheal watch`).
    pub crash_loops: usize,
    /// Healings that held / (resolved + failed), null without a healing run: a resolved run
    /// followed by a relapse counts as a failure.
    pub success_rate: Option<f64>,
    /// Mean duration of the resolved runs, in ms (null without one).
    pub mean_time_to_heal_ms: Option<u64>,
}

/// The figures per service, in the order services first appear.
pub(crate) fn per_service(records: &[&HistoryRecord]) -> Vec<ServiceStats> {
    let mut rows: Vec<ServiceStats> = Vec::new();
    for record in records {
        let index = rows
            .iter()
            .position(|row| row.service == record.service)
            .unwrap_or_else(|| {
                rows.push(ServiceStats {
                    service: record.service.clone(),
                    runs: 0,
                    resolved: 0,
                    failed: 0,
                    suppressed: 0,
                    reported: 0,
                    healthy: 0,
                    restarted_by_systemd: 0,
                    relapsed: 0,
                    crash_loops: 0,
                    success_rate: None,
                    mean_time_to_heal_ms: None,
                });
                rows.len() - 1
            });
        let row = &mut rows[index];
        row.runs += 1;
        row.relapsed += usize::from(record.relapse);
        match record.outcome {
            Outcome::Resolved => row.resolved += 1,
            Outcome::Failed => row.failed += 1,
            Outcome::Suppressed => row.suppressed += 1,
            Outcome::Reported => row.reported += 1,
            Outcome::Healthy => row.healthy += 1,
            // A record of `selfheal watch` may stand for several restarts.
            Outcome::RestartedBySystemd => {
                row.restarted_by_systemd += record.restarts.max(1) as usize;
            }
            Outcome::CrashLoop => row.crash_loops += 1,
            Outcome::Planned | Outcome::Paused | Outcome::Held => {}
        }
    }
    for row in &mut rows {
        let attempts = row.resolved + row.failed;
        let held = row.resolved.saturating_sub(row.relapsed);
        row.success_rate = (attempts > 0).then(|| held as f64 / attempts as f64);
        let healed: Vec<u64> = records
            .iter()
            .filter(|r| r.service == row.service && r.outcome == Outcome::Resolved)
            .map(|r| r.duration_ms)
            .collect();
        row.mean_time_to_heal_ms =
            (!healed.is_empty()).then(|| healed.iter().sum::<u64>() / healed.len() as u64);
    }
    rows
}
