//! The failed run's journal lines, read with `journalctl` (argv, no shell) by invocation ID.
//!
//! The read is started early and collected later: journalctl runs while selfheal talks to
//! systemd, so the journal costs the healing path almost nothing.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How many lines of the failed run a report carries.
pub(crate) const MAX_LINES: usize = 20;
/// Cap on the journalctl output kept (20 lines of JSON are far below it).
const MAX_OUTPUT_BYTES: usize = 256 * 1024;

/// One journal line.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct JournalLine {
    /// µs since the epoch.
    pub timestamp_us: u64,
    /// The process that wrote it (0 when unknown).
    pub pid: u32,
    /// The message, lossily decoded.
    pub message: String,
    /// The invocation journald tagged the line with, if it could.
    #[serde(skip)]
    pub invocation_id: Option<String>,
}

/// A journal read that is running in the background.
pub(crate) struct PendingJournal {
    output: mpsc::Receiver<Vec<JournalLine>>,
}

impl PendingJournal {
    /// A read that has already finished with these lines (for a journal that is not journald).
    #[cfg(test)]
    pub(crate) fn ready(lines: Vec<JournalLine>) -> PendingJournal {
        let (sender, output) = mpsc::channel();
        let _ = sender.send(lines);
        PendingJournal { output }
    }
}

/// Where a run reads the failed run's lines: journald through journalctl, or a test's script.
pub(crate) trait JournalSource {
    /// Starts reading an invocation's lines in the background.
    fn start(&self, unit: &str, invocation_id: Option<&str>) -> PendingJournal;
    /// The invocation's lines, continuing `pending` when a read is already running.
    fn read_invocation(
        &self,
        unit: &str,
        invocation_id: &str,
        pending: Option<PendingJournal>,
        timeout: Duration,
    ) -> Vec<JournalLine>;
}

/// journald, through `journalctl`.
pub(crate) struct Journald;

impl JournalSource for Journald {
    fn start(&self, unit: &str, invocation_id: Option<&str>) -> PendingJournal {
        start(unit, invocation_id)
    }

    fn read_invocation(
        &self,
        unit: &str,
        invocation_id: &str,
        pending: Option<PendingJournal>,
        timeout: Duration,
    ) -> Vec<JournalLine> {
        read_invocation(unit, invocation_id, pending, timeout)
    }
}

/// How many of the unit's latest lines are searched for lines of the invocation that journald
/// could not tag with it.
const UNTAGGED_SEARCH_LINES: usize = 200;

fn journalctl_json(lines: usize) -> Command {
    let mut query = Command::new("journalctl");
    query.args(["--no-pager", "--quiet", "-o", "json", "-n"]);
    query.arg(lines.to_string());
    query.arg(
        "--output-fields=MESSAGE,_PID,__REALTIME_TIMESTAMP,_SYSTEMD_INVOCATION_ID,INVOCATION_ID",
    );
    query.stdin(Stdio::null()).stderr(Stdio::null());
    query
}

fn output_of(query: &mut Command) -> Vec<u8> {
    let mut stdout = query.output().map(|o| o.stdout).unwrap_or_default();
    stdout.truncate(MAX_OUTPUT_BYTES);
    stdout
}

/// Starts reading the lines of one invocation of `unit` (the unit's own output and systemd's
/// messages about it), or its latest lines when the invocation is unknown.
///
/// journald takes a service's stdout and systemd's messages through different sockets, so
/// right after a failure the last lines may still sit unread in a socket. `journalctl --sync`
/// first: journald answers it only after processing everything queued, so the query that
/// follows sees the whole failed run.
///
/// journald tags a line with the invocation by reading the writer's cgroup; a process that
/// printed and exited at once is gone by then, and its line carries only `_SYSTEMD_UNIT` (from
/// the stdout stream). A second query by unit picks up such untagged lines when they fall
/// within the invocation's span.
pub(crate) fn start(unit: &str, invocation_id: Option<&str>) -> PendingJournal {
    let invocation = invocation_id.filter(|id| !id.is_empty()).map(str::to_owned);
    let mut by_unit = journalctl_json(UNTAGGED_SEARCH_LINES);
    by_unit.arg(format!("_SYSTEMD_UNIT={unit}"));
    let mut by_invocation = journalctl_json(MAX_LINES);
    match &invocation {
        Some(id) => {
            by_invocation.arg(format!("_SYSTEMD_INVOCATION_ID={id}"));
            by_invocation.arg("+");
            by_invocation.arg(format!("INVOCATION_ID={id}"));
        }
        None => {
            by_invocation.arg(format!("--unit={unit}"));
        }
    }
    let (sender, output) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = Command::new("journalctl")
            .arg("--sync")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let lines = match invocation {
            Some(id) => {
                let untagged = std::thread::spawn(move || output_of(&mut by_unit));
                let tagged = parse_json_lines(&output_of(&mut by_invocation));
                let untagged = parse_json_lines(&untagged.join().unwrap_or_default());
                merge_untagged(tagged, &untagged, &id)
            }
            None => parse_json_lines(&output_of(&mut by_invocation)),
        };
        let _ = sender.send(lines);
    });
    PendingJournal { output }
}

/// How long after the invocation's last tagged line an untagged line may still be its own:
/// journald reads a service's stdout stream and systemd's own messages from different
/// sockets, and under load it timestamps the service's last words after systemd's "Main
/// process exited".
const UNTAGGED_GRACE_US: u64 = 250_000;

/// Adds to an invocation's tagged lines the unit's untagged ones written between its first
/// tagged line and shortly after its last, keeping the newest `MAX_LINES` in time order.
fn merge_untagged(
    mut tagged: Vec<JournalLine>,
    unit_lines: &[JournalLine],
    id: &str,
) -> Vec<JournalLine> {
    let (Some(first), Some(last)) = (
        tagged.iter().map(|l| l.timestamp_us).min(),
        tagged.iter().map(|l| l.timestamp_us).max(),
    ) else {
        return tagged;
    };
    tagged.extend(
        unit_lines
            .iter()
            .filter(|line| line.invocation_id.is_none())
            .filter(|line| (first..=last + UNTAGGED_GRACE_US).contains(&line.timestamp_us))
            .cloned(),
    );
    tagged.retain(|line| line.invocation_id.as_deref().is_none_or(|own| own == id));
    tagged.sort_by_key(|line| line.timestamp_us);
    tagged.dedup();
    let excess = tagged.len().saturating_sub(MAX_LINES);
    tagged.drain(..excess);
    tagged
}

impl PendingJournal {
    /// Waits at most `timeout` for the lines; on timeout the report goes without them rather
    /// than holding up healing.
    pub(crate) fn collect(self, timeout: Duration) -> Vec<JournalLine> {
        if let Ok(lines) = self.output.recv_timeout(timeout) {
            lines
        } else {
            tracing::warn!(
                "journalctl did not answer within {}; the report goes without journal lines",
                crate::ui::duration::HumanDuration(timeout)
            );
            Vec::new()
        }
    }
}

/// Reads one invocation's lines (continuing `pending` when a read is already running). While
/// none of them comes from the service itself (only systemd's, PID 1), its output may still be
/// on its way (a stream journald has not accepted yet is not covered by the sync barrier, and
/// a loaded journald lags): look again with growing pauses, for at most `LOOK_AGAIN_FOR`.
pub(crate) fn read_invocation(
    unit: &str,
    invocation_id: &str,
    pending: Option<PendingJournal>,
    timeout: Duration,
) -> Vec<JournalLine> {
    let until = std::time::Instant::now() + LOOK_AGAIN_FOR;
    let mut lines = pending
        .unwrap_or_else(|| start(unit, Some(invocation_id)))
        .collect(timeout);
    let mut pause = Duration::from_millis(25);
    while !lines.iter().any(|line| line.pid != 1) && std::time::Instant::now() + pause <= until {
        std::thread::sleep(pause);
        pause *= 2;
        let again = start(unit, Some(invocation_id)).collect(timeout);
        if again.len() >= lines.len() {
            lines = again;
        }
    }
    lines
}

/// How long to keep looking for a service's own lines (a service that printed nothing costs
/// this much report time, never healing correctness).
const LOOK_AGAIN_FOR: Duration = Duration::from_millis(400);

#[derive(Deserialize)]
struct RawEntry {
    #[serde(rename = "MESSAGE")]
    message: Option<serde_json::Value>,
    #[serde(rename = "_PID")]
    pid: Option<String>,
    #[serde(rename = "__REALTIME_TIMESTAMP")]
    timestamp: Option<String>,
    #[serde(rename = "_SYSTEMD_INVOCATION_ID")]
    invocation: Option<String>,
    /// systemd's own messages about a unit carry the invocation in this field.
    #[serde(rename = "INVOCATION_ID")]
    manager_invocation: Option<String>,
}

/// Parses `journalctl -o json` output. MESSAGE is a string, or an array of bytes when it is
/// not valid UTF-8.
pub(crate) fn parse_json_lines(output: &[u8]) -> Vec<JournalLine> {
    output
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<RawEntry>(line).ok())
        .filter_map(|entry| {
            let message = match entry.message? {
                serde_json::Value::String(text) => text,
                serde_json::Value::Array(bytes) => {
                    let bytes: Vec<u8> = bytes
                        .iter()
                        .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                        .collect();
                    String::from_utf8_lossy(&bytes).into_owned()
                }
                _ => return None,
            };
            Some(JournalLine {
                timestamp_us: entry.timestamp.and_then(|t| t.parse().ok()).unwrap_or(0),
                pid: entry.pid.and_then(|p| p.parse().ok()).unwrap_or(0),
                message,
                invocation_id: entry.invocation.or(entry.manager_invocation),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_and_byte_array_messages_and_skips_noise() {
        let output = br#"{"MESSAGE":"listening on 5002","_PID":"42","__REALTIME_TIMESTAMP":"1700000000000000"}
{"MESSAGE":[104,105,255],"__REALTIME_TIMESTAMP":"1700000000000001"}
not json
{"_PID":"1"}
"#;
        let lines = parse_json_lines(output);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].message, "listening on 5002");
        assert_eq!(lines[0].pid, 42);
        assert_eq!(lines[1].message, "hi\u{fffd}");
        assert_eq!(lines[1].pid, 0);
    }

    fn line(timestamp_us: u64, message: &str, invocation: Option<&str>) -> JournalLine {
        JournalLine {
            timestamp_us,
            pid: 7,
            message: message.into(),
            invocation_id: invocation.map(str::to_owned),
        }
    }

    #[test]
    fn untagged_lines_within_the_invocations_span_are_merged_in_order() {
        let tagged = vec![
            line(100, "Started web.service.", Some("a")),
            line(
                300,
                "web.service: Failed with result 'exit-code'.",
                Some("a"),
            ),
        ];
        let by_unit = [
            line(50, "an earlier run's untagged line", None),
            line(100, "Started web.service.", Some("a")),
            line(200, "Error: Address already in use", None),
            line(250, "another invocation's line", Some("b")),
            line(300 + 100_000, "read late by journald", None),
            line(300 + UNTAGGED_GRACE_US + 1, "after the failure", None),
        ];
        let merged = merge_untagged(tagged, &by_unit, "a");
        let messages: Vec<&str> = merged.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "Started web.service.",
                "Error: Address already in use",
                "web.service: Failed with result 'exit-code'.",
                "read late by journald"
            ]
        );
        // Nothing tagged: nothing to anchor the span, nothing merged.
        assert!(merge_untagged(Vec::new(), &by_unit, "a").is_empty());
    }
}
