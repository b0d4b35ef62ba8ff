//! `notify:` the channels beside email (webhooks, Alertmanager), and each one's identity in
//! the outbox. A webhook's URL is a secret (Slack and ntfy tokens are part of it), so the
//! config names only the root-only file that holds it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ui::duration::HumanDuration;

/// One entry of `notify:`: a single key naming the kind of channel.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ChannelConfig {
    Webhook(WebhookConfig),
    Alertmanager(AlertmanagerConfig),
}

/// `webhook:` a POST of every report worth a mail.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookConfig {
    /// The root-only file holding the URL.
    pub url_file: PathBuf,
    /// What is posted.
    #[serde(default)]
    pub format: WebhookFormat,
    /// Bound of one attempt (connect, send, answer).
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

/// The shapes a webhook can take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WebhookFormat {
    /// The run report, as `run --json` prints it.
    #[default]
    Json,
    /// A Slack incoming webhook: `{"text": …}`.
    Slack,
    /// An ntfy topic: the text, with `Title`, `Priority` and `Tags` headers.
    Ntfy,
}

/// `alertmanager:` alerts that fire while a service stays down and end when it is healed.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertmanagerConfig {
    /// Alertmanager's base URL; alerts are posted to `{url}/api/v2/alerts`.
    pub url: String,
    /// Labels added to every alert (team, environment, …).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Bound of one attempt.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

/// The labels every alert carries; `labels:` may not set them.
pub(crate) const ALERT_LABELS: [&str; 4] = ["alertname", "service", "host", "severity"];

impl WebhookFormat {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Json => "json",
            WebhookFormat::Slack => "slack",
            WebhookFormat::Ntfy => "ntfy",
        }
    }
}

impl ChannelConfig {
    /// The channel's directory in the outbox: its kind and a digest of where it posts (the
    /// URL file's path, Alertmanager's URL), so reordering `notify:` keeps each queue with its
    /// channel and no secret is part of a file name.
    pub(crate) fn id(&self) -> String {
        match self {
            ChannelConfig::Webhook(webhook) => format!(
                "webhook-{:08x}",
                fnv1a(webhook.url_file.as_os_str().as_encoded_bytes())
            ),
            ChannelConfig::Alertmanager(alertmanager) => {
                format!("alertmanager-{:08x}", fnv1a(alertmanager.url.as_bytes()))
            }
        }
    }

    /// What a person reads: `webhook (slack, URL in /etc/selfheal/slack-url)`,
    /// `alertmanager http://am:9093`; a user name and password in the URL are left out.
    pub(crate) fn describe(&self) -> String {
        match self {
            ChannelConfig::Webhook(webhook) => format!(
                "webhook ({}, URL in {})",
                webhook.format.as_str(),
                webhook.url_file.display()
            ),
            ChannelConfig::Alertmanager(alertmanager) => {
                format!("alertmanager {}", without_userinfo(&alertmanager.url))
            }
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        match self {
            ChannelConfig::Webhook(webhook) => webhook.timeout.into(),
            ChannelConfig::Alertmanager(alertmanager) => alertmanager.timeout.into(),
        }
    }
}

/// `scheme://user:pass@host/…` without `user:pass@`.
pub(crate) fn without_userinfo(url: &str) -> String {
    // Without a scheme (a URL check refuses it, quoting it) a login can still lead it.
    let (scheme, rest) = url
        .split_once("://")
        .map_or(("", url), |(scheme, rest)| (scheme, rest));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match (rest[..authority_end].rfind('@'), scheme) {
        (Some(at), "") => rest[at + 1..].to_owned(),
        (Some(at), scheme) => format!("{scheme}://{}", &rest[at + 1..]),
        (None, _) => url.to_owned(),
    }
}

/// 32-bit FNV-1a: stable across Rust releases, unlike `DefaultHasher`; a name, not a MAC.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

/// An `http://` or `https://` URL with a host: what a channel can post to.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("it must start with http:// or https://")?;
    let host = host_and_port(rest);
    if host.is_empty() || host.starts_with(':') {
        return Err("it has no host".into());
    }
    if url.contains(char::is_whitespace) || url.chars().any(char::is_control) {
        return Err("it holds spaces or control characters".into());
    }
    Ok(())
}

/// The host and port of a URL without its scheme (`ops:pw@am:9093/x` → `am:9093`).
fn host_and_port(after_scheme: &str) -> &str {
    let authority = after_scheme
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    authority.rsplit('@').next().unwrap_or_default()
}

/// Whether a request to `url` (checked by [`check_url`]) crosses the network unencrypted:
/// `http://` to a host other than this one's loopback.
pub(crate) fn in_clear_over_the_network(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host_port = host_and_port(rest);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    !loopback
}

/// The longest a channel's attempt may take: each holds the channel's queue, and a run that
/// queues a message waits for the sender before it.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

fn check_timeout(kind: &str, timeout: HumanDuration) -> Result<(), (&'static str, String)> {
    if timeout.0.is_zero() || timeout.0 > MAX_TIMEOUT {
        return Err((
            "timeout",
            format!(
                "{kind}.timeout must be longer than 0 and at most {} (it is {timeout})",
                HumanDuration(MAX_TIMEOUT)
            ),
        ));
    }
    Ok(())
}

/// Checks `notify:` when the config is loaded; an error names the key below the entry.
pub(crate) fn validate(channel: &ChannelConfig) -> Result<(), (&'static str, String)> {
    match channel {
        ChannelConfig::Webhook(webhook) => {
            super::require_absolute(&webhook.url_file)
                .map_err(|message| ("url_file", format!("webhook.url_file: {message}")))?;
            check_timeout("webhook", webhook.timeout)?;
        }
        ChannelConfig::Alertmanager(alertmanager) => {
            check_url(&alertmanager.url).map_err(|why| {
                (
                    "url",
                    format!(
                        "alertmanager.url {:?}: {why} (e.g. http://127.0.0.1:9093)",
                        without_userinfo(&alertmanager.url)
                    ),
                )
            })?;
            check_timeout("alertmanager", alertmanager.timeout)?;
            for name in alertmanager.labels.keys() {
                if ALERT_LABELS.contains(&name.as_str()) {
                    return Err((
                        "labels",
                        format!(
                            "alertmanager.labels: {name} is set by selfheal on every alert ({}); choose another label name",
                            ALERT_LABELS.join(", ")
                        ),
                    ));
                }
                if !is_label_name(name) {
                    return Err((
                        "labels",
                        format!(
                            "alertmanager.labels: {name:?} is not a Prometheus label name (letters, digits and _, not starting with a digit or __)"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, without the `__` Prometheus keeps for itself.
fn is_label_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_shown_without_credentials() {
        assert!(check_url("http://127.0.0.1:9093").is_ok());
        assert!(check_url("https://am.example.org/prefix").is_ok());
        assert!(check_url("ftp://am").is_err());
        assert!(check_url("http://").is_err());
        assert!(check_url("http://a b").is_err());
        assert_eq!(
            without_userinfo("https://ops:s3cret@am.example.org/x@y"),
            "https://am.example.org/x@y"
        );
        assert_eq!(without_userinfo("http://am:9093"), "http://am:9093");
        assert_eq!(without_userinfo("ops:s3cret@am:9093"), "am:9093");
    }

    #[test]
    fn only_http_to_another_host_is_in_clear() {
        for local in [
            "http://127.0.0.1:8080/hook/tok",
            "http://localhost/hook",
            "http://[::1]:9/x",
            "https://hooks.slack.com/services/T/B/x",
        ] {
            assert!(!in_clear_over_the_network(local), "{local}");
        }
        for remote in [
            "http://ntfy.example.org/ops",
            "http://10.0.0.5:80/x",
            "http://user@127.0.0.1.example.org/x",
        ] {
            assert!(in_clear_over_the_network(remote), "{remote}");
        }
    }

    #[test]
    fn a_channel_keeps_its_outbox_when_the_list_is_reordered() {
        let webhook = |path: &str| {
            ChannelConfig::Webhook(WebhookConfig {
                url_file: path.into(),
                format: WebhookFormat::Slack,
                timeout: default_timeout(),
            })
        };
        assert_eq!(webhook("/etc/a").id(), webhook("/etc/a").id());
        assert_ne!(webhook("/etc/a").id(), webhook("/etc/b").id());
        assert!(webhook("/etc/a").id().starts_with("webhook-"));
    }
}
