//! Following systemd's own restart: when `Restart=` is already at work on the unit, the run
//! waits for it (and reports what systemd did) rather than racing it with a restart of its own.

use std::time::{Duration, Instant};

use crate::config::ServiceConfig;
use crate::heal::diagnose::MonitorFacts;
use crate::heal::verify::{self, HealthTarget};
use crate::systemd::{SystemdError, UnitControl, UnitSnapshot};

/// The hook's facts, when they describe `snapshot`'s invocation. systemd keeps a heal unit's
/// `MONITOR_*` variables from its last start by a failure: a later start by the retry's timer
/// sees them still, and on systemd >= 254 a crash loop's later attempts are other invocations.
/// Facts of an earlier run would put its journal and its cause in this run's report.
pub(super) fn describing(
    monitor: Option<MonitorFacts>,
    snapshot: &UnitSnapshot,
) -> Option<MonitorFacts> {
    monitor.filter(|facts| {
        facts
            .invocation_id
            .as_deref()
            .is_none_or(|id| id == snapshot.invocation_id)
    })
}

/// systemd's own `Restart=` is at work on the unit: an automatic restart is pending, or has
/// happened since the failure that started this run (a newer invocation, `NRestarts` > 0).
pub(super) fn systemd_restarting(snapshot: &UnitSnapshot, monitor: Option<&MonitorFacts>) -> bool {
    snapshot.restart_pending()
        || (snapshot.n_restarts > 0
            && monitor
                .and_then(|facts| facts.invocation_id.as_deref())
                .is_some_and(|failed| failed != snapshot.invocation_id))
}

/// What came of letting systemd finish what it was doing with the unit.
pub(super) enum Followed {
    /// It is up; `problem` says what is wrong when it is not healthy.
    Up {
        now: UnitSnapshot,
        problem: Option<String>,
    },
    /// systemd stopped acting and the unit is down: it gave up (a start limit, no `Restart=`).
    Down(UnitSnapshot),
    /// Still acting at `verify_timeout`: a start that hangs, or restarts that never hold.
    StillActing(UnitSnapshot),
}

/// Waits for systemd's own start or restart, verifies the result over `stable_for` as after
/// selfheal's own restart, and keeps waiting while systemd restarts it again: selfheal never
/// restarts a unit whose automatic restart is pending. Bounded by `verify_timeout`.
pub(super) fn follow_systemd(
    systemd: &dyn UnitControl,
    target: &HealthTarget,
) -> Result<Followed, SystemdError> {
    let started = Instant::now();
    let deadline = started + target.timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let now = match wait_for_systemd(systemd, &target.unit, left) {
            Ok(now) => now,
            Err(SystemdError::Timeout(_)) => {
                return Ok(Followed::StillActing(systemd.snapshot(&target.unit)?));
            }
            Err(other) => return Err(other),
        };
        if now.is_down() {
            return Ok(Followed::Down(now));
        }
        let verification = verify::verify(systemd, target, started);
        let now = systemd.snapshot(&target.unit)?;
        if verification.healthy {
            return Ok(Followed::Up { now, problem: None });
        }
        if now.systemd_is_acting() {
            if Instant::now() < deadline {
                continue;
            }
            return Ok(Followed::StillActing(now));
        }
        if now.is_down() {
            return Ok(Followed::Down(now));
        }
        // It may have failed again while it was verified: say how it is now.
        let problem = verify::check_now(&now, target)
            .err()
            .unwrap_or(verification.detail);
        return Ok(Followed::Up {
            now,
            problem: Some(problem),
        });
    }
}

/// Why a run that waited for systemd until `verify_timeout` did nothing of its own.
pub(super) fn still_acting(
    now: &UnitSnapshot,
    restarts_before: u32,
    service: &ServiceConfig,
) -> String {
    let unit = &now.unit;
    if now.n_restarts > restarts_before || now.restart_pending() {
        format!(
            "systemd keeps restarting {unit} ({} automatic restarts so far) and it does not stay up within verify_timeout ({}): selfheal started none of its own. Why it dies is in its journal (systemctl status {unit})",
            now.n_restarts, service.verify_timeout
        )
    } else {
        let job = now
            .job_id
            .map_or("automatic restart".to_owned(), |id| format!("job {id}"));
        format!(
            "systemd's own {job} for {unit} was still running after verify_timeout ({}); {unit} is {}: selfheal started no second one. Look at what its start waits for (ExecStartPre=, a mount, a lock): systemctl status {unit}",
            service.verify_timeout,
            now.state()
        )
    }
}

/// systemd already has a job queued or an automatic restart pending: let it finish rather
/// than race it, then look again.
/// Still acting at the deadline is `SystemdError::Timeout`.
pub(super) fn wait_for_systemd(
    systemd: &dyn UnitControl,
    unit: &str,
    timeout: Duration,
) -> Result<UnitSnapshot, SystemdError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        systemd.wait_for_job(unit, left)?;
        let snapshot = systemd.snapshot(unit)?;
        if !snapshot.systemd_is_acting() {
            return Ok(snapshot);
        }
        if left.is_zero() {
            return Err(SystemdError::Timeout(timeout));
        }
        // auto-restart has no job until RestartSec= passes; poll until it does.
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}
