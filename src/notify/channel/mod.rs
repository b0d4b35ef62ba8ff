//! The channels beside email (`notify:`): webhooks (JSON, Slack, ntfy) and Alertmanager.
//! Every message goes through its channel's queue in the outbox, so a channel that is down
//! keeps it for `selfheal flush`; channels are served each in its own thread, every attempt
//! bounded, so one that hangs delays neither the others nor the mail.

pub(crate) mod alerts;
mod brief;
mod error;
mod http;
pub(crate) mod payload;
mod queue;
mod url_tag;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::config::notify::ChannelConfig;
use crate::report::Report;
use crate::state::StateDir;
use crate::ui::when::Timestamp;
use alerts::{Alert, AlertState, Change};
pub(crate) use error::ChannelError;
use http::Failure;
pub(crate) use queue::{Queue, Round};

/// An HTTP request as queued: everything but the channel's URL, which is read from the
/// config (or its secret file) at each attempt and never written down.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Request {
    /// Appended to the channel's URL (`/api/v2/alerts`); empty for a webhook.
    pub path: String,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    fn json(body: String, headers: Vec<(String, String)>) -> Request {
        Request {
            path: String::new(),
            content_type: "application/json".to_owned(),
            headers,
            body,
        }
    }
}

/// One queued message of a channel, with its delivery record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Message {
    pub service: String,
    /// What it is, for people: `report failed`, `alert firing`, `alert resolved`, `test`.
    pub what: String,
    /// To the millisecond.
    pub queued_at: Timestamp,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// A webhook's: the tag of the URL it was queued for (`url_tag`; never the URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_url: Option<String>,
    pub request: Request,
}

impl Message {
    fn new(service: &str, what: String, request: Request) -> Message {
        Message {
            service: service.to_owned(),
            what,
            queued_at: Timestamp::now_millis(),
            attempts: 0,
            last_error: None,
            for_url: None,
            request,
        }
    }
}

/// What one channel did in a delivery: its round, or why its queue could not be used.
#[derive(Debug)]
pub(crate) struct ChannelRound {
    /// `ChannelConfig::describe`.
    pub channel: String,
    pub round: Result<Round, ChannelError>,
    /// Open alerts sent again (flush, Alertmanager only).
    pub refreshed: usize,
}

/// The URL a channel posts to: a webhook's from its root-only file, Alertmanager's from the
/// config. An error names the file, never what is in it.
fn base_url(channel: &ChannelConfig) -> Result<String, ChannelError> {
    match channel {
        ChannelConfig::Webhook(webhook) => {
            let url = crate::host::secret::read_root_only(&webhook.url_file)
                .map_err(ChannelError::Secret)?;
            crate::config::notify::check_url(&url).map_err(|why| {
                ChannelError::Secret(format!(
                    "the URL in {} is not usable: {why}",
                    webhook.url_file.display()
                ))
            })?;
            Ok(url)
        }
        ChannelConfig::Alertmanager(alertmanager) => {
            Ok(alertmanager.url.trim_end_matches('/').to_owned())
        }
    }
}

/// One attempt to deliver `request` on `channel`.
fn send(channel: &ChannelConfig, request: &Request) -> Result<(), Failure> {
    let base = base_url(channel).map_err(|err| Failure::Retry(err.to_string()))?;
    post(channel, &base, request)
}

/// One attempt to deliver `request` to `base`, the URL `channel` posts to.
fn post(channel: &ChannelConfig, base: &str, request: &Request) -> Result<(), Failure> {
    // A webhook's URL is its secret, and receivers quote it in their errors.
    let answer = match channel {
        ChannelConfig::Webhook(_) => http::Answer::StatusOnly,
        ChannelConfig::Alertmanager(_) => http::Answer::WithBody,
    };
    http::post(
        &format!("{base}{}", request.path),
        request,
        channel.timeout(),
        answer,
    )
}

/// One attempt to deliver a queued message. A webhook message queued for another URL than
/// its file holds now is refused here, never sent to the new one.
fn send_queued(
    state: &StateDir,
    channel: &ChannelConfig,
    message: &Message,
) -> Result<(), Failure> {
    let base = base_url(channel).map_err(|err| Failure::Retry(err.to_string()))?;
    if let (ChannelConfig::Webhook(webhook), Some(queued_for)) = (channel, &message.for_url)
        && url_tag::tag(state, &base).map_err(|err| Failure::Retry(err.to_string()))? != *queued_for
    {
        return Err(Failure::Refused(format!(
            "it was queued for another URL than {} holds now, and is not sent to the new one",
            webhook.url_file.display()
        )));
    }
    post(channel, &base, &message.request)
}

/// The tag of the URL a channel's messages are queued for: webhooks only (Alertmanager's
/// URL names its queue), none when the URL cannot be read now.
fn queued_for(state: &StateDir, channel: &ChannelConfig) -> Option<String> {
    match channel {
        ChannelConfig::Webhook(_) => base_url(channel)
            .and_then(|url| url_tag::tag(state, &url))
            .ok(),
        ChannelConfig::Alertmanager(_) => None,
    }
}

/// What `selfheal check` can find out without sending: each webhook's URL file (owner, mode,
/// an http(s) URL in it) as problems, and a token that would cross the network in clear as a
/// warning.
pub(crate) fn preflight(config: &Config) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    for (index, channel) in config.notify.iter().enumerate() {
        if !matches!(channel, ChannelConfig::Webhook(_)) {
            continue;
        }
        let name = format!("notify[{index}] {}", channel.describe());
        match base_url(channel) {
            Err(why) => problems.push(format!("{name}: {why}")),
            Ok(url) if crate::config::notify::in_clear_over_the_network(&url) => {
                warnings.push(format!(
                    "{name}: the URL is http:// to another host, so its token crosses the network unencrypted; use https://"
                ));
            }
            Ok(_) => {}
        }
    }
    (problems, warnings)
}

/// The message a channel gets for a run's report and its alert change, if any: webhooks get
/// the reports worth a mail, Alertmanager the alert changes.
fn message_for(
    channel: &ChannelConfig,
    report: &Report,
    subject: &str,
    change: Option<&Change>,
) -> Option<Message> {
    let service = &report.header.service;
    match channel {
        ChannelConfig::Webhook(webhook) => crate::notify::email::worth_mailing(report).then(|| {
            Message::new(
                service,
                format!("report {}", report.facts.outcome),
                payload::webhook(webhook.format, report, subject),
            )
        }),
        ChannelConfig::Alertmanager(alertmanager) => change.map(|change| match change {
            Change::Fire(alert) => {
                alert_message(alert, &alertmanager.labels, AlertState::firing_now())
            }
            Change::Resolve(alert) => {
                alert_message(alert, &alertmanager.labels, AlertState::resolved_now())
            }
        }),
    }
}

fn alert_message(
    alert: &Alert,
    labels: &std::collections::BTreeMap<String, String>,
    state: AlertState,
) -> Message {
    let what = match state {
        AlertState::Firing { .. } => "alert firing",
        AlertState::Resolved { .. } => "alert resolved",
    };
    Message::new(
        &alert.service,
        what.to_owned(),
        payload::alert(alert, labels, state),
    )
}

/// Sends a run's report on every channel: each channel's message is queued, then the
/// channel's queue is delivered in order, all channels at once. Returns what each did.
pub(crate) fn deliver(
    config: &Config,
    state: &StateDir,
    report: &Report,
    subject: &str,
) -> Vec<ChannelRound> {
    let alerting = config
        .notify
        .iter()
        .any(|channel| matches!(channel, ChannelConfig::Alertmanager(_)));
    // Two runs of a service can end together (a hook run and a manual one): the alert
    // change each makes and the message it queues happen as one, so queues hold them in
    // the order the alert file saw them.
    let alerts_lock = alerting.then(|| alerts::lock(state)).flatten();
    let change = alerting
        .then(|| alerts::change_for(state, report, subject))
        .flatten();
    let guard = alerting
        .then(|| alerts::guard_change_for(report, subject))
        .flatten();
    let work: Vec<(&ChannelConfig, Vec<Message>)> = config
        .notify
        .iter()
        .filter_map(|channel| {
            let mut messages: Vec<Message> = message_for(channel, report, subject, change.as_ref())
                .into_iter()
                .collect();
            if let (ChannelConfig::Alertmanager(alertmanager), Some((alert, state))) =
                (channel, &guard)
            {
                messages.push(alert_message(alert, &alertmanager.labels, *state));
            }
            (!messages.is_empty()).then_some((channel, messages))
        })
        .collect();
    let queued = queue_all(state, work);
    drop(alerts_lock);
    serve(state, queued, false)
}

/// Delivers every channel's queue (what `selfheal flush` does), first queueing the resolve of
/// each open alert whose service `is_up` says is up again; then sends the other open alerts
/// again on each Alertmanager channel that has nothing left queued.
pub(crate) fn flush(
    config: &Config,
    state: &StateDir,
    is_up: impl Fn(&str) -> bool,
) -> Vec<ChannelRound> {
    let alerts_lock = alerts::lock(state);
    let mut resolved = Vec::new();
    for alert in alerts::open_alerts(state) {
        if is_up(&alert.service) {
            alerts::close(state, &alert.service);
            resolved.push(alert);
        }
    }
    let work: Vec<(&ChannelConfig, Vec<Message>)> = config
        .notify
        .iter()
        .map(|channel| {
            let messages = match channel {
                ChannelConfig::Alertmanager(alertmanager) => resolved
                    .iter()
                    .map(|alert| {
                        alert_message(alert, &alertmanager.labels, AlertState::resolved_now())
                    })
                    .collect(),
                ChannelConfig::Webhook(_) => Vec::new(),
            };
            (channel, messages)
        })
        .collect();
    let queued = queue_all(state, work);
    drop(alerts_lock);
    serve(state, queued, true)
}

/// Each channel's queue with `work`'s messages added to it, or why that failed.
fn queue_all<'c>(
    state: &StateDir,
    work: Vec<(&'c ChannelConfig, Vec<Message>)>,
) -> Vec<(&'c ChannelConfig, Result<Queue, ChannelError>)> {
    work.into_iter()
        .map(|(channel, messages)| {
            let for_url = (!messages.is_empty())
                .then(|| queued_for(state, channel))
                .flatten();
            let queue = Queue::open(state, &channel.id()).and_then(|queue| {
                for message in messages {
                    queue.push(&Message {
                        for_url: for_url.clone(),
                        ..message
                    })?;
                }
                Ok(queue)
            });
            (channel, queue)
        })
        .collect()
}

/// Delivers each channel's queue, every channel in its own thread. With `refresh`, an
/// Alertmanager channel whose queue emptied also gets the open alerts again (not queued: the
/// next flush sends them anyway).
fn serve(
    state: &StateDir,
    queues: Vec<(&ChannelConfig, Result<Queue, ChannelError>)>,
    refresh: bool,
) -> Vec<ChannelRound> {
    std::thread::scope(|scope| {
        let threads: Vec<_> = queues
            .into_iter()
            .map(|(channel, queue)| {
                scope.spawn(move || {
                    // Open alerts are sent again as the channel's sender, so a run that
                    // resolves one meanwhile sends its resolve after this fire, not before.
                    let refresh_alerts = |round: &Round| match channel {
                        ChannelConfig::Alertmanager(alertmanager)
                            if refresh && round.failed.is_none() =>
                        {
                            refresh_open_alerts(state, channel, &alertmanager.labels)
                        }
                        _ => 0,
                    };
                    let (round, refreshed) = match queue.and_then(|queue| {
                        queue.deliver(
                            |message| send_queued(state, channel, message),
                            refresh_alerts,
                        )
                    }) {
                        Ok((round, refreshed)) => (Ok(round), refreshed),
                        Err(error) => (Err(error), 0),
                    };
                    ChannelRound {
                        channel: channel.describe(),
                        round,
                        refreshed,
                    }
                })
            })
            .collect();
        threads
            .into_iter()
            .filter_map(|thread| thread.join().ok())
            .collect()
    })
}

/// Sends every open alert again, firing, until the channel fails one; how many it took.
fn refresh_open_alerts(
    state: &StateDir,
    channel: &ChannelConfig,
    labels: &std::collections::BTreeMap<String, String>,
) -> usize {
    alerts::open_alerts(state)
        .iter()
        .map(|alert| alert_message(alert, labels, AlertState::firing_now()))
        .take_while(|message| send(channel, &message.request).is_ok())
        .count()
}

/// Channel queues in the outbox that no channel of the config owns any more (it was removed
/// or its URL file or URL changed), with the messages each still holds.
pub(crate) fn orphans(config: &Config, state: &StateDir) -> Vec<(std::path::PathBuf, usize)> {
    let known: Vec<String> = config.notify.iter().map(ChannelConfig::id).collect();
    let Ok(entries) = std::fs::read_dir(state.root().join("outbox")) else {
        return Vec::new();
    };
    let mut found: Vec<(std::path::PathBuf, usize)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = name.starts_with("webhook-") || name.starts_with("alertmanager-");
            if !ours || known.contains(&name) {
                return None;
            }
            let (queued, _) = Queue::backlog(state, &name);
            (queued > 0).then(|| (entry.path(), queued))
        })
        .collect();
    found.sort();
    found
}

/// Logs what each channel did with a run's messages.
pub(crate) fn log_rounds(service: &str, rounds: &[ChannelRound]) {
    for ChannelRound { channel, round, .. } in rounds {
        match round {
            Ok(round) => {
                for message in &round.delivered {
                    tracing::info!(selfheal_service = %service, "{channel}: {} sent", message.what);
                }
                if let Some((message, error)) = &round.failed {
                    tracing::warn!(selfheal_service = %service, "{channel}: {} kept in the outbox for `selfheal flush` ({} queued): {error}", message.what, round.waiting + 1);
                }
                for (message, error, aside) in &round.refused {
                    tracing::error!(selfheal_service = %service, "{channel}: {} of {} refused for good, set aside in {}: {error}", message.what, message.service, aside.display());
                }
            }
            Err(error) => {
                tracing::error!(selfheal_service = %service, "{channel}: the message could not even be queued: {error}");
            }
        }
    }
}

/// `selfheal test-notify`: one test message straight to each channel (not queued); what each
/// channel answered.
pub(crate) fn test(
    config: &Config,
    report: &Report,
    subject: &str,
) -> Vec<(String, Result<(), String>)> {
    std::thread::scope(|scope| {
        let threads: Vec<_> = config
            .notify
            .iter()
            .map(|channel| {
                scope.spawn(move || {
                    let request = match channel {
                        ChannelConfig::Webhook(webhook) => {
                            payload::webhook(webhook.format, report, subject)
                        }
                        ChannelConfig::Alertmanager(alertmanager) => {
                            let (alert, until) = alerts::test_alert(&report.header.host, subject);
                            payload::alert(
                                &alert,
                                &alertmanager.labels,
                                AlertState::Firing { until },
                            )
                        }
                    };
                    let answer = send(channel, &request).map_err(|failure| failure.to_string());
                    (channel.describe(), answer)
                })
            })
            .collect();
        threads
            .into_iter()
            .filter_map(|thread| thread.join().ok())
            .collect()
    })
}
