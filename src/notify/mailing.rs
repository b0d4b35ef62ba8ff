//! Where a run's report goes: mailed now (through the outbox), or held for the cascade its
//! run joined and delivered with it. Delivery never changes a run's outcome or exit code; what
//! becomes of each report is logged.

use crate::notify::cascade::{Arrival, Fate};
use crate::report::{Renderer, Report};
use crate::systemd::{Systemd, SystemdError};

/// Where a run's report goes: the outbox, or held for a cascade.
pub(crate) struct Mailing<'a> {
    pub config: &'a crate::config::Config,
    pub state: &'a crate::state::StateDir,
    pub renderer: &'a Renderer,
    /// What a cascade's delivery timer runs: `selfheal flush` with this run's paths.
    pub flush_command: &'a [String],
    /// How to reach systemd when a cascade's delivery timer must be set (only then).
    pub systemd: fn() -> Result<Systemd, SystemdError>,
}

impl Mailing<'_> {
    /// Mails a run's report, or holds it for the cascade its run joined. Delivery never
    /// changes the run's outcome or exit code: a report that cannot be sent now stays in the
    /// outbox for `selfheal flush`, and the reason is logged.
    pub(crate) fn mail(&self, report: &Report, arrival: Option<&Arrival>) {
        let service = &report.header.service;
        let Some(arrival) = arrival else {
            self.mail_alone(report);
            return;
        };
        let Some(email) = self.config.email.as_ref() else {
            return;
        };
        let bursts = self.bursts();
        let decided = crate::notify::email::compose(
            email,
            self.config.owner.as_deref(),
            self.renderer,
            report,
        )
        .and_then(|composed| {
            bursts
                .report_ready(arrival, report, &composed)
                .map(|fate| (fate, composed))
        });
        match decided {
            Ok((Fate::MailNow, composed)) => log_delivery(
                service,
                crate::notify::email::deliver_composed(email, self.state, &composed).map(Some),
            ),
            Ok((Fate::Held { deliver_in }, _)) => {
                tracing::info!(selfheal_service = %service, "report held: other services failed in the same burst, they get one report");
                if let Some(after) = deliver_in {
                    match (self.systemd)() {
                        Ok(systemd) => {
                            crate::notify::cascade::schedule_delivery(
                                &systemd,
                                arrival,
                                after,
                                self.flush_command,
                            );
                        }
                        Err(err) => {
                            tracing::warn!("the cascade's delivery timer cannot be set: {err}");
                        }
                    }
                }
            }
            Ok((Fate::Delivered(stems), _)) => self.flush(&stems),
            Err(err) => {
                tracing::error!(selfheal_service = %service, "the cascade ledger failed ({err}); this report goes on its own");
                self.mail_alone(report);
            }
        }
    }

    /// Mails `report` on its own, now (through the outbox).
    fn mail_alone(&self, report: &Report) {
        log_delivery(
            &report.header.service,
            crate::notify::email::deliver_report(self.config, self.state, self.renderer, report),
        );
    }

    /// A run with nothing to mail leaves its burst, and sends what that releases.
    pub(crate) fn quiet(&self, arrival: &Arrival) {
        match self.bursts().quiet(arrival) {
            Ok(stems) if !stems.is_empty() => self.flush(&stems),
            Ok(_) => {}
            Err(err) => tracing::error!("the cascade ledger failed: {err}"),
        }
    }

    fn bursts(&self) -> crate::notify::cascade::Bursts<'_> {
        crate::notify::cascade::Bursts {
            config: self.config,
            state: self.state,
            renderer: self.renderer,
        }
    }

    /// Sends what the burst put in the outbox (and nothing else: a backlog is the flush
    /// timer's, not this heal unit's time).
    fn flush(&self, stems: &[String]) {
        match crate::notify::email::flush(self.config, self.state, Some(stems)) {
            Ok(summary) => {
                for meta in &summary.delivered {
                    tracing::info!(
                        "report {} sent ({})",
                        meta.envelope.message_id,
                        meta.envelope.subject
                    );
                }
                for (meta, error) in &summary.failed {
                    tracing::warn!(
                        "report {} kept in the outbox for `selfheal flush`: {error}",
                        meta.envelope.message_id
                    );
                }
            }
            Err(err) => tracing::error!("the outbox cannot be flushed: {err}"),
        }
    }
}

/// Logs what became of one report.
fn log_delivery(
    service: &str,
    delivery: Result<Option<crate::notify::email::Delivery>, crate::notify::NotifyError>,
) {
    use crate::notify::email::Delivery;
    match delivery {
        Ok(None) => {}
        Ok(Some(Delivery::Sent { message_id })) => {
            tracing::info!(selfheal_service = %service, "report {message_id} sent");
        }
        Ok(Some(Delivery::SentWithoutOutbox {
            message_id,
            outbox_error,
        })) => {
            tracing::error!(selfheal_service = %service, "report {message_id} sent directly: the outbox cannot be written ({outbox_error})");
        }
        Ok(Some(Delivery::Queued { message_id, error })) => {
            tracing::warn!(selfheal_service = %service, "report {message_id} kept in the outbox for `selfheal flush`: {error}");
        }
        Err(err) => {
            tracing::error!(selfheal_service = %service, "the report could not even be queued: {err}");
        }
    }
}
