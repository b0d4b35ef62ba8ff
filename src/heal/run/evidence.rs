//! Evidence in a run: what a unit that still runs is doing, taken before the restart destroys
//! it; what its main process leaves when the service's `evidence.signal` asks it to (a core,
//! a runtime's stack dump); and, after acting, what systemd-coredump kept of a crash.

use std::time::Duration;

use crate::config::ServiceConfig;
use crate::heal::diagnose::{Diagnosis, Termination};
use crate::host::evidence::{self, Evidence, LeftBehind};
use crate::host::journal::JournalSource;
use crate::systemd::UnitSnapshot;

/// The most characters kept of one line a process wrote after the evidence signal.
const PRINTED_CHARS: usize = 300;

/// How long systemd-coredump may take to record a core before the report goes without it.
const CORE_PATIENCE: Duration = Duration::from_secs(3);

/// What the processes of a unit that still runs are doing (at most `CAPTURE_TIME` of the
/// run's time); `None` when nothing of it runs or its `evidence.capture` is off.
pub(super) fn capture(
    service: &ServiceConfig,
    snapshot: &UnitSnapshot,
    hidden: &[String],
) -> Option<Evidence> {
    if !service.evidence.capture || (snapshot.main_pid == 0 && !snapshot.is_active()) {
        return None;
    }
    let subject = evidence::Subject {
        control_group: snapshot.control_group.clone(),
        main_pid: snapshot.main_pid,
        hidden: hidden.to_vec(),
    };
    let started = std::time::Instant::now();
    let taken = evidence::capture(subject, evidence::CAPTURE_TIME);
    tracing::info!(
        selfheal_service = %service.name,
        "evidence before the restart ({} µs): {}",
        started.elapsed().as_micros(),
        taken.summary
    );
    Some(taken)
}

/// Whether the unit hung, so that its restart kills it first: the probes found it active, and
/// connected but never answered in time. An error answer (a 503), a resolver or a connect that
/// timed out, or a process caught once in the kernel (`D` during an fsync) is no hang: its
/// restart stops it gracefully.
pub(super) fn hung(by_probes: bool, snapshot: &UnitSnapshot, unhealthy: Option<&str>) -> bool {
    let silent = unhealthy.is_some_and(|seen| seen.contains(crate::host::net::NO_ANSWER));
    by_probes && snapshot.is_active() && silent
}

/// After acting: what the main process wrote after the signal (its lines of the journal of
/// its invocation; the secrets the config names replaced), and, after a SIGABRT, the core
/// systemd-coredump kept of it.
pub(super) fn cite(
    journal: &dyn JournalSource,
    hidden: &[String],
    snapshot: &UnitSnapshot,
    left: &mut LeftBehind,
) {
    let lines = journal.read_invocation(
        &snapshot.unit,
        &left.invocation_id,
        None,
        Duration::from_secs(2),
    );
    left.printed = lines
        .into_iter()
        .filter(|line| line.pid == left.pid && line.timestamp_us >= left.sent_at_us)
        .map(|line| {
            let printed = crate::ui::terminal::printable(&line.message);
            let printed = evidence::redact::hide_values(&printed, hidden);
            // At most 20 lines (the journal read's), each cut: the report stays bounded.
            crate::ui::terminal::cut(&printed, PRINTED_CHARS)
        })
        .collect();
    // A core comes of SIGABRT; a handled SIGQUIT or SIGUSR leaves none to wait for.
    if left.exited_after_ms.is_some() && left.signal == "SIGABRT" {
        let since_s = left.sent_at_us / 1_000_000;
        left.core =
            crate::host::coredump::entry_of(&snapshot.unit, left.pid, since_s, CORE_PATIENCE)
                .unwrap_or_default();
    }
}

/// What systemd-coredump kept of a main process that dumped core (SIGSEGV, SIGABRT, …), cited
/// in the diagnosis; empty when it kept nothing or is not installed.
pub(super) fn crash_core(diagnosis: &Diagnosis, snapshot: &UnitSnapshot) -> Vec<String> {
    if !matches!(diagnosis.termination, Termination::Dumped { .. }) || snapshot.exec_main_pid == 0 {
        return Vec::new();
    }
    let since_s = snapshot.main_started_realtime_us / 1_000_000;
    crate::host::coredump::entry_of(
        &snapshot.unit,
        snapshot.exec_main_pid,
        since_s,
        CORE_PATIENCE,
    )
    .unwrap_or_default()
}
