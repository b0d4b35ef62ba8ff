//! The cascade report: services that failed together, in one mail. Data first: each service's
//! report as it was held (its JSON, the same object `run --json` prints), then what they
//! share (a failed dependency, the same symptom, the same moment), then text and HTML by the
//! `cascade*.j2` templates.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;

use crate::ui::when::Timestamp;

/// One mail for a burst of failures.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CascadeReport {
    pub system_name: String,
    pub host: String,
    /// `cascade.within`, as the config says it.
    pub window: String,
    /// Services that failed in the burst (those mailed on their own included), each once.
    pub count: usize,
    /// When the first of these runs started.
    pub started_at: Option<Timestamp>,
    /// When the first and the last of these runs started (UTC, readable).
    pub first_at: String,
    pub last_at: String,
    /// `3 resolved, 1 failed`.
    pub tally: String,
    /// What the failures have in common, most telling first.
    pub shared: Vec<String>,
    /// Each service's report, in the order they failed.
    pub services: Vec<Value>,
    /// Services of the burst already reported in a mail of their own.
    pub already_reported: Vec<String>,
}

impl CascadeReport {
    /// Every member's own recipients (`to:`), each once.
    pub(crate) fn recipients(&self) -> Vec<String> {
        let mut recipients: Vec<String> = Vec::new();
        let addresses = self
            .services
            .iter()
            .filter_map(|s| s.get("to").and_then(serde_json::Value::as_array))
            .flatten()
            .filter_map(serde_json::Value::as_str);
        for address in addresses {
            if !recipients.iter().any(|known| known == address) {
                recipients.push(address.to_owned());
            }
        }
        recipients
    }

    /// The report for `services` (their `Report` JSON) and the names mailed earlier.
    pub(crate) fn new(
        system_name: String,
        host: String,
        window: String,
        mut services: Vec<Value>,
        already_reported: Vec<String>,
    ) -> CascadeReport {
        services.sort_by(|a, b| text(a, "started_at").cmp(text(b, "started_at")));
        let started: Vec<Timestamp> = services
            .iter()
            .filter_map(|s| text(s, "started_at").parse().ok())
            .collect();
        let first_at = started.iter().min().copied();
        let last_at = started.iter().max().copied();
        let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
        for service in &services {
            *tally.entry(text(service, "outcome")).or_default() += 1;
        }
        let tally = tally
            .iter()
            .map(|(outcome, n)| format!("{n} {outcome}"))
            .collect::<Vec<_>>()
            .join(", ");
        CascadeReport {
            system_name,
            host,
            window,
            count: services
                .iter()
                .map(|s| text(s, "service"))
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                + already_reported.len(),
            started_at: first_at,
            first_at: first_at.map(Timestamp::readable).unwrap_or_default(),
            last_at: last_at.map(Timestamp::readable).unwrap_or_default(),
            tally,
            shared: shared(&services),
            services,
            already_reported,
        }
    }
}

fn text<'v>(value: &'v Value, key: &str) -> &'v str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// What the failures have in common: dependencies that were down (named with the services
/// they took down), the way they ended, and how close together they began.
fn shared(services: &[Value]) -> Vec<String> {
    let mut findings = Vec::new();
    let mut upstream: BTreeMap<String, (String, Vec<&str>)> = BTreeMap::new();
    for service in services {
        let name = text(service, "service");
        let units = service
            .pointer("/diagnosis/upstream")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for unit in units {
            let entry = upstream
                .entry(text(unit, "unit").to_owned())
                .or_insert_with(|| (text(unit, "state").to_owned(), Vec::new()));
            entry.1.push(name);
        }
    }
    let mut upstream: Vec<_> = upstream.into_iter().collect();
    upstream.sort_by_key(|(_, (_, names))| std::cmp::Reverse(names.len()));
    for (unit, (state, names)) in &upstream {
        findings.push(format!(
            "{unit} was down ({state}) when {} failed: they depend on it",
            names.join(", ")
        ));
    }

    let mut endings: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for service in services {
        if let Some(diagnosis) = service.get("diagnosis").filter(|d| !d.is_null()) {
            endings
                .entry(ending(diagnosis))
                .or_default()
                .push(text(service, "service"));
        }
    }
    match endings.len() {
        0 => {}
        1 if services.len() > 1 => {
            let (how, _) = endings.iter().next().expect("one entry");
            findings.push(format!("all {} {how}", services.len()));
        }
        _ => {
            for (how, names) in &endings {
                findings.push(format!("{}: {how}", names.join(", ")));
            }
        }
    }

    let times: Vec<SystemTime> = services
        .iter()
        .filter_map(|s| text(s, "started_at").parse().ok().map(Timestamp::time))
        .collect();
    if let (Some(first), Some(last)) = (times.iter().min(), times.iter().max()) {
        let span = last.duration_since(*first).unwrap_or_default();
        findings.push(format!(
            "their healing runs began within {} of each other",
            crate::ui::duration::HumanDuration(span)
        ));
    }
    if upstream.is_empty() {
        findings.push(
            "no dependency in systemd's graph was down: look for what they share outside it (a disk, the network, a deploy)"
                .to_owned(),
        );
    }
    findings
}

/// `killed by SIGKILL`, `exited with status 1`, `killed by the OOM killer`, …
fn ending(diagnosis: &Value) -> String {
    if text(diagnosis, "result") == "oom-kill" {
        return "were killed by the OOM killer".to_owned();
    }
    let termination = diagnosis.get("termination").unwrap_or(&Value::Null);
    match text(termination, "kind") {
        "killed" => format!("were killed by {}", text(termination, "signal")),
        "dumped" => format!("crashed with {} (core dumped)", text(termination, "signal")),
        "exited" => format!(
            "exited with status {}",
            termination.get("status").unwrap_or(&Value::Null)
        ),
        _ => format!("ended with result {}", text(diagnosis, "result")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(name: &str, at: &str, outcome: &str, upstream: &Value) -> Value {
        json!({
            "service": name, "unit": format!("{name}.service"), "outcome": outcome,
            "started_at": at, "duration_ms": 40,
            "diagnosis": {"result": "signal", "termination": {"kind": "killed", "signal": "SIGKILL"},
                          "upstream": upstream, "summary": "", "root_cause": "", "journal": []},
        })
    }

    #[test]
    fn names_the_dependency_they_share_the_symptom_and_the_span() {
        let db = json!([{"unit": "db.service", "state": "failed/failed", "relation": "requires"}]);
        let report = CascadeReport::new(
            "Sys".into(),
            "host".into(),
            "60s".into(),
            vec![
                service("api", "2026-11-29T10:00:01.500Z", "failed", &db),
                service("web", "2026-11-29T10:00:00.250Z", "resolved", &db),
                service("jobs", "2026-11-29T10:00:02.000Z", "resolved", &json!([])),
            ],
            vec!["mail".into()],
        );
        assert_eq!(report.count, 4);
        assert_eq!(report.tally, "1 failed, 2 resolved");
        assert_eq!(report.first_at, "2026-11-29 10:00:00.250 UTC");
        let names: Vec<&str> = report.services.iter().map(|s| text(s, "service")).collect();
        assert_eq!(names, ["web", "api", "jobs"], "in the order they failed");
        assert_eq!(
            report.shared,
            [
                "db.service was down (failed/failed) when web, api failed: they depend on it",
                "all 3 were killed by SIGKILL",
                "their healing runs began within 1750ms of each other",
            ]
        );
    }

    #[test]
    fn a_cascade_mail_also_goes_to_each_members_own_recipients_once() {
        let mut web = service("web", "2026-11-29T10:00:00Z", "failed", &json!([]));
        web["to"] = json!(["web@example.org", "ops@example.org"]);
        let mut api = service("api", "2026-11-29T10:00:01Z", "failed", &json!([]));
        api["to"] = json!(["web@example.org"]);
        let jobs = service("jobs", "2026-11-29T10:00:02Z", "failed", &json!([]));
        let report = CascadeReport::new(
            "Sys".into(),
            "host".into(),
            "60s".into(),
            vec![web, api, jobs],
            Vec::new(),
        );
        assert_eq!(report.recipients(), ["web@example.org", "ops@example.org"]);
    }

    #[test]
    fn says_when_systemd_knows_no_common_cause() {
        let mut exited = service("b", "2026-11-29T10:00:00Z", "resolved", &json!([]));
        exited["diagnosis"]["termination"] = json!({"kind": "exited", "status": 1});
        let report = CascadeReport::new(
            "Sys".into(),
            "host".into(),
            "60s".into(),
            vec![
                service("a", "2026-11-29T10:00:00Z", "resolved", &json!([])),
                exited,
            ],
            Vec::new(),
        );
        assert!(
            report
                .shared
                .contains(&"a: were killed by SIGKILL".to_owned())
        );
        assert!(
            report
                .shared
                .contains(&"b: exited with status 1".to_owned())
        );
        assert!(report.shared.last().unwrap().starts_with("no dependency"));
    }
}
