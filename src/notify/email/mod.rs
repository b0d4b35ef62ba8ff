//! Reports by email: compose a multipart/alternative message from the templates, put it in the
//! outbox, send it, and remove it only once the server has accepted it. A report that cannot
//! be sent stays queued for `selfheal flush`; the healing outcome never depends on mail.

mod compose;
mod outbox;
mod transport;

pub(crate) use crate::config::email::{EmailConfig, SmtpConfig, SmtpSecurity, Transport};
#[cfg(test)]
pub(crate) use compose::Envelope;
pub(crate) use compose::{Composed, compose};
pub(crate) use outbox::{FlushSummary, Outbox, OutboxError};
pub(crate) use transport::{EmailError, Sender};

use crate::config::Config;
use crate::outcome::Outcome;
use crate::report::{Renderer, Report};
use crate::state::StateDir;

/// What `selfheal check` can find out about delivery without sending anything: the password
/// file (owner, mode, not empty), the CA file (PEM certificates), the sendmail program. Ok
/// holds warnings; Err what would make every mail fail.
pub(crate) fn preflight(email: &EmailConfig) -> Result<Vec<String>, String> {
    let mut warnings = Vec::new();
    let mut probe = email.clone();
    match (&email.transport, probe.smtp.as_mut()) {
        (Transport::Smtp, Some(smtp))
            if smtp.username.is_some() && smtp.password_file.is_none() =>
        {
            // The credential exists only inside the heal unit; it cannot be checked here.
            warnings.push(format!(
                "email.smtp.password_file is not set: the heal and flush units must get the password as the systemd credential {}, which install does not write without password_file: add `LoadCredential={0}:<file>` with `systemctl edit selfheal@<name>.service selfheal-flush.service`",
                transport::PASSWORD_CREDENTIAL
            ));
            smtp.username = None;
        }
        (Transport::Sendmail, _) => {
            crate::host::process::find_executable("sendmail")
                .map_err(|why| format!("email.transport sendmail: sendmail: {why}"))?;
        }
        _ => {}
    }
    Sender::from_config(&probe).map_err(|err| err.to_string())?;
    Ok(warnings)
}

/// Whether a run's report is worth a mail: something happened that a person should know.
/// A healthy service, a dry run and a run that yielded to a concurrent one send nothing.
pub(crate) fn worth_mailing(report: &Report) -> bool {
    // The all-clear of a FAILED, SUPPRESSED or CRASH LOOP that people were told.
    if report.facts.all_clear.is_some() || report.facts.guard.is_some() {
        return true;
    }
    if report.facts.episode_reported {
        return false;
    }
    match report.facts.outcome {
        Outcome::Resolved | Outcome::Failed | Outcome::CrashLoop | Outcome::Reported => true,
        // Loop protection gave up on the service: that needs a person. A concurrent run
        // (no diagnosis) sends its own report.
        Outcome::Suppressed => report.facts.diagnosis.is_some(),
        // systemd's own restart worked: nothing for a person to do (crashes that keep
        // coming are reported as such).
        // Held by the host guard: its one report for the host tells it.
        Outcome::Healthy
        | Outcome::RestartedBySystemd
        | Outcome::Planned
        | Outcome::Paused
        | Outcome::Held => false,
    }
}

/// What happened to one report.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// The server accepted it.
    Sent { message_id: String },
    /// Kept in the outbox for `flush`.
    Queued {
        message_id: String,
        error: EmailError,
    },
    /// The outbox could not be written (a full or read-only state directory), so it was sent
    /// straight away, and the server accepted it.
    SentWithoutOutbox {
        message_id: String,
        outbox_error: String,
    },
}

/// Queues the report in the outbox, then sends it. When the outbox cannot be written the
/// report is sent directly: a broken state directory must not keep the owner uninformed.
/// An error means the report could neither be stored nor sent; a failed send of a stored
/// report is a `Delivery::Queued`.
pub(crate) fn deliver_report(
    config: &Config,
    state: &StateDir,
    renderer: &Renderer,
    report: &Report,
) -> Result<Option<Delivery>, crate::notify::NotifyError> {
    let Some(email) = config.email.as_ref() else {
        return Ok(None);
    };
    let composed = compose(email, config.owner.as_deref(), renderer, report)?;
    deliver_composed(email, state, &composed).map(Some)
}

/// Queues a composed message in the outbox, then sends it; see [`deliver_report`].
pub(crate) fn deliver_composed(
    email: &EmailConfig,
    state: &StateDir,
    composed: &Composed,
) -> Result<Delivery, crate::notify::NotifyError> {
    let message_id = composed.envelope.message_id.clone();
    let stored = Outbox::open(state).and_then(|outbox| {
        let (queued, claim) = outbox.queue(composed)?;
        Ok::<_, crate::notify::NotifyError>((outbox, queued, claim))
    });
    let (outbox, queued, _claim) = match stored {
        Ok(stored) => stored,
        Err(outbox_error) => {
            let outbox_error = outbox_error.to_string();
            let name = format!("{}.eml", composed.stem);
            let sent = Sender::from_config(email)
                .and_then(|sender| sender.send(&composed.envelope, &composed.bytes, &name));
            return match sent {
                Ok(()) => Ok(Delivery::SentWithoutOutbox {
                    message_id,
                    outbox_error,
                }),
                Err(send_error) => Err(EmailError::Invalid(format!(
                    "the outbox cannot be written ({outbox_error}) and sending failed ({send_error})"
                ))
                .into()),
            };
        }
    };
    let sent = Sender::from_config(email)
        .and_then(|sender| sender.send(&composed.envelope, &composed.bytes, &queued.name()));
    Ok(match sent {
        Ok(()) => {
            outbox.delivered(&queued)?;
            Delivery::Sent { message_id }
        }
        Err(error) => {
            outbox.failed(&queued, &error.to_string())?;
            Delivery::Queued { message_id, error }
        }
    })
}

/// Delivers everything in the outbox (or, with `only`, the messages of those stems), oldest
/// first.
pub(crate) fn flush(
    config: &Config,
    state: &StateDir,
    only: Option<&[String]>,
) -> Result<FlushSummary, crate::notify::NotifyError> {
    let outbox = Outbox::open(state)?;
    let sender = config.email.as_ref().map(Sender::from_config);
    Ok(outbox.flush(only, |queued| {
        let sender = match &sender {
            Some(Ok(sender)) => sender,
            Some(Err(error)) => return Err(error.to_string()),
            None => return Err(EmailError::NotConfigured.to_string()),
        };
        let bytes = queued.bytes().map_err(|err| err.to_string())?;
        sender
            .send(&queued.meta.envelope, &bytes, &queued.name())
            .map_err(|err| err.to_string())
    })?)
}
