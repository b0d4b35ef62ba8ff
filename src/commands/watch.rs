//! `selfheal watch`: one round of looking at the restarts systemd made by itself (see
//! `crate::heal::watch`). Prints one line per service that systemd restarted since the last round.
//! Exit 0 unless selfheal itself failed (a crash loop is reported by mail, not by exit code:
//! the timer's unit must not turn failed with every loop).

use std::time::SystemTime;

use crate::Error;
use crate::exit_code::ExitCode;
use crate::heal::facts::{PostStatus, RunFacts};
use crate::heal::watch::{self, Seen};
use crate::notify::tell::Teller;
use crate::outcome::Outcome;
use crate::report::{Renderer, Report, ReportHeader};
use crate::state::HistoryRecord;
use crate::systemd::{Systemd, UnitControl};
use crate::ui::when::Timestamp;

use super::Paths;

/// How long the evidence (the unit's last journal lines) may take.
const JOURNAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

pub(super) fn execute(paths: &Paths) -> Result<ExitCode, Error> {
    let config = paths.load_config()?;
    let state = paths.state();
    let systemd = Systemd::connect()?;
    let version = systemd.version()?;
    let renderer = Renderer::new(config.templates_dir.as_deref());
    for service in &config.monitored_services {
        // Its own lock, not the service's: a heal run must never find the service taken by
        // the watch (and yield to it). Two rounds at once (a person's beside the timer's) do
        // not count the same restarts twice.
        let Ok(Some(_lock)) = state.try_lock(&format!("{}.watch", service.name)) else {
            continue;
        };
        let unit = service.unit_name();
        let Ok(snapshot) = systemd.snapshot(&unit) else {
            continue;
        };
        let settings = systemd
            .service_strings(&unit, &["Restart", "RestartMode"])
            .unwrap_or_default();
        let restart = settings.first().cloned().flatten().unwrap_or_default();
        let restart_mode = settings.get(1).cloned().flatten();
        let mut seen: Seen = state
            .service_file("watch", &service.name)
            .unwrap_or_default()
            .unwrap_or_default();
        let now = SystemTime::now();
        let look = watch::look(&mut seen, &snapshot, now, config.crash_loop);
        state.save_service_file("watch", &service.name, &seen)?;
        if look.new_restarts > 0 {
            println!(
                "{}: systemd restarted {unit} {} time(s) since the last look (Restart={restart})",
                service.name, look.new_restarts
            );
        }
        // Where the hook fires at each restart, its runs record them; a crash loop's restarts
        // are the loop's (recorded with its report), not recoveries.
        if look.new_restarts > 0
            && !look.looping
            && !watch::hook_sees_restarts(version, restart_mode.as_deref())
        {
            state.append_history(&HistoryRecord {
                service: service.name.clone(),
                outcome: Outcome::RestartedBySystemd,
                started_at: Timestamp::millis(now),
                duration_ms: 0,
                healed_by: None,
                summary: format!(
                    "systemd's Restart={restart} restarted {unit} {} time(s) by itself; seen by selfheal watch",
                    look.new_restarts
                ),
                manual: false,
                relapse: false,
                restarts: look.new_restarts,
            })?;
        }
        let teller = Teller {
            config: &config,
            state: &state,
            renderer: &renderer,
            flush_command: &[],
            systemd: crate::systemd::Systemd::connect,
            send: true,
        };
        if look.loop_over {
            // Restart= ended it: whoever heard CRASH LOOP hears that it is over.
            let facts = RunFacts::observed(
                Outcome::RestartedBySystemd,
                format!(
                    "{unit}'s crash loop is over: systemd restarted it by itself and it has run {} without another restart; it is {} now",
                    config.crash_loop.within,
                    snapshot.state()
                ),
                Some(PostStatus::from(&snapshot)),
            );
            let mut report = Report::new(ReportHeader::new(&config, service), facts);
            crate::notify::tell::mark_all_clear(&state, &mut report);
            // Back as its clients see it (port, health URL), not just active.
            if report.facts.all_clear.is_some()
                && crate::heal::episode::healthy_now(&config, service, &systemd)
            {
                print!("{}", renderer.text(&report)?);
                teller.tell(&report, None);
            }
        }
        let Some(restarts) = look.crash_loop else {
            continue;
        };
        // A FAILED or SUPPRESSED report of this episode told the owner already.
        if state
            .episode(&service.name)
            .ok()
            .flatten()
            .is_some_and(|episode| !episode.is_watching())
        {
            continue;
        }
        let journal = crate::host::journal::start(&unit, None).collect(JOURNAL_TIMEOUT);
        let facts = crate::heal::watch::crash_loop(
            &config, &state, service, &snapshot, restarts, &restart, journal,
        );
        let report = Report::new(ReportHeader::new(&config, service), facts);
        print!("{}", renderer.text(&report)?);
        teller.tell(&report, None);
    }
    crate::status::metrics::update(&config, &state);
    Ok(ExitCode::Success)
}
