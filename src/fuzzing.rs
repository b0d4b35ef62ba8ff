//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer): each takes raw
//! bytes, drives one parser or renderer that sees outside input, and panics when a property
//! that must always hold is broken. Not an API; a unit test below keeps them compiling and
//! sane without a fuzzer.

use std::path::Path;

use crate::config::Config;
use crate::heal::diagnose::{Diagnosis, MonitorFacts};
use crate::heal::facts::RunFacts;
use crate::heal::strategy::{Step, StepResult};
use crate::host::journal::{JournalLine, parse_json_lines};
use crate::outcome::Outcome;
use crate::report::{Renderer, Report, ReportHeader};
use crate::systemd::UnitSnapshot;

/// The config loader and validator: any text is accepted or refused, never a panic or hang.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = Config::parse(&text, Path::new("fuzz.yml"));
}

/// The env-file parser keeps key names only, and only names that are valid shell names.
pub fn env_file(data: &[u8]) {
    for key in crate::heal::strategy::env_file_keys(data) {
        assert!(
            key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{key:?}"
        );
    }
}

/// Splits the input at NUL bytes into the fields systemd and the journal would supply.
struct Facts {
    snapshot: UnitSnapshot,
    monitor: Option<MonitorFacts>,
    journal: Vec<JournalLine>,
}

// Fuzz input is meant to wrap and truncate: any number is as good as any other.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn facts(data: &[u8]) -> Facts {
    let mut fields = data.split(|b| *b == 0);
    let mut next = || String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
    let active_state = next();
    let result = next();
    let numbers = next();
    let monitor_vars = next();
    let journal_json = next();
    let mut numbers = numbers
        .split(',')
        .map(|n| n.trim().parse::<i64>().unwrap_or(0));
    let mut number = || numbers.next().unwrap_or(0);
    let snapshot = UnitSnapshot {
        unit: "web.service".into(),
        load_state: "loaded".into(),
        active_state: crate::systemd::ActiveState::parse(&active_state),
        sub_state: active_state,
        result,
        exec_main_code: number() as i32,
        exec_main_status: number() as i32,
        n_restarts: number() as u32,
        main_pid: number() as u32,
        memory_current: u64::try_from(number()).ok(),
        ..UnitSnapshot::default()
    };
    let vars: Vec<(String, String)> = monitor_vars
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let monitor = MonitorFacts::from_lookup("web.service", |key| {
        vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    });
    let mut journal = parse_json_lines(journal_json.as_bytes());
    // Plain lines too: journal text need not come through JSON to reach the diagnosis.
    journal.extend(journal_json.lines().map(|line| JournalLine {
        timestamp_us: 0,
        pid: 0,
        message: line.to_owned(),
        invocation_id: None,
    }));
    Facts {
        snapshot,
        monitor,
        journal,
    }
}

/// Journal lines and `MONITOR_*` variables to a diagnosis: always a summary and a root cause.
pub fn diagnosis(data: &[u8]) {
    let facts = facts(data);
    let diagnosis = Diagnosis::new(&facts.snapshot, facts.monitor.as_ref(), facts.journal);
    assert!(!diagnosis.summary.is_empty());
    assert!(!diagnosis.root_cause.is_empty());
}

/// Arbitrary unit properties and journal text through the built-in templates: rendering
/// never fails, and nothing from the input reaches the HTML unescaped.
pub fn report(data: &[u8]) {
    static RENDERER: std::sync::OnceLock<(Renderer, Config)> = std::sync::OnceLock::new();
    let (renderer, config) = RENDERER.get_or_init(|| {
        let config = Config::parse(
            "system_name: Fuzz\nmonitored_services:\n  - name: web\n    port: 8080\n",
            Path::new("fuzz.yml"),
        )
        .expect("the fuzz config is valid");
        (Renderer::new(None), config)
    });
    let facts = facts(data);
    let detail = facts
        .journal
        .first()
        .map(|line| line.message.clone())
        .unwrap_or_default();
    let outcome = match data.first().copied().unwrap_or(0) % 4 {
        0 => Outcome::Resolved,
        1 => Outcome::Failed,
        2 => Outcome::Suppressed,
        _ => Outcome::Healthy,
    };
    let run = RunFacts {
        outcome,
        started_at: "2026-11-23T00:00:00Z".parse().expect("a valid time"),
        duration_ms: 1,
        diagnosis: Some(Diagnosis::new(
            &facts.snapshot,
            facts.monitor.as_ref(),
            facts.journal,
        )),
        steps: vec![Step {
            strategy: crate::heal::strategy::StrategyName::ServiceRestart,
            action: detail.clone(),
            result: StepResult::NoFix,
            detail: detail.clone(),
            changes: vec![detail],
            duration_ms: 1,
        }],
        healed_by: None,
        reason: Some(String::from_utf8_lossy(data).into_owned()),
        post_status: Some((&facts.snapshot).into()),
        recovered: None,
        relapse: false,
        episode_reported: false,
        all_clear: None,
        folded: None,
        reminder: None,
        guard: None,
        guard_over: None,
        evidence: None,
        alert: None,
        dry_run: false,
    };
    let service = &config.monitored_services[0];
    let report = Report::new(ReportHeader::new(config, service), run);
    renderer.subject(&report).expect("subject renders");
    renderer.text(&report).expect("text renders");
    let html = renderer.html(&report).expect("html renders");
    assert!(
        !html.contains("<script"),
        "input reached the HTML unescaped"
    );
}

/// The receiver's reading of a connection that has not shown the token yet (anyone's bytes),
/// then of a post's body: never a panic or a hang; a refusal's answer quotes nothing sent;
/// what an alert brings into a report has no control character left.
pub fn receiver_post(data: &[u8]) {
    /// The client's bytes; what the receiver writes back is dropped.
    struct Client<'a>(&'a [u8]);
    impl std::io::Read for Client<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            std::io::Read::read(&mut self.0, buf)
        }
    }
    impl std::io::Write for Client<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut client = Client(data);
    match crate::receiver::http::read_request(
        &mut client,
        |_, _| Ok(()),
        |head| head.header("authorization").is_some(),
    ) {
        Err(unread) => {
            let (status, body) = unread.status();
            assert!((400..500).contains(&status), "{status}");
            assert!(body.is_ascii() && body.len() < 64, "{body:?}");
        }
        Ok(request) => {
            let config = Config::parse(
                "monitored_services:\n  - name: web\n  - name: db\n",
                Path::new("fuzz.yml"),
            )
            .expect("the fuzz config loads");
            let this_host = crate::receiver::alertmanager::ThisHost::named("web1.example.org", &[]);
            let now = std::time::SystemTime::now();
            if let Ok(verdicts) =
                crate::receiver::alertmanager::judge(&request.body, &config, &this_host, now)
            {
                for verdict in verdicts {
                    let text = format!("{verdict:?}");
                    let raw_control = |text: &str| text.chars().any(char::is_control);
                    if let crate::receiver::alertmanager::Verdict::Heal { alert, .. } = verdict {
                        for field in [
                            Some(&alert.alertname),
                            alert.summary.as_ref(),
                            alert.generator_url.as_ref(),
                        ]
                        .into_iter()
                        .flatten()
                        {
                            assert!(!raw_control(field), "{text}");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fuzz_entry_points_accept_typical_and_hostile_input() {
        let journal =
            br#"{"MESSAGE":"bind: Address already in use","_PID":"7","__REALTIME_TIMESTAMP":"1"}"#;
        let mut input = b"failed\0exit-code\x001,3,0,0,-1\0MONITOR_UNIT=web.service\nMONITOR_SERVICE_RESULT=signal\nMONITOR_EXIT_CODE=killed\nMONITOR_EXIT_STATUS=KILL\n\0".to_vec();
        input.extend_from_slice(journal);
        input.extend_from_slice(b"\n<script>alert(1)</script>\n");
        for data in [&input[..], b"", b"\0\0\0\0\0\0", b"\xff\xfe{{ x }}{% if %}"] {
            config(data);
            env_file(data);
            diagnosis(data);
            report(data);
            receiver_post(data);
        }
        let body = r#"{"version":"4","alerts":[{"status":"firing","labels":{"alertname":"A\u001b[2J","service":"web"},"annotations":{"summary":"x\u0007"}}]}"#;
        receiver_post(
            format!(
                "POST /alertmanager HTTP/1.1\r\nAuthorization: Bearer t\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        env_file(b"KEY=value\nexport X=1\n");
    }
}
