//! `UnitSnapshot`: what systemd knows about a service unit at one moment.

use std::fmt;

use serde::Serialize;

/// A unit's `ActiveState`, as systemd reports it. Parsed once, from the D-Bus string; shown
/// (JSON, reports, logs) in systemd's own spelling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum ActiveState {
    Active,
    Reloading,
    #[default]
    Inactive,
    Failed,
    Activating,
    Deactivating,
    /// A state this version does not know (`maintenance`, `refreshing`, a future one).
    Other(String),
}

impl ActiveState {
    pub(crate) fn parse(text: &str) -> ActiveState {
        match text {
            "active" => ActiveState::Active,
            "reloading" => ActiveState::Reloading,
            "inactive" => ActiveState::Inactive,
            "failed" => ActiveState::Failed,
            "activating" => ActiveState::Activating,
            "deactivating" => ActiveState::Deactivating,
            other => ActiveState::Other(other.to_owned()),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            ActiveState::Active => "active",
            ActiveState::Reloading => "reloading",
            ActiveState::Inactive => "inactive",
            ActiveState::Failed => "failed",
            ActiveState::Activating => "activating",
            ActiveState::Deactivating => "deactivating",
            ActiveState::Other(text) => text,
        }
    }
}

impl fmt::Display for ActiveState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ActiveState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The facts about one service unit, read in one go over D-Bus.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub(crate) struct UnitSnapshot {
    /// Unit name, e.g. `web.service`.
    pub unit: String,
    /// `loaded`, `not-found`, `masked`, …
    pub load_state: String,
    /// `active`, `failed`, `inactive`, `activating`, …
    pub active_state: ActiveState,
    /// `running`, `dead`, `failed`, `auto-restart`, …
    pub sub_state: String,
    /// The service's `Result`: `success`, `exit-code`, `signal`, `oom-kill`, …
    pub result: String,
    /// `ExecMainCode`: 1 exited, 2 killed, 3 dumped (CLD_* codes), 0 unknown.
    pub exec_main_code: i32,
    /// `ExecMainStatus`: the exit status, or the signal number.
    pub exec_main_status: i32,
    /// `NRestarts`: automatic restarts systemd did since the unit was last started by hand.
    pub n_restarts: u32,
    /// The main process, 0 when none.
    pub main_pid: u32,
    /// `ExecMainPID`: the main process, also once it died; 0 when none.
    pub exec_main_pid: u32,
    /// The current (or, when dead, last) invocation ID, hex.
    pub invocation_id: String,
    /// `MemoryCurrent`, when systemd accounts it.
    pub memory_current: Option<u64>,
    /// When the unit last entered `active`, µs since the epoch (0: never).
    pub active_enter_timestamp_us: u64,
    /// The id of a queued job, if any.
    pub job_id: Option<u32>,
    /// The unit's cgroup path, e.g. `/system.slice/web.service`.
    pub control_group: String,
    /// `ExecStart=` command lines (argv).
    pub exec_start: Vec<Vec<String>>,
    /// The start command that failed in its last start, when one did.
    pub failed_command: Option<FailedCommand>,
    /// `Type=`: `simple`, `exec`, `forking`, `oneshot`, `notify`, …
    pub service_type: String,
    /// `MemoryMax=` and `MemoryHigh=`, when set.
    pub memory_max: Option<u64>,
    pub memory_high: Option<u64>,
    /// The directories it writes to, as its unit declares them.
    pub write_paths: Vec<std::path::PathBuf>,
    /// When its last main process started, µs of CLOCK_MONOTONIC (0: never).
    pub main_started_monotonic_us: u64,
    /// The same, µs since the epoch.
    pub main_started_realtime_us: u64,
    /// When its last main process exited, µs of CLOCK_MONOTONIC (0: never).
    pub main_exited_monotonic_us: u64,
    /// `EnvironmentFile=` entries: path and whether a missing file is tolerated (`-` prefix).
    pub environment_files: Vec<(String, bool)>,
    /// Units it cannot run without: `Requires=` and `BindsTo=`.
    pub requires: Vec<String>,
    /// Units it pulls in and waits for: in both `Wants=` and `After=`.
    pub ordered_wants: Vec<String>,
}

/// A start command (`ExecStartPre=`, or `ExecStart=` of a `forking`/`oneshot` unit, where it is
/// not the long-running process) that failed.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub(crate) struct FailedCommand {
    /// `ExecStartPre` or `ExecStart`.
    pub stage: &'static str,
    pub path: String,
    pub argv: Vec<String>,
    pub pid: u32,
    /// CLD_* code: 1 exited, 2 killed, 3 dumped.
    pub code: i32,
    /// The exit status, or the signal number.
    pub status: i32,
}

impl UnitSnapshot {
    /// Active and not in the middle of a restart.
    /// When its last main process ran, µs of CLOCK_MONOTONIC: from its start to its exit
    /// (open-ended while it runs).
    pub(crate) fn main_run(&self) -> (u64, Option<u64>) {
        let start = self.main_started_monotonic_us;
        let exit = self.main_exited_monotonic_us;
        (start, (exit >= start && exit > 0).then_some(exit))
    }

    pub(crate) fn is_active(&self) -> bool {
        matches!(
            self.active_state,
            ActiveState::Active | ActiveState::Reloading
        )
    }

    /// systemd itself is busy with the unit: a queued job or a pending automatic restart.
    pub(crate) fn systemd_is_acting(&self) -> bool {
        self.job_id.is_some()
            || self.restart_pending()
            || matches!(
                self.active_state,
                ActiveState::Activating | ActiveState::Deactivating
            )
    }

    /// An automatic restart (`Restart=`) is pending: `auto-restart`, or on systemd >= 254 also
    /// `auto-restart-queued`.
    pub(crate) fn restart_pending(&self) -> bool {
        self.sub_state.starts_with("auto-restart")
    }

    /// `failed/failed (Result=exit-code)`: the state as messages show it.
    pub(crate) fn state(&self) -> String {
        format!(
            "{}/{} (Result={})",
            self.active_state, self.sub_state, self.result
        )
    }

    /// The unit has reached a state where waiting longer will not make it come up on its own.
    pub(crate) fn is_down(&self) -> bool {
        !self.systemd_is_acting()
            && matches!(
                self.active_state,
                ActiveState::Failed | ActiveState::Inactive
            )
    }
}
