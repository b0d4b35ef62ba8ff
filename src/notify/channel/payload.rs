//! What each channel is sent for a report: the JSON report, a Slack message, an ntfy
//! notification, an Alertmanager alert. Service-controlled text (journal lines quoted in a
//! root cause) cannot turn into a Slack mention or a header: it is escaped for each format.

use base64::Engine as _;
use serde_json::json;

use super::Request;
use super::alerts::{Alert, AlertState};
use super::brief::Brief;
use crate::config::notify::WebhookFormat;
use crate::outcome::Outcome;
use crate::report::Report;

/// The webhook request for a report.
pub(crate) fn webhook(format: WebhookFormat, report: &Report, subject: &str) -> Request {
    let brief = Brief::of(report, subject);
    match format {
        WebhookFormat::Json => Request::json(
            serde_json::to_string_pretty(report).unwrap_or_default(),
            Vec::new(),
        ),
        WebhookFormat::Slack => {
            let text = std::iter::once(format!("*{}*", slack_escape(&brief.title)))
                .chain(brief.lines.iter().map(|line| slack_escape(line)))
                .collect::<Vec<_>>()
                .join("\n");
            Request::json(json!({ "text": text }).to_string(), Vec::new())
        }
        WebhookFormat::Ntfy => {
            let failing = matches!(
                report.facts.outcome,
                Outcome::Failed | Outcome::Suppressed | Outcome::CrashLoop | Outcome::Reported
            );
            let priority = match (failing, report.header.critical) {
                (true, true) => "5",
                (true, false) => "4",
                (false, _) => "3",
            };
            let tag = match report.facts.outcome {
                Outcome::Resolved | Outcome::Healthy | Outcome::RestartedBySystemd => {
                    "white_check_mark"
                }
                Outcome::Suppressed | Outcome::Paused | Outcome::Held => "pause_button",
                Outcome::CrashLoop => "repeat",
                Outcome::Reported => "warning",
                Outcome::Failed | Outcome::Planned => "rotating_light",
            };
            let mut headers = vec![
                ("Title".to_owned(), header_text(&brief.title)),
                ("Priority".to_owned(), priority.to_owned()),
                (
                    "Tags".to_owned(),
                    format!("{tag},selfheal,{}", report.header.service),
                ),
            ];
            if let Some(runbook) = &report.header.runbook {
                headers.push(("Click".to_owned(), runbook.clone()));
            }
            Request {
                path: String::new(),
                content_type: "text/plain; charset=utf-8".to_owned(),
                headers,
                body: brief.lines.join("\n"),
            }
        }
    }
}

/// The Alertmanager request for one alert: firing until `ends_at`, or resolved.
pub(crate) fn alert(
    alert: &Alert,
    labels: &std::collections::BTreeMap<String, String>,
    state: AlertState,
) -> Request {
    let mut all_labels = labels.clone();
    all_labels.insert("alertname".into(), alert.alertname.clone());
    all_labels.insert("service".into(), alert.service.clone());
    all_labels.insert("host".into(), alert.host.clone());
    all_labels.insert("severity".into(), alert.severity.clone());
    let mut annotations = serde_json::Map::new();
    annotations.insert("summary".into(), alert.summary.clone().into());
    annotations.insert("description".into(), alert.description.clone().into());
    if let Some(runbook) = &alert.runbook_url {
        annotations.insert("runbook_url".into(), runbook.clone().into());
    }
    let ends_at = match state {
        AlertState::Firing { until } => until,
        AlertState::Resolved { at } => at,
    };
    // Alertmanager refuses for good an alert that ends before it starts: a resolve in the
    // second of its fire (`at` may be cut to the second) or after the clock stepped back.
    let ends_at = ends_at.max(alert.starts_at);
    let body = json!([{
        "labels": all_labels,
        "annotations": annotations,
        "startsAt": alert.starts_at.to_string(),
        "endsAt": ends_at.to_string(),
    }]);
    Request {
        path: "/api/v2/alerts".to_owned(),
        ..Request::json(body.to_string(), Vec::new())
    }
}

/// Slack's three control characters (`<!channel>`, `<url|text>`, `&`), escaped as Slack asks.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A header value from any text: ASCII stays as it is, anything else becomes an RFC 2047
/// encoded word (what ntfy decodes), so no byte of it can end the header.
fn header_text(text: &str) -> String {
    let printable = text.chars().all(|c| c.is_ascii() && !c.is_ascii_control());
    if printable {
        return text.to_owned();
    }
    format!(
        "=?UTF-8?B?{}?=",
        base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `test-notify`'s alert is nobody's service (a route that groups by service never puts it
    /// beside a real alert) and ends within a few minutes.
    #[test]
    fn a_test_alert_belongs_to_no_service_and_ends_soon() {
        let (alert, until) = super::super::alerts::test_alert("web01", "🧪 TEST web01");
        let request = super::alert(
            &alert,
            &std::collections::BTreeMap::new(),
            AlertState::Firing { until },
        );
        let body: serde_json::Value = serde_json::from_str(&request.body).unwrap();
        assert_eq!(body[0]["labels"]["service"], "selfheal-test");
        assert_eq!(body[0]["labels"]["alertname"], "SelfhealTest");
        let lasts = until.time().duration_since(alert.starts_at.time()).unwrap();
        assert!(lasts <= std::time::Duration::from_secs(180), "{lasts:?}");
    }

    #[test]
    fn slack_text_cannot_mention_everyone_and_a_title_cannot_end_its_header() {
        assert_eq!(
            slack_escape("<!channel> a & b <http://x|y>"),
            "&lt;!channel&gt; a &amp; b &lt;http://x|y&gt;"
        );
        assert_eq!(header_text("plain title"), "plain title");
        let encoded = header_text("❌ web - FAILED\r\nX-Evil: 1");
        assert!(encoded.starts_with("=?UTF-8?B?") && encoded.ends_with("?="));
        assert!(!encoded.contains('\n') && !encoded.contains(' '));
    }

    fn ends_at(request: &Request) -> (String, String) {
        let body: serde_json::Value = serde_json::from_str(&request.body).unwrap();
        let field = |name: &str| body[0][name].as_str().unwrap().to_owned();
        (field("startsAt"), field("endsAt"))
    }

    /// Alertmanager refuses (HTTP 400) an alert that ends before it starts, and that refusal
    /// is for good: a resolve in the same second as a fire, or after the clock stepped back,
    /// must end no earlier than it started.
    #[test]
    fn an_alert_never_ends_before_it_starts() {
        let fired = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_796_000_000_182);
        let open = Alert {
            alertname: "SelfhealFailed".into(),
            service: "web".into(),
            host: "vm".into(),
            severity: "critical".into(),
            summary: "web - FAILED".into(),
            description: String::new(),
            runbook_url: None,
            starts_at: crate::ui::when::Timestamp::millis(fired),
        };
        let labels = std::collections::BTreeMap::new();
        let same_second = crate::ui::when::Timestamp::seconds(fired);
        let earlier =
            crate::ui::when::Timestamp::seconds(fired - std::time::Duration::from_secs(3600));
        for state in [
            AlertState::Resolved { at: same_second },
            AlertState::Resolved { at: earlier },
            AlertState::Firing { until: earlier },
        ] {
            let (starts, ends) = ends_at(&alert(&open, &labels, state));
            let parse = |text: &str| humantime::parse_rfc3339(text).unwrap();
            assert!(
                parse(&ends) >= parse(&starts),
                "{state:?}: {starts} .. {ends}"
            );
        }
        let later = crate::ui::when::Timestamp::millis(fired + std::time::Duration::from_millis(5));
        let (_, ends) = ends_at(&alert(&open, &labels, AlertState::Resolved { at: later }));
        assert_eq!(ends, later.to_string());
    }
}
