//! `selfheal history [SERVICE] [--since TIME] [--json] [--stats]`: past healing runs, oldest
//! first, in aligned columns with the one-line summary (local time, and how long ago on a
//! terminal), or as JSON lines; `--stats` gives the figures per service instead.

use std::fmt::Write as _;
use std::time::SystemTime;

use crate::Error;
use crate::cli::HistoryArgs;
use crate::exit_code::ExitCode;
use crate::outcome::Outcome;
use crate::state::HistoryRecord;
use crate::state::stats::ServiceStats;
use crate::ui::terminal::{Paint, Terminal, fit, printable};
use crate::ui::when::{LocalTime, relative};

use super::Paths;

pub(super) fn execute(paths: &Paths, args: &HistoryArgs) -> Result<ExitCode, Error> {
    let now = jiff::Zoned::now();
    let since = args.since.map(|since| since.resolve(&now));
    // A name that is not monitored is a mistake, named like `run` names it.
    let config = args
        .service
        .as_ref()
        .map(|_| paths.load_config())
        .transpose()?;
    let service = match (&config, &args.service) {
        (Some(config), Some(name)) => Some(super::find_entry(config, name)?.name.clone()),
        _ => None,
    };
    let records = paths.state().history()?;
    let shown: Vec<&HistoryRecord> = records
        .iter()
        .filter(|r| {
            service.as_ref().is_none_or(|s| &r.service == s)
                && since.is_none_or(|since| r.started() >= since)
        })
        .collect();
    if args.stats {
        let stats = crate::state::stats::per_service(&shown);
        if args.json {
            for row in &stats {
                println!("{}", serde_json::to_string(row)?);
            }
        } else {
            print!("{}", stats_table(&stats));
        }
    } else if args.json {
        for record in shown {
            println!("{}", serde_json::to_string(record)?);
        }
    } else {
        print!(
            "{}",
            table(
                &shown,
                Terminal::stdout(),
                now.time_zone(),
                SystemTime::now()
            )
        );
    }
    Ok(ExitCode::Success)
}

/// The runs as aligned columns; on a terminal, times say how long ago, outcomes are coloured
/// and summaries are cut to the width.
fn table(
    records: &[&HistoryRecord],
    terminal: Terminal,
    zone: &jiff::tz::TimeZone,
    now: SystemTime,
) -> String {
    if records.is_empty() {
        return "-- no healing runs --\n".to_owned();
    }
    let time = |record: &HistoryRecord| {
        let at = record.started();
        if terminal.is_tty {
            format!("{} ({})", LocalTime(at, zone), relative(at, now))
        } else {
            LocalTime(at, zone).to_string()
        }
    };
    let rows: Vec<[String; 5]> = records
        .iter()
        .map(|record| {
            [
                time(record),
                record.service.clone(),
                record.outcome.to_string(),
                format!("{} ms", record.duration_ms),
                record.healed_by.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    let headers = ["TIME", "SERVICE", "OUTCOME", "DURATION", "HEALED BY"];
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; 5], outcome: Option<Outcome>, summary: &str| {
        let mut text = String::new();
        for (index, (cell, width)) in cells.iter().zip(widths).enumerate() {
            let pad = width - cell.chars().count();
            let shown = match (index, outcome) {
                (2, Some(outcome)) => terminal.paint(cell, paint(outcome)),
                _ => (*cell).into(),
            };
            // Durations read best right-aligned.
            if index == 3 {
                let _ = write!(text, "{}{shown}  ", " ".repeat(pad));
            } else {
                let _ = write!(text, "{shown}{}  ", " ".repeat(pad));
            }
        }
        let used: usize = widths.iter().map(|w| w + 2).sum();
        let summary = match terminal.width {
            Some(columns) if columns > used + 10 => fit(summary, columns - used),
            _ => summary.into(),
        };
        let _ = writeln!(out, "{text}{summary}");
    };
    line(headers, None, "SUMMARY");
    for (row, record) in rows.iter().zip(records) {
        line(
            [&row[0], &row[1], &row[2], &row[3], &row[4]],
            Some(record.outcome),
            &printable(&record.summary),
        );
    }
    out
}

fn stats_table(rows: &[ServiceStats]) -> String {
    if rows.is_empty() {
        return "-- no healing runs --\n".to_owned();
    }
    let width = rows
        .iter()
        .map(|row| row.service.chars().count())
        .max()
        .unwrap_or(0)
        .max("SERVICE".len());
    let mut out = format!(
        "{:<width$}  {:>4}  {:>8}  {:>6}  {:>8}  {:>10}  {:>7}  {:>7}  {:>12}\n",
        "SERVICE",
        "RUNS",
        "RESOLVED",
        "FAILED",
        "REPORTED",
        "SUPPRESSED",
        "HEALTHY",
        "SUCCESS",
        "MEAN TO HEAL"
    );
    for row in rows {
        let success = row
            .success_rate
            .map_or("-".to_owned(), |rate| format!("{:.0}%", rate * 100.0));
        let mean = row
            .mean_time_to_heal_ms
            .map_or("-".to_owned(), |ms| format!("{ms} ms"));
        let _ = writeln!(
            out,
            "{:<width$}  {:>4}  {:>8}  {:>6}  {:>8}  {:>10}  {:>7}  {:>7}  {:>12}",
            row.service,
            row.runs,
            row.resolved,
            row.failed,
            row.reported,
            row.suppressed,
            row.healthy,
            success,
            mean
        );
    }
    out
}

fn paint(outcome: Outcome) -> Paint {
    match outcome {
        Outcome::Resolved | Outcome::Healthy | Outcome::RestartedBySystemd => Paint::Green,
        Outcome::Failed | Outcome::CrashLoop => Paint::Red,
        Outcome::Suppressed | Outcome::Reported | Outcome::Held => Paint::Yellow,
        Outcome::Planned | Outcome::Paused => Paint::Blue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(service: &str, outcome: Outcome, at: &str, summary: &str) -> HistoryRecord {
        HistoryRecord {
            service: service.into(),
            outcome,
            started_at: at.parse().unwrap(),
            duration_ms: 552,
            healed_by: (outcome == Outcome::Resolved).then(|| "service_restart".into()),
            summary: summary.into(),
            manual: false,
            relapse: false,
            restarts: 0,
        }
    }

    fn records() -> Vec<HistoryRecord> {
        vec![
            record(
                "web",
                Outcome::Resolved,
                "2026-11-29T10:04:05Z",
                "web.service is failed/failed (Result=signal); the main process was killed by SIGKILL",
            ),
            record(
                "story-stages",
                Outcome::Failed,
                "2026-11-29T11:30:00Z",
                "story-stages.service is active, but port 5002 is not listening (active/running)",
            ),
        ]
    }

    fn now() -> SystemTime {
        SystemTime::from("2026-11-29T12:04:05Z".parse::<jiff::Timestamp>().unwrap())
    }

    #[test]
    fn a_pipe_gets_aligned_plain_columns_with_the_summary() {
        let records = records();
        let refs: Vec<&HistoryRecord> = records.iter().collect();
        let text = table(&refs, Terminal::PLAIN, &jiff::tz::TimeZone::UTC, now());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "TIME              SERVICE       OUTCOME   DURATION  HEALED BY        SUMMARY"
        );
        assert_eq!(
            lines[1],
            "2026-11-29 10:04  web           resolved    552 ms  service_restart  web.service is failed/failed (Result=signal); the main process was killed by SIGKILL"
        );
        assert!(lines[2].starts_with("2026-11-29 11:30  story-stages  failed      552 ms  -                story-stages.service is active, but port 5002"));
        assert!(!text.contains('\x1b'), "{text}");
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn a_terminal_gets_how_long_ago_colour_and_summaries_cut_to_its_width() {
        let records = records();
        let refs: Vec<&HistoryRecord> = records.iter().collect();
        let terminal = Terminal {
            is_tty: true,
            color: true,
            width: Some(100),
        };
        let text = table(&refs, terminal, &jiff::tz::TimeZone::UTC, now());
        assert!(text.contains("2026-11-29 10:04 (2h ago)"), "{text}");
        assert!(text.contains("2026-11-29 11:30 (34min ago)"), "{text}");
        assert!(text.contains("\x1b[32mresolved\x1b[0m"), "{text}");
        assert!(text.contains("\x1b[31mfailed\x1b[0m"), "{text}");
        assert!(text.lines().nth(1).unwrap().ends_with('…'), "{text}");
    }

    #[test]
    fn stats_give_runs_by_outcome_success_rate_and_mean_time_to_heal() {
        let mut records = records();
        let mut again = records[0].clone();
        again.duration_ms = 1_448;
        records.push(again);
        let refs: Vec<&HistoryRecord> = records.iter().collect();
        let stats = crate::state::stats::per_service(&refs);
        assert_eq!(stats.len(), 2);
        let web = &stats[0];
        assert_eq!((web.runs, web.resolved, web.failed), (2, 2, 0));
        assert_eq!(web.success_rate, Some(1.0));
        assert_eq!(web.mean_time_to_heal_ms, Some(1_000));
        let story = &stats[1];
        assert_eq!(story.success_rate, Some(0.0));
        assert_eq!(story.mean_time_to_heal_ms, None);
        let table = stats_table(&stats);
        assert!(table.starts_with("SERVICE       RUNS  RESOLVED"), "{table}");
        assert!(
            table.contains(
                "web              2         2       0         0           0        0     100%       1000 ms"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "story-stages     1         0       1         0           0        0       0%             -"
            ),
            "{table}"
        );
    }

    /// A service that dies minutes after each healing is down, not 100 % healed.
    #[test]
    fn a_healing_followed_by_a_relapse_counts_as_a_failure() {
        let healed = record("web", Outcome::Resolved, "2026-11-29T10:00:00Z", "");
        let relapse = HistoryRecord {
            relapse: true,
            ..record("web", Outcome::Suppressed, "2026-11-29T10:05:00Z", "")
        };
        let held = record("web", Outcome::Resolved, "2026-11-29T11:00:00Z", "");
        let records = [&healed, &relapse, &held];
        let web = &crate::state::stats::per_service(&records)[0];
        assert_eq!((web.resolved, web.relapsed), (2, 1));
        assert_eq!(web.success_rate, Some(0.5));
    }

    #[test]
    fn no_runs_say_so() {
        assert_eq!(
            table(&[], Terminal::PLAIN, &jiff::tz::TimeZone::UTC, now()),
            "-- no healing runs --\n"
        );
    }
}
