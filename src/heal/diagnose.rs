//! Diagnosis: systemd's facts about the failed run (from the `MONITOR_*` variables of the
//! OnFailure= handler, else from the unit's properties) plus the run's journal lines, turned
//! into a root cause a person can act on. Pure functions; no I/O here.

use serde::Serialize;

use crate::host::disk::DiskUsage;
use crate::host::evidence::Consumer;
use crate::host::journal::JournalLine;
use crate::host::kernel_log::OomKill;
use crate::systemd::{ActiveState, FailedCommand, UnitSnapshot};
use crate::ui::size::{human_bytes, systemd_size};

/// Where the facts about the failed run came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FactSource {
    /// The `MONITOR_*` variables systemd (>= 251) passes to OnFailure= units.
    Monitor,
    /// The unit's D-Bus properties (older systemd, or a manual run).
    Properties,
}

/// How the main process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Termination {
    /// It exited with this status.
    Exited { status: i32 },
    /// A signal killed it.
    Killed { signal: String },
    /// A signal killed it and it dumped core.
    Dumped { signal: String },
    /// Not known (never started, or no facts).
    Unknown,
}

/// The `MONITOR_*` variables, when they describe our unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MonitorFacts {
    pub result: String,
    pub exit_code: String,
    pub exit_status: String,
    pub invocation_id: Option<String>,
}

/// Whether `OnFailure=` started this process (`MONITOR_UNIT` is set). systemd keeps the
/// variables of a unit's last activation by a failure and by a timer side by side on it
/// (`MONITOR_*`, `TRIGGER_*`), so neither says for sure what started this run: the hold
/// decision treats a hook's run and another's alike where it matters (a due retry, a person's
/// stop).
pub(crate) fn started_by_hook() -> bool {
    std::env::var_os("MONITOR_UNIT").is_some()
}

impl MonitorFacts {
    /// Reads the variables of this process' environment, if systemd set them for `unit`.
    pub(crate) fn from_env(unit: &str) -> Option<MonitorFacts> {
        Self::from_lookup(unit, |key| std::env::var(key).ok())
    }

    /// As [`MonitorFacts::from_env`], from any lookup (for tests).
    pub(crate) fn from_lookup(
        unit: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Option<MonitorFacts> {
        // MONITOR_UNIT is only set when exactly one unit triggered the handler; without it
        // the facts may be another unit's.
        if get("MONITOR_UNIT")? != unit {
            return None;
        }
        Some(MonitorFacts {
            result: get("MONITOR_SERVICE_RESULT")?,
            exit_code: get("MONITOR_EXIT_CODE").unwrap_or_default(),
            exit_status: get("MONITOR_EXIT_STATUS").unwrap_or_default(),
            invocation_id: get("MONITOR_INVOCATION_ID").filter(|id| !id.is_empty()),
        })
    }

    fn termination(&self) -> Termination {
        let signal = || signal_name_from_monitor(&self.exit_status);
        match self.exit_code.as_str() {
            "exited" => self
                .exit_status
                .parse()
                .map_or(Termination::Unknown, |status| Termination::Exited {
                    status,
                }),
            "killed" => Termination::Killed { signal: signal() },
            "dumped" => Termination::Dumped { signal: signal() },
            _ => Termination::Unknown,
        }
    }
}

/// `MONITOR_EXIT_STATUS` names signals without the `SIG` prefix ("KILL").
fn signal_name_from_monitor(status: &str) -> String {
    match status.parse::<i32>() {
        Ok(number) => signal_name(number),
        Err(_) if status.starts_with("SIG") => status.to_owned(),
        Err(_) => format!("SIG{status}"),
    }
}

/// "SIGKILL" for 9; "signal 64" for numbers without a name.
pub(crate) fn signal_name(number: i32) -> String {
    nix::sys::signal::Signal::try_from(number)
        .map_or_else(|_| format!("signal {number}"), |s| s.as_str().to_owned())
}

fn termination_from_properties(snapshot: &UnitSnapshot) -> Termination {
    // CLD_EXITED = 1, CLD_KILLED = 2, CLD_DUMPED = 3 (waitid(2)).
    match snapshot.exec_main_code {
        1 => Termination::Exited {
            status: snapshot.exec_main_status,
        },
        2 => Termination::Killed {
            signal: signal_name(snapshot.exec_main_status),
        },
        3 => Termination::Dumped {
            signal: signal_name(snapshot.exec_main_status),
        },
        _ => Termination::Unknown,
    }
}

/// A well-known failure message recognised in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Symptom {
    /// "Address already in use": something else holds the port.
    AddressInUse,
    /// "Permission denied": ownership or mode of a file it needs.
    PermissionDenied,
    /// "No such file or directory": a file, symlink or directory is missing.
    MissingFile,
    /// "Killed", "Out of memory", oom-kill: memory exhaustion.
    OutOfMemory,
    /// "No space left on device" (ENOSPC), "Disk quota exceeded": a full file system.
    DiskFull,
}

impl Symptom {
    /// Every symptom.
    pub(crate) const ALL: [Symptom; 5] = [
        Symptom::AddressInUse,
        Symptom::PermissionDenied,
        Symptom::MissingFile,
        Symptom::OutOfMemory,
        Symptom::DiskFull,
    ];

    const PATTERNS: [(&'static str, Symptom); 11] = [
        ("no space left on device", Symptom::DiskFull),
        ("enospc", Symptom::DiskFull),
        ("disk quota exceeded", Symptom::DiskFull),
        ("edquot", Symptom::DiskFull),
        ("address already in use", Symptom::AddressInUse),
        ("eaddrinuse", Symptom::AddressInUse),
        ("permission denied", Symptom::PermissionDenied),
        ("no such file or directory", Symptom::MissingFile),
        ("out of memory", Symptom::OutOfMemory),
        ("oom-kill", Symptom::OutOfMemory),
        ("memory cgroup out of memory", Symptom::OutOfMemory),
    ];

    /// The symptoms found in `lines`, each once, in order of first appearance.
    pub(crate) fn detect(lines: &[JournalLine]) -> Vec<Symptom> {
        let mut found = Vec::new();
        for line in lines {
            let text = line.message.to_ascii_lowercase();
            let mut hit = |symptom| {
                if !found.contains(&symptom) {
                    found.push(symptom);
                }
            };
            for (pattern, symptom) in Self::PATTERNS {
                if text.contains(pattern) {
                    hit(symptom);
                }
            }
            // A bare "Killed" line is what shells and runtimes print after the OOM killer.
            if text.trim() == "killed" || text.ends_with(": killed") {
                hit(Symptom::OutOfMemory);
            }
        }
        found
    }

    /// What this symptom means for the person reading the report.
    pub(crate) fn explanation(self) -> &'static str {
        match self {
            Symptom::AddressInUse => {
                "its port was already taken by another process (\"Address already in use\")"
            }
            Symptom::PermissionDenied => {
                "it was refused access to a file or socket (\"Permission denied\")"
            }
            Symptom::MissingFile => {
                "a file or directory it needs is missing (\"No such file or directory\")"
            }
            Symptom::OutOfMemory => "it ran out of memory and was killed",
            Symptom::DiskFull => "a file system it writes to is full (\"No space left on device\")",
        }
    }
}

/// A unit the service depends on that is down: the likelier cause, upstream.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Upstream {
    pub unit: String,
    /// `requires` (`Requires=`/`BindsTo=`: it cannot run without it) or `wants` (`Wants=` and
    /// `After=`: it pulls it in and waits for it).
    pub relation: &'static str,
    /// `failed/failed`, `inactive/dead`, or `not-found`.
    pub state: String,
    /// What selfheal did about it, when it did something.
    pub action: Option<String>,
}

/// What held the memory when a unit was killed for want of it ("what grew").
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MemoryHogs {
    /// The largest tasks the kernel listed when it chose what to kill.
    pub at_the_kill: Vec<Consumer>,
    /// Where those tasks were: "in its cgroup", "in system.slice, whose limit was hit", "on the
    /// host".
    pub listed: String,
    /// The largest processes on the host when the report was written, with their units.
    pub on_the_host: Vec<Consumer>,
}

/// Everything selfheal established about the failure.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Diagnosis {
    /// The unit.
    pub unit: String,
    /// State when selfheal looked: `failed`, `active`, …
    pub active_state: ActiveState,
    /// Sub-state when selfheal looked.
    pub sub_state: String,
    /// systemd's `Result` of the failed run.
    pub result: String,
    /// How the main process ended.
    pub termination: Termination,
    /// Automatic restarts systemd already did.
    pub restarts: u32,
    /// Memory the unit uses now, when known.
    pub memory_bytes: Option<u64>,
    /// `MemoryMax=` and `MemoryHigh=`, when set.
    pub memory_max: Option<u64>,
    pub memory_high: Option<u64>,
    /// `Type=` of the service.
    pub service_type: String,
    /// The start command that failed (`ExecStartPre=`, or the `ExecStart=` of a unit whose
    /// start command is not its long-running process), when one did.
    pub failed_command: Option<FailedCommand>,
    /// A file system it writes to that is full.
    pub full_disk: Option<DiskUsage>,
    /// The kernel's OOM kill in the unit, where systemd saw only a SIGKILL.
    #[serde(skip)]
    pub oom_kill: Option<OomKill>,
    /// What held the memory, when it was killed for want of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_hogs: Option<MemoryHogs>,
    /// What systemd-coredump kept of a main process that dumped core (`coredumpctl info`,
    /// cited).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub core: Vec<String>,
    /// The directories its unit says it writes to.
    #[serde(skip)]
    pub write_paths: Vec<std::path::PathBuf>,
    /// The failed run's invocation ID.
    pub invocation_id: Option<String>,
    /// Where `result`/`termination` came from.
    pub source: FactSource,
    /// Failure messages recognised in the journal.
    pub symptoms: Vec<Symptom>,
    /// The failed run's last journal lines.
    pub journal: Vec<JournalLine>,
    /// One sentence: what systemd's facts say happened.
    pub summary: String,
    /// The root cause as far as the facts show it.
    pub root_cause: String,
    /// Set when the unit is active but does not serve: "active, but port 5002 is not
    /// listening", "active, but health URL http://… answered HTTP 503".
    pub unhealthy: Option<String>,
    /// Units it depends on that are down, first the ones it cannot run without.
    pub upstream: Vec<Upstream>,
}

impl Diagnosis {
    /// Combines systemd's facts and the journal into a diagnosis.
    pub(crate) fn new(
        snapshot: &UnitSnapshot,
        monitor: Option<&MonitorFacts>,
        journal: Vec<JournalLine>,
    ) -> Diagnosis {
        let (source, result, termination, invocation_id) = match monitor {
            Some(facts) => (
                FactSource::Monitor,
                facts.result.clone(),
                facts.termination(),
                facts.invocation_id.clone(),
            ),
            None => (
                FactSource::Properties,
                snapshot.result.clone(),
                termination_from_properties(snapshot),
                Some(snapshot.invocation_id.clone()).filter(|id| !id.is_empty()),
            ),
        };
        let symptoms = Symptom::detect(&journal);
        let summary = summarize(&result, &termination, snapshot);
        let mut root_cause = root_cause(&result, &termination, &symptoms);
        let oom = result == "oom-kill" || symptoms.first() == Some(&Symptom::OutOfMemory);
        if oom && let Some(cause) = oom_cause(snapshot) {
            root_cause = cause;
        } else if let Some(command) = &snapshot.failed_command
            && !oom
        {
            root_cause = format!(
                "{} The program reported the error; its last journal lines say why.",
                command_failure(command, &snapshot.service_type)
            );
        }
        Diagnosis {
            unit: snapshot.unit.clone(),
            active_state: snapshot.active_state.clone(),
            sub_state: snapshot.sub_state.clone(),
            result,
            termination,
            restarts: snapshot.n_restarts,
            memory_bytes: snapshot.memory_current,
            memory_max: snapshot.memory_max,
            memory_high: snapshot.memory_high,
            service_type: snapshot.service_type.clone(),
            failed_command: snapshot.failed_command.clone(),
            full_disk: None,
            oom_kill: None,
            memory_hogs: None,
            core: Vec::new(),
            write_paths: snapshot.write_paths.clone(),
            invocation_id,
            source,
            symptoms,
            journal,
            summary,
            root_cause,
            unhealthy: None,
            upstream: Vec::new(),
        }
    }

    /// The units it depends on that are down come first in the summary and the root cause:
    /// restarting a service into the same wall heals nothing.
    pub(crate) fn upstream(mut self, upstream: Vec<Upstream>) -> Diagnosis {
        if let Some(first) = upstream.first() {
            let verb = if first.relation == "requires" {
                "requires"
            } else {
                "wants and waits for"
            };
            self.summary = format!(
                "{} {verb} {}, which is {}; {}",
                self.unit, first.unit, first.state, self.summary
            );
            let mut cause = format!(
                "{}, which {} {verb}, is {}: {} cannot run as it should until it runs. Fix {} first (systemctl status {}).",
                first.unit, self.unit, first.state, self.unit, first.unit, first.unit
            );
            for up in &upstream {
                if let Some(action) = &up.action {
                    cause.push(' ');
                    cause.push_str(action);
                    cause.push('.');
                }
            }
            self.root_cause = format!("{cause} {}", self.root_cause);
        }
        self.upstream = upstream;
        self
    }

    /// The kernel logged an OOM kill in the unit (`task`, `pid`): where systemd could not tell
    /// (it says SIGKILL), this is who sent it.
    pub(crate) fn killed_by_oom(
        mut self,
        snapshot: &UnitSnapshot,
        kill: Option<OomKill>,
    ) -> Diagnosis {
        let Some(OomKill { task, pid, .. }) = kill.clone() else {
            return self;
        };
        self.oom_kill = kill;
        self.root_cause = oom_cause(snapshot).unwrap_or_else(|| {
            "The kernel's OOM killer ended it: the host ran out of memory (the unit sets no MemoryMax=).".to_owned()
        });
        self.summary = format!(
            "{}; the kernel's OOM killer killed {task} (pid {pid})",
            self.summary
        );
        if !self.symptoms.contains(&Symptom::OutOfMemory) {
            self.symptoms.insert(0, Symptom::OutOfMemory);
        }
        self
    }

    /// A file system it writes to is full: that is the cause, and no restart fixes it.
    pub(crate) fn full_disk(mut self, full: Option<DiskUsage>) -> Diagnosis {
        let Some(full) = full else {
            return self;
        };
        let on = if full.path == full.mount {
            full.mount.display().to_string()
        } else {
            format!("{} (on {})", full.path.display(), full.mount.display())
        };
        let what = if full.available_bytes == 0 {
            format!(
                "{} of {}, {} %",
                human_bytes(full.used_bytes),
                human_bytes(full.size_bytes),
                full.percent_used()
            )
        } else {
            "no inode left".to_owned()
        };
        self.root_cause = format!(
            "{on} is full ({what}): No space left on device. A restart cannot free space; free some on {} (du -xh {} | sort -h | tail), then restart {}.",
            full.mount.display(),
            full.mount.display(),
            self.unit
        );
        self.summary = format!("{}; {} is full", self.summary, full.mount.display());
        self.full_disk = Some(full);
        self
    }

    /// The unit is active but does not serve (`unhealthy`, when set, says how): that is the
    /// failure, whatever `Result=` says of the unit's last stop.
    pub(crate) fn not_serving(mut self, unhealthy: Option<String>) -> Diagnosis {
        let Some(unhealthy) = unhealthy else {
            return self;
        };
        let missing = unhealthy.strip_prefix("active, but ").unwrap_or(&unhealthy);
        self.summary = format!(
            "{} is {unhealthy} ({}/{})",
            self.unit, self.active_state, self.sub_state
        );
        self.root_cause = format!(
            "The service runs but does not serve: {missing}. Its process is alive but hung, still starting or serving elsewhere; a restart gives it a fresh start."
        );
        self.unhealthy = Some(unhealthy);
        self
    }

    /// What the evidence taken before the restart says of a unit that ran but did not serve:
    /// its main process was stopped, blocked in the kernel or a zombie. (Otherwise the generic
    /// sentence stands: a sleeping or running process may be waiting on anything.)
    pub(crate) fn before_the_restart(
        mut self,
        evidence: Option<&crate::host::evidence::Evidence>,
    ) -> Diagnosis {
        let (Some(evidence), Some(unhealthy)) = (evidence, &self.unhealthy) else {
            return self;
        };
        // A full disk is the cause whatever the process was doing.
        let Some(main) = evidence.main_process().filter(|_| self.full_disk.is_none()) else {
            return self;
        };
        let process = format!("Its main process {} (PID {})", main.name, main.pid);
        let why = match main.state.chars().next() {
            Some('T' | 't') => format!(
                "{process} was stopped (state T: a SIGSTOP, a debugger or a terminal's job control), so it could not answer"
            ),
            Some('D') => format!(
                "{process} was blocked in the kernel when its evidence was taken (state D{}: waiting on a disk, a mount or a lock)",
                main.wchan
                    .as_deref()
                    .map(|wchan| format!(", in {wchan}"))
                    .unwrap_or_default()
            ),
            Some('Z') => format!("{process} had exited and was not reaped (a zombie)"),
            _ => return self,
        };
        let missing = unhealthy.strip_prefix("active, but ").unwrap_or(unhealthy);
        self.root_cause = format!(
            "The service runs but does not serve: {missing}. {why}; a restart gives it a fresh start."
        );
        self
    }
}

/// The OOM killer's part, with the unit's limit when it has one.
fn oom_cause(snapshot: &UnitSnapshot) -> Option<String> {
    memory_limit(snapshot).map(|limit| format!(
        "The kernel's OOM killer ended it at its {limit}: the service needs more memory than its unit allows, or leaks. Raise the limit (systemctl edit {}) or find what grows.",
        snapshot.unit
    ))
}

/// `MemoryMax=40M`, or `MemoryHigh=…` when only that is set.
fn memory_limit(snapshot: &UnitSnapshot) -> Option<String> {
    snapshot
        .memory_max
        .map(|max| format!("MemoryMax={}", systemd_size(max)))
        .or_else(|| {
            snapshot
                .memory_high
                .map(|high| format!("MemoryHigh={}", systemd_size(high)))
        })
}

/// "The start command /usr/sbin/apachectl start (ExecStart= of a Type=forking unit) exited with
/// status 1."
fn command_failure(command: &FailedCommand, service_type: &str) -> String {
    let line = if command.argv.is_empty() {
        command.path.clone()
    } else {
        command.argv.join(" ")
    };
    let stage = match (command.stage, service_type) {
        ("ExecStart", "forking") => {
            "ExecStart= of a Type=forking unit, which starts the daemon and exits".to_owned()
        }
        (stage, _) => format!("{stage}=, before the service itself starts"),
    };
    format!("The start command {line} ({stage}) {}.", ended(command))
}

/// `exited with status 1`, `was killed by SIGKILL`.
fn ended(command: &FailedCommand) -> String {
    match command.code {
        2 => format!("was killed by {}", signal_name(command.status)),
        3 => format!("dumped core on {}", signal_name(command.status)),
        _ => format!("exited with status {}", command.status),
    }
}

fn summarize(result: &str, termination: &Termination, snapshot: &UnitSnapshot) -> String {
    if let Some(command) = &snapshot.failed_command {
        let line = command.argv.first().unwrap_or(&command.path);
        return format!(
            "{} is {}/{} (Result={result}); its {}= command {line} {}",
            snapshot.unit,
            snapshot.active_state,
            snapshot.sub_state,
            command.stage,
            ended(command)
        );
    }
    let how = match termination {
        Termination::Exited { status } => format!("the main process exited with status {status}"),
        Termination::Killed { signal } => format!("the main process was killed by {signal}"),
        Termination::Dumped { signal } => format!("the main process dumped core on {signal}"),
        Termination::Unknown => "the main process left no exit status".to_owned(),
    };
    format!(
        "{} is {}/{} (Result={result}); {how}",
        snapshot.unit, snapshot.active_state, snapshot.sub_state
    )
}

/// The root cause as far as the facts go. Never a list of guesses: when the facts do not
/// say, the sentence says so.
pub(crate) fn root_cause(result: &str, termination: &Termination, symptoms: &[Symptom]) -> String {
    // An oom-kill Result outranks journal evidence of anything else.
    if let Some(symptom) = symptoms
        .first()
        .filter(|s| result != "oom-kill" || **s == Symptom::OutOfMemory)
    {
        return format!("The service failed because {}.", symptom.explanation());
    }
    match (result, termination) {
        ("oom-kill", _) => "The kernel's OOM killer ended the service: it ran out of memory (check MemoryMax= and the service's usage).".into(),
        ("signal", Termination::Killed { signal }) if signal == "SIGKILL" => {
            "The main process was killed with SIGKILL from outside the service (an operator, a script or the OOM killer); it did not exit by itself.".into()
        }
        ("signal", Termination::Killed { signal }) => {
            format!("The main process was terminated by {signal}, not by systemd.")
        }
        ("core-dump" | _, Termination::Dumped { signal }) => {
            format!("The service crashed ({signal}) and dumped core: a bug in the program; see coredumpctl.")
        }
        ("exit-code", Termination::Exited { status }) => format!(
            "The service exited with status {status} by itself: the program reported an error; its last journal lines say why."
        ),
        ("timeout", _) => "The service did not start or stop within its timeout (TimeoutStartSec=/TimeoutStopSec=).".into(),
        ("watchdog", _) => "The service stopped answering its watchdog (WatchdogSec=): it hung.".into(),
        ("start-limit-hit", _) => "The service was restarted too often in a short time; systemd's start limit stopped it.".into(),
        ("resources", _) => "systemd could not set up the service's resources (a missing EnvironmentFile=, user, directory or similar) before starting it.".into(),
        ("exec-condition" | "condition", _) => "A start condition of the unit was not met.".into(),
        ("success", _) => "The service stopped cleanly (a stop request, or it exited 0); nothing crashed.".into(),
        (other, _) => format!("systemd reports Result={other}; the journal lines below are the best evidence."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(message: &str) -> JournalLine {
        JournalLine {
            timestamp_us: 0,
            pid: 0,
            message: message.to_owned(),
            invocation_id: None,
        }
    }

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn monitor_facts_of_a_sigkill() {
        let vars = [
            ("MONITOR_UNIT", "web.service"),
            ("MONITOR_SERVICE_RESULT", "signal"),
            ("MONITOR_EXIT_CODE", "killed"),
            ("MONITOR_EXIT_STATUS", "KILL"),
            ("MONITOR_INVOCATION_ID", "abc"),
        ];
        let facts = MonitorFacts::from_lookup("web.service", env(&vars)).unwrap();
        assert_eq!(
            facts.termination(),
            Termination::Killed {
                signal: "SIGKILL".into()
            }
        );
        assert_eq!(facts.invocation_id.as_deref(), Some("abc"));
        assert!(MonitorFacts::from_lookup("other.service", env(&vars)).is_none());
    }

    #[test]
    fn properties_are_the_fallback() {
        let snapshot = UnitSnapshot {
            unit: "web.service".into(),
            active_state: ActiveState::Failed,
            sub_state: "failed".into(),
            result: "exit-code".into(),
            exec_main_code: 1,
            exec_main_status: 3,
            invocation_id: "ff".into(),
            ..UnitSnapshot::default()
        };
        let diagnosis = Diagnosis::new(&snapshot, None, vec![]);
        assert_eq!(diagnosis.termination, Termination::Exited { status: 3 });
        assert_eq!(diagnosis.source, FactSource::Properties);
        assert!(
            diagnosis.summary.contains("exited with status 3"),
            "{}",
            diagnosis.summary
        );
        assert!(
            diagnosis.root_cause.contains("status 3"),
            "{}",
            diagnosis.root_cause
        );
    }

    #[test]
    fn recognises_journal_symptoms() {
        let table: [(&str, Symptom); 5] = [
            (
                "OSError: [Errno 98] Address already in use",
                Symptom::AddressInUse,
            ),
            (
                "open /srv/app.db: permission denied",
                Symptom::PermissionDenied,
            ),
            (
                "FATAL: /srv/app/.env: No such file or directory",
                Symptom::MissingFile,
            ),
            ("Killed", Symptom::OutOfMemory),
            (
                "web.service: A process of this unit has been killed by the OOM killer. oom-kill",
                Symptom::OutOfMemory,
            ),
        ];
        for (message, symptom) in table {
            assert_eq!(
                Symptom::detect(&[line(message)]),
                vec![symptom],
                "{message}"
            );
        }
        assert!(Symptom::detect(&[line("all good")]).is_empty());
    }

    #[test]
    fn root_cause_prefers_evidence_over_the_generic_sentence() {
        let exited = Termination::Exited { status: 1 };
        let cause = root_cause("exit-code", &exited, &[Symptom::AddressInUse]);
        assert!(cause.contains("port was already taken"), "{cause}");
        let cause = root_cause(
            "oom-kill",
            &Termination::Killed {
                signal: "SIGKILL".into(),
            },
            &[],
        );
        assert!(cause.contains("OOM"), "{cause}");
        let cause = root_cause(
            "signal",
            &Termination::Killed {
                signal: "SIGKILL".into(),
            },
            &[],
        );
        assert!(cause.contains("SIGKILL"), "{cause}");
    }

    /// A failed unit's facts as systemd gives them for each kind of failure.
    fn failed(result: &str, code: i32, status: i32) -> UnitSnapshot {
        UnitSnapshot {
            unit: "web.service".into(),
            load_state: "loaded".into(),
            active_state: ActiveState::Failed,
            sub_state: "failed".into(),
            result: result.into(),
            exec_main_code: code,
            exec_main_status: status,
            service_type: "simple".into(),
            ..UnitSnapshot::default()
        }
    }

    fn sentences(diagnosis: &Diagnosis) -> String {
        format!("{}\n{}", diagnosis.summary, diagnosis.root_cause)
    }

    /// Failures whose cause is beside the main process: a start command, a full disk.
    fn beside_the_main_process() -> Vec<(&'static str, Diagnosis)> {
        let command = |stage, path: &str, argv: &[&str]| FailedCommand {
            stage,
            path: path.into(),
            argv: argv.iter().map(|arg| (*arg).to_owned()).collect(),
            pid: 812,
            code: 1,
            status: 1,
        };
        let forking = UnitSnapshot {
            service_type: "forking".into(),
            failed_command: Some(command(
                "ExecStart",
                "/usr/sbin/apachectl",
                &["/usr/sbin/apachectl", "start"],
            )),
            ..failed("exit-code", 0, 0)
        };
        let pre = UnitSnapshot {
            failed_command: Some(command(
                "ExecStartPre",
                "/usr/sbin/nginx",
                &["/usr/sbin/nginx", "-t"],
            )),
            ..failed("exit-code", 0, 0)
        };
        let full = DiskUsage {
            path: "/srv/data".into(),
            mount: "/srv/data".into(),
            size_bytes: 262_144,
            used_bytes: 262_144,
            available_bytes: 0,
            available_inodes: Some(100),
        };
        let enospc = line("OSError: [Errno 28] No space left on device: '/srv/data/x'");
        vec![
            (
                "forking_start_command",
                Diagnosis::new(&forking, None, vec![]),
            ),
            ("exec_start_pre", Diagnosis::new(&pre, None, vec![])),
            (
                "full_disk",
                Diagnosis::new(&failed("exit-code", 1, 1), None, vec![enospc])
                    .full_disk(Some(full)),
            ),
        ]
    }

    /// The first sentence and the root cause of each kind of diagnosis, pinned: a change to
    /// one is a visible diff in review.
    #[test]
    fn each_kind_reads_as_pinned() {
        let limited = UnitSnapshot {
            memory_max: Some(40 << 20),
            ..failed("oom-kill", 2, 9)
        };
        let kernel_saw = OomKill {
            task: "reportgen".into(),
            pid: 4242,
            consumers: Vec::new(),
            listed: "on the host".into(),
        };
        let mut kinds: Vec<(&str, Diagnosis)> = vec![
            (
                "exit_code",
                Diagnosis::new(&failed("exit-code", 1, 3), None, vec![]),
            ),
            (
                "address_in_use",
                Diagnosis::new(
                    &failed("exit-code", 1, 1),
                    None,
                    vec![line("OSError: [Errno 98] Address already in use")],
                ),
            ),
            (
                "sigkill",
                Diagnosis::new(&failed("signal", 2, 9), None, vec![]),
            ),
            (
                "sigterm",
                Diagnosis::new(&failed("signal", 2, 15), None, vec![]),
            ),
            (
                "core_dump",
                Diagnosis::new(&failed("core-dump", 3, 11), None, vec![]),
            ),
            (
                "oom_kill_at_memory_max",
                Diagnosis::new(&limited, None, vec![]),
            ),
            (
                "oom_kill_seen_by_the_kernel_only",
                Diagnosis::new(&failed("signal", 2, 9), None, vec![])
                    .killed_by_oom(&failed("signal", 2, 9), Some(kernel_saw)),
            ),
            (
                "timeout",
                Diagnosis::new(&failed("timeout", 2, 15), None, vec![]),
            ),
            (
                "start_limit",
                Diagnosis::new(&failed("start-limit-hit", 0, 0), None, vec![]),
            ),
            (
                "not_serving",
                Diagnosis::new(
                    &UnitSnapshot {
                        active_state: ActiveState::Active,
                        sub_state: "running".into(),
                        ..failed("success", 0, 0)
                    },
                    None,
                    vec![],
                )
                .not_serving(Some(
                    "active, but health URL http://127.0.0.1:8080/health timed out after 2s".into(),
                )),
            ),
            (
                "upstream_down",
                Diagnosis::new(&failed("exit-code", 1, 1), None, vec![]).upstream(vec![Upstream {
                    unit: "postgresql.service".into(),
                    relation: "requires",
                    state: "failed/failed".into(),
                    action: None,
                }]),
            ),
        ];
        kinds.extend(beside_the_main_process());
        for (kind, diagnosis) in kinds {
            insta::assert_snapshot!(kind, sentences(&diagnosis));
        }
    }

    #[test]
    fn names_signals() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name_from_monitor("KILL"), "SIGKILL");
        assert_eq!(signal_name_from_monitor("9"), "SIGKILL");
    }
}
