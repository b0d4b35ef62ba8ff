//! The dashboard as text: marks and colour on a terminal, plain words in a pipe; columns sized
//! to their content, long lines cut to the terminal's width; times local, with how long ago.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::{Category, ServiceStatus, Status};
use crate::outcome::Outcome;
use crate::ui::size::human_bytes as bytes;
use crate::ui::terminal::{Paint, Terminal, fit, printable};
use crate::ui::when::{LocalTime, Timestamp, relative};

/// How a service is doing, for its mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Healthy,
    Unhealthy,
    Down,
    Unknown,
}

impl Verdict {
    fn of(row: &ServiceStatus) -> Verdict {
        match row.category() {
            Category::Running => Verdict::Healthy,
            Category::Unhealthy => Verdict::Unhealthy,
            Category::Failed | Category::Inactive => Verdict::Down,
            Category::NotFound | Category::Unknown => Verdict::Unknown,
        }
    }

    /// A mark: symbols on a terminal, words in a pipe.
    fn mark(self, terminal: Terminal) -> String {
        let (symbol, word, paint) = match self {
            Verdict::Healthy => ("✅", "ok  ", Paint::Green),
            Verdict::Unhealthy => ("⚠️ ", "WARN", Paint::Yellow),
            Verdict::Down => ("❌", "DOWN", Paint::Red),
            Verdict::Unknown => ("❓", "??  ", Paint::Yellow),
        };
        if terminal.is_tty {
            symbol.to_owned()
        } else {
            terminal.paint(word, paint).into_owned()
        }
    }
}

/// Where the dashboard is written to, and the clock it is read against.
struct Page {
    terminal: Terminal,
    width: usize,
    zone: jiff::tz::TimeZone,
    now: SystemTime,
    out: String,
}

impl Page {
    /// One line, cut to the terminal's width.
    fn line(&mut self, text: &str) {
        let _ = writeln!(self.out, "{}", fit(text.trim_end(), self.width));
    }

    fn heading(&mut self, text: &str) {
        let text = self.terminal.paint(text, Paint::Blue).into_owned();
        self.line(&text);
    }

    /// A time as local time, with how far from now on a terminal.
    fn when(&self, at: Timestamp) -> String {
        let at = at.time();
        if self.terminal.is_tty {
            format!("{} ({})", LocalTime(at, &self.zone), relative(at, self.now))
        } else {
            LocalTime(at, &self.zone).to_string()
        }
    }
}

/// The whole dashboard.
pub(crate) fn dashboard(status: &Status, terminal: Terminal, now: SystemTime) -> String {
    let mut page = Page {
        terminal,
        width: terminal.width.unwrap_or(usize::MAX),
        zone: jiff::tz::TimeZone::system(),
        now,
        out: String::new(),
    };
    system(&mut page, status);
    page.out.push('\n');
    services(&mut page, status);
    page.out.push('\n');
    recent(&mut page, status);
    page.out.push('\n');
    configuration(&mut page, status);
    page.out
}

fn system(page: &mut Page, status: &Status) {
    let system = &status.system;
    let robot = if page.terminal.is_tty { "🤖 " } else { "" };
    page.line(&format!("{robot}{} self-healing status", system.name));
    let owner = system
        .owner
        .as_deref()
        .map_or(String::new(), |owner| format!(" · owner {owner}"));
    let now = LocalTime(page.now, &page.zone).to_string();
    page.line(&format!("   host {}{owner} · {now}", system.host));
    page.out.push('\n');
    page.heading("System");
    let overview = &system.overview;
    if let Some(seconds) = overview.uptime_seconds {
        page.line(&format!("  Uptime   {}", uptime(seconds)));
    }
    if let Some([one, five, fifteen]) = overview.load {
        page.line(&format!(
            "  Load     {one:.2} {five:.2} {fifteen:.2} (1, 5, 15 min)"
        ));
    }
    if let Some(memory) = overview.memory {
        page.line(&format!(
            "  Memory   {} / {} ({}%)",
            bytes(memory.used_bytes),
            bytes(memory.total_bytes),
            memory.percent
        ));
    }
    for disk in &overview.disks {
        page.line(&format!(
            "  Disk     {} / {} ({}%) on {}",
            bytes(disk.usage.used_bytes),
            bytes(disk.usage.total_bytes),
            disk.usage.percent,
            disk.path
        ));
    }
}

fn services(page: &mut Page, status: &Status) {
    page.heading("Services");
    let terminal = page.terminal;
    let name_width = status
        .services
        .iter()
        .map(|row| row.name.chars().count())
        .max()
        .unwrap_or(0);
    for row in &status.services {
        let verdict = Verdict::of(row);
        let state = match &row.unknown_reason {
            Some(why) => format!("UNKNOWN ({why})"),
            None => row.active_state.replace('-', " ").to_uppercase(),
        };
        let state_paint = match verdict {
            Verdict::Healthy => Paint::Green,
            Verdict::Down => Paint::Red,
            Verdict::Unhealthy | Verdict::Unknown => Paint::Yellow,
        };
        let mut fields = vec![format!(
            "{}{}",
            terminal.paint(&state, state_paint),
            " ".repeat(10usize.saturating_sub(state.chars().count()))
        )];
        if let Some(port) = row.port {
            let how = match (row.port_listening, row.port_taken_by_other) {
                (Some(true), _) => "listening",
                (_, true) => "held by another process",
                _ if row.unknown_reason.is_some() => "?",
                (None, _) => "listening (owner unknown: run as root)",
                _ => "not listening",
            };
            fields.push(format!(":{port} {how}"));
        }
        if let (Some(ok), Some(detail)) = (row.health_ok, &row.health_detail) {
            fields.push(if ok {
                format!("health {}", detail.trim_start_matches("answered "))
            } else {
                "health FAILING".to_owned()
            });
        }
        if let Some(domain) = &row.domain {
            fields.push(domain.clone());
        }
        if row.critical {
            fields.push(terminal.paint("CRITICAL", Paint::Red).into_owned());
        }
        if row.unlisted {
            fields.push("unlisted (all_services; shown while failed)".to_owned());
        }
        if let Some(until) = row.paused_until {
            let why = row
                .pause_reason
                .as_ref()
                .map(|reason| format!(": {reason}"))
                .unwrap_or_default();
            fields.push(
                terminal
                    .paint(
                        &format!("PAUSED until {}{why}", page.when(until)),
                        Paint::Blue,
                    )
                    .into_owned(),
            );
        }
        if let Some(next) = row.next_maintenance {
            fields.push(format!("maintenance from {}", page.when(next)));
        }
        page.line(&format!(
            "  {} {:<name_width$}  {}",
            verdict.mark(terminal),
            row.name,
            fields.join("  ")
        ));
        for note in notes(row, page, status) {
            page.line(&format!("     {note}"));
        }
    }
    let summary = &status.summary;
    let mut counts = format!(
        "{} running, {} unhealthy, {} failed, {} inactive, {} not found",
        summary.running, summary.unhealthy, summary.failed, summary.inactive, summary.not_found
    );
    if summary.unknown > 0 {
        let _ = write!(counts, ", {} unknown", summary.unknown);
    }
    page.line(&format!("\nSummary: {counts}"));
}

fn recent(page: &mut Page, status: &Status) {
    let by = |outcome: Outcome| {
        status
            .recent
            .iter()
            .filter(|r| r.outcome == outcome)
            .count()
    };
    let title = page
        .terminal
        .paint("Recent activity (24 h):", Paint::Blue)
        .into_owned();
    page.line(&format!(
        "{title} {} resolved, {} failed, {} suppressed",
        by(Outcome::Resolved),
        by(Outcome::Failed),
        by(Outcome::Suppressed)
    ));
    let events: Vec<_> = status
        .recent
        .iter()
        .filter(|r| r.outcome != Outcome::Healthy)
        .take(5)
        .collect();
    if events.is_empty() {
        page.line("  -- no healing runs --");
    }
    let rows: Vec<[String; 4]> = events
        .iter()
        .map(|r| {
            [
                page.when(r.started_at),
                r.service.clone(),
                r.outcome.as_str().to_uppercase(),
                printable(&r.summary).into_owned(),
            ]
        })
        .collect();
    for line in aligned(&rows) {
        page.line(&line);
    }
}

/// Rows as lines whose columns line up: each column but the last as wide as its widest entry
/// (times with "(3m ago)", service names and outcome words differ in width).
fn aligned(rows: &[[String; 4]]) -> Vec<String> {
    let width = |column: usize| {
        rows.iter()
            .map(|row| row[column].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (at_width, name_width, word_width) = (width(0), width(1), width(2));
    rows.iter()
        .map(|[at, name, word, summary]| {
            format!("  {at:<at_width$}  {name:<name_width$}  {word:<word_width$}  {summary}")
        })
        .collect()
}

/// The host guard's storm, in one line.
fn guard_storm(page: &mut Page, storm: &super::GuardStormStatus) {
    let since = storm
        .since
        .map(|since| format!(" since {}", page.when(since)))
        .unwrap_or_default();
    let waiting = if storm.waiting.is_empty() {
        String::new()
    } else {
        format!(", waiting: {}", storm.waiting.join(", "))
    };
    let text = format!(
        "⚠ healing one at a time{since}: {} has the turn{waiting}",
        storm.turn.as_deref().unwrap_or("nobody")
    );
    let line = page.terminal.paint(&text, Paint::Red).into_owned();
    page.line(&format!("  Host guard       {line}"));
}

fn configuration(page: &mut Page, status: &Status) {
    page.heading("Configuration");
    let config = &status.config;
    page.line(&format!(
        "  Monitored        {} service(s)",
        config.monitored
    ));
    if !config.timers.is_empty() {
        let timers: Vec<String> = config
            .timers
            .iter()
            .map(|timer| match timer.last_round {
                Some(at) => format!(
                    "{} {} (last {})",
                    timer.round,
                    timer.active_state,
                    page.when(at)
                ),
                None => format!("{} {}", timer.round, timer.active_state),
            })
            .collect();
        page.line(&format!("  Timers           {}", timers.join(", ")));
        for problem in config
            .timers
            .iter()
            .filter_map(|timer| timer.problem.as_ref())
        {
            page.line(&format!(
                "                   {}",
                page.terminal.paint(&format!("⚠ {problem}"), Paint::Red)
            ));
        }
    }
    if let Some(storm) = &config.guard_storm {
        guard_storm(page, storm);
    }
    if let Some(covered) = &config.all_services {
        page.line(&format!(
            "  All services     {} more loaded unit(s) covered, {} excluded",
            covered.armed, covered.excluded
        ));
    }
    page.line(&format!(
        "  Loop protection  {} healing runs per {}, then a person decides",
        config.failure_threshold, config.threshold_window
    ));
    let email = match (&config.email_transport, &config.email_relay) {
        (Some(transport), Some(relay)) => format!("{transport} via {relay}"),
        (Some(transport), None) => transport.clone(),
        (None, _) => "not configured: reports are printed and logged only".to_owned(),
    };
    page.line(&format!("  Email            {email}"));
    let outbox = match (&config.outbox_oldest, config.outbox_queued) {
        (_, 0) => "empty".to_owned(),
        (Some(oldest), queued) => format!(
            "{queued} report(s) queued, oldest {} (selfheal flush retries them)",
            page.when(*oldest)
        ),
        (None, queued) => format!("{queued} report(s) queued"),
    };
    page.line(&format!("  Outbox           {outbox}"));
    for channel in &config.channels {
        let backlog = match (&channel.oldest, channel.queued) {
            (_, 0) => "delivered".to_owned(),
            (Some(oldest), queued) => format!(
                "{queued} waiting, oldest {}, {} attempt(s){}",
                page.when(*oldest),
                channel.attempts,
                channel
                    .last_error
                    .as_deref()
                    .map_or(String::new(), |error| format!(": {}", printable(error)))
            ),
            (None, queued) => format!("{queued} waiting"),
        };
        let refused = match channel.refused {
            0 => String::new(),
            count => format!("; {count} refused for good, in the outbox's refused/"),
        };
        page.line(&format!(
            "  Channel          {}: {backlog}{refused}",
            printable(&channel.channel)
        ));
    }
    if !config.open_alerts.is_empty() {
        page.line(&format!(
            "  Alerts firing    {} (resolved by the run that heals each)",
            config.open_alerts.join(", ")
        ));
    }
    let metrics = config.metrics_file.as_deref().unwrap_or("not written");
    page.line(&format!("  Metrics          {metrics}"));
}

/// The lines under a service: last healing, loop protection, hook, health detail.
fn notes(row: &ServiceStatus, page: &Page, status: &Status) -> Vec<String> {
    let when = |at: Timestamp| page.when(at);
    let mut notes = Vec::new();
    if let Some(last) = &row.last_healing {
        let by = last
            .healed_by
            .as_deref()
            .map_or(String::new(), |strategy| format!(" by {strategy}"));
        notes.push(format!(
            "↳ last healing {}: {}{by} — {}",
            when(last.started_at),
            last.outcome.as_str().to_uppercase(),
            printable(&last.summary)
        ));
    }
    if row.health_ok == Some(false)
        && let Some(detail) = &row.health_detail
    {
        notes.push(format!("↳ health: {}", printable(detail)));
    }
    // A unit systemd does not know has no hook to speak of: NOT FOUND says it all.
    if row.unknown_reason.is_none() && row.active_state != "not-found" {
        let heal = &row.heal_unit;
        if row.heal_unit_missing {
            notes.push(format!(
                "↳ NOT ARMED: {heal} is not installed (selfheal install)"
            ));
        } else if !row.healing_masked && row.heal_unit_load_state != "loaded" {
            notes.push(format!(
                "↳ NOT ARMED: {heal} does not load ({}; systemctl status {heal} says why)",
                printable(&row.heal_unit_load_state)
            ));
        } else if !row.hook_armed && !row.healing_masked {
            notes.push(format!(
                "↳ NOT ARMED: OnFailure= of {} does not start {heal} (selfheal install)",
                row.unit
            ));
        }
        if row.healing_masked {
            notes.push(format!(
                "↳ healing disabled: {heal} is masked (systemctl unmask {heal} && selfheal install)"
            ));
        }
    }
    if let Some(probe) = &row.probe {
        let last_failure = probe
            .last_failed_at
            .map(|at| format!(" (last failure {})", when(at)))
            .unwrap_or_default();
        notes.push(match probe.ok {
            Some(false) => format!(
                "↳ probe FAILING {}/{}: {}{last_failure}",
                probe.failures,
                probe.failures_to_heal,
                printable(&probe.detail)
            ),
            Some(true) => format!("↳ probe ok: {}{last_failure}", printable(&probe.detail)),
            None => match &probe.checked_at {
                None => "↳ probe: no round yet".to_owned(),
                Some(at) => format!(
                    "↳ probe: {} ({}){last_failure}",
                    printable(&probe.detail),
                    when(*at)
                ),
            },
        });
    }
    if row.restarts_by_systemd_24h > 0 {
        notes.push(format!(
            "↳ restarted by systemd (Restart=) {} time{} in 24h",
            row.restarts_by_systemd_24h,
            if row.restarts_by_systemd_24h == 1 {
                ""
            } else {
                "s"
            }
        ));
    }
    if row.recent_runs > 0 {
        let mut text = format!(
            "↳ {}/{} healing runs in the last {}",
            row.recent_runs, status.config.failure_threshold, status.config.threshold_window
        );
        if let Some(until) = &row.suppressed_until {
            let _ = write!(text, ": SUPPRESSED until {}", when(*until));
        }
        if let Some(retry) = &row.next_retry_at {
            let _ = write!(text, ", timed retry at {}", when(*retry));
        }
        notes.push(text);
    }
    notes
}

fn uptime(seconds: u64) -> String {
    let (days, hours, minutes) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60);
    match days {
        0 => format!("{hours}h {minutes}min"),
        _ => format!("{days}d {hours}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_activity_lines_up_its_columns() {
        let row = |at: &str, name: &str, word: &str| {
            [
                at.to_owned(),
                name.to_owned(),
                word.to_owned(),
                "why".to_owned(),
            ]
        };
        let lines = aligned(&[
            row("18:39:20 (3m ago)", "nginx", "RESOLVED"),
            row("18:01:02 (41m ago)", "memcached", "SUPPRESSED"),
        ]);
        let column = |line: &str, text: &str| line.find(text).unwrap();
        assert_eq!(
            column(&lines[0], "RESOLVED"),
            column(&lines[1], "SUPPRESSED")
        );
        assert_eq!(column(&lines[0], "why"), column(&lines[1], "why"));
        assert_eq!(column(&lines[0], "nginx"), column(&lines[1], "memcached"));
    }
}
