//! The state directory: per-service locks, and the run history (`history.jsonl`).
//!
//! Writes are single `write(2)` calls of whole lines under an exclusive `flock`, so concurrent
//! runs never interleave, and a killed run leaves either its whole line or none.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::outcome::Outcome;

/// Where state lives when neither `--state-dir` nor `$SELFHEAL_STATE_DIR` is given.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/selfheal";

/// A state directory problem.
#[derive(Debug, thiserror::Error)]
#[error("state directory {path}: {source}")]
pub struct StateError {
    path: PathBuf,
    source: std::io::Error,
}

/// One line of `history.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HistoryRecord {
    pub service: String,
    pub outcome: Outcome,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub duration_ms: u64,
    /// The strategy that healed it, or null.
    pub healed_by: Option<String>,
    /// One-line diagnosis, for `history` and the dashboard.
    #[serde(default)]
    pub summary: String,
}

impl HistoryRecord {
    /// When the run started; `None` for an unreadable timestamp.
    pub fn started(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339_weak(&self.started_at).ok()
    }
}

/// Holds a service's lock until dropped (or until the process dies: the kernel releases it).
pub struct ServiceLock {
    _lock: Flock<File>,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn error(&self, source: std::io::Error) -> StateError {
        StateError {
            path: self.root.clone(),
            source,
        }
    }

    pub(crate) fn ensure(&self, sub: &str) -> Result<PathBuf, StateError> {
        let dir = self.root.join(sub);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(&dir)
            .map_err(|e| self.error(e))?;
        Ok(dir)
    }

    /// Takes the service's lock without waiting; `None` when another run holds it.
    pub fn try_lock(&self, service: &str) -> Result<Option<ServiceLock>, StateError> {
        let path = self.ensure("locks")?.join(format!("{service}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o640)
            .open(&path)
            .map_err(|e| self.error(e))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(ServiceLock { _lock: lock })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(self.error(errno.into())),
        }
    }

    fn history_path(&self) -> PathBuf {
        self.root.join("history.jsonl")
    }

    /// Appends one record.
    pub fn append_history(&self, record: &HistoryRecord) -> Result<(), StateError> {
        self.ensure("")?;
        let mut line = serde_json::to_vec(record).map_err(|e| self.error(e.into()))?;
        line.push(b'\n');
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(self.history_path())
            .map_err(|e| self.error(e))?;
        let mut lock =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| self.error(e.into()))?;
        lock.write_all(&line).map_err(|e| self.error(e))
    }

    /// Every readable record, oldest first. A torn or foreign line is skipped, not fatal.
    pub fn history(&self) -> Result<Vec<HistoryRecord>, StateError> {
        let file = match File::open(self.history_path()) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(self.error(err)),
        };
        Ok(BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| serde_json::from_str(&line).ok())
            .collect())
    }

    /// Healing attempts (resolved or failed runs) of `service` that started after `since`.
    pub fn healing_attempts_since(
        &self,
        service: &str,
        since: SystemTime,
    ) -> Result<usize, StateError> {
        Ok(self
            .history()?
            .iter()
            .filter(|r| r.service == service && r.outcome.is_healing_attempt())
            .filter(|r| r.started().is_some_and(|t| t >= since))
            .count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(service: &str, outcome: Outcome, started_at: &str) -> HistoryRecord {
        HistoryRecord {
            service: service.into(),
            outcome,
            started_at: started_at.into(),
            duration_ms: 5,
            healed_by: None,
            summary: String::new(),
        }
    }

    #[test]
    fn history_round_trips_and_counts_attempts_in_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        assert!(state.history().unwrap().is_empty());
        let now = humantime::format_rfc3339(SystemTime::now()).to_string();
        state
            .append_history(&record("web", Outcome::Resolved, "2020-01-01T00:00:00Z"))
            .unwrap();
        state
            .append_history(&record("web", Outcome::Failed, &now))
            .unwrap();
        state
            .append_history(&record("web", Outcome::Healthy, &now))
            .unwrap();
        state
            .append_history(&record("db", Outcome::Resolved, &now))
            .unwrap();
        assert_eq!(state.history().unwrap().len(), 4);
        let hour_ago = SystemTime::now() - std::time::Duration::from_secs(3600);
        assert_eq!(state.healing_attempts_since("web", hour_ago).unwrap(), 1);
    }

    #[test]
    fn a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        state
            .append_history(&record("web", Outcome::Resolved, "2020-01-01T00:00:00Z"))
            .unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("history.jsonl"))
            .unwrap()
            .write_all(b"{\"service\":\"we")
            .unwrap();
        assert_eq!(state.history().unwrap().len(), 1);
    }

    #[test]
    fn the_lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let held = state.try_lock("web").unwrap();
        assert!(held.is_some());
        assert!(state.try_lock("web").unwrap().is_none());
        assert!(state.try_lock("db").unwrap().is_some());
        drop(held);
        assert!(state.try_lock("web").unwrap().is_some());
    }
}
