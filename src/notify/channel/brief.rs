//! A report in a few lines, for the channels that show text (Slack, ntfy, an alert's
//! description): the subject, what failed, the root cause with the service's own last journal
//! line, the result, the runbook.

use crate::outcome::Outcome;
use crate::report::Report;
use crate::ui::terminal::cut as bounded;

/// A report in a few lines, for formats that show text: the subject, what failed, the root
/// cause, the result, the runbook.
pub(crate) struct Brief {
    pub title: String,
    pub lines: Vec<String>,
}

impl Brief {
    pub(crate) fn of(report: &Report, subject: &str) -> Brief {
        let mut lines = Vec::new();
        if let Some(alert) = &report.facts.alert {
            let summary = alert.summary.as_deref().map(|s| format!(": {s}"));
            lines.push(format!(
                "Started by Alertmanager's alert {}{}",
                alert.alertname,
                summary.unwrap_or_default()
            ));
        }
        if let Some(diagnosis) = &report.facts.diagnosis {
            lines.push(diagnosis.summary.clone());
            lines.push(format!("Root cause: {}", diagnosis.root_cause));
            // The line that matters is the service's own last word, which a chat message or an
            // alert cannot refer to as "the journal lines below": it is quoted, bounded.
            if let Some(line) = diagnosis.journal.iter().rev().find(|line| line.pid != 1) {
                lines.push(format!(
                    "Its last journal line: {}",
                    bounded(&line.message, LINE_CHARS)
                ));
            }
        }
        if let Some(evidence) = &report.facts.evidence {
            lines.push(format!(
                "Before the restart: {}",
                bounded(&evidence.summary, LINE_CHARS)
            ));
        }
        match (report.facts.outcome, &report.facts.healed_by) {
            (Outcome::Resolved, Some(strategy)) => lines.push(format!(
                "Healed by {} and verified in {} ms.",
                report.healed_how.as_deref().unwrap_or(strategy),
                report.facts.duration_ms
            )),
            (_, _) => {
                if let Some(reason) = &report.facts.reason {
                    lines.push(reason.clone());
                }
            }
        }
        if let Some(runbook) = &report.header.runbook {
            lines.push(format!("Runbook: {runbook}"));
        }
        lines.push(format!("Host: {}", report.header.host));
        Brief {
            title: subject.to_owned(),
            lines,
        }
    }
}

/// How much of a journal line a chat message or an alert quotes.
const LINE_CHARS: usize = 300;

#[cfg(test)]
mod tests {
    use super::*;

    /// A chat message or an alert carries the service's own last line (no "journal lines
    /// below" that never come), bounded; a RESOLVED one says how it healed.
    #[test]
    fn a_brief_quotes_the_services_last_line_and_how_it_healed() {
        let failed = crate::report::fixture::report(Outcome::Failed);
        let brief = Brief::of(&failed, "web - FAILED");
        assert!(
            brief.lines.iter().any(|line| line
                == "Its last journal line: OSError: [Errno 98] Address already in use <script>alert(1)</script>"),
            "{:?}",
            brief.lines
        );
        let resolved = crate::report::fixture::report(Outcome::Resolved);
        let brief = Brief::of(&resolved, "web - RESOLVED");
        assert!(
            brief
                .lines
                .iter()
                .any(|line| line.starts_with("Healed by a restart (service_restart) and verified")),
            "{:?}",
            brief.lines
        );
        assert_eq!(bounded("abcdef", 3), "abc…");
        assert_eq!(bounded("abc", 3), "abc");
    }
}
