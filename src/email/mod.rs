//! Reports by email: compose a multipart/alternative message from the templates, put it in the
//! outbox, send it, and remove it only once the server has accepted it. A report that cannot
//! be sent stays queued for `selfheal flush`; the healing outcome never depends on mail.

mod compose;
mod outbox;
mod transport;

pub use compose::{Composed, compose};
pub use outbox::{FlushSummary, Outbox, Queued};
pub use transport::{EmailError, Sender};

use crate::config::Config;
use crate::outcome::Outcome;
use crate::report::{Renderer, Report};
use crate::state::StateDir;

/// Whether a run's report is worth a mail: something happened that a person should know.
/// A healthy service, a dry run and a run that yielded to a concurrent one send nothing.
pub fn worth_mailing(report: &Report) -> bool {
    match report.outcome {
        Outcome::Resolved | Outcome::Failed => true,
        // Loop protection gave up on the service: that needs a person. A concurrent run
        // (no diagnosis) sends its own report.
        Outcome::Suppressed => report.diagnosis.is_some(),
        Outcome::Healthy | Outcome::Planned => false,
    }
}

/// What happened to one report.
#[derive(Debug)]
pub enum Delivery {
    /// The server accepted it.
    Sent { message_id: String },
    /// Kept in the outbox for `flush`.
    Queued {
        message_id: String,
        error: EmailError,
    },
}

/// Queues the report in the outbox, then sends it. Errors here are the outbox's (the report
/// could not even be stored); a failed send is a `Delivery::Queued`.
pub fn deliver_report(
    config: &Config,
    state: &StateDir,
    renderer: &Renderer,
    report: &Report,
) -> anyhow::Result<Option<Delivery>> {
    let Some(email) = config.email.as_ref() else {
        return Ok(None);
    };
    let composed = compose(email, config.owner.as_deref(), renderer, report)?;
    let outbox = Outbox::open(state)?;
    let (queued, _claim) = outbox.queue(&composed)?;
    let message_id = composed.message_id.clone();
    let sent = Sender::from_config(email).and_then(|sender| sender.send_queued(&queued));
    Ok(Some(match sent {
        Ok(()) => {
            outbox.delivered(&queued)?;
            Delivery::Sent { message_id }
        }
        Err(error) => {
            outbox.failed(&queued, &error)?;
            Delivery::Queued { message_id, error }
        }
    }))
}

/// Delivers everything in the outbox, oldest first.
pub fn flush(config: &Config, state: &StateDir) -> anyhow::Result<FlushSummary> {
    let outbox = Outbox::open(state)?;
    let sender = config.email.as_ref().map(Sender::from_config);
    outbox.flush(|queued| match &sender {
        Some(Ok(sender)) => sender.send_queued(queued),
        Some(Err(error)) => Err(error.clone()),
        None => Err(EmailError::NotConfigured),
    })
}
