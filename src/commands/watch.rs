//! `selfheal watch`: one round of looking at the restarts systemd made by itself (the round is
//! `crate::heal::watch::round`). Prints one line per service that systemd restarted since the
//! last round, tells of the crash loops it finds and of their end, and heals what is still
//! failed of the pauses that have ended. Exit 0 unless selfheal
//! itself failed (a crash loop is reported by mail, not by exit code: the timer's unit must not
//! turn failed with every loop).

use std::time::SystemTime;

use crate::Error;
use crate::exit_code::ExitCode;
use crate::heal::watch;
use crate::host::journal::Journald;
use crate::notify::tell::Teller;
use crate::report::{Renderer, Report, ReportHeader};
use crate::systemd::Systemd;

use super::Paths;

pub(super) fn execute(paths: &Paths) -> Result<ExitCode, Error> {
    let config = paths.load_config()?;
    let state = paths.state();
    let systemd = Systemd::connect()?;
    let renderer = Renderer::new(config.templates_dir.as_deref());
    let teller = Teller {
        config: &config,
        state: &state,
        renderer: &renderer,
        flush_command: &[],
        systemd: Systemd::connect,
        send: true,
    };
    let found = watch::round(&config, &state, &systemd, &Journald, SystemTime::now())?;
    for found in found {
        let service = found.service;
        if let Some(restarted) = &found.restarted {
            println!("{}: {restarted}", service.name);
        }
        if let Some(facts) = found.loop_over {
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
        if let Some(facts) = found.crash_loop {
            let report = Report::new(ReportHeader::new(&config, service), facts);
            print!("{}", renderer.text(&report)?);
            // A loop of a paused service (or one in its maintenance window) is recorded, not
            // told.
            let planned = crate::heal::planned::planned(
                &config,
                &state,
                service,
                std::time::SystemTime::now(),
                true,
            );
            if planned.is_none() {
                teller.tell(&report, None);
            }
        }
    }
    for reminder in crate::notify::remind::due(&config, &state, &systemd, SystemTime::now()) {
        print!("{}", renderer.text(&reminder)?);
        teller.tell(&reminder, None);
    }
    // A host guard's turn whose run died goes to the next waiting service.
    crate::heal::guard::nudge(&config, &state, &systemd);
    // A pause or a window that has ended: what is still failed of it is healed now.
    for healed in crate::heal::pause::release_ended(&config, &state, &systemd) {
        println!("{healed}");
    }
    state.mark_round("watch");
    crate::status::metrics::update(&config, &state);
    Ok(ExitCode::Success)
}
