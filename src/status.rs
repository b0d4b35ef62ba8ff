//! `selfheal status`: every monitored service, its state, port and last healing.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::Config;
use crate::exit_code::ExitCode;
use crate::ports;
use crate::state::{HistoryRecord, StateDir};
use crate::systemd::{ActiveState, Systemd, UnitControl};

/// One row of the dashboard.
#[derive(Debug, Serialize)]
struct ServiceStatus {
    service: String,
    unit: String,
    active_state: ActiveState,
    sub_state: String,
    port: Option<u16>,
    listening: Option<bool>,
    domain: Option<String>,
    critical: bool,
    last_healing: Option<HistoryRecord>,
}

/// Prints the dashboard (or JSON); exit 0 when every service is active, 1 otherwise.
pub(crate) fn show(
    config: &Config,
    state: &StateDir,
    json: bool,
) -> Result<ExitCode, crate::Error> {
    let systemd = Systemd::connect()?;
    let history = state.history()?;
    let rows: Vec<ServiceStatus> = config
        .monitored_services
        .iter()
        .map(|service| {
            let unit = service.unit_name();
            let snapshot = systemd.snapshot(&unit);
            let (active_state, sub_state) = match &snapshot {
                Ok(s) => (s.active_state.clone(), s.sub_state.clone()),
                Err(err) => (ActiveState::Other("unknown".into()), err.to_string()),
            };
            ServiceStatus {
                service: service.name.clone(),
                unit,
                active_state,
                sub_state,
                port: service.port,
                listening: service.port.map(ports::is_listening),
                domain: service.domain.clone(),
                critical: service.critical,
                last_healing: history
                    .iter()
                    .rev()
                    .find(|r| r.service == service.name && r.outcome.is_healing_attempt())
                    .cloned(),
            }
        })
        .collect();
    let all_active = rows.iter().all(|r| r.active_state == ActiveState::Active);
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_dashboard(config, &rows, &history, crate::email::Outbox::count(state));
    }
    Ok(if all_active {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}

fn print_dashboard(
    config: &Config,
    rows: &[ServiceStatus],
    history: &[HistoryRecord],
    queued: usize,
) {
    println!(
        "🤖 {} self-healing status ({})\n",
        config.system_name(),
        crate::host::hostname()
    );
    for row in rows {
        let mark = if row.active_state == ActiveState::Active {
            "✅"
        } else {
            "❌"
        };
        let port = row.port.map_or(String::new(), |p| {
            let listening = if row.listening == Some(true) {
                ""
            } else {
                " (not listening)"
            };
            format!("port {p}{listening}")
        });
        let domain = row
            .domain
            .as_deref()
            .map_or(String::new(), |d| format!(" ({d})"));
        println!(
            "  {mark} {:<22} {:<10} {port}{domain}",
            row.service,
            row.active_state.as_str().to_uppercase()
        );
        if let Some(last) = &row.last_healing {
            println!(
                "     ↳ last healing: {} - {}",
                last.started_at,
                last.outcome.as_str().to_uppercase()
            );
        }
    }
    let day_ago = SystemTime::now() - Duration::from_secs(86_400);
    let recent: Vec<_> = history
        .iter()
        .filter(|r| r.outcome.is_healing_attempt() && r.started().is_some_and(|t| t >= day_ago))
        .collect();
    let running = rows
        .iter()
        .filter(|r| r.active_state == ActiveState::Active)
        .count();
    println!(
        "\nSummary: {running} active, {} not active",
        rows.len() - running
    );
    println!("Healing runs in the last 24 h: {}", recent.len());
    for record in recent.iter().rev().take(5) {
        println!(
            "  [{}] {} - {}",
            record.started_at,
            record.service,
            record.outcome.as_str().to_uppercase()
        );
    }
    println!(
        "Failure threshold: {} per {}",
        config.failure_threshold, config.threshold_window
    );
    if queued > 0 {
        println!("Outbox: {queued} report(s) not yet delivered (selfheal flush retries them)");
    }
}
