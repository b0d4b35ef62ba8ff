//! Every service on the host (`all_services:`) against a real systemd, on both systemds: an
//! unlisted unit that fails is reported once and left alone; with `service_restart` one is
//! healed; the top-level hook reaches template instances, transient units and units added
//! after install, but no excluded unit, no monitored service twice and none of selfheal's own
//! (a heal unit that fails starts nothing); `uninstall` takes it all away.

mod common;

use std::time::Duration;

use common::config::{Config, Service};
use common::{Mail, SmtpServer, TestEnv, assert_contains, wait_until};
use selfheal::outcome::Outcome;
use serde_json::json;

const USER: &str = "selfheal";
const PASSWORD: &str = "s3cret-coverage";

/// Waits until `selfheal@<name>.service` has run and finished.
#[track_caller]
fn heal_unit_finished(env: &TestEnv, name: &str) {
    let heal_unit = format!("selfheal@{name}.service");
    wait_until(
        Duration::from_secs(30),
        &format!("{heal_unit} to finish"),
        || {
            env.property(&heal_unit, "InactiveExitTimestampMonotonic") != "0"
                && !matches!(
                    env.property(&heal_unit, "ActiveState").as_str(),
                    "activating" | "active"
                )
        },
    );
}

#[test]
fn an_unlisted_unit_that_exits_4_is_reported_once_and_left_alone() {
    let env = TestEnv::new();
    let server = SmtpServer::start(&env.sandbox.scratch_dir().join("smtp"), USER, PASSWORD);
    let password_file = env.sandbox.scratch_dir().join("smtp-password");
    env.configure(
        &Config::new()
            .with("all_services", json!({}))
            .with("email", server.email_config(&password_file, PASSWORD)),
    )
    .unit(
        "batch-import",
        "ExecStart=/bin/sh -c 'echo cannot open /srv/import/today.csv: No such file; exit 4'",
    )
    .install();

    env.start_failing("batch-import");
    heal_unit_finished(&env, "batch-import");

    let history = env.history();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].service, "batch-import");
    assert_eq!(history[0].outcome, Outcome::Reported);
    let mails = server.wait_for_messages(1, Duration::from_secs(10));
    assert_eq!(mails.len(), 1);
    let mail = Mail::parse(&mails[0]);
    assert_eq!(
        mail.subject,
        "⚠ TestHost: batch-import - FAILED (reported, not healed)"
    );
    assert_eq!(mail.header("X-Selfheal-Outcome"), "reported");
    assert_contains(&mail.text, "status 4");
    assert_contains(&mail.text, "cannot open /srv/import/today.csv");
    assert_contains(
        &mail.text,
        "add under monitored_services: - {name: batch-import}",
    );
    assert_contains(&mail.html, "FAILED (reported, not healed)");
    // Not restarted: selfheal changed nothing.
    assert_eq!(
        env.property("batch-import.service", "ActiveState"),
        "failed"
    );
    assert_eq!(env.property("batch-import.service", "NRestarts"), "0");

    // The dashboard shows it while it is failed, marked, with how many units are covered.
    let output = env.selfheal(["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let rows = status["services"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["name"], "batch-import");
    assert_eq!(rows[0]["unlisted"], true);
    assert_eq!(rows[0]["active_state"], "failed");
    let armed = status["config"]["all_services"]["armed"].as_u64().unwrap();
    assert!(armed >= 1, "{}", status["config"]);
    env.systemctl(&["reset-failed", "batch-import.service"]);
    let output = env.selfheal(["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["services"].as_array().unwrap().len(), 0);
}

#[test]
fn with_service_restart_an_unlisted_unit_killed_by_sigkill_is_healed() {
    let env = TestEnv::new();
    let port = common::free_port();
    env.configure(&Config::new().with(
        "all_services",
        json!({"healing_strategies": ["service_restart"]}),
    ))
    .web_unit("shop-api", port, "up")
    .install();
    env.start_listening("shop-api", port);

    env.systemctl(&["kill", "--signal=SIGKILL", "shop-api.service"]);
    let history = env.wait_for_history(1, Duration::from_secs(30));
    assert_eq!(history[0].service, "shop-api");
    assert_eq!(history[0].outcome, Outcome::Resolved, "{history:?}");
    assert_contains(&history[0].summary, "SIGKILL");
    assert!(selfheal::ports::is_listening(port));
    // Its report says how to list it, with the port it listens on now.
    heal_unit_finished(&env, "shop-api");
    assert_contains(
        &env.journal(&["-u", "selfheal@shop-api.service"]),
        &format!("add under monitored_services: - {{name: shop-api, port: {port}}}"),
    );
}

#[test]
fn the_hook_reaches_every_unit_but_the_excluded_the_listed_and_selfheals_own() {
    let env = TestEnv::new();
    env.configure(
        &Config::new()
            .with(
                "all_services",
                json!({"exclude": ["skip-*.service", "quiet.service"]}),
            )
            .service(Service::named("web")),
    )
    .unit("web", "ExecStart=/bin/sleep 600")
    .unit("worker@", "ExecStart=/bin/sleep 600")
    .unit("skip-me", "ExecStart=/bin/sleep 600")
    .unit("quiet", "ExecStart=/bin/sleep 600")
    .install();
    let on_failure = |unit: &str| env.property(unit, "OnFailure");

    // A template's instance, a unit with `-` and `@`; the monitored service armed once.
    assert_eq!(
        on_failure("worker@blue-1.service"),
        "selfheal@worker@blue-1.service"
    );
    assert_eq!(on_failure("web.service"), "selfheal@web.service");
    // Excluded by name and by a glob's family directory; selfheal's own units.
    assert_eq!(on_failure("quiet.service"), "");
    assert_eq!(on_failure("skip-me.service"), "");
    for own in [
        "selfheal@web.service",
        "selfheal@anything.service",
        "selfheal-flush.service",
        "selfheal-watch.service",
    ] {
        assert_eq!(on_failure(own), "", "{own}");
    }

    // A unit installed after install, and one excluded by its glob alone.
    env.unit("late", "ExecStart=/bin/sh -c 'exit 3'")
        .unit("skip-later", "ExecStart=/bin/sleep 600");
    env.systemctl(&["daemon-reload"]);
    assert_eq!(on_failure("late.service"), "selfheal@late.service");
    assert_eq!(on_failure("skip-later.service"), "");

    // check says what it arms: the excluded units that exist count as excluded.
    let check = env.selfheal(["check"]);
    let said = String::from_utf8_lossy(&check.stdout);
    assert_contains(&said, "all_services: arms ");
    assert_contains(&said, " 3 excluded");

    // A transient unit: its failure is reported.
    env.sandbox
        .command("systemd-run")
        .args(["--unit=one-off", "--quiet", "/bin/sh", "-c", "exit 5"])
        .status()
        .unwrap();
    heal_unit_finished(&env, "one-off");
    let history = env.history();
    assert!(
        history
            .iter()
            .any(|r| r.service == "one-off" && r.outcome == Outcome::Reported),
        "{history:?}"
    );

    // A heal unit that fails (the config broke) starts no heal unit of its own.
    env.config("monitored_services: [oops\n");
    // (`systemctl start` of a oneshot that fails says so: the error is the point here.)
    let _ = env.sandbox.systemctl(["start", "selfheal@late.service"]);
    assert_eq!(
        env.property("selfheal@late.service", "ActiveState"),
        "failed"
    );
    assert_eq!(
        env.systemctl(&[
            "list-units",
            "--all",
            "--plain",
            "--no-legend",
            "selfheal@selfheal*"
        ])
        .trim(),
        ""
    );

    // uninstall takes every file away; the hook is gone from every unit.
    env.configure(
        &Config::new()
            .with("all_services", json!({"exclude": ["skip-*.service"]}))
            .service(Service::named("web")),
    );
    let output = env.selfheal([
        "uninstall",
        "--unit-dir",
        &env.sandbox.unit_dir().to_string_lossy(),
    ]);
    assert!(output.status.success(), "{output:?}");
    let units = env.sandbox.unit_dir();
    assert!(!units.join("service.d").exists());
    assert!(!units.join("selfheal@.service").exists());
    let left: Vec<_> = std::fs::read_dir(&units)
        .unwrap()
        .flatten()
        .filter(|entry| entry.path().join("99-selfheal-all.conf").exists())
        .map(|entry| entry.path())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(on_failure("late.service"), "");
    assert_eq!(on_failure("worker@blue-1.service"), "");
}
