//! What one run established: its outcome, diagnosis, steps, and the unit's state after it.
//! `heal` produces these facts; `report` adds the config's names and the advice, and renders.

use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::heal::diagnose::Diagnosis;
use crate::heal::strategy::Step;
use crate::outcome::Outcome;
use crate::state::{HistoryRecord, StateDir};
use crate::systemd::{ActiveState, UnitSnapshot};
use crate::ui::when::Timestamp;

/// The unit's state after healing.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PostStatus {
    pub active_state: ActiveState,
    pub sub_state: String,
    pub main_pid: u32,
    pub memory_bytes: Option<u64>,
    /// When it last became active.
    pub active_since: Option<Timestamp>,
}

impl From<&UnitSnapshot> for PostStatus {
    fn from(snapshot: &UnitSnapshot) -> PostStatus {
        let since = (snapshot.active_enter_timestamp_us > 0).then(|| {
            let time = std::time::UNIX_EPOCH
                + std::time::Duration::from_micros(snapshot.active_enter_timestamp_us);
            Timestamp::seconds(time)
        });
        PostStatus {
            active_state: snapshot.active_state.clone(),
            sub_state: snapshot.sub_state.clone(),
            main_pid: snapshot.main_pid,
            memory_bytes: snapshot.memory_current,
            active_since: since,
        }
    }
}

/// What a run established, to be turned into a report (recorded in history as it is).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunFacts {
    pub outcome: Outcome,
    /// To the millisecond.
    pub started_at: Timestamp,
    pub duration_ms: u64,
    pub diagnosis: Option<Diagnosis>,
    pub steps: Vec<Step>,
    pub healed_by: Option<String>,
    /// Why the run stopped without healing (escalation reason, suppression reason).
    pub reason: Option<String>,
    pub post_status: Option<PostStatus>,
    pub dry_run: bool,
    /// Set when loop protection's timed retry healed it: the subject says RECOVERED.
    pub recovered: Option<Recovery>,
    /// It failed again within `threshold_window` of a healing: part of that episode.
    pub relapse: bool,
    /// The run is part of an episode whose owner was already told (its first FAILED or
    /// SUPPRESSED report): recorded, printed, not mailed again.
    pub episode_reported: bool,
    /// The service is up again after a FAILED, SUPPRESSED or CRASH LOOP report that people
    /// were told (that report's word): this report is their all-clear, whoever brought it
    /// back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_clear: Option<String>,
    /// The reports of this service that the notification policy's `min_interval` folded into
    /// this one, in a line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folded: Option<String>,
    /// A reminder (`notify_policy: remind`) that the service is still down: since when people
    /// were told, readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reminder: Option<String>,
    /// This run found many services failing at once (the host guard): the one report for the
    /// host names them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardStorm>,
    /// This run ended the host guard's storm (nobody waits any more): when the storm began.
    /// Its alert is resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard_over: Option<Timestamp>,
    /// What the service's processes were doing before it was restarted (a hang, a service
    /// that did not answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<crate::host::evidence::Evidence>,
    /// The Alertmanager alert that started this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<crate::state::alerts::FiringAlert>,
}

/// A storm the host guard found, as its report tells it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct GuardStorm {
    /// The services failing within the guard's window.
    pub failing: Vec<String>,
    pub max_failing: u32,
    pub within: String,
    /// The likely shared cause, where this run's diagnosis found one on the host (a full file
    /// system, the kernel's OOM killer, a failed upstream unit).
    pub cause: Option<String>,
}

impl RunFacts {
    /// The facts of a look that healed nothing (the watch, `flush`): `outcome` with `reason`,
    /// the unit as it is, and no diagnosis of a failure.
    pub(crate) fn observed(
        outcome: crate::outcome::Outcome,
        reason: String,
        post_status: Option<PostStatus>,
    ) -> RunFacts {
        RunFacts {
            outcome,
            started_at: Timestamp::now_millis(),
            duration_ms: 0,
            diagnosis: None,
            steps: Vec::new(),
            healed_by: None,
            reason: Some(reason),
            post_status,
            dry_run: false,
            recovered: None,
            relapse: false,
            episode_reported: false,
            all_clear: None,
            folded: None,
            reminder: None,
            guard: None,
            guard_over: None,
            evidence: None,
            alert: None,
        }
    }
}

/// The end of a loop-protection episode by a timed retry that healed the service.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Recovery {
    /// Healing runs in the episode's window before this one.
    pub failures: usize,
    /// When loop protection stopped healing it (UTC, readable).
    pub since: String,
    /// How often it failed again after recovering, in this episode.
    pub relapses: u32,
    /// How long it must stay healthy for the episode to end (`threshold_window`).
    pub watched_for: String,
}

/// Logs, records and returns the run's facts (records nothing on a dry run). `manual`: a
/// person's run.
pub(crate) fn finish(state: &StateDir, service: &str, facts: RunFacts, manual: bool) -> RunFacts {
    tracing::info!(
        selfheal_service = %service,
        selfheal_outcome = %facts.outcome,
        selfheal_healed_by = facts.healed_by.as_deref().unwrap_or(""),
        "{} {} in {} ms",
        service,
        facts.outcome,
        facts.duration_ms
    );
    if !facts.dry_run {
        let record = HistoryRecord {
            service: service.to_owned(),
            outcome: facts.outcome,
            started_at: facts.started_at,
            duration_ms: facts.duration_ms,
            healed_by: facts.healed_by.clone(),
            summary: recorded_summary(&facts),
            manual,
            relapse: facts.relapse,
            restarts: 0,
        };
        // Recording never blocks telling: the report is still printed and mailed, and only
        // this history line is lost (loop protection then undercounts by one run).
        if let Err(err) = state.append_history(&record) {
            tracing::error!(
                selfheal_service = %service,
                "this run could not be recorded in history.jsonl: {err}"
            );
        }
    }
    facts
}

/// When the run started, for `started_at` and `duration_ms`.
pub(crate) struct RunClock {
    wall: SystemTime,
    monotonic: Instant,
}

impl RunClock {
    pub(crate) fn start() -> RunClock {
        RunClock {
            wall: SystemTime::now(),
            monotonic: Instant::now(),
        }
    }

    pub(crate) fn elapsed_us(&self) -> u128 {
        self.monotonic.elapsed().as_micros()
    }

    pub(crate) fn facts(&self, outcome: Outcome, dry_run: bool) -> RunFacts {
        RunFacts {
            outcome,
            started_at: Timestamp::millis(self.wall),
            duration_ms: u64::try_from(self.monotonic.elapsed().as_millis()).unwrap_or(u64::MAX),
            diagnosis: None,
            steps: Vec::new(),
            healed_by: None,
            reason: None,
            post_status: None,
            dry_run,
            recovered: None,
            relapse: false,
            episode_reported: false,
            all_clear: None,
            folded: None,
            reminder: None,
            guard: None,
            guard_over: None,
            evidence: None,
            alert: None,
        }
    }
}

impl RunFacts {
    pub(crate) fn diagnosis(mut self, diagnosis: Diagnosis) -> RunFacts {
        self.diagnosis = Some(diagnosis);
        self
    }

    pub(crate) fn reason(mut self, reason: String) -> RunFacts {
        self.reason = Some(reason);
        self
    }
}

/// The line history keeps of a run: its diagnosis, and for a run a plan held, why (what
/// `history` shows of a failure nobody was told about).
fn recorded_summary(facts: &RunFacts) -> String {
    let diagnosis = facts
        .diagnosis
        .as_ref()
        .map(|d| d.summary.clone())
        .unwrap_or_default();
    match (&facts.reason, facts.outcome) {
        (Some(reason), Outcome::Paused) if diagnosis.is_empty() => reason.clone(),
        (Some(reason), Outcome::Paused) => format!("{diagnosis}; not healed: {reason}"),
        _ => diagnosis,
    }
}
