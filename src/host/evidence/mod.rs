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
pub(crate) mod redact;

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
    /// The unit's main process as systemd named it (0: none).
    pub main_pid: u32,
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
    /// How long it took to exit after the signal, in ms; `None`: its exit was not seen.
    pub exited_after_ms: Option<u64>,
    /// What came of it, in words: "it exited after 140 ms", "it had not exited after 5s; the
    /// restart ended it".
    pub exit: String,
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
    /// The invocation it was of.
    #[serde(skip)]
    pub invocation_id: String,
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

/// What the capture thread sends as it goes, so that a read that blocks loses only itself
/// and what comes after it.
enum Piece {
    More(usize),
    Memory(CgroupMemory),
    Pressure(Vec<Pressure>),
    Process(ProcessEvidence),
    /// A process' command line, read last: it waits on the process' memory lock.
    Command(u32, String),
    Gap(String),
}

impl Evidence {
    /// The evidence of a service whose `evidence.capture` is off: what its main process
    /// left is added to it.
    pub(crate) fn not_taken() -> Evidence {
        Evidence {
            gaps: vec!["its processes were not described (evidence.capture: false)".to_owned()],
            summary: "not described (evidence.capture: false)".to_owned(),
            ..Evidence::empty(0)
        }
    }

    fn empty(main_pid: u32) -> Evidence {
        Evidence {
            took_ms: 0,
            main_pid,
            processes: Vec::new(),
            more_processes: 0,
            memory: None,
            pressure: Vec::new(),
            gaps: Vec::new(),
            left: None,
            summary: String::new(),
        }
    }

    /// The main process, when it was described.
    pub(crate) fn main_process(&self) -> Option<&ProcessEvidence> {
        self.processes
            .iter()
            .find(|process| process.pid == self.main_pid && process.pid != 0)
    }

    fn take(&mut self, piece: Piece) {
        match piece {
            Piece::More(more) => self.more_processes = more,
            Piece::Memory(memory) => self.memory = Some(memory),
            Piece::Pressure(pressure) => self.pressure = pressure,
            Piece::Process(process) => self.processes.push(process),
            Piece::Command(pid, command) => {
                if let Some(process) = self.processes.iter_mut().find(|p| p.pid == pid) {
                    process.command = command;
                }
            }
            Piece::Gap(gap) => self.gaps.push(gap),
        }
    }
}

/// Takes the evidence of `subject`, waiting at most `budget` for it.
pub(crate) fn capture(subject: Subject, budget: Duration) -> Evidence {
    let started = Instant::now();
    let mut evidence = Evidence::empty(subject.main_pid);
    let (send, receive) = mpsc::channel();
    let reading = std::thread::Builder::new()
        .name("evidence".into())
        .spawn(move || read_all(&subject, &send));
    if let Err(err) = reading {
        evidence.gaps.push(format!("no thread to read with: {err}"));
    }
    loop {
        let left = budget.saturating_sub(started.elapsed());
        match receive.recv_timeout(left) {
            Ok(piece) => evidence.take(piece),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // The thread stays blocked (a read of a command line waits on the memory lock
                // a process stuck in the kernel may hold); the run goes on without it.
                evidence.gaps.push(format!(
                    "the capture stopped after {} ms, before every read of /proc had returned",
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

/// The capture thread, the reads that cannot block first: the cgroup's figures, each
/// process' state, threads, files and stack, and last the command lines (which wait on each
/// process' memory lock).
fn read_all(subject: &Subject, send: &mpsc::Sender<Piece>) {
    let (pids, found) = cgroup::processes(&subject.control_group, subject.main_pid);
    let more = pids.len().saturating_sub(MAX_PROCESSES);
    let described = &pids[..pids.len().min(MAX_PROCESSES)];
    let memory_of = pids.first().copied().unwrap_or(subject.main_pid);
    let mut pieces: Vec<Piece> = found.map(Piece::Gap).into_iter().collect();
    pieces.extend(cgroup::memory(&subject.control_group, memory_of).map(Piece::Memory));
    pieces.push(Piece::Pressure(cgroup::pressure(&subject.control_group)));
    if more > 0 {
        pieces.push(Piece::More(more));
    }
    for piece in pieces {
        if send.send(piece).is_err() {
            return;
        }
    }
    let mut stacks_hidden = false;
    for pid in described {
        if let Some(process) = process::read(*pid) {
            stacks_hidden |= process.kernel_stack.is_empty() && !process::stack_readable(*pid);
            if send.send(Piece::Process(process)).is_err() {
                return;
            }
        }
    }
    if stacks_hidden {
        let _ = send.send(Piece::Gap(
            "kernel stacks were not readable here: /proc/PID/stack needs CAP_SYS_ADMIN, which the installed heal units do not have".to_owned(),
        ));
    }
    for pid in described {
        if let Some(command) = process::command(*pid, &subject.hidden)
            && send.send(Piece::Command(*pid, command)).is_err()
        {
            return;
        }
    }
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
        parts.push(if evidence.gaps.is_empty() {
            "no process left in its cgroup".to_owned()
        } else {
            "its processes could not be read in time".to_owned()
        });
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
    crate::ui::terminal::cut(&crate::ui::terminal::printable(text), chars)
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
