//! `selfheal digest`: print and mail the summary of the last 24 h (what `selfheal-digest.timer`
//! runs daily when the config says `digest: daily`).

use std::time::SystemTime;

use crate::Error;
use crate::cli::DigestArgs;
use crate::exit_code::ExitCode;
use crate::notify::email::{Delivery, EmailError, Outbox, compose, deliver_composed};
use crate::report::Renderer;
use crate::report::digest::DigestReport;

use super::Paths;

pub(super) fn execute(paths: &Paths, args: &DigestArgs) -> Result<ExitCode, Error> {
    let config = paths.load_config()?;
    let state = paths.state();
    let digest = DigestReport::new(
        &config,
        &state.history()?,
        state.episodes()?,
        Outbox::backlog(&state),
        SystemTime::now(),
    );
    let renderer = Renderer::new(config.templates_dir.as_deref());
    print!("{}", renderer.text(&digest)?);
    state.mark_round("digest");
    if args.no_email {
        return Ok(ExitCode::Success);
    }
    let email = config.email.as_ref().ok_or(EmailError::NotConfigured)?;
    let composed = compose(email, config.owner.as_deref(), &renderer, &digest)?;
    match deliver_composed(email, &state, &composed)? {
        Delivery::Sent { message_id } | Delivery::SentWithoutOutbox { message_id, .. } => {
            eprintln!(
                "digest {message_id} sent to {}",
                composed.envelope.to.join(", ")
            );
            Ok(ExitCode::Success)
        }
        Delivery::Queued { message_id, error } => {
            eprintln!("digest {message_id} kept in the outbox for `selfheal flush`: {error}");
            Ok(ExitCode::EmailError)
        }
    }
}
