//! Alertmanager's webhook payload (version 4) and what selfheal does with each alert in it:
//! a firing alert whose `service` label names a service selfheal heals, on this host, starts
//! that service's heal; every other alert is answered and starts nothing.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Deserialize;

use crate::config::Config;
use crate::state::alerts::FiringAlert;
use crate::ui::terminal::{cut, printable};
use crate::ui::when::Timestamp;

/// The payload's parts selfheal reads.
#[derive(Debug, Deserialize)]
struct Payload {
    version: String,
    #[serde(default)]
    alerts: Vec<Alert>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Alert {
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: String,
    #[serde(default)]
    starts_at: String,
    #[serde(default)]
    fingerprint: String,
}

/// What one alert of a payload comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Start the heal of `service` (the config's name), because of `alert`.
    Heal {
        service: String,
        heal_unit: String,
        alert: FiringAlert,
    },
    /// Nothing to start, and why (said in the answer and the journal).
    Ignored {
        alertname: String,
        service: Option<String>,
        why: String,
    },
}

/// The names by which an alert's `host` or `instance` label means this host: its host name,
/// `localhost`, the loopback addresses and the config's `receiver.names` (its addresses,
/// aliases). A short name and a qualified one meet when their first labels agree (`web1` and
/// `web1.example.org`); two qualified names must be equal (`web1.dc1` is not `web1.dc2`).
#[derive(Debug, Clone)]
pub(crate) struct ThisHost {
    hostname: String,
    names: Vec<String>,
}

impl ThisHost {
    pub(crate) fn named(hostname: &str, also: &[String]) -> ThisHost {
        let hostname = hostname.to_ascii_lowercase();
        let mut names = vec![hostname.clone()];
        names.extend(["localhost", "127.0.0.1", "::1"].map(str::to_owned));
        names.extend(also.iter().map(|name| host_part(name).to_ascii_lowercase()));
        ThisHost { hostname, names }
    }

    /// True when `label` (`web1`, `web1.example.org:9100`, `[::1]:9100`) names this host.
    fn is(&self, label: &str) -> bool {
        let host = host_part(label).to_ascii_lowercase();
        if self.names.contains(&host) {
            return true;
        }
        if host.parse::<std::net::IpAddr>().is_ok() {
            return false;
        }
        let first_label = |name: &str| {
            name.split_once('.')
                .map_or((name.to_owned(), false), |(short, _)| {
                    (short.to_owned(), true)
                })
        };
        let (short, qualified) = first_label(&host);
        let (own_short, own_qualified) = first_label(&self.hostname);
        !short.is_empty() && short == own_short && !(qualified && own_qualified)
    }
}

/// `label` without its port (and an IPv6 address without its brackets).
fn host_part(label: &str) -> &str {
    if let Some(inner) = label.strip_prefix('[') {
        return inner.split(']').next().unwrap_or(inner);
    }
    match label.rsplit_once(':') {
        // One colon: host:port. More: a bare IPv6 address.
        Some((host, port))
            if !host.contains(':')
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            host
        }
        _ => label,
    }
}

/// The payload is not one selfheal reads: the answer's fixed text (it quotes nothing sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unreadable {
    NotJson,
    NotVersion4,
}

impl Unreadable {
    pub(crate) fn answer(self) -> &'static str {
        match self {
            Unreadable::NotJson => "the body is not an Alertmanager webhook payload\n",
            Unreadable::NotVersion4 => "only Alertmanager's webhook payload version 4 is read\n",
        }
    }
}

/// Each alert of `body`, judged on its own (which of several alerts naming one service starts
/// its heal is the receiver's to say: a repeat must not hide a new one).
pub(crate) fn judge(
    body: &[u8],
    config: &Config,
    this_host: &ThisHost,
    now: SystemTime,
) -> Result<Vec<Verdict>, Unreadable> {
    let payload: Payload = serde_json::from_slice(body).map_err(|_| Unreadable::NotJson)?;
    if payload.version != "4" {
        return Err(Unreadable::NotVersion4);
    }
    Ok(payload
        .alerts
        .into_iter()
        .map(|alert| judge_one(alert, config, this_host, now))
        .collect())
}

fn judge_one(alert: Alert, config: &Config, this_host: &ThisHost, now: SystemTime) -> Verdict {
    let alertname = quoted(
        alert.labels.get("alertname").map_or("", String::as_str),
        200,
    );
    let named = alert.labels.get("service").map(|name| quoted(name, 200));
    let ignored = |why: String| Verdict::Ignored {
        alertname: alertname.clone(),
        service: named.clone(),
        why,
    };
    if alert.status != "firing" {
        return ignored(format!(
            "{} alert: only firing alerts start a heal",
            quoted(&alert.status, 20)
        ));
    }
    let Some(name) = alert.labels.get("service") else {
        return ignored("no service label: selfheal heals the service it names".to_owned());
    };
    let Some(entry) = config.entry(name) else {
        return ignored("not a service selfheal heals on this host".to_owned());
    };
    // `host` says which host most precisely; `instance` is often an address and a port.
    let where_ = alert
        .labels
        .get("host")
        .map(|host| ("host", host))
        .or_else(|| alert.labels.get("instance").map(|i| ("instance", i)));
    if let Some((label, value)) = where_
        && !this_host.is(value)
    {
        return ignored(format!(
            "its {label} label {} is another host",
            quoted(value, 200)
        ));
    }
    let fingerprint = if alert.fingerprint.is_empty() {
        format!("{:?}", alert.labels)
    } else {
        alert.fingerprint
    };
    Verdict::Heal {
        service: entry.name.clone(),
        heal_unit: entry.heal_unit_name(),
        alert: FiringAlert {
            alertname,
            summary: alert
                .annotations
                .get("summary")
                .map(|summary| quoted(summary, 500)),
            generator_url: Some(alert.generator_url)
                .filter(|url| !url.is_empty())
                .map(|url| quoted(&url, 2000)),
            starts_at: quoted(&alert.starts_at, 64),
            fingerprint: quoted(&fingerprint, 200),
            received_at: Timestamp::millis(now),
            taken: false,
        },
    }
}

/// Text from an alert as a report or a log line may carry it: control characters escaped,
/// at most `chars` long.
fn quoted(text: &str, chars: usize) -> String {
    cut(&printable(text), chars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> Config {
        let yaml = "monitored_services:\n  - name: web\n    port: 8080\n  - name: db\n";
        Config::parse(yaml, std::path::Path::new("selfheal.yml")).unwrap()
    }

    fn post(alerts: &serde_json::Value) -> Vec<u8> {
        json!({"version": "4", "status": "firing", "receiver": "selfheal", "alerts": alerts})
            .to_string()
            .into_bytes()
    }

    fn alert(status: &str, labels: &serde_json::Value) -> serde_json::Value {
        json!({"status": status, "labels": labels,
               "annotations": {"summary": "5xx above 5% for 2m"},
               "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
               "startsAt": "2026-12-07T10:00:00Z", "fingerprint": "a1b2"})
    }

    fn verdicts(alerts: &serde_json::Value) -> Vec<Verdict> {
        judge(
            &post(alerts),
            &config(),
            &ThisHost::named("web1.example.org", &["10.0.0.11".to_owned()]),
            SystemTime::now(),
        )
        .unwrap()
    }

    #[test]
    fn a_firing_alert_naming_a_monitored_service_on_this_host_heals_it() {
        for labels in [
            json!({"alertname": "HighErrorRate", "service": "web"}),
            json!({"alertname": "HighErrorRate", "service": "web.service", "instance": "web1:9100"}),
            json!({"alertname": "HighErrorRate", "service": "web", "host": "WEB1.example.org"}),
            json!({"alertname": "HighErrorRate", "service": "web", "instance": "127.0.0.1:9100"}),
            json!({"alertname": "HighErrorRate", "service": "web", "instance": "[::1]:9100"}),
        ] {
            let verdicts = verdicts(&json!([alert("firing", &labels)]));
            let [Verdict::Heal { service, alert, .. }] = verdicts.as_slice() else {
                panic!("{labels}: {verdicts:?}");
            };
            assert_eq!(service, "web");
            assert_eq!(alert.alertname, "HighErrorRate");
            assert_eq!(alert.summary.as_deref(), Some("5xx above 5% for 2m"));
            assert_eq!(alert.fingerprint, "a1b2");
        }
    }

    #[test]
    fn resolved_unknown_unlabelled_and_other_hosts_alerts_start_nothing() {
        for (alert, why) in [
            (
                alert("resolved", &json!({"alertname": "A", "service": "web"})),
                "only firing",
            ),
            (
                alert("firing", &json!({"alertname": "A", "service": "mail"})),
                "not a service",
            ),
            (
                alert("firing", &json!({"alertname": "A"})),
                "no service label",
            ),
            (
                alert(
                    "firing",
                    &json!({"alertname": "A", "service": "web", "instance": "web2:9100"}),
                ),
                "another host",
            ),
            (
                alert(
                    "firing",
                    &json!({"alertname": "A", "service": "web", "host": "web10", "instance": "web1"}),
                ),
                "another host",
            ),
        ] {
            let verdicts = verdicts(&json!([alert]));
            let [Verdict::Ignored { why: said, .. }] = verdicts.as_slice() else {
                panic!("{verdicts:?}");
            };
            assert!(said.contains(why), "{said}");
        }
    }

    #[test]
    fn a_unit_all_services_covers_is_healed_by_its_template_instance() {
        let yaml = "all_services: {exclude: [ssh.service]}\nmonitored_services:\n  - name: web\n";
        let config = Config::parse(yaml, std::path::Path::new("selfheal.yml")).unwrap();
        let post = post(&json!([
            alert(
                "firing",
                &json!({"alertname": "QueueGrows", "service": "postfix"})
            ),
            alert("firing", &json!({"alertname": "SshDown", "service": "ssh"})),
        ]));
        let verdicts = judge(
            &post,
            &config,
            &ThisHost::named("h", &[]),
            SystemTime::now(),
        )
        .unwrap();
        let [
            Verdict::Heal {
                service, heal_unit, ..
            },
            Verdict::Ignored { .. },
        ] = verdicts.as_slice()
        else {
            panic!("{verdicts:?}");
        };
        assert_eq!(
            (service.as_str(), heal_unit.as_str()),
            ("postfix", "selfheal@postfix.service")
        );
    }

    #[test]
    fn each_alert_is_judged_on_its_own() {
        let verdicts = verdicts(&json!([
            alert("firing", &json!({"alertname": "A", "service": "web"})),
            alert("firing", &json!({"alertname": "B", "service": "web"})),
            alert("firing", &json!({"alertname": "C", "service": "db"})),
        ]));
        let heals: Vec<&str> = verdicts
            .iter()
            .filter_map(|v| match v {
                Verdict::Heal { alert, .. } => Some(alert.alertname.as_str()),
                Verdict::Ignored { .. } => None,
            })
            .collect();
        assert_eq!(heals, ["A", "B", "C"]);
    }

    #[test]
    fn a_host_label_names_this_host_by_its_name_its_short_name_or_a_configured_one() {
        let qualified = ThisHost::named("web1.example.org", &["10.0.0.11".to_owned()]);
        let short = ThisHost::named("web1", &[]);
        for (host, label, is) in [
            (&qualified, "web1.example.org:9100", true),
            (&qualified, "WEB1", true),
            (&qualified, "10.0.0.11:9100", true),
            (&qualified, "localhost:9100", true),
            (&qualified, "web1.example.com", false),
            (&qualified, "web10", false),
            (&qualified, "10.0.0.12:9100", false),
            (&short, "web1.example.org:9100", true),
            (&short, "web1", true),
            (&short, "web2.example.org", false),
            (&short, "10.0.0.11", false),
        ] {
            assert_eq!(host.is(label), is, "{label} on {host:?}");
        }
    }

    #[test]
    fn other_payloads_are_refused_without_quoting_them() {
        let host = ThisHost::named("h", &[]);
        let config = config();
        let now = SystemTime::now();
        assert_eq!(
            judge(b"<xml/>", &config, &host, now),
            Err(Unreadable::NotJson)
        );
        let v3 = json!({"version": "3", "alerts": []}).to_string();
        assert_eq!(
            judge(v3.as_bytes(), &config, &host, now),
            Err(Unreadable::NotVersion4)
        );
    }

    #[test]
    fn control_characters_from_an_alert_never_reach_a_report_raw() {
        let raw = json!([{"status": "firing",
            "labels": {"alertname": "A\u{1b}[2J", "service": "web"},
            "annotations": {"summary": "sum\u{7}mary\u{202e}"},
            "generatorURL": "http://p/\u{1b}]8;;x", "startsAt": "2026\u{0}", "fingerprint": "f"}]);
        let verdicts = verdicts(&raw);
        let [Verdict::Heal { alert, .. }] = verdicts.as_slice() else {
            panic!("{verdicts:?}");
        };
        for field in [
            Some(&alert.alertname),
            alert.summary.as_ref(),
            alert.generator_url.as_ref(),
            Some(&alert.starts_at),
        ] {
            let field = field.unwrap();
            assert!(
                !field.chars().any(|c| c.is_control() || c == '\u{202e}'),
                "{field:?}"
            );
        }
    }
}
