//! `selfheal pause` and `resume` against a real systemd, on both systemds: a paused service's
//! failure is recorded (`paused`), not healed and not told; `resume` heals it at once; a pause
//! that ends by its time is healed by the watch's next round; the dashboard shows the pause.

mod common;

use std::time::Duration;

use common::config::{Config, Service};
use common::{Mail, SmtpServer, TestEnv, assert_contains, exit_code, free_port, wait_until};
use selfheal::exit_code::ExitCode;
use selfheal::outcome::Outcome;

const USER: &str = "selfheal";
const PASSWORD: &str = "s3cret-pause";

/// Waits until history holds `count` records.
#[track_caller]
fn history_grows_to(env: &TestEnv, count: usize) -> Vec<selfheal::state::HistoryRecord> {
    env.wait_for_history(count, Duration::from_secs(30))
}

/// Waits until the dashboard shows no pause (nor window) holding the first service.
#[track_caller]
fn wait_until_not_paused(env: &TestEnv, timeout: Duration, what: &str) {
    wait_until(timeout, what, || {
        let status = env.selfheal(["status", "--json"]);
        let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        status["services"][0]["paused_until"].is_null()
    });
}

/// The plan is over and web (on `port`) was left failed by its one `paused` run: the watch's
/// round heals it, and history's second record is that heal.
#[track_caller]
fn the_watch_heals(env: &TestEnv, port: u16) {
    let watched = env.selfheal(["watch"]);
    assert_eq!(exit_code(&watched), ExitCode::Success, "{watched:?}");
    wait_until(Duration::from_secs(15), "web to serve again", || {
        selfheal::ports::is_listening(port)
    });
    let history = history_grows_to(env, 2);
    assert_eq!(history[1].outcome, Outcome::Resolved, "{history:?}");
}

#[test]
fn a_paused_service_is_recorded_not_healed_nor_told_and_resume_heals_it() {
    let env = TestEnv::new();
    let server = SmtpServer::start(&env.sandbox.scratch_dir().join("smtp"), USER, PASSWORD);
    let password_file = env.sandbox.scratch_dir().join("smtp-password");
    let port = free_port();
    env.configure(
        &Config::new()
            .with("email", server.email_config(&password_file, PASSWORD))
            .service(Service::new("web").port(port)),
    )
    .web_unit("web", port, "up")
    .install()
    .start_listening("web", port);

    let paused = env.selfheal(["pause", "web", "--for", "1h", "--reason", "deploy 4.2"]);
    assert_eq!(exit_code(&paused), ExitCode::Success, "{paused:?}");
    assert_contains(
        &String::from_utf8_lossy(&paused.stdout),
        "paused web until ",
    );
    let status = env.selfheal(["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["services"][0]["pause_reason"], "deploy 4.2");
    assert!(status["services"][0]["paused_until"].is_string());

    env.systemctl(&["kill", "--signal=SIGKILL", "web.service"]);
    let history = history_grows_to(&env, 1);
    assert_eq!(history[0].outcome, Outcome::Paused, "{history:?}");
    wait_until(Duration::from_secs(10), "the heal unit to finish", || {
        env.property("selfheal@web.service", "ActiveState") != "activating"
    });
    assert_eq!(env.property("web.service", "ActiveState"), "failed");
    assert!(server.messages().is_empty(), "a paused run told someone");

    let resumed = env.selfheal(["resume", "web"]);
    let said = String::from_utf8_lossy(&resumed.stdout);
    assert_eq!(exit_code(&resumed), ExitCode::Success, "{resumed:?}");
    assert_contains(&said, "web.service is failed: selfheal@web.service started");
    wait_until(Duration::from_secs(15), "web to serve again", || {
        selfheal::ports::is_listening(port)
    });
    let history = history_grows_to(&env, 2);
    assert_eq!(history[1].outcome, Outcome::Resolved, "{history:?}");
    let mails = server.wait_for_messages(1, Duration::from_secs(10));
    assert_contains(&Mail::parse(&mails[0]).subject, "web - RESOLVED");
}

#[test]
fn a_pause_that_ends_by_its_time_is_healed_by_the_next_watch_round() {
    let env = TestEnv::new();
    let port = free_port();
    env.configure(&Config::new().service(Service::new("web").port(port)))
        .web_unit("web", port, "up")
        .install()
        .start_listening("web", port);
    // Bad input: a usage error (exit 2) that says what is wrong.
    for (args, said) in [
        (&["pause", "web", "--for", "8d"][..], "at most 7d"),
        (&["pause", "web", "--for", "banana"][..], "banana"),
        (&["pause", "nosuch"][..], "nosuch"),
        (&["resume"][..], "required arguments were not provided"),
    ] {
        let refused = env.selfheal(args);
        assert_eq!(
            exit_code(&refused),
            ExitCode::Usage,
            "{args:?}: {refused:?}"
        );
        assert_contains(&String::from_utf8_lossy(&refused.stderr), said);
    }

    let paused = env.selfheal(["pause", "--all", "--for", "2s"]);
    assert_eq!(exit_code(&paused), ExitCode::Success, "{paused:?}");
    env.systemctl(&["kill", "--signal=SIGKILL", "web.service"]);
    let history = history_grows_to(&env, 1);
    assert_eq!(history[0].outcome, Outcome::Paused, "{history:?}");

    // Once the pause is over, the next watch round (its timer's, or this one) heals it.
    wait_until_not_paused(&env, Duration::from_secs(10), "the pause to end");
    the_watch_heals(&env, port);
}

/// A maintenance window that began two seconds ago and lasts twenty: a failure inside it is
/// recorded `paused` (with the window), not healed; once it is over, the watch heals it.
/// `check` refuses a window systemd cannot read or that never occurs again.
#[test]
fn a_failure_in_a_maintenance_window_waits_for_its_end_and_is_healed_then() {
    let env = TestEnv::new();
    let port = free_port();
    let began = std::time::SystemTime::now() - Duration::from_secs(2);
    let seconds = began
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 86_400;
    let on = format!(
        "*-*-* {:02}:{:02}:{:02} UTC",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    );
    let window = serde_json::json!([{"on": on, "for": "20s", "reason": "backups"}]);
    env.configure(
        &Config::new().service(Service::new("web").port(port).with("maintenance", &window)),
    )
    .web_unit("web", port, "up")
    .install()
    .start_listening("web", port);
    let checked = env.selfheal(["check"]);
    assert_eq!(exit_code(&checked), ExitCode::Success, "{checked:?}");
    assert_contains(
        &String::from_utf8_lossy(&checked.stdout),
        &format!("maintenance window {on} for 20s (backups) (web): on now, until "),
    );

    env.systemctl(&["kill", "--signal=SIGKILL", "web.service"]);
    let history = history_grows_to(&env, 1);
    assert_eq!(history[0].outcome, Outcome::Paused, "{history:?}");
    assert_contains(&history[0].summary, "in its maintenance window");
    let status = env.selfheal(["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        status["services"][0]["pause_reason"],
        format!("maintenance window {on} for 20s (backups)")
    );
    assert_eq!(env.property("web.service", "ActiveState"), "failed");

    wait_until_not_paused(&env, Duration::from_secs(25), "the window to end");
    // Over: the dashboard says when the next one begins (tomorrow at the same time).
    let status = env.selfheal(["status"]);
    assert_contains(
        &String::from_utf8_lossy(&status.stdout),
        "maintenance from ",
    );
    the_watch_heals(&env, port);

    for (on, said) in [
        ("Sunn 03:00", "is not a systemd calendar event"),
        ("2020-01-01", "never occurs again"),
    ] {
        let window = serde_json::json!([{"on": on, "for": "1h"}]);
        env.configure(
            &Config::new()
                .with("maintenance", &window)
                .service(Service::new("web").port(port)),
        );
        let refused = env.selfheal(["check"]);
        assert_eq!(exit_code(&refused), ExitCode::Usage, "{on}: {refused:?}");
        assert_contains(&String::from_utf8_lossy(&refused.stderr), said);
    }
}
