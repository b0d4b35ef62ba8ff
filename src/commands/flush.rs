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
    if !summary.failed.is_empty() || summary.busy > 0 || !summary.unreadable.is_empty() {
        return Ok(ExitCode::Failure);
    }
    if summary.delivered.is_empty() {
        println!("outbox empty: nothing to deliver");
    }
    Ok(ExitCode::Success)
}
