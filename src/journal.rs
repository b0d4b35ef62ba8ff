//! The failed run's journal lines, read with `journalctl` (argv, no shell) by invocation ID.
//!
//! The read is started early and collected later: journalctl runs while selfheal talks to
//! systemd, so the journal costs the healing path almost nothing.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How many lines of the failed run a report carries.
pub const MAX_LINES: usize = 20;
/// Cap on journalctl's output, so a pathological journal cannot balloon memory.
const MAX_OUTPUT_BYTES: u64 = 256 * 1024;

/// One journal line.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct JournalLine {
    /// µs since the epoch.
    pub timestamp_us: u64,
    /// The process that wrote it (0 when unknown).
    pub pid: u32,
    /// The message, lossily decoded.
    pub message: String,
}

/// A journalctl that is running.
pub struct PendingJournal {
    child: Child,
    reader: JoinHandle<Vec<u8>>,
}

/// Starts reading the lines of one invocation of `unit` (the unit's own output and systemd's
/// messages about it), or its latest lines when the invocation is unknown.
pub fn start(unit: &str, invocation_id: Option<&str>) -> std::io::Result<PendingJournal> {
    let mut command = Command::new("journalctl");
    command.args(["--no-pager", "--quiet", "-o", "json", "-n"]);
    command.arg(MAX_LINES.to_string());
    command.arg("--output-fields=MESSAGE,_PID,__REALTIME_TIMESTAMP");
    match invocation_id.filter(|id| !id.is_empty()) {
        Some(id) => {
            command.arg(format!("_SYSTEMD_INVOCATION_ID={id}"));
            command.arg("+");
            command.arg(format!("INVOCATION_ID={id}"));
        }
        None => {
            command.arg(format!("--unit={unit}"));
        }
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut output = Vec::new();
        let _ = stdout.take(MAX_OUTPUT_BYTES).read_to_end(&mut output);
        output
    });
    Ok(PendingJournal { child, reader })
}

impl PendingJournal {
    /// Waits at most `timeout` for journalctl and parses its lines; on timeout it is killed
    /// and the report goes without journal lines rather than holding up healing.
    pub fn collect(mut self, timeout: Duration) -> Vec<JournalLine> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                _ => {
                    tracing::warn!(
                        "journalctl did not answer within {timeout:?}; report goes without journal lines"
                    );
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Vec::new();
                }
            }
        }
        let output = self.reader.join().unwrap_or_default();
        parse_json_lines(&output)
    }
}

#[derive(Deserialize)]
struct RawEntry {
    #[serde(rename = "MESSAGE")]
    message: Option<serde_json::Value>,
    #[serde(rename = "_PID")]
    pid: Option<String>,
    #[serde(rename = "__REALTIME_TIMESTAMP")]
    timestamp: Option<String>,
}

/// Parses `journalctl -o json` output. MESSAGE is a string, or an array of bytes when it is
/// not valid UTF-8.
pub fn parse_json_lines(output: &[u8]) -> Vec<JournalLine> {
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
}
