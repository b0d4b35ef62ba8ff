//! `selfheal test-email`: a test report through the configured transport, straight away.

use crate::Error;
use crate::exit_code::ExitCode;
use crate::notify::email::{EmailError, Sender, compose};
use crate::report::{Renderer, Report};

use super::Paths;

pub(super) fn execute(paths: &Paths) -> Result<ExitCode, Error> {
    let config = paths.load_config()?;
    let renderer = Renderer::new(config.templates_dir.as_deref());
    println!(
        "{}",
        send(&config, &renderer, &Report::test_email(&config))?
    );
    Ok(ExitCode::Success)
}

/// Sends `report` through the mail transport now; what was sent to whom.
pub(super) fn send(
    config: &crate::config::Config,
    renderer: &Renderer,
    report: &Report,
) -> Result<String, Error> {
    let email = config.email.as_ref().ok_or(EmailError::NotConfigured)?;
    let composed = compose(email, config.owner.as_deref(), renderer, report)?;
    let name = format!("{}.eml", composed.stem);
    Sender::from_config(email)?.send(&composed.envelope, &composed.bytes, &name)?;
    let envelope = &composed.envelope;
    Ok(format!(
        "sent {} to {} ({})",
        envelope.message_id,
        envelope.to.join(", "),
        envelope.subject
    ))
}
