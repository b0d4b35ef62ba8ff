//! `selfheal flush`: deliver the reports queued in the outbox, and look after loop
//! protection's episodes (see `episode::housekeeping`). Exit 0 when the outbox is empty after.

use crate::Error;
use crate::exit_code::ExitCode;

use super::Paths;

pub(super) fn execute(paths: &Paths) -> Result<ExitCode, Error> {
    let config = paths.load_config()?;
    // Bursts whose window has closed first: their held reports join the outbox.
    let renderer = crate::report::Renderer::new(config.templates_dir.as_deref());
    let bursts = crate::notify::cascade::Bursts {
        config: &config,
        state: &paths.state(),
        renderer: &renderer,
    }
    .due();
    match bursts {
        Ok(0) => {}
        Ok(bursts) => println!("{bursts} cascade burst(s) ready"),
        // The reports already queued go out all the same.
        Err(err) => eprintln!("selfheal: the held cascade reports stay held: {err}"),
    }
    let summary = crate::notify::email::flush(&config, &paths.state(), None)?;
    // Episodes of services that are up again are watched, then closed; the metrics say so.
    if paths.state().episodes().is_ok_and(|open| !open.is_empty()) {
        match crate::systemd::Systemd::connect() {
            Ok(systemd) => crate::heal::episode::housekeeping(&config, &paths.state(), &systemd),
            Err(err) => tracing::warn!("episodes not looked after: {err}"),
        }
    }
    all_clears(&config, &paths.state(), &renderer);
    let channels = flush_channels(&config, &paths.state());
    paths.state().mark_round("flush");
    crate::status::metrics::update(&config, &paths.state());
    for meta in &summary.delivered {
        println!(
            "delivered {} ({})",
            meta.envelope.message_id, meta.envelope.subject
        );
    }
    for (meta, error) in &summary.failed {
        eprintln!(
            "still queued {} ({}, {} attempt(s)): {error}",
            meta.envelope.message_id,
            meta.envelope.subject,
            meta.attempts + 1
        );
    }
    for skipped in &summary.unreadable {
        eprintln!(
            "skipped {}: {}; deliver or remove it by hand",
            skipped.eml.display(),
            skipped.why
        );
    }
    if summary.busy > 0 {
        println!(
            "{} message(s) are being sent by another selfheal",
            summary.busy
        );
    }
    let channels_ok = report_channels(&channels);
    for (dir, queued) in crate::notify::channel::orphans(&config, &paths.state()) {
        eprintln!(
            "{}: {queued} message(s) for a channel that is no longer in the config: restore the channel to deliver them, or remove the directory",
            dir.display()
        );
    }
    if !summary.failed.is_empty()
        || summary.busy > 0
        || !summary.unreadable.is_empty()
        || !channels_ok
    {
        return Ok(ExitCode::Failure);
    }
    let channels_sent = channels.iter().any(|channel| {
        channel.refreshed > 0
            || channel
                .round
                .as_ref()
                .is_ok_and(|round| !round.delivered.is_empty())
    });
    if summary.delivered.is_empty() && !channels_sent {
        println!("outbox empty: nothing to deliver");
    }
    Ok(ExitCode::Success)
}

/// Delivers every channel's queue; an open alert whose service is up again is resolved
/// first (systemd is asked only when there is one).
fn flush_channels(
    config: &crate::config::Config,
    state: &crate::state::StateDir,
) -> Vec<crate::notify::channel::ChannelRound> {
    if config.notify.is_empty() {
        return Vec::new();
    }
    let systemd = std::cell::OnceCell::new();
    crate::notify::channel::flush(config, state, |name| {
        let Some(service) = config.entry(name) else {
            // No longer monitored: nobody will resolve it later.
            return true;
        };
        let systemd = systemd.get_or_init(crate::systemd::Systemd::connect);
        // A crash loop's service is up between its crashes: its alert ends with the loop.
        !crate::heal::watch::crash_loop_ongoing(state, &service.name)
            && systemd
                .as_ref()
                .is_ok_and(|systemd| crate::heal::episode::healthy_now(config, &service, systemd))
    })
}

/// The all-clear of each service people were told is down (FAILED, SUPPRESSED) that is up
/// again by other hands than selfheal's (a person's `systemctl start`, a deploy, systemd):
/// found healthy here, every channel that heard it was down hears it is back. A service whose
/// run holds its lock is left to that run; a crash loop still going is the watch's.
fn all_clears(
    config: &crate::config::Config,
    state: &crate::state::StateDir,
    renderer: &crate::report::Renderer,
) {
    let told: Vec<std::borrow::Cow<'_, crate::config::ServiceConfig>> =
        crate::notify::tell::told_services(state)
            .iter()
            .filter_map(|name| config.entry(name))
            .filter(|service| {
                // A crash loop still going is the watch's to clear; one that ended while the
                // service was down (systemd gave up) is cleared here, once it is back.
                crate::notify::tell::told(state, &service.name).is_some_and(|told| {
                    !told.is_crash_loop()
                        || !crate::heal::watch::crash_loop_ongoing(state, &service.name)
                })
            })
            .collect();
    if told.is_empty() {
        return;
    }
    let systemd = match crate::systemd::Systemd::connect() {
        Ok(systemd) => systemd,
        Err(err) => {
            tracing::warn!("no all-clear looked for: {err}");
            return;
        }
    };
    let teller = crate::notify::tell::Teller {
        config,
        state,
        renderer,
        flush_command: &[],
        systemd: crate::systemd::Systemd::connect,
        send: true,
    };
    for service in told {
        let Ok(Some(_lock)) = state.try_lock(&service.name) else {
            continue;
        };
        if !crate::heal::episode::healthy_now(config, &service, &systemd) {
            continue;
        }
        let unit = service.unit_name();
        let post = crate::systemd::UnitControl::snapshot(&systemd, &unit).ok();
        let facts = crate::heal::facts::RunFacts::observed(
            crate::outcome::Outcome::Healthy,
            format!(
                "selfheal flush found {unit} serving again, brought back by other hands than selfheal's (a person, a deploy, systemd)"
            ),
            post.as_ref().map(crate::heal::facts::PostStatus::from),
        );
        let mut report =
            crate::report::Report::new(crate::report::ReportHeader::new(config, &service), facts);
        crate::notify::tell::mark_all_clear(state, &mut report);
        println!("{}: back up, all-clear sent", service.name);
        teller.tell(&report, None);
    }
}

/// Prints what each channel did; false when a channel kept messages.
fn report_channels(rounds: &[crate::notify::channel::ChannelRound]) -> bool {
    let mut all_delivered = true;
    for crate::notify::channel::ChannelRound {
        channel,
        round,
        refreshed,
    } in rounds
    {
        let round = match round {
            Ok(round) => round,
            Err(error) => {
                eprintln!("{channel}: its queue cannot be used: {error}");
                all_delivered = false;
                continue;
            }
        };
        for message in &round.delivered {
            println!(
                "{channel}: delivered {} of {} (queued {})",
                message.what, message.service, message.queued_at
            );
        }
        if *refreshed > 0 {
            println!("{channel}: sent {refreshed} open alert(s) again");
        }
        if let Some((message, error)) = &round.failed {
            all_delivered = false;
            eprintln!(
                "{channel}: still queued {} of {} ({} attempt(s)), {} more behind it: {error}",
                message.what, message.service, message.attempts, round.waiting
            );
        }
        for (message, error, aside) in &round.refused {
            all_delivered = false;
            eprintln!(
                "{channel}: refused {} of {} for good, set aside in {}: {error}",
                message.what,
                message.service,
                aside.display()
            );
        }
        for path in &round.unreadable {
            all_delivered = false;
            eprintln!(
                "{channel}: skipped {}: not a readable message; deliver or remove it by hand",
                path.display()
            );
        }
    }
    all_delivered
}
