//! Evidence in a run: what a unit that still runs is doing, taken before the restart destroys
//! it; what its main process leaves when the service's `evidence.signal` asks it to (a core,
//! a runtime's stack dump); and, after acting, what systemd-coredump kept of a crash.

use std::time::{Duration, Instant};

use crate::config::ServiceConfig;
use crate::heal::diagnose::{Diagnosis, Termination};
use crate::heal::strategy;
use crate::host::evidence::{self, Evidence, LeftBehind};
use crate::host::journal::JournalSource;
use crate::systemd::{KillWhom, UnitControl, UnitSnapshot};

/// How long systemd-coredump may take to record a core before the report goes without it.
const CORE_PATIENCE: Duration = Duration::from_secs(3);

/// The evidence of a unit that still runs, before anything acts on it: its processes (unless
/// `evidence.capture` is off), then what its main process leaves when the service's
/// `evidence.signal` asks it (not on a dry run, which changes nothing).
pub(super) fn before_acting(
    systemd: &dyn UnitControl,
    service: &ServiceConfig,
    snapshot: &UnitSnapshot,
    dry_run: bool,
) -> Option<Evidence> {
    let mut evidence = capture(service, snapshot);
    if let Some(left) = (!dry_run)
        .then(|| ask(systemd, service, snapshot))
        .flatten()
    {
        evidence.get_or_insert_with(Evidence::not_taken).left = Some(left);
    }
    evidence
}

/// What the processes of a unit that still runs are doing (at most `CAPTURE_TIME` of the
/// run's time); `None` when nothing of it runs or its `evidence.capture` is off.
fn capture(service: &ServiceConfig, snapshot: &UnitSnapshot) -> Option<Evidence> {
    if !service.evidence.capture || (snapshot.main_pid == 0 && !snapshot.is_active()) {
        return None;
    }
    let subject = evidence::Subject {
        control_group: snapshot.control_group.clone(),
        main_pid: snapshot.main_pid,
        hidden: strategy::env_file_secrets(service, snapshot),
    };
    let taken = evidence::capture(subject, evidence::CAPTURE_TIME);
    tracing::info!(
        selfheal_service = %service.name,
        "evidence before the restart ({} ms): {}",
        taken.took_ms,
        taken.summary
    );
    Some(taken)
}

/// Sends the service's `evidence.signal` to the main process of a unit that still runs (through
/// systemd: `KillUnit` of the main process, then SIGCONT so that a stopped one acts on it), and
/// waits up to `evidence.wait` for it to exit. `None` when no signal is set or nothing runs.
fn ask(
    systemd: &dyn UnitControl,
    service: &ServiceConfig,
    snapshot: &UnitSnapshot,
) -> Option<LeftBehind> {
    let signal = service.evidence.signal?;
    let pid = snapshot.main_pid;
    if pid <= 1 || !snapshot.is_active() {
        return None;
    }
    // Opened before the signal, so its exit is awaited without polling /proc, and a PID
    // reused by then is never mistaken for it.
    let process = crate::host::process::Pidfd::open(pid).ok();
    let sent_at_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        });
    let started = Instant::now();
    if let Err(err) = systemd.kill(&snapshot.unit, KillWhom::Main, signal.number()) {
        tracing::warn!(selfheal_service = %service.name, "{} to the main process failed: {err}", signal.name());
        return None;
    }
    let _ = systemd.kill(&snapshot.unit, KillWhom::Main, libc::SIGCONT);
    let wait = std::time::Duration::from(service.evidence.wait);
    let exited = process.is_some_and(|process| process.wait_exit(wait).unwrap_or(false));
    let exited_after_ms =
        exited.then(|| u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    tracing::info!(
        selfheal_service = %service.name,
        "sent {} to the main process (PID {pid}) for its evidence: {}",
        signal.name(),
        exited_after_ms.map_or_else(
            || format!("it had not exited after {}", service.evidence.wait),
            |ms| format!("it exited after {ms} ms")
        )
    );
    Some(LeftBehind {
        signal: signal.name().to_owned(),
        pid,
        exited_after_ms,
        printed: Vec::new(),
        read_all: format!(
            "journalctl _SYSTEMD_INVOCATION_ID={} --since @{}",
            snapshot.invocation_id,
            sent_at_us / 1_000_000
        ),
        core: Vec::new(),
        sent_at_us,
    })
}

/// After acting: what the main process wrote after the signal (the journal of its
/// invocation, systemd's own lines left out), and the core systemd-coredump kept of it.
pub(super) fn cite(journal: &dyn JournalSource, snapshot: &UnitSnapshot, left: &mut LeftBehind) {
    let lines = journal.read_invocation(
        &snapshot.unit,
        &snapshot.invocation_id,
        None,
        Duration::from_secs(2),
    );
    left.printed = lines
        .into_iter()
        .filter(|line| line.pid != 1 && line.timestamp_us >= left.sent_at_us)
        .map(|line| crate::ui::terminal::printable(&line.message).into_owned())
        .collect();
    if left.exited_after_ms.is_some() {
        left.core = crate::host::coredump::entry_of(left.pid, CORE_PATIENCE).unwrap_or_default();
    }
}

/// What systemd-coredump kept of a main process that dumped core (SIGSEGV, SIGABRT, …), cited
/// in the diagnosis; empty when it kept nothing or is not installed.
pub(super) fn crash_core(diagnosis: &Diagnosis, snapshot: &UnitSnapshot) -> Vec<String> {
    if !matches!(diagnosis.termination, Termination::Dumped { .. }) || snapshot.exec_main_pid == 0 {
        return Vec::new();
    }
    crate::host::coredump::entry_of(snapshot.exec_main_pid, CORE_PATIENCE).unwrap_or_default()
}
