//! One process as `/proc` describes it: state, `wchan`, threads and their states, RSS, CPU
//! time, open files, kernel stack, and its command line with secrets replaced.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{MAX_TEXT, bounded, redact};

/// The most threads whose states are counted, and kernel stack frames kept.
const MAX_THREADS: usize = 256;
const MAX_FRAMES: usize = 8;

/// One process of the cgroup, as it was before the restart.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ProcessEvidence {
    pub pid: u32,
    /// Its name (`comm`).
    pub name: String,
    /// Its command line, printable, with secrets replaced by `***`, bounded.
    pub command: String,
    /// `R`, `S`, `D`, `T`, `t`, `Z`, … with its meaning: `T (stopped)`.
    pub state: String,
    /// Where in the kernel it waits (`do_signal_stop`, `ep_poll`, …), when it waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wchan: Option<String>,
    pub threads: u32,
    /// How many threads are in each state, when they are not all in the process' state.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub thread_states: BTreeMap<String, u32>,
    pub rss_bytes: u64,
    /// User and system CPU time since it started, in ms.
    pub cpu_ms: u64,
    /// Open file descriptors.
    pub open_files: Option<u32>,
    /// The first frames of its kernel stack (root reads it), innermost first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kernel_stack: Vec<String>,
}

impl ProcessEvidence {
    /// "PID 812 nginx: T (stopped), 2 threads".
    pub(crate) fn brief(&self) -> String {
        let threads = if self.threads == 1 {
            "1 thread".to_owned()
        } else {
            format!("{} threads", self.threads)
        };
        format!("PID {} {}: {}, {threads}", self.pid, self.name, self.state)
    }
}

/// Reads `pid` (`None` when it is gone), all but its command line: nothing here waits on the
/// process' memory lock.
pub(super) fn read(pid: u32) -> Option<ProcessEvidence> {
    let dir = format!("/proc/{pid}");
    let stat = Stat::parse(&std::fs::read_to_string(format!("{dir}/stat")).ok()?)?;
    let wchan = std::fs::read_to_string(format!("{dir}/wchan"))
        .ok()
        .map(|wchan| wchan.trim().to_owned())
        .filter(|wchan| !wchan.is_empty() && wchan != "0");
    let open_files = std::fs::read_dir(format!("{dir}/fd"))
        .ok()
        .map(|entries| u32::try_from(entries.count()).unwrap_or(u32::MAX));
    Some(ProcessEvidence {
        pid,
        name: bounded(&stat.name, 64),
        command: String::new(),
        state: state_word(stat.state),
        wchan: wchan.map(|wchan| bounded(&wchan, 64)),
        threads: stat.threads,
        thread_states: thread_states(&dir, stat.state),
        rss_bytes: stat.rss_pages.saturating_mul(page_size()),
        cpu_ms: stat.cpu_ticks.saturating_mul(1000) / ticks_per_second(),
        open_files,
        kernel_stack: kernel_stack(&dir),
    })
}

/// The most bytes of a command line read.
const MAX_COMMAND_BYTES: u64 = 64 * 1024;

/// `pid`'s command line, printable, secrets replaced, bounded (`None` when it is gone). The
/// read waits on the process' memory lock, which a process stuck in the kernel may hold: it
/// comes last.
pub(super) fn command(pid: u32, hidden: &[String]) -> Option<String> {
    use std::io::Read as _;
    let mut raw = Vec::new();
    std::fs::File::open(format!("/proc/{pid}/cmdline"))
        .ok()?
        .take(MAX_COMMAND_BYTES)
        .read_to_end(&mut raw)
        .ok()?;
    let args: Vec<String> = raw
        .split(|byte| *byte == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    Some(bounded(&redact::command_line(&args, hidden), MAX_TEXT))
}

/// Whether `/proc/PID/stack` can be read here (it needs CAP_SYS_ADMIN).
pub(super) fn stack_readable(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/stack")).is_ok()
}

/// The fields of `/proc/PID/stat` evidence needs.
#[derive(Debug, PartialEq)]
struct Stat {
    name: String,
    state: char,
    cpu_ticks: u64,
    threads: u32,
    rss_pages: u64,
}

impl Stat {
    /// `pid (comm) state ppid …`: the name may hold spaces and parentheses, so the fields are
    /// counted from the last `)`.
    fn parse(text: &str) -> Option<Stat> {
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let name = text.get(open + 1..close)?.to_owned();
        let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
        // After the name: state is field 3 of stat(5), utime 14, stime 15, num_threads 20,
        // rss 24; here field 3 is index 0.
        let field = |number: usize| fields.get(number - 3).and_then(|f| f.parse::<u64>().ok());
        Some(Stat {
            name,
            state: fields.first()?.chars().next()?,
            cpu_ticks: field(14)?.saturating_add(field(15)?),
            threads: u32::try_from(field(20)?).unwrap_or(u32::MAX),
            rss_pages: field(24)?,
        })
    }
}

/// A state letter with its meaning, as `ps(1)` explains them.
fn state_word(state: char) -> String {
    let meaning = match state {
        'R' => "running",
        'S' => "sleeping",
        'D' => "uninterruptible sleep, in the kernel",
        'T' => "stopped",
        't' => "stopped by a tracer",
        'Z' => "zombie",
        'X' => "dead",
        'I' => "idle",
        'P' => "parked",
        _ => return state.to_string(),
    };
    format!("{state} ({meaning})")
}

/// How many of the process' threads are in each state, when some are not in `main`'s.
fn thread_states(dir: &str, main: char) -> BTreeMap<String, u32> {
    let mut states = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("{dir}/task")) else {
        return states;
    };
    for task in tasks.flatten().take(MAX_THREADS) {
        let Some(stat) = std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|text| Stat::parse(&text))
        else {
            continue;
        };
        *states.entry(stat.state.to_string()).or_insert(0) += 1;
    }
    if states.keys().all(|state| state.starts_with(main)) {
        states.clear();
    }
    states
}

/// The first frames of `/proc/PID/stack` (`[<0>] do_signal_stop+0x10a/0x230`): the function
/// names; nothing where it cannot be read (not root, or a kernel that hides it).
fn kernel_stack(dir: &str) -> Vec<String> {
    std::fs::read_to_string(format!("{dir}/stack"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let frame = line.rsplit("] ").next()?.trim();
            let function = frame.split('+').next()?;
            (!function.is_empty()).then(|| bounded(function, 64))
        })
        .take(MAX_FRAMES)
        .collect()
}

pub(super) fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|size| u64::try_from(size).ok())
        .unwrap_or(4096)
}

fn ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|ticks| u64::try_from(ticks).ok())
        .filter(|ticks| *ticks > 0)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_from_its_last_parenthesis() {
        let line = "812 (my (odd) name) T 1 812 812 0 -1 4194560 270 0 0 0 7 5 0 0 20 0 3 0 1234 10817536 1301 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            Stat::parse(line),
            Some(Stat {
                name: "my (odd) name".into(),
                state: 'T',
                cpu_ticks: 12,
                threads: 3,
                rss_pages: 1301,
            })
        );
        assert_eq!(Stat::parse("812 (cut"), None);
    }

    #[test]
    fn states_are_named() {
        assert_eq!(state_word('T'), "T (stopped)");
        assert_eq!(state_word('D'), "D (uninterruptible sleep, in the kernel)");
        assert_eq!(state_word('W'), "W");
    }
}
