//! Evidence of a running service, taken before it is restarted: what each of its processes
//! was doing (state, `wchan`, threads, memory, CPU, open files, kernel stack) and what its
//! cgroup says (memory, pressure). A restart destroys all of it.
//!
//! Capture is read-only and bounded: at most [`MAX_PROCESSES`] processes, [`CAPTURE_TIME`] of
//! the run's time (a read of `/proc/PID/cmdline` waits on the process' memory lock, which a
//! process stuck in the kernel may hold: the reads run on a thread the run stops waiting
//! for), and [`MAX_TEXT`] of text per field. Command lines are kept with what looks like a
//! secret replaced (`--password=…`, `token=…`, a URL's password, the values the config
//! names); environments are never read.

mod cgroup;
mod consumers;
mod process;
mod redact;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

pub(crate) use cgroup::{CgroupMemory, Pressure};
pub(crate) use consumers::{Consumer, largest_on_host};
pub(crate) use process::ProcessEvidence;

/// How many of a cgroup's processes are described.
pub(crate) const MAX_PROCESSES: usize = 16;
/// How long the run waits for the evidence before it restarts with what it has.
pub(crate) const CAPTURE_TIME: Duration = Duration::from_millis(500);
/// The most characters kept of one command line.
const MAX_TEXT: usize = 256;

/// What a running service's processes and cgroup looked like just before its restart.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Evidence {
    /// How long the capture took, in ms.
    pub took_ms: u64,
    /// The processes of the unit's cgroup (and the cgroups below it), main process first.
    pub processes: Vec<ProcessEvidence>,
    /// Processes of the cgroup beyond the [`MAX_PROCESSES`] described.
    pub more_processes: usize,
    /// The cgroup's memory, where the host accounts it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<CgroupMemory>,
    /// Pressure stall information (`cpu`, `memory`, `io`): the cgroup's, else the host's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pressure: Vec<Pressure>,
    /// What could not be taken, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<String>,
    /// What the main process left when `evidence.signal` asked it to (a core, a stack dump).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left: Option<LeftBehind>,
    /// The evidence in one line, for the formats that show a few lines.
    pub summary: String,
}

/// What the main process left when asked with a signal before the restart.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LeftBehind {
    /// `SIGQUIT`, `SIGABRT`, …
    pub signal: String,
    pub pid: u32,
    /// How long it took to exit after the signal, in ms; `None`: it had not exited within the
    /// service's `evidence.wait` and was killed.
    pub exited_after_ms: Option<u64>,
    /// What it wrote to the journal after the signal (a runtime's stack dump): its last lines,
    /// printable.
    pub printed: Vec<String>,
    /// The command that shows all it wrote after the signal.
    pub read_all: String,
    /// systemd-coredump's entry for it (`coredumpctl info`), cited; empty without one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub core: Vec<String>,
    /// When the signal was sent, µs since the epoch.
    #[serde(skip)]
    pub sent_at_us: u64,
}

/// What to capture: the unit's cgroup and main process, and the strings no report may show.
pub(crate) struct Subject {
    /// `ControlGroup`, e.g. `/system.slice/web.service`.
    pub control_group: String,
    /// The main process, described first (0: none).
    pub main_pid: u32,
    /// Values that must not appear in a report (secrets the config names).
    pub hidden: Vec<String>,
}

/// What the capture thread sends as it goes, so that a read that blocks loses only itself.
enum Piece {
    Process(ProcessEvidence),
    More(usize),
    Memory(CgroupMemory),
    Pressure(Vec<Pressure>),
    Gap(String),
}

impl Evidence {
    /// The evidence of a service whose `evidence.capture` is off: what its main process
    /// left is added to it.
    pub(crate) fn not_taken() -> Evidence {
        Evidence {
            took_ms: 0,
            processes: Vec::new(),
            more_processes: 0,
            memory: None,
            pressure: Vec::new(),
            gaps: vec!["its processes were not described (evidence.capture: false)".to_owned()],
            left: None,
            summary: "not described (evidence.capture: false)".to_owned(),
        }
    }
}

/// Takes the evidence of `subject`, waiting at most `budget` for it.
pub(crate) fn capture(subject: Subject, budget: Duration) -> Evidence {
    let started = Instant::now();
    let (send, receive) = mpsc::channel();
    let reading = std::thread::Builder::new()
        .name("evidence".into())
        .spawn(move || read_all(&subject, &send));
    let mut evidence = Evidence {
        took_ms: 0,
        processes: Vec::new(),
        more_processes: 0,
        memory: None,
        pressure: Vec::new(),
        gaps: Vec::new(),
        left: None,
        summary: String::new(),
    };
    if let Err(err) = reading {
        evidence.gaps.push(format!("no thread to read with: {err}"));
    }
    loop {
        let left = budget.saturating_sub(started.elapsed());
        match receive.recv_timeout(left) {
            Ok(Piece::Process(process)) => evidence.processes.push(process),
            Ok(Piece::More(more)) => evidence.more_processes = more,
            Ok(Piece::Memory(memory)) => evidence.memory = Some(memory),
            Ok(Piece::Pressure(pressure)) => evidence.pressure = pressure,
            Ok(Piece::Gap(gap)) => evidence.gaps.push(gap),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // The thread stays blocked in the kernel; the run goes on without it.
                evidence.gaps.push(format!(
                    "stopped after {} ms: a read of /proc did not return (a process stuck in the kernel holds its memory lock)",
                    budget.as_millis()
                ));
                break;
            }
        }
    }
    evidence.took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    evidence.summary = summary(&evidence);
    evidence
}

/// The capture thread: the processes one by one, then the cgroup's figures.
fn read_all(subject: &Subject, send: &mpsc::Sender<Piece>) {
    let (pids, found) = cgroup::processes(&subject.control_group, subject.main_pid);
    if let Some(gap) = found {
        let _ = send.send(Piece::Gap(gap));
    }
    let more = pids.len().saturating_sub(MAX_PROCESSES);
    for pid in pids.iter().take(MAX_PROCESSES) {
        if let Some(process) = process::read(*pid, &subject.hidden)
            && send.send(Piece::Process(process)).is_err()
        {
            return;
        }
    }
    if more > 0 {
        let _ = send.send(Piece::More(more));
    }
    let memory_of = pids.first().copied().unwrap_or(subject.main_pid);
    if let Some(memory) = cgroup::memory(&subject.control_group, memory_of) {
        let _ = send.send(Piece::Memory(memory));
    }
    let _ = send.send(Piece::Pressure(cgroup::pressure(&subject.control_group)));
}

/// The evidence in one line: each process' state and threads, then the memory.
fn summary(evidence: &Evidence) -> String {
    let mut parts: Vec<String> = evidence
        .processes
        .iter()
        .take(4)
        .map(ProcessEvidence::brief)
        .collect();
    let described = evidence.processes.len() + evidence.more_processes;
    if described > parts.len() {
        parts.push(format!("{} more", described - parts.len()));
    }
    if parts.is_empty() {
        parts.push("no process left in its cgroup".to_owned());
    }
    if let Some(memory) = &evidence.memory {
        parts.push(format!(
            "cgroup memory {}",
            crate::ui::size::human_bytes(memory.current_bytes)
        ));
    }
    parts.join("; ")
}

/// The size of a memory page, which `/proc` and the kernel's log count in.
pub(crate) fn page_size() -> u64 {
    process::page_size()
}

/// `text` made printable and cut to `chars` characters (`…` when cut).
fn bounded(text: &str, chars: usize) -> String {
    let text = crate::ui::terminal::printable(text);
    match text.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests' own process is a running process of some cgroup: it is described with its
    /// state and threads, and a budget of zero returns at once with what it has.
    #[test]
    fn a_running_process_is_described_and_the_budget_is_kept() {
        let me = std::process::id();
        let subject = || Subject {
            control_group: "/no/such/cgroup.service".into(),
            main_pid: me,
            hidden: Vec::new(),
        };
        let evidence = capture(subject(), Duration::from_secs(5));
        let process = &evidence.processes[0];
        assert_eq!(process.pid, me);
        assert!(process.threads >= 1, "{process:?}");
        assert!(process.rss_bytes > 0, "{process:?}");
        assert!(
            matches!(process.state.chars().next(), Some('R' | 'S')),
            "{process:?}"
        );
        assert!(
            evidence.summary.contains(&format!("PID {me}")),
            "{evidence:?}"
        );

        let started = Instant::now();
        let nothing = capture(subject(), Duration::ZERO);
        assert!(started.elapsed() < Duration::from_millis(100));
        assert!(nothing.took_ms < 100, "{nothing:?}");
    }
}
