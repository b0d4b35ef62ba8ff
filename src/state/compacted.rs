//! What history's compaction dropped, kept as counts (`<state>/compacted.json`). The metrics
//! file's counters are counted from history, and a counter must never go down: Prometheus reads
//! a drop as a reset and counts every kept run as new (a false page for each service).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{HistoryRecord, StateDir, StateError};

/// Upper bounds (seconds) of the metrics file's heal-duration histogram: a restart verified
/// with the default `stable_for` takes a few seconds; a chain that ends in an escalation,
/// minutes.
pub const HEAL_DURATION_BUCKETS: [f64; 9] = [0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// The file, under the state directory.
const FILE: &str = "compacted.json";

/// The runs compaction dropped, as counts.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compacted {
    /// Dropped runs by service, then outcome.
    pub runs: BTreeMap<String, BTreeMap<String, u64>>,
    /// Dropped healing runs at or below each of [`HEAL_DURATION_BUCKETS`].
    pub durations_below: Vec<u64>,
    /// Dropped healing runs, and their durations' sum in seconds.
    pub durations_count: u64,
    pub durations_sum: f64,
}

impl Compacted {
    /// Counts `dropped` in.
    pub(super) fn add(&mut self, dropped: &[&HistoryRecord]) {
        self.durations_below.resize(HEAL_DURATION_BUCKETS.len(), 0);
        for record in dropped {
            *self
                .runs
                .entry(record.service.clone())
                .or_default()
                .entry(record.outcome.as_str().to_owned())
                .or_default() += 1;
            if record.outcome.is_healing_attempt() {
                let seconds = record.duration_ms as f64 / 1000.0;
                for (below, bound) in self.durations_below.iter_mut().zip(HEAL_DURATION_BUCKETS) {
                    *below += u64::from(seconds <= bound);
                }
                self.durations_count += 1;
                self.durations_sum += seconds;
            }
        }
    }
}

impl StateDir {
    /// What compaction dropped so far (nothing when the file is missing or torn).
    pub fn compacted(&self) -> Compacted {
        self.file(FILE).ok().flatten().unwrap_or_default()
    }

    pub(super) fn save_compacted(&self, compacted: &Compacted) -> Result<(), StateError> {
        self.save_file(FILE, compacted)
    }
}
