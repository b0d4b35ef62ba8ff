//! `selfheal receive`: Alertmanager's webhook receiver (what `selfheal-receiver.service` runs,
//! socket-activated by `selfheal-receiver.socket`). A `POST /alertmanager` with the bearer
//! token starts `selfheal@<service>.service` for each firing alert that names a service
//! selfheal heals on this host; the run does the rest as for any other start (loop
//! protection, pauses, the guard), and its report names the alert. How connections are taken
//! and bounded: [`connections`].

pub(crate) mod alertmanager;
mod connections;
pub(crate) mod http;
pub(crate) mod token;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

use crate::config::Config;
use crate::state::StateDir;
use crate::state::alerts::FiringAlert;
use crate::systemd::{ActiveState, SystemdError, UnitControl};
use alertmanager::{ThisHost, Verdict};
pub(crate) use token::Token;

/// The path Alertmanager's `webhook_configs` posts to.
pub(crate) const PATH: &str = "/alertmanager";

/// What the receiver keeps for its whole life.
pub(crate) struct Receiver<'a, U> {
    config: &'a Config,
    state: &'a StateDir,
    /// Read at every post: a rotated token counts at once.
    token_file: &'a Path,
    this_host: ThisHost,
    connect: &'a (dyn Fn() -> Result<U, SystemdError> + Sync),
    /// One post's heals at a time: the checks for a repeat and for a heal under way, and the
    /// start, are one step.
    starting: Mutex<()>,
}

/// The answer to a post that was read: what started, what did not and why.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Answer {
    pub started: Vec<Started>,
    pub ignored: Vec<Ignored>,
    /// A start failed: Alertmanager is asked to post again (503).
    #[serde(skip)]
    pub post_again: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct Started {
    pub service: String,
    pub alertname: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct Ignored {
    pub alertname: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub why: String,
}

/// A heal a post asks for.
struct Asked {
    service: String,
    heal_unit: String,
    alert: FiringAlert,
}

impl<'a, U: UnitControl> Receiver<'a, U> {
    pub(crate) fn new(
        config: &'a Config,
        state: &'a StateDir,
        token_file: &'a Path,
        this_host: ThisHost,
        connect: &'a (dyn Fn() -> Result<U, SystemdError> + Sync),
    ) -> Receiver<'a, U> {
        Receiver {
            config,
            state,
            token_file,
            this_host,
            connect,
            starting: Mutex::new(()),
        }
    }

    /// A post with the token: each alert judged, the heals started. (status, type, body)
    fn post(&self, body: &[u8]) -> (u16, &'static str, String) {
        let now = SystemTime::now();
        let verdicts = match alertmanager::judge(body, self.config, &self.this_host, now) {
            Ok(verdicts) => verdicts,
            Err(unreadable) => return (400, "text/plain", unreadable.answer().to_owned()),
        };
        match self.start_heals(verdicts, now) {
            Ok(answer) => (
                if answer.post_again { 503 } else { 200 },
                "application/json",
                serde_json::to_string(&answer).unwrap_or_default() + "\n",
            ),
            // Alertmanager posts again after a 5xx.
            Err(err) => {
                tracing::error!("cannot start heals, systemd did not answer: {err}");
                (
                    503,
                    "text/plain",
                    "systemd did not answer; post again\n".to_owned(),
                )
            }
        }
    }

    /// Starts the heal unit of each service the alerts ask for, once: not for a repeat of an
    /// alert that started a heal within the hour, nor while a heal of the service is queued or
    /// running (the alert joins it: recorded, so its repeats start nothing either).
    fn start_heals(&self, verdicts: Vec<Verdict>, now: SystemTime) -> Result<Answer, SystemdError> {
        let mut answer = Answer::default();
        let mut asked = Vec::new();
        for verdict in verdicts {
            match verdict {
                Verdict::Heal {
                    service,
                    heal_unit,
                    alert,
                } => asked.push(Asked {
                    service,
                    heal_unit,
                    alert,
                }),
                Verdict::Ignored {
                    alertname,
                    service,
                    why,
                } => {
                    tracing::info!("alert {alertname} starts nothing: {why}");
                    answer.ignored.push(Ignored {
                        alertname,
                        service,
                        why,
                    });
                }
            }
        }
        if asked.is_empty() {
            return Ok(answer);
        }
        let _one_at_a_time = self
            .starting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let systemd = (self.connect)()?;
        let mut units: Vec<&str> = asked.iter().map(|a| a.heal_unit.as_str()).collect();
        units.sort_unstable();
        units.dedup();
        let states = systemd.loaded_states(&units)?;
        let mut going: BTreeSet<String> = states
            .iter()
            .filter(|heal| {
                heal.job_queued
                    || matches!(
                        heal.active_state,
                        ActiveState::Active | ActiveState::Activating
                    )
            })
            .map(|heal| heal.id.clone())
            .collect();
        for mut one in asked {
            let loaded = states
                .iter()
                .find(|heal| heal.id == one.heal_unit)
                .map_or("not-found", |heal| heal.load_state.as_str());
            if let Some(why) = self.why_not(&mut one, loaded, &going, now) {
                tracing::info!(selfheal_service = %one.service, "alert {} starts nothing: {why}", one.alert.alertname);
                answer.ignored.push(Ignored {
                    alertname: one.alert.alertname,
                    service: Some(one.service),
                    why,
                });
                continue;
            }
            self.start(&systemd, one, &mut going, &mut answer);
        }
        Ok(answer)
    }

    /// Why `one` starts nothing, if it does not: a repeat of an alert that started a heal within
    /// the hour, a heal unit that is not loaded, a heal under way (`going`; the alert joins it,
    /// recorded as taken, so that its repeats start nothing either).
    fn why_not(
        &self,
        one: &mut Asked,
        loaded: &str,
        going: &BTreeSet<String>,
        now: SystemTime,
    ) -> Option<String> {
        let Asked {
            service,
            heal_unit,
            alert,
        } = one;
        if let Some(earlier) = self.state.repeated_alert(service, alert, now) {
            return Some(format!(
                "a repeat of the alert that started its heal at {}",
                earlier.received_at.readable()
            ));
        }
        if loaded != "loaded" {
            return Some(format!(
                "{heal_unit} is {loaded} (selfheal install writes it)"
            ));
        }
        if going.contains(heal_unit.as_str()) {
            alert.taken = true;
            self.record(service, alert);
            return Some(format!("{heal_unit} is healing it now"));
        }
        None
    }

    /// Records `one`'s alert (the run reads which alert started it), then starts its heal
    /// unit; a start that fails forgets the alert and asks Alertmanager to post again.
    fn start(&self, systemd: &U, one: Asked, going: &mut BTreeSet<String>, answer: &mut Answer) {
        let Asked {
            service,
            heal_unit,
            alert,
        } = one;
        self.record(&service, &alert);
        match systemd.start_no_wait(&heal_unit) {
            Ok(()) => {
                tracing::warn!(selfheal_service = %service, "alert {} is firing: {heal_unit} started", alert.alertname);
                going.insert(heal_unit);
                answer.started.push(Started {
                    service,
                    alertname: alert.alertname,
                });
            }
            Err(err) => {
                tracing::error!(selfheal_service = %service, "starting {heal_unit} failed: {err}");
                if let Err(err) = self.state.forget_alert(&service, &alert) {
                    tracing::error!(selfheal_service = %service, "{err}");
                }
                answer.post_again = true;
                answer.ignored.push(Ignored {
                    alertname: alert.alertname,
                    service: Some(service),
                    why: format!("starting {heal_unit} failed: {err}"),
                });
            }
        }
    }

    /// Records `alert` for `service`; one that cannot be recorded is logged (the heal starts
    /// all the same; its report will not name the alert).
    fn record(&self, service: &str, alert: &FiringAlert) {
        if let Err(err) = self.state.record_alert(service, alert) {
            tracing::error!(selfheal_service = %service, "the alert cannot be recorded: {err}");
        }
    }
}
