//! Releasing a burst: a run's report mailed now or held, and a complete burst delivered as one
//! cascade mail (or its held mails one by one), by whoever sees it complete.

use std::collections::BTreeSet;

use serde_json::Value;

use super::ledger::{LEDGER, release_held, with_ledger};
use super::{Arrival, Burst, Fate, MemberState, Rule, alive, now};
use crate::config::Config;
use crate::notify::email::{Composed, Outbox};
use crate::report::{CascadeReport, Renderer, Report};
use crate::state::StateDir;

/// The bursts of the ledger, and what delivering them needs: a ready or quiet run settles its
/// burst, `flush` delivers the complete ones.
pub(crate) struct Bursts<'a> {
    pub config: &'a Config,
    pub state: &'a StateDir,
    pub renderer: &'a Renderer,
}

impl Bursts<'_> {
    /// A run's report is ready (`composed` is its mail): mail it now, hold it, or complete the
    /// burst with it.
    pub(crate) fn report_ready(
        &self,
        arrival: &Arrival,
        report: &Report,
        composed: &Composed,
    ) -> Result<Fate, crate::notify::NotifyError> {
        let rule = Rule::of(self.config).expect("an arrival means cascades are on");
        let json = serde_json::to_vec(report)?;
        with_ledger(self.state, |ledger| {
            let now = now();
            let Some(burst) = ledger
                .bursts
                .iter_mut()
                .find(|b| b.started_at == arrival.burst)
            else {
                return Ok(Fate::MailNow);
            };
            if burst.failing_now(arrival.pid, &alive).is_empty() {
                if let Some(me) = burst.member(arrival.pid) {
                    me.state = MemberState::Mailed;
                }
                return Ok(Fate::MailNow);
            }
            let held = Outbox::held(self.state)?;
            held.keep_report(&composed.stem, &json)?;
            drop(held.queue(composed)?);
            if let Some(me) = burst.member(arrival.pid) {
                me.state = MemberState::Held {
                    stem: composed.stem.clone(),
                };
            }
            if burst.complete(rule, now, &alive) {
                return Ok(Fate::Delivered(self.deliver(burst, rule)?));
            }
            let deliver_in = burst.closes_in(rule, now);
            Ok(Fate::Held { deliver_in })
        })
    }

    /// A run that has nothing to mail: it leaves its burst, which may complete with it, or
    /// leave a report held that is alone after all (it goes out now). Returns the messages it
    /// put into the outbox.
    pub(crate) fn quiet(
        &self,
        arrival: &Arrival,
    ) -> Result<Vec<String>, crate::notify::NotifyError> {
        let Some(rule) = Rule::of(self.config) else {
            return Ok(Vec::new());
        };
        with_ledger(self.state, |ledger| {
            let Some(burst) = ledger
                .bursts
                .iter_mut()
                .find(|b| b.started_at == arrival.burst)
            else {
                return Ok(Vec::new());
            };
            if let Some(me) = burst.member(arrival.pid) {
                me.state = MemberState::Quiet;
            }
            let running = burst
                .members
                .iter()
                .any(|m| matches!(m.state, MemberState::Running) && alive(m));
            let failed: BTreeSet<&str> = burst
                .members
                .iter()
                .filter(|m| matches!(m.state, MemberState::Held { .. } | MemberState::Mailed))
                .map(|m| m.service.as_str())
                .collect();
            let alone = !running && failed.len() < 2;
            if burst.holds() && (alone || burst.complete(rule, now(), &alive)) {
                return self.deliver(burst, rule);
            }
            Ok(Vec::new())
        })
    }

    /// Delivers every complete burst that holds reports (what `flush` does first); returns
    /// how many.
    pub(crate) fn due(&self) -> Result<usize, crate::notify::NotifyError> {
        let Some(rule) = Rule::of(self.config) else {
            // Cascades turned off since: what is held goes out on its own.
            return self.release_all();
        };
        if !self.state.root().join(LEDGER).exists() {
            return Ok(0);
        }
        with_ledger(self.state, |ledger| {
            let now = now();
            let mut delivered = 0;
            for burst in &mut ledger.bursts {
                if burst.holds() && burst.complete(rule, now, &alive) {
                    match self.deliver(burst, rule) {
                        Ok(_) => delivered += 1,
                        Err(err) => tracing::error!(
                            "the cascade of {} cannot be delivered yet: {err}",
                            burst.started_at
                        ),
                    }
                }
            }
            Ok(delivered)
        })
    }

    fn release_all(&self) -> Result<usize, crate::notify::NotifyError> {
        if !self.state.root().join(LEDGER).exists() {
            return Ok(0);
        }
        with_ledger(self.state, |ledger| {
            let mut released = 0;
            for burst in &mut ledger.bursts {
                released += release_held(self.state, burst);
            }
            Ok(released)
        })
    }

    /// Puts a complete burst's held reports into the outbox: one cascade mail when it has at
    /// least `rule.services` services, else each on its own. Returns the stems it queued. The
    /// caller holds the ledger.
    fn deliver(
        &self,
        burst: &mut Burst,
        rule: Rule,
    ) -> Result<Vec<String>, crate::notify::NotifyError> {
        let held_outbox = Outbox::held(self.state)?;
        let outbox = Outbox::open(self.state)?;
        let mut held = Vec::new();
        let mut mailed = BTreeSet::new();
        for member in &burst.members {
            match &member.state {
                MemberState::Held { stem } => held.push((stem.clone(), member.service.clone())),
                MemberState::Mailed => {
                    mailed.insert(member.service.clone());
                }
                _ => {}
            }
        }
        let held_services: BTreeSet<&str> = held.iter().map(|(_, s)| s.as_str()).collect();
        mailed.retain(|service| !held_services.contains(service.as_str()));
        let services = held_services.len() + mailed.len();
        let reports: Vec<Value> = held
            .iter()
            .filter_map(|(stem, _)| held_outbox.kept_report(stem))
            .collect();
        let mut queued = Vec::new();
        match self.config.email.as_ref() {
            // Every held report is readable: they fold into one mail.
            Some(email) if services >= rule.services && reports.len() == held.len() => {
                let cascade = CascadeReport::new(
                    self.config.system_name(),
                    crate::host::hostname(),
                    crate::ui::duration::HumanDuration(rule.within).to_string(),
                    reports,
                    mailed.into_iter().collect(),
                );
                let composed = crate::notify::email::compose(
                    email,
                    self.config.owner.as_deref(),
                    self.renderer,
                    &cascade,
                )?;
                drop(outbox.queue(&composed)?);
                queued.push(composed.stem.clone());
                // The cascade mail is queued: a held file that will not go away must not
                // make the next flush send it a second time.
                for (stem, _) in &held {
                    if let Err(err) = held_outbox.discard(stem) {
                        tracing::error!("a folded report stays in outbox/held: {err}");
                    }
                }
                tracing::info!(
                    "cascade: one report for {services} services that failed within {}",
                    cascade.window
                );
            }
            _ => {
                for (stem, _) in &held {
                    held_outbox.release(stem, &outbox)?;
                    queued.push(stem.clone());
                }
            }
        }
        for member in &mut burst.members {
            if matches!(member.state, MemberState::Held { .. }) {
                member.state = MemberState::Mailed;
            }
        }
        Ok(queued)
    }
}
