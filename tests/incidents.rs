//! Incidents, not runs, against a real systemd and a real SMTP server: a service that loop
//! protection stopped is healed by its timed retry (one RECOVERED mail); services that fail
//! together get one cascade mail; the daily digest.

mod common;

use std::time::Duration;

use common::{Mail, SmtpServer, TestEnv, assert_contains, free_port, selfheal_bin, wait_until};
use selfheal::outcome::Outcome;

const USER: &str = "alerts@testhost.example";
const PASSWORD: &str = "pw-incidents";

fn smtp(env: &TestEnv) -> SmtpServer {
    SmtpServer::start(&env.sandbox.scratch_dir().join("smtp"), USER, PASSWORD)
}

fn email_yaml(env: &TestEnv, server: &SmtpServer) -> String {
    server.email_yaml(&env.sandbox.scratch_dir().join("smtp-password"), PASSWORD)
}

fn subjects(server: &SmtpServer) -> Vec<String> {
    server
        .messages()
        .iter()
        .map(|raw| Mail::parse(raw).subject)
        .collect()
}

/// A web service that exits 3 at start until `marker` exists.
fn web_failing_until(env: &TestEnv, name: &str, port: u16, marker: &std::path::Path) {
    env.unit(
        name,
        &format!(
            "ExecStart=/bin/sh -c 'test -e {m} || {{ echo \"{name}: config missing\"; exit 3; }}; exec {bin} serve-demo --port {port}'",
            m = marker.display(),
            bin = selfheal_bin().display()
        ),
    );
}

#[test]
fn a_service_stopped_by_loop_protection_is_healed_by_its_timed_retry_with_one_recovered_mail() {
    let env = TestEnv::new();
    let server = smtp(&env);
    let port = free_port();
    let marker = env.sandbox.scratch_dir().join("web-fixed");
    web_failing_until(&env, "web", port, &marker);
    env.config(&format!(
        "system_name: TestHost\nfailure_threshold: 2\nretry_after: 3s\n{}monitored_services:\n  - name: web\n    port: {port}\n    verify_timeout: 3s\n    stable_for: 300ms\n",
        email_yaml(&env, &server)
    ))
    .install();

    // Two failures healed in vain, then loop protection stops healing it.
    for runs in 1..=3 {
        let _ = env.sandbox.systemctl(["start", "web.service"]);
        env.wait_for_history(runs, Duration::from_secs(20));
        // Its report is mailed after the history line: a failure before the heal unit has
        // ended would be merged into that run.
        wait_until(Duration::from_secs(20), "the heal unit to end", || {
            env.property("web-self-heal.service", "ActiveState") != "activating"
        });
    }
    let history = env.history();
    let outcomes: Vec<Outcome> = history.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [Outcome::Failed, Outcome::Failed, Outcome::Suppressed]
    );
    assert_eq!(env.property("web-self-heal.timer", "ActiveState"), "active");
    let status: serde_json::Value =
        serde_json::from_slice(&env.selfheal(["status", "--json"]).stdout).unwrap();
    let web = &status["services"][0];
    assert_eq!(web["suppressed"], true, "{web}");
    assert!(web["next_retry_at"].is_string(), "{web}");

    // The cause goes away; nobody touches the service; the retry heals it.
    std::fs::write(&marker, "").unwrap();
    let history = env.wait_for_history(4, Duration::from_secs(20));
    assert_eq!(history[3].outcome, Outcome::Resolved);
    assert_eq!(env.property("web.service", "ActiveState"), "active");

    let mails = server.wait_for_messages(4, Duration::from_secs(20));
    let subjects = subjects(&server);
    assert_eq!(mails.len(), 4, "{subjects:?}");
    let recovered: Vec<&String> = subjects
        .iter()
        .filter(|s| s.contains("RECOVERED"))
        .collect();
    assert_eq!(recovered.len(), 1, "{subjects:?}");
    assert_contains(
        recovered[0],
        "✅ TestHost: web - RECOVERED after 2 failures since ",
    );
    let suppressed = subjects
        .iter()
        .filter(|s| s.ends_with("SUPPRESSED"))
        .count();
    assert_eq!(suppressed, 1, "{subjects:?}");
    // The timer was transient: gone once it fired.
    wait_until(Duration::from_secs(5), "the retry timer to unload", || {
        env.property("web-self-heal.timer", "LoadState") == "not-found"
    });
}
