//! The outcome of a `run`, and the exit code each one maps to.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::exit_code::ExitCode;

/// How a `selfheal run` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Healed and verified.
    Resolved,
    /// It was already healthy; nothing was done.
    Healthy,
    /// systemd's own `Restart=` brought it back (the restart was pending or done when the run
    /// looked); selfheal restarted nothing. systemd >= 254 starts the heal unit at every failed
    /// attempt of a `Restart=` unit, so this is what most of those runs find.
    RestartedBySystemd,
    /// Still down after every applicable strategy; escalated.
    Failed,
    /// systemd keeps restarting it (`crash_loop.restarts` automatic restarts within
    /// `crash_loop.within`): each restart "works" and it crashes again. Seen by `selfheal
    /// watch` where `OnFailure=` does not fire for such restarts; reported once, not healed.
    CrashLoop,
    /// Not healed on purpose (loop protection, or a concurrent run).
    Suppressed,
    /// `--dry-run`: the plan was printed, nothing changed.
    Planned,
    /// Paused by a person (`selfheal pause`): recorded, nothing healed or told.
    Paused,
    /// A unit `all_services:` covers failed and its section lists no strategy: diagnosed and
    /// reported, nothing changed.
    Reported,
    /// The host guard holds it: many services are failing, they are healed one at a time and
    /// this one waits its turn (its heal unit is started when it comes).
    Held,
}

impl Outcome {
    /// The word used in JSON, history and subjects.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Resolved => "resolved",
            Outcome::Healthy => "healthy",
            Outcome::RestartedBySystemd => "restarted_by_systemd",
            Outcome::Failed => "failed",
            Outcome::CrashLoop => "crash_loop",
            Outcome::Suppressed => "suppressed",
            Outcome::Planned => "planned",
            Outcome::Reported => "reported",
            Outcome::Paused => "paused",
            Outcome::Held => "held",
        }
    }

    /// The process exit code for this outcome.
    pub fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Resolved
            | Outcome::Healthy
            | Outcome::RestartedBySystemd
            | Outcome::Planned
            | Outcome::Reported
            | Outcome::Paused => ExitCode::Success,
            Outcome::Failed | Outcome::CrashLoop => ExitCode::Failure,
            Outcome::Suppressed | Outcome::Held => ExitCode::Suppressed,
        }
    }

    /// Whether this run counts as a healing attempt for loop protection.
    pub fn is_healing_attempt(self) -> bool {
        matches!(self, Outcome::Resolved | Outcome::Failed)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
