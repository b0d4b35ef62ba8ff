//! What a restart of a unit that still runs does first, once per run: the service's
//! `evidence.signal` to its main process (so that it leaves a core or a stack dump), then, for
//! a hang, SIGKILL to its cgroup instead of a graceful stop that its processes cannot answer.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::ServiceConfig;
use crate::config::evidence::EvidenceSignal;
use crate::host::evidence::LeftBehind;
use crate::host::process::Pidfd;
use crate::systemd::{KillWhom, UnitControl, UnitSnapshot};
use crate::ui::duration::HumanDuration;

/// How long a killed unit's processes may take to be seen gone before the restart goes ahead.
const KILL_PATIENCE: Duration = Duration::from_secs(2);

/// What comes before the first restart of a run.
#[derive(Debug, Default)]
pub(crate) struct BeforeRestart {
    /// The unit hung: the probes found it not answering in time, or its main process stopped
    /// or blocked in the kernel.
    pub hung: bool,
    /// The service's `evidence.signal` and `evidence.wait`.
    signal: Option<(EvidenceSignal, HumanDuration)>,
    /// What the signal left, for the run's report.
    pub left: Option<LeftBehind>,
    /// Done already (a later strategy's restart does it again for nothing).
    done: bool,
}

impl BeforeRestart {
    pub(crate) fn new(hung: bool, service: &ServiceConfig) -> BeforeRestart {
        BeforeRestart {
            hung,
            signal: service
                .evidence
                .signal
                .map(|signal| (signal, service.evidence.wait)),
            left: None,
            done: false,
        }
    }

    /// What a dry run would do first, in words (empty: nothing); `running`: the unit has a
    /// main process to signal.
    pub(super) fn plan(&self, unit: &str, running: bool) -> String {
        let signal = self.signal.filter(|_| running).map(|(signal, wait)| {
            format!(
                "send {} to the main process of {unit} and wait up to {wait} for its evidence, ",
                signal.name()
            )
        });
        let kill = self
            .hung
            .then(|| format!("kill every process of {unit} (SIGKILL), "));
        signal.into_iter().chain(kill).collect()
    }

    /// Does it, the first time it is asked; says what it did.
    pub(super) fn act(&mut self, units: &dyn UnitControl, unit: &str) -> Vec<String> {
        if std::mem::replace(&mut self.done, true) {
            return Vec::new();
        }
        let mut said = Vec::new();
        if let Some((signal, wait)) = self.signal
            && let Some(left) = ask(units, unit, signal, wait)
        {
            said.push(format!(
                "sent {} to its main process (PID {}) for its evidence: {}",
                left.signal, left.pid, left.exit
            ));
            self.left = Some(left);
        }
        if self.hung {
            said.push(end_hang(units, unit));
        }
        said
    }
}

/// Sends `signal` to the unit's main process through systemd (`KillUnit`, then SIGCONT so that
/// a stopped one acts on it) and waits up to `wait` for it to exit. `None` when nothing runs.
fn ask(
    units: &dyn UnitControl,
    unit: &str,
    signal: EvidenceSignal,
    wait: HumanDuration,
) -> Option<LeftBehind> {
    let now = units.snapshot(unit).ok()?;
    let pid = now.main_pid;
    if pid <= 1 || !now.is_active() {
        return None;
    }
    // Opened before the signal, so that its exit is awaited without polling /proc; it counts
    // only when systemd still names the same main process once it is open.
    let process = Pidfd::open(pid).ok().filter(|_| {
        units
            .snapshot(unit)
            .is_ok_and(|again| again.main_pid == pid)
    });
    let sent_at_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        });
    let started = Instant::now();
    if let Err(err) = units.kill(unit, KillWhom::Main, signal.number()) {
        tracing::warn!(
            "{} to the main process of {unit} failed: {err}",
            signal.name()
        );
        return None;
    }
    let _ = units.kill(unit, KillWhom::Main, libc::SIGCONT);
    let exited = process
        .as_ref()
        .map(|process| process.wait_exit(Duration::from(wait)).unwrap_or(false));
    let exited_after_ms = exited
        .filter(|exited| *exited)
        .map(|_| u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
    let exit = match (exited, exited_after_ms) {
        (_, Some(ms)) => format!("it exited after {ms} ms"),
        (Some(_), None) => format!("it had not exited after {wait}"),
        (None, _) => "its exit could not be watched (it changed before the signal)".to_owned(),
    };
    Some(LeftBehind {
        signal: signal.name().to_owned(),
        pid,
        exited_after_ms,
        exit,
        printed: Vec::new(),
        read_all: format!(
            "journalctl _SYSTEMD_INVOCATION_ID={} --since @{}",
            now.invocation_id,
            sent_at_us / 1_000_000
        ),
        core: Vec::new(),
        sent_at_us,
        invocation_id: now.invocation_id,
    })
}

/// Ends a hung unit at once: SIGKILL to every process of its cgroup, then waits (at most
/// `KILL_PATIENCE`) until systemd has seen its main process die. A hung process cannot answer
/// its `ExecStop=` or SIGTERM, so a restart job would first wait out the unit's graceful stop
/// (nginx's `--retry QUIT/5`, `TimeoutStopSec=`); once systemd has seen the main process
/// killed, it skips `ExecStop=` and goes straight to `ExecStopPost=`. Says what came of it.
fn end_hang(units: &dyn UnitControl, unit: &str) -> String {
    if let Err(err) = units.kill(unit, KillWhom::All, libc::SIGKILL) {
        return format!("SIGKILL to its cgroup failed ({err}); restarting gracefully");
    }
    let until = Instant::now() + KILL_PATIENCE;
    let running = |snapshot: &UnitSnapshot| snapshot.is_active() && snapshot.sub_state == "running";
    let mut still = true;
    while Instant::now() < until {
        still = units.snapshot(unit).is_ok_and(|now| running(&now));
        if !still {
            break;
        }
        // systemd's state changes with no job to await: a look every 5 ms, ~0.3 ms each.
        std::thread::sleep(Duration::from_millis(5));
    }
    if still {
        format!(
            "sent SIGKILL to every process of its cgroup (it hung), but systemd had not seen its main process die after {} s (stuck in the kernel?); restarting",
            KILL_PATIENCE.as_secs()
        )
    } else {
        "killed every process of its cgroup (SIGKILL): it hung, and a graceful stop would wait on processes that cannot answer".to_owned()
    }
}
