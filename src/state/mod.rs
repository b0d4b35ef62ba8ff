//! The state directory: per-service locks, and the run history (`history.jsonl`).
//!
//! selfheal runs as root, so the directory is trusted only when nobody else can plant
//! anything in it: it and its subdirectories are created 0750, and one that is a symlink, is
//! owned by someone other than root (or the running user) or is writable by group or others
//! is refused. Every state file is opened with `O_NOFOLLOW`.
//!
//! History writes are single `write(2)` calls of whole lines under an exclusive `flock` (on a
//! lock file of its own, so that compaction can replace `history.jsonl`), so concurrent runs
//! never interleave, and a killed run leaves either its whole line or a torn one that the
//! next writer ends with a newline before appending. Reading keeps going past a torn or
//! non-UTF-8 line; the file is compacted when it grows past `HISTORY_MAX_BYTES`.

pub(crate) mod alerts;
mod compacted;
pub(crate) mod pauses;
mod rounds;
pub(crate) mod stats;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::outcome::Outcome;
pub use crate::ui::when::Timestamp;
pub use compacted::{Compacted, HEAL_DURATION_BUCKETS};

/// Where state lives when neither `--state-dir` nor `$SELFHEAL_STATE_DIR` is given.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/selfheal";

/// Past this size `history.jsonl` is compacted to the last `HISTORY_KEEP_PER_SERVICE` runs of
/// each service (loop protection needs only the last `failure_threshold`), and to at most half
/// this size, so that many services do not make every append a rewrite.
pub const HISTORY_MAX_BYTES: u64 = 1024 * 1024;
/// Runs kept per service when history is compacted.
pub const HISTORY_KEEP_PER_SERVICE: usize = 200;

/// A state directory problem.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    // The cause is part of the message, not a `source`, so `{:#}` does not say it twice.
    #[error("state directory {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "refusing state directory {path}: it {why}; selfheal runs as root, so only root may be able to plant files there"
    )]
    Untrusted { path: PathBuf, why: String },
}

/// One line of `history.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HistoryRecord {
    pub service: String,
    pub outcome: Outcome,
    /// To the millisecond.
    pub started_at: Timestamp,
    pub duration_ms: u64,
    /// The strategy that healed it, or null.
    pub healed_by: Option<String>,
    /// One-line diagnosis, for `history` and the dashboard.
    #[serde(default)]
    pub summary: String,
    /// Run by a person at a terminal: loop protection counts only the runs after it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manual: bool,
    /// It failed again within `threshold_window` of being healed: the healing before it did
    /// not hold (the success rate counts that healing as a failure).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub relapse: bool,
    /// Automatic restarts by systemd this record stands for, when `selfheal watch` saw
    /// several since its last look (0: one, or none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
}

impl HistoryRecord {
    /// When the run started.
    pub fn started(&self) -> SystemTime {
        self.started_at.time()
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

/// `O_NOFOLLOW`: a state file is never reached through a symlink.
fn state_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    options
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn error(&self, cause: std::io::Error) -> StateError {
        StateError::Io {
            path: self.root.clone(),
            cause,
        }
    }

    /// Creates `<root>/<sub>` (and the root) when missing, 0750, and checks that both can be
    /// trusted. Returns the directory's path.
    pub(crate) fn ensure(&self, sub: &str) -> Result<PathBuf, StateError> {
        let mut builder = std::fs::DirBuilder::new();
        builder.mode(0o750);
        if !self.root.is_dir() {
            builder
                .recursive(true)
                .create(&self.root)
                .map_err(|e| self.error(e))?;
        }
        trusted(&self.root)?;
        if sub.is_empty() {
            return Ok(self.root.clone());
        }
        let dir = self.root.join(sub);
        match std::fs::DirBuilder::new().mode(0o750).create(&dir) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(self.error(err)),
        }
        trusted(&dir)?;
        Ok(dir)
    }

    /// Takes the service's lock without waiting; `None` when another run holds it.
    pub fn try_lock(&self, service: &str) -> Result<Option<ServiceLock>, StateError> {
        let file = self.lock_file(&format!("{service}.lock"))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(ServiceLock { _lock: lock })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(self.error(errno.into())),
        }
    }

    fn history_path(&self) -> PathBuf {
        self.root.join("history.jsonl")
    }

    /// The lock every history writer holds. Not a service name: those start with a letter or
    /// digit.
    fn history_lock(&self) -> Result<Flock<File>, StateError> {
        self.lock_exclusive(".history.lock")
    }

    /// Waits for the exclusive lock `locks/<name>` (a name that is not a service's: those
    /// start with a letter or digit).
    pub(crate) fn lock_exclusive(&self, name: &str) -> Result<Flock<File>, StateError> {
        let file = self.lock_file(name)?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| self.error(e.into()))
    }

    /// Opens (creating it if needed) `locks/<name>`, never through a symlink.
    fn lock_file(&self, name: &str) -> Result<File, StateError> {
        state_file()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o640)
            .open(self.ensure("locks")?.join(name))
            .map_err(|e| self.error(e))
    }

    /// Appends one record. A torn last line (a writer killed mid-write, a full disk) is ended
    /// first, so it cannot swallow this record; a file past `HISTORY_MAX_BYTES` is compacted.
    pub fn append_history(&self, record: &HistoryRecord) -> Result<(), StateError> {
        let mut line = serde_json::to_vec(record).map_err(|e| self.error(e.into()))?;
        line.push(b'\n');
        let _lock = self.history_lock()?;
        let mut file = self.open_history_for_append()?;
        let size = file.metadata().map_err(|e| self.error(e))?.len();
        if size > HISTORY_MAX_BYTES {
            // A compaction that fails (no inode for the temporary file, say) must not cost
            // this run its record: loop protection counts on it.
            match self.compact_history() {
                Ok(()) => file = self.open_history_for_append()?,
                Err(err) => tracing::error!("history not compacted: {err}"),
            }
        }
        let size = file.metadata().map_err(|e| self.error(e))?.len();
        if size > 0 && !ends_with_newline(&mut file).map_err(|e| self.error(e))? {
            line.insert(0, b'\n');
        }
        file.write_all(&line).map_err(|e| self.error(e))
    }

    fn open_history_for_append(&self) -> Result<File, StateError> {
        self.ensure("")?;
        state_file()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o640)
            .open(self.history_path())
            .map_err(|e| self.error(e))
    }

    /// Rewrites history with the last `HISTORY_KEEP_PER_SERVICE` runs of each service, through
    /// a synced temporary file and a rename. The caller holds the history lock.
    fn compact_history(&self) -> Result<(), StateError> {
        let records = self.history()?;
        let mut kept_per_service: HashMap<&str, usize> = HashMap::new();
        let mut keep = vec![false; records.len()];
        for (index, record) in records.iter().enumerate().rev() {
            let kept = kept_per_service.entry(record.service.as_str()).or_default();
            if *kept < HISTORY_KEEP_PER_SERVICE {
                *kept += 1;
                keep[index] = true;
            }
        }
        let mut lines = Vec::new();
        let mut dropped = Vec::new();
        for (record, keep) in records.iter().zip(&keep) {
            if !keep {
                dropped.push(record);
                continue;
            }
            let mut line = serde_json::to_vec(record).map_err(|e| self.error(e.into()))?;
            line.push(b'\n');
            lines.push((line, record));
        }
        // Newest last: drop the oldest until it fits in half the limit.
        let mut total: usize = lines.iter().map(|(line, _)| line.len()).sum();
        let budget = usize::try_from(HISTORY_MAX_BYTES / 2).unwrap_or(usize::MAX);
        let mut first = 0;
        while total > budget && first < lines.len() {
            total -= lines[first].0.len();
            dropped.push(lines[first].1);
            first += 1;
        }
        let bytes: Vec<u8> = lines[first..]
            .iter()
            .flat_map(|(line, _)| line.iter().copied())
            .collect();
        crate::host::atomic_file::write(&self.history_path(), &bytes, 0o640)
            .map_err(|e| self.error(e))?;
        // The metrics' counters go on from what was dropped (a failure here lowers them once,
        // which Prometheus reads as a reset; history is kept either way).
        let mut compacted = self.compacted();
        compacted.add(&dropped);
        if let Err(err) = self.save_compacted(&compacted) {
            tracing::error!("cannot keep the counts of the compacted runs: {err}");
        }
        tracing::info!(
            "compacted {} to {} records",
            self.history_path().display(),
            lines.len() - first
        );
        Ok(())
    }

    /// Every readable record, oldest first. A torn, foreign or non-UTF-8 line is skipped and
    /// reading goes on; an error reading the file is an error, never "no history" (loop
    /// protection must not undercount).
    pub fn history(&self) -> Result<Vec<HistoryRecord>, StateError> {
        if !self.root.exists() {
            return Ok(Vec::new());
        }
        trusted(&self.root)?;
        let file = match state_file().read(true).open(self.history_path()) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(self.error(err)),
        };
        let mut records = Vec::new();
        for line in BufReader::new(file).split(b'\n') {
            let line = line.map_err(|e| self.error(e))?;
            if let Ok(record) = serde_json::from_str(&String::from_utf8_lossy(&line)) {
                records.push(record);
            }
        }
        Ok(records)
    }

    /// `<state>/<dir>/<service>.json`, read; `None` when it is missing or torn.
    pub(crate) fn service_file<T: serde::de::DeserializeOwned>(
        &self,
        dir: &str,
        service: &str,
    ) -> Result<Option<T>, StateError> {
        self.read_json(&self.ensure(dir)?.join(format!("{service}.json")))
    }

    /// Writes `<state>/<dir>/<service>.json` atomically.
    pub(crate) fn save_service_file<T: Serialize>(
        &self,
        dir: &str,
        service: &str,
        value: &T,
    ) -> Result<(), StateError> {
        self.write_json(&self.ensure(dir)?.join(format!("{service}.json")), value)
    }

    /// Removes `<state>/<dir>/<service>.json` (gone already is fine).
    pub(crate) fn remove_service_file(&self, dir: &str, service: &str) -> Result<(), StateError> {
        match std::fs::remove_file(self.ensure(dir)?.join(format!("{service}.json"))) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(self.error(err)),
            _ => Ok(()),
        }
    }

    /// `<state>/<name>`, read; `None` when it is missing or torn.
    pub(crate) fn file<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, StateError> {
        self.read_json(&self.ensure("")?.join(name))
    }

    /// Writes `<state>/<name>` atomically.
    pub(crate) fn save_file<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StateError> {
        self.write_json(&self.ensure("")?.join(name), value)
    }

    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &Path,
    ) -> Result<Option<T>, StateError> {
        match state_file().read(true).open(path) {
            Ok(file) => Ok(serde_json::from_reader(std::io::BufReader::new(file)).ok()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(self.error(err)),
        }
    }

    /// `save_file` without the fsyncs (`atomic_file::write_volatile`): advisory state that a
    /// run writes on its way to a restart.
    pub(crate) fn save_file_volatile<T: Serialize>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(value).map_err(|e| self.error(e.into()))?;
        crate::host::atomic_file::write_volatile(&self.ensure("")?.join(name), &bytes, 0o640)
            .map_err(|e| self.error(e))
    }

    fn write_json<T: Serialize>(&self, path: &Path, value: &T) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(value).map_err(|e| self.error(e.into()))?;
        crate::host::atomic_file::write(path, &bytes, 0o640).map_err(|e| self.error(e))
    }

    fn episode_path(&self, service: &str) -> Result<PathBuf, StateError> {
        Ok(self.ensure("episodes")?.join(format!("{service}.json")))
    }

    /// The open loop-protection episode of `service`, if any. A torn file is no episode (the
    /// next suppressed run starts a new one).
    pub fn episode(&self, service: &str) -> Result<Option<Episode>, StateError> {
        if !self.root.join("episodes").exists() {
            return Ok(None);
        }
        let path = self.episode_path(service)?;
        match state_file().read(true).open(&path) {
            Ok(file) => Ok(serde_json::from_reader(file).ok()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(self.error(err)),
        }
    }

    /// Writes `service`'s episode (atomically: a killed run leaves the old one or the new).
    pub fn save_episode(&self, service: &str, episode: &Episode) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(episode).map_err(|e| self.error(e.into()))?;
        crate::host::atomic_file::write(&self.episode_path(service)?, &bytes, 0o640)
            .map_err(|e| self.error(e))
    }

    /// Every open episode, by service name.
    pub fn episodes(&self) -> Result<Vec<(String, Episode)>, StateError> {
        let dir = self.root.join("episodes");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(service) = name.strip_suffix(".json")
                && let Some(episode) = self.episode(service)?
            {
                found.push((service.to_owned(), episode));
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    /// Closes `service`'s episode.
    pub fn end_episode(&self, service: &str) -> Result<(), StateError> {
        match std::fs::remove_file(self.episode_path(service)?) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(self.error(err)),
            _ => Ok(()),
        }
    }
}

/// A service that loop protection stopped healing, or a run left failed, until it stays
/// healthy for `threshold_window` or a person runs it by hand
/// (`<state>/episodes/<service>.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Episode {
    /// When loop protection first stopped healing it.
    pub suppressed_at: Timestamp,
    /// Timed retries made so far; each doubles the wait before the next.
    pub retries: u32,
    /// When the scheduled retry is due, while one is scheduled.
    pub next_retry_at: Option<Timestamp>,
    /// When it was last found healthy again: the episode is watched until then +
    /// `threshold_window`, and a failure before that is a relapse, part of the episode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_at: Option<Timestamp>,
    /// How often it failed again after recovering, in this episode.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub relapses: u32,
}

// serde's `skip_serializing_if` passes a reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(count: &u32) -> bool {
    *count == 0
}

impl Episode {
    /// An episode that starts at `suppressed_at`, with no retry made or scheduled yet.
    pub fn opened(suppressed_at: Timestamp) -> Episode {
        Episode {
            suppressed_at,
            retries: 0,
            next_retry_at: None,
            recovered_at: None,
            relapses: 0,
        }
    }

    /// Recovered and watched: no retry is needed, and it is not down.
    pub fn is_watching(&self) -> bool {
        self.recovered_at.is_some()
    }

    /// Watched for `window` already without a relapse: the episode is over.
    pub fn has_stayed_healthy(&self, window: std::time::Duration, now: SystemTime) -> bool {
        self.recovered_at
            .is_some_and(|at| at.time() + window <= now)
    }
}

/// When the runs loop protection counts started, of one service's `runs` (oldest first):
/// healing attempts after `since` and after the last manual run (a person's run resets the
/// count). The one rule, for `run` and for the dashboard.
pub(crate) fn counted_attempts(runs: &[&HistoryRecord], since: SystemTime) -> Vec<SystemTime> {
    let after_manual = runs.iter().rposition(|r| r.manual).map_or(0, |at| at + 1);
    runs[after_manual..]
        .iter()
        .filter(|r| r.outcome.is_healing_attempt())
        .map(|r| r.started())
        .filter(|t| *t >= since)
        .collect()
}

fn ends_with_newline(file: &mut File) -> std::io::Result<bool> {
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// A state directory may be used only when nobody but root (or the running user) can plant
/// anything in it.
fn trusted(dir: &Path) -> Result<(), StateError> {
    let untrusted = |why: String| StateError::Untrusted {
        path: dir.to_owned(),
        why,
    };
    // A check that cannot run has not passed.
    let metadata = std::fs::symlink_metadata(dir)
        .map_err(|err| untrusted(format!("cannot be checked ({err})")))?;
    if metadata.file_type().is_symlink() {
        return Err(untrusted(
            "is a symlink (point --state-dir at the real directory)".into(),
        ));
    }
    if !metadata.is_dir() {
        return Err(untrusted("is not a directory".into()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if metadata.uid() != me && metadata.uid() != 0 {
        return Err(untrusted(format!(
            "is owned by uid {} (chown root {})",
            metadata.uid(),
            dir.display()
        )));
    }
    if metadata.mode() & 0o022 != 0 {
        return Err(untrusted(format!(
            "is writable by group or others (mode {:04o}; chmod 0750 {})",
            metadata.mode() & 0o7777,
            dir.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(service: &str, outcome: Outcome, started_at: &str) -> HistoryRecord {
        HistoryRecord {
            service: service.into(),
            outcome,
            started_at: started_at.parse().unwrap(),
            duration_ms: 5,
            healed_by: None,
            summary: String::new(),
            manual: false,
            relapse: false,
            restarts: 0,
        }
    }

    #[test]
    fn history_round_trips_and_counts_attempts_in_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        assert!(state.history().unwrap().is_empty());
        let now = Timestamp::now().to_string();
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
        let history = state.history().unwrap();
        let web: Vec<&HistoryRecord> = history.iter().filter(|r| r.service == "web").collect();
        assert_eq!(counted_attempts(&web, hour_ago).len(), 1);
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

    fn append_raw(dir: &Path, bytes: &[u8]) {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(dir.join("history.jsonl"))
            .unwrap()
            .write_all(bytes)
            .unwrap();
    }

    #[test]
    fn a_torn_last_line_does_not_swallow_the_next_record() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        append_raw(dir.path(), b"{\"service\":\"we");
        state
            .append_history(&record("web", Outcome::Failed, "2020-01-01T00:00:00Z"))
            .unwrap();
        let history = state.history().unwrap();
        assert_eq!(history.len(), 1, "{history:?}");
        assert_eq!(history[0].outcome, Outcome::Failed);
    }

    #[test]
    fn a_line_that_is_not_utf8_does_not_end_the_reading() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        state
            .append_history(&record("web", Outcome::Resolved, "2020-01-01T00:00:00Z"))
            .unwrap();
        append_raw(dir.path(), b"\xff\xfe garbage\n");
        state
            .append_history(&record("web", Outcome::Failed, "2020-01-01T00:00:01Z"))
            .unwrap();
        assert_eq!(state.history().unwrap().len(), 2);
    }

    #[test]
    fn a_history_that_cannot_be_read_is_an_error_not_an_empty_history() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("history.jsonl")).unwrap();
        assert!(StateDir::new(dir.path()).history().is_err());
    }

    #[test]
    fn history_is_compacted_to_the_last_runs_of_each_service() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let line = |service: &str, second: usize| {
            let mut line = serde_json::to_vec(&record(
                service,
                Outcome::Resolved,
                &format!("2020-01-01T00:00:{:02}Z", second % 60),
            ))
            .unwrap();
            line.push(b'\n');
            line
        };
        let mut bytes = Vec::new();
        let mut count = 0;
        while bytes.len() as u64 <= HISTORY_MAX_BYTES {
            bytes.extend(line(if count % 10 == 0 { "db" } else { "web" }, count));
            count += 1;
        }
        append_raw(dir.path(), &bytes);
        state
            .append_history(&record("web", Outcome::Failed, "2030-01-01T00:00:00Z"))
            .unwrap();
        let history = state.history().unwrap();
        let of = |service: &str| history.iter().filter(|r| r.service == service).count();
        assert_eq!(of("web"), HISTORY_KEEP_PER_SERVICE + 1);
        assert_eq!(of("db"), HISTORY_KEEP_PER_SERVICE);
        assert_eq!(history.last().unwrap().outcome, Outcome::Failed);
        let size = std::fs::metadata(dir.path().join("history.jsonl"))
            .unwrap()
            .len();
        assert!(size < HISTORY_MAX_BYTES / 4, "{size}");
        // What was dropped is kept as counts: the metrics' counters never go down.
        let compacted = state.compacted();
        let total = |service: &str, outcome: Outcome| {
            history
                .iter()
                .filter(|r| r.service == service && r.outcome == outcome)
                .count() as u64
                + compacted
                    .runs
                    .get(service)
                    .and_then(|outcomes| outcomes.get(outcome.as_str()))
                    .copied()
                    .unwrap_or(0)
        };
        let dbs = (0..count).filter(|n| n % 10 == 0).count() as u64;
        assert_eq!(total("db", Outcome::Resolved), dbs);
        assert_eq!(total("web", Outcome::Resolved), count as u64 - dbs);
        assert_eq!(total("web", Outcome::Failed), 1);
        let dropped: u64 = compacted
            .runs
            .values()
            .flat_map(|outcomes| outcomes.values())
            .sum();
        assert_eq!(
            compacted.durations_count, dropped,
            "every dropped run was a heal"
        );
    }

    #[test]
    fn a_state_dir_others_can_write_or_root_does_not_own_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let state = StateDir::new(&open);
        let err = state.try_lock("web").err().expect("refused");
        assert!(
            err.to_string().contains("writable by group or others"),
            "{err}"
        );
        assert!(
            state
                .append_history(&record("web", Outcome::Failed, "2020-01-01T00:00:00Z"))
                .is_err()
        );
        assert!(!open.join("history.jsonl").exists());
        // Nor is history read from it: others could have written it.
        assert!(state.history().is_err());

        if nix::unistd::geteuid().is_root() {
            let foreign = dir.path().join("foreign");
            std::fs::create_dir(&foreign).unwrap();
            std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
            let err = StateDir::new(&foreign)
                .try_lock("web")
                .err()
                .expect("refused");
            assert!(err.to_string().contains("owned by uid 65534"), "{err}");
        }
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        let err = StateDir::new(&link).try_lock("web").err().expect("refused");
        assert!(err.to_string().contains("is a symlink"), "{err}");
    }

    #[test]
    fn a_new_state_dir_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        state.try_lock("web").unwrap().unwrap();
        for path in [dir.path().join("state"), dir.path().join("state/locks")] {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o750, "{}", path.display());
        }
    }

    #[test]
    fn planted_symlinks_in_the_state_dir_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        state.try_lock("db").unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched\n").unwrap();
        let created = dir.path().join("created-by-root");
        std::os::unix::fs::symlink(&created, dir.path().join("state/locks/web.lock")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("state/history.jsonl")).unwrap();

        assert!(state.try_lock("web").is_err());
        assert!(!created.exists());
        assert!(
            state
                .append_history(&record("web", Outcome::Failed, "2020-01-01T00:00:00Z"))
                .is_err()
        );
        assert!(state.history().is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched\n");
    }

    fn oversized_history(dir: &Path, services: usize) {
        let mut bytes = Vec::new();
        let mut count = 0;
        while bytes.len() as u64 <= HISTORY_MAX_BYTES {
            let service = format!("service-{}", count % services);
            let mut line =
                serde_json::to_vec(&record(&service, Outcome::Resolved, "2020-01-01T00:00:00Z"))
                    .unwrap();
            line.push(b'\n');
            bytes.extend(line);
            count += 1;
        }
        append_raw(dir, &bytes);
    }

    #[test]
    fn compaction_of_many_services_ends_below_half_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        oversized_history(dir.path(), 60);
        state
            .append_history(&record("web", Outcome::Failed, "2030-01-01T00:00:00Z"))
            .unwrap();
        let size = std::fs::metadata(dir.path().join("history.jsonl"))
            .unwrap()
            .len();
        assert!(size <= HISTORY_MAX_BYTES / 2 + 1024, "{size}");
        assert_eq!(
            state.history().unwrap().last().unwrap().outcome,
            Outcome::Failed
        );
    }

    #[test]
    fn a_compaction_that_fails_still_records_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        oversized_history(dir.path(), 2);
        // The compaction's temporary file cannot be created: a directory sits at its name.
        std::fs::create_dir(
            dir.path()
                .join(format!(".history.jsonl.tmp{}", std::process::id())),
        )
        .unwrap();
        state
            .append_history(&record("web", Outcome::Failed, "2030-01-01T00:00:00Z"))
            .unwrap();
        let history = state.history().unwrap();
        assert_eq!(history.last().unwrap().outcome, Outcome::Failed);
        assert_eq!(
            history.last().unwrap().started_at.to_string(),
            "2030-01-01T00:00:00Z"
        );
    }
}
