//! A report as a mail: subject, text and HTML from the templates, the contract's headers, and a
//! Message-ID fixed at composition, so every resend of the stored message carries the same one.

use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};

use super::EmailConfig;
use super::EmailError;
use crate::report::{Recipients, Renderer, Templated};

/// A rendered message, ready for the outbox.
#[derive(Debug, Clone)]
pub(crate) struct Composed {
    /// File name stem in the outbox (unique per run, sorts by time).
    pub stem: String,
    pub envelope: Envelope,
    /// The whole RFC 5322 message.
    pub bytes: Vec<u8>,
}

/// Who a message goes to and what it is about: what a transport needs besides the bytes, and
/// what the outbox keeps beside each queued message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Envelope {
    /// `<selfheal.…@host>`.
    pub message_id: String,
    pub subject: String,
    pub service: String,
    pub outcome: String,
    /// Envelope sender and recipients.
    pub from: String,
    pub to: Vec<String>,
}

/// Renders `report` (a run's or a cascade's) into a multipart/alternative message (text
/// first, HTML preferred).
pub(crate) fn compose<T: Templated>(
    email: &EmailConfig,
    owner: Option<&str>,
    renderer: &Renderer,
    report: &T,
) -> Result<Composed, crate::notify::NotifyError> {
    let facts = report.mail_facts();
    let from = email
        .from
        .clone()
        .unwrap_or_else(|| format!("selfheal@{}", facts.host));
    let default_to: Vec<String> = if email.to.is_empty() {
        owner.map(str::to_owned).into_iter().collect()
    } else {
        email.to.clone()
    };
    let to = match &facts.recipients {
        Recipients::Default => default_to,
        Recipients::Instead(own) => own.clone(),
        Recipients::Also(more) => {
            let mut all = default_to;
            all.extend(
                more.iter()
                    .filter(|a| !all.contains(a))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
            all
        }
    };
    let subject = renderer.subject(report)?;
    let text = renderer.text(report)?;
    let html = renderer.html(report)?;

    let compact_time = facts.started_at.compact();
    let stem = format!("{compact_time}-{}-{}", facts.label, std::process::id());
    let message_id = format!("<selfheal.{stem}@{}>", facts.host);
    let date = facts.started_at.time();

    let mut builder = Message::builder()
        .from(from.parse::<Mailbox>().map_err(|err| {
            EmailError::Invalid(format!("email.from {from:?} is not an address: {err}"))
        })?)
        .subject(subject.clone())
        .date(date)
        .message_id(Some(message_id.clone()))
        .user_agent(format!("selfheal {}", env!("CARGO_PKG_VERSION")))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Selfheal-Service"),
            facts.service.clone(),
        ))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Selfheal-Outcome"),
            facts.outcome.clone(),
        ));
    for address in &to {
        builder = builder.to(address.parse::<Mailbox>().map_err(|err| {
            EmailError::Invalid(format!(
                "email recipient {address:?} is not an address: {err}"
            ))
        })?);
    }
    let message = builder
        .multipart(MultiPart::alternative_plain_html(text, html))
        .map_err(|err| EmailError::Invalid(format!("building the report mail: {err}")))?;
    Ok(Composed {
        stem,
        envelope: Envelope {
            message_id,
            subject,
            service: facts.service,
            outcome: facts.outcome,
            from,
            to,
        },
        bytes: message.formatted(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Outcome;

    fn email(to: &[&str]) -> EmailConfig {
        let yaml = format!(
            "to: [{}]\nfrom: selfheal@example.org\ntransport: file\nfile_dir: /tmp\n",
            to.join(", ")
        );
        serde_saphyr::from_str(&yaml).unwrap()
    }

    #[test]
    fn a_services_own_recipients_replace_the_default_ones() {
        let renderer = Renderer::new(Some(std::path::Path::new("/nonexistent")));
        let mut report = crate::report::fixture::report(Outcome::Failed);
        let default = compose(&email(&["ops@example.org"]), None, &renderer, &report).unwrap();
        assert_eq!(default.envelope.to, ["ops@example.org"]);

        report.header.to = vec!["web-team@example.org".into()];
        let own = compose(&email(&["ops@example.org"]), None, &renderer, &report).unwrap();
        assert_eq!(own.envelope.to, ["web-team@example.org"]);
        // Without email.to, the owner is the default.
        report.header.to.clear();
        let owner = compose(&email(&[]), Some("me@example.org"), &renderer, &report).unwrap();
        assert_eq!(owner.envelope.to, ["me@example.org"]);
    }
}
