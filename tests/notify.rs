//! The channels beside email, against real receivers from a real systemd in a sandbox:
//! webhooks (JSON, Slack, ntfy) posted to a Python HTTP server, alerts to Debian's
//! `prometheus-alertmanager`. A failed run posts every channel and fires an alert; the run
//! that heals resolves it; a channel that is down keeps its messages for `flush`, which sends
//! them once and in order; the webhook URL (a secret) is nowhere selfheal writes.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use std::time::Duration;

use common::config::{Config, Service};
use common::receivers::{Alertmanager, TOKEN, WebhookServer, url_file};
use common::{TestEnv, assert_contains, exit_code, free_port, wait_until};
use selfheal::exit_code::ExitCode;
use selfheal::outcome::Outcome;

/// `web`: fails at once (exit 3) until `ok` exists, then serves `port`.
fn flaky_web(env: &TestEnv, port: u16) -> PathBuf {
    let ok = env.sandbox.scratch_dir().join("web-ok");
    env.unit(
        "web",
        &format!(
            "ExecStart=/bin/sh -c 'test -e {} || {{ echo \"web: <b>config</b> & key missing\"; exit 3; }}; exec {} serve-demo --port {port}'",
            ok.display(),
            common::selfheal_bin().display()
        ),
    );
    ok
}

/// A config of a critical `web` on `port`, with a runbook, telling `channels`.
fn config(port: u16, channels: &[Value]) -> Config {
    Config::new().with("notify", channels).service(
        Service::new("web")
            .port(port)
            .with("critical", true)
            .with("runbook", "https://wiki.example.org/web"),
    )
}

/// A webhook channel posting in `format` to the URL in `url_file`.
fn webhook(url_file: &Path, format: &str) -> Value {
    json!({"webhook": {"url_file": url_file, "format": format}})
}

/// Every file under `dir`, with its content.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(path) = todo.pop() {
        if path.is_dir() {
            todo.extend(
                std::fs::read_dir(&path)
                    .unwrap()
                    .flatten()
                    .map(|e| e.path()),
            );
        } else if let Ok(bytes) = std::fs::read(&path) {
            found.push((path, bytes));
        }
    }
    found
}

#[track_caller]
fn assert_token_nowhere(env: &TestEnv, outputs: &[&std::process::Output]) {
    let mut places = files_under(&env.state_dir);
    places.push(("journal".into(), env.journal(&[]).into_bytes()));
    for output in outputs {
        places.push(("stdout".into(), output.stdout.clone()));
        places.push(("stderr".into(), output.stderr.clone()));
    }
    for (place, bytes) in places {
        assert!(
            !String::from_utf8_lossy(&bytes).contains(TOKEN),
            "the webhook URL leaked into {}",
            place.display()
        );
    }
}

#[test]
fn a_failed_run_posts_every_channel_and_fires_an_alert_that_the_healing_run_resolves() {
    let env = TestEnv::new();
    let receiver = WebhookServer::start(&env.sandbox.scratch_dir().join("hooks"));
    let mut alertmanager = Alertmanager::reserve(&env.sandbox.scratch_dir().join("am"));
    alertmanager.start();
    let port = free_port();
    let scratch = env.sandbox.scratch_dir();
    let channels = [
        webhook(
            &url_file(scratch, "json-url", &receiver.url("json")),
            "json",
        ),
        webhook(
            &url_file(scratch, "slack-url", &receiver.url("slack")),
            "slack",
        ),
        webhook(
            &url_file(scratch, "ntfy-url", &receiver.url("ntfy")),
            "ntfy",
        ),
        json!({"alertmanager": {"url": alertmanager.url(), "labels": {"team": "ops"}}}),
    ];
    env.configure(&config(port, &channels));
    let ok = flaky_web(&env, port);
    env.install();

    env.systemctl(&["start", "web.service"]);
    let history = env.wait_for_history(1, Duration::from_secs(30));
    assert_eq!(history[0].outcome, Outcome::Failed);
    let posts = receiver.wait_for_posts(3);
    let post = |kind: &str| {
        posts
            .iter()
            .find(|post| post.path.starts_with(&format!("/{kind}/")))
            .unwrap_or_else(|| panic!("no {kind} post in {posts:?}"))
    };
    // json: the run report, as `run --json` prints it.
    let report: serde_json::Value = serde_json::from_str(&post("json").body).unwrap();
    assert_eq!(report["service"], "web");
    assert_eq!(report["outcome"], "failed");
    assert_eq!(report["runbook"], "https://wiki.example.org/web");
    assert_eq!(post("json").header("Content-Type"), "application/json");
    // slack: the subject, what failed, the root cause, the runbook; the service's own text
    // cannot become Slack markup.
    let slack: serde_json::Value = serde_json::from_str(&post("slack").body).unwrap();
    let text = slack["text"].as_str().unwrap();
    assert_contains(text, "*❌ TestHost: web - FAILED*");
    assert_contains(text, "Root cause: ");
    assert_contains(text, "Runbook: https://wiki.example.org/web");
    assert!(!text.contains("<b>"), "unescaped service text: {text}");
    // ntfy: urgent for a critical service that stays down.
    let ntfy = post("ntfy");
    assert_eq!(ntfy.header("Priority"), "5");
    assert_contains(ntfy.header("Tags"), "rotating_light");
    assert_eq!(ntfy.header("Click"), "https://wiki.example.org/web");
    assert!(ntfy.header("Title").starts_with("=?UTF-8?B?"));
    assert_contains(&ntfy.body, "Runbook: https://wiki.example.org/web");

    wait_until(Duration::from_secs(10), "the alert to fire", || {
        alertmanager.active_for("web").is_some()
    });
    let alert = alertmanager.active_for("web").unwrap();
    assert_eq!(alert["labels"]["alertname"], "SelfhealFailed");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["team"], "ops");
    assert!(
        alert["labels"]["host"]
            .as_str()
            .is_some_and(|h| !h.is_empty())
    );
    assert_eq!(
        alert["annotations"]["runbook_url"],
        "https://wiki.example.org/web"
    );
    assert_eq!(alert["annotations"]["summary"], "❌ TestHost: web - FAILED");

    // The flush timer sends the open alert again while the service stays down.
    let flush = env.selfheal(["flush"]);
    assert_eq!(exit_code(&flush), ExitCode::Success, "{flush:?}");
    assert_contains(
        &String::from_utf8_lossy(&flush.stdout),
        "sent 1 open alert(s) again",
    );
    let status = env.status();
    assert_eq!(status.config["open_alerts"], serde_json::json!(["web"]));

    // Healed by the next run: the alert ends, and every webhook hears of it.
    std::fs::write(&ok, "").unwrap();
    let (code, report) = env.run_json("web", &[]);
    assert_eq!(
        (code, report.outcome),
        (ExitCode::Success, Outcome::Resolved)
    );
    assert!(
        alertmanager.active_for("web").is_none(),
        "the healing run did not resolve the alert: {:?}",
        alertmanager.active_alerts()
    );
    let posts = receiver.wait_for_posts(6);
    let resolved: serde_json::Value = serde_json::from_str(
        &posts
            .iter()
            .find(|post| post.path.starts_with("/json/") && post.body.contains("\"resolved\""))
            .expect("a resolved JSON report")
            .body,
    )
    .unwrap();
    assert_eq!(resolved["healed_by"], "service_restart");
    assert_eq!(env.status().config["open_alerts"], serde_json::json!([]));
    assert_token_nowhere(&env, &[&flush]);
}

#[test]
fn a_channel_that_is_down_keeps_its_messages_and_flush_sends_them_once_in_order() {
    let env = TestEnv::new();
    let down = WebhookServer::start(&env.sandbox.scratch_dir().join("down"));
    let up = WebhookServer::start(&env.sandbox.scratch_dir().join("up"));
    down.set_down(true);
    // Nothing listens on Alertmanager's port yet: its alerts are refused.
    let mut alertmanager = Alertmanager::reserve(&env.sandbox.scratch_dir().join("am"));
    let port = free_port();
    let scratch = env.sandbox.scratch_dir();
    let channels = [
        webhook(&url_file(scratch, "down-url", &down.url("json")), "json"),
        webhook(&url_file(scratch, "up-url", &up.url("json")), "json"),
        json!({"alertmanager": {"url": alertmanager.url()}}),
    ];
    let metrics = env.sandbox.scratch_dir().join("selfheal.prom");
    env.configure(&config(port, &channels).with("metrics_file", &metrics));
    let ok = flaky_web(&env, port);
    env.install();

    env.systemctl(&["start", "web.service"]);
    env.wait_for_history(1, Duration::from_secs(30));
    // The channel that is up got its report while the other two were refused.
    up.wait_for_posts(1);
    std::fs::write(&ok, "").unwrap();
    let (_, report) = env.run_json("web", &[]);
    assert_eq!(report.outcome, Outcome::Resolved);
    assert_eq!(up.wait_for_posts(2).len(), 2);

    let status = env.status();
    let queued: Vec<(String, u64)> = status.config["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["channel"]
                    .as_str()
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .to_owned(),
                c["queued"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        queued,
        [
            ("webhook".to_owned(), 2),
            ("webhook".to_owned(), 0),
            ("alertmanager".to_owned(), 2)
        ]
    );
    let waiting = |kind: &str| {
        std::fs::read_to_string(&metrics)
            .unwrap()
            .lines()
            .find(|line| {
                line.starts_with(&format!(
                    "selfheal_notify_queued_messages{{channel=\"{kind}-"
                ))
            })
            .and_then(|line| line.rsplit(' ').next())
            .map(str::to_owned)
    };
    assert_eq!(waiting("alertmanager").as_deref(), Some("2"));
    let stuck = &status.config["channels"][0];
    // A webhook's error is its status line alone: receivers quote their URL, the secret.
    assert_eq!(stuck["last_error"], "HTTP 503 Service Unavailable");

    // Both come back: one flush delivers everything, fire before resolve; a second, nothing.
    down.set_down(false);
    alertmanager.start();
    let flush = env.selfheal(["flush"]);
    assert_eq!(exit_code(&flush), ExitCode::Success, "{flush:?}");
    let outcomes: Vec<String> = down
        .posts()
        .iter()
        .map(|post| {
            let report: serde_json::Value = serde_json::from_str(&post.body).unwrap();
            report["outcome"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(outcomes, ["failed", "resolved"]);
    assert_eq!(waiting("alertmanager").as_deref(), Some("0"));
    assert!(alertmanager.active_for("web").is_none());
    let again = env.selfheal(["flush"]);
    assert_eq!(exit_code(&again), ExitCode::Success);
    assert_eq!(down.posts().len(), 2, "flush delivered a message twice");
    assert_token_nowhere(&env, &[&flush, &again]);
}

#[test]
fn a_message_the_channel_refuses_for_good_is_set_aside_and_the_ones_behind_it_go_out() {
    let env = TestEnv::new();
    let receiver = WebhookServer::start(&env.sandbox.scratch_dir().join("hooks"));
    // What a receiver says of a payload it will never take (Alertmanager: an alert that ends
    // before it starts): retrying it would hold every later message of the channel.
    receiver.answer(400);
    let port = free_port();
    let hook = url_file(env.sandbox.scratch_dir(), "hook-url", &receiver.url("json"));
    env.configure(&config(port, &[webhook(&hook, "json")]));
    let ok = flaky_web(&env, port);
    env.install();

    env.systemctl(&["start", "web.service"]);
    env.wait_for_history(1, Duration::from_secs(30));
    let channel = || env.status().config["channels"][0].clone();
    wait_until(
        Duration::from_secs(30),
        "the refused report to be set aside",
        || channel()["refused"] == 1,
    );
    assert_eq!(channel()["queued"], 0);
    let queue = files_under(&env.state_dir.join("outbox"))
        .into_iter()
        .find(|(path, _)| path.parent().is_some_and(|dir| dir.ends_with("refused")))
        .expect("the refused message, kept in the outbox");
    let aside: serde_json::Value = serde_json::from_slice(&queue.1).unwrap();
    assert_eq!(aside["what"], "report failed");
    assert_eq!(aside["last_error"], "HTTP 400 Bad Request");
    assert_contains(&env.journal(&[]), "refused for good, set aside in");

    // The next report goes out at once; flush has nothing left to send, and does not retry
    // the refused one.
    receiver.answer(200);
    std::fs::write(&ok, "").unwrap();
    let (_, report) = env.run_json("web", &[]);
    assert_eq!(report.outcome, Outcome::Resolved);
    let posts = receiver.wait_for_posts(1);
    let delivered: serde_json::Value = serde_json::from_str(&posts[0].body).unwrap();
    assert_eq!(delivered["outcome"], "resolved");
    let flush = env.selfheal(["flush"]);
    assert_eq!(exit_code(&flush), ExitCode::Success, "{flush:?}");
    assert_eq!(
        receiver.posts().len(),
        1,
        "flush sent the refused message again"
    );
    assert_contains(
        &String::from_utf8_lossy(&env.selfheal(["status"]).stdout),
        "1 refused for good",
    );
    assert_token_nowhere(&env, &[&flush]);
}

#[test]
fn a_message_queued_for_one_url_is_never_sent_to_the_url_that_replaced_it() {
    let env = TestEnv::new();
    let old = WebhookServer::start(&env.sandbox.scratch_dir().join("old"));
    let new = WebhookServer::start(&env.sandbox.scratch_dir().join("new"));
    old.set_down(true);
    let port = free_port();
    let file = url_file(env.sandbox.scratch_dir(), "hook-url", &old.url("json"));
    env.configure(&config(port, &[webhook(&file, "json")]));
    flaky_web(&env, port);
    env.install();

    env.systemctl(&["start", "web.service"]);
    env.wait_for_history(1, Duration::from_secs(30));
    let channel = || env.status().config["channels"][0].clone();
    wait_until(
        Duration::from_secs(30),
        "the report to wait in the outbox",
        || channel()["queued"] == 1 && channel()["attempts"] == 1,
    );
    // The file is given another team's URL (the role rewrites a file when its list is
    // reordered) while the report for the old one waits; both receivers are up.
    old.set_down(false);
    url_file(
        env.sandbox.scratch_dir(),
        "hook-url",
        &new.url("other-team"),
    );
    let flush = env.selfheal(["flush"]);
    assert_eq!(exit_code(&flush), ExitCode::Failure, "{flush:?}");
    assert_contains(
        &String::from_utf8_lossy(&flush.stderr),
        "it was queued for another URL than",
    );
    assert_eq!(
        new.posts().len(),
        0,
        "a report went to the URL that replaced its own"
    );
    assert_eq!(old.posts().len(), 0, "the old URL is no longer configured");
    assert_eq!(
        (channel()["queued"].clone(), channel()["refused"].clone()),
        (0.into(), 1.into())
    );

    // What is queued from now on goes to the new URL.
    let (code, _) = env.run_json("web", &[]);
    assert_eq!(code, ExitCode::Failure);
    assert_eq!(new.wait_for_posts(1).len(), 1);
    assert_token_nowhere(&env, &[&flush]);
}

#[test]
fn check_refuses_a_url_file_others_can_read_and_test_notify_says_what_each_channel_answered() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = WebhookServer::start(&dir.path().join("hooks"));
    let url_path = dir.path().join("hook-url");
    std::fs::write(&url_path, receiver.url("ntfy")).unwrap();
    std::fs::set_permissions(&url_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused_port = free_port();
    let config_path = dir.path().join("selfheal.yml");
    std::fs::write(
        &config_path,
        Config::new()
            .with(
                "notify",
                [
                    webhook(&url_path, "ntfy"),
                    json!({"alertmanager": {"url": format!("http://127.0.0.1:{refused_port}")}}),
                ],
            )
            .service(Service::named("web"))
            .yaml(),
    )
    .unwrap();
    let selfheal = |args: &[&str]| {
        std::process::Command::new(common::selfheal_bin())
            .arg("--config")
            .arg(&config_path)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(args)
            .output()
            .unwrap()
    };

    let check = selfheal(&["check"]);
    assert_eq!(exit_code(&check), ExitCode::Usage);
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_contains(&stderr, "lets group or others read it (chmod 600");
    assert!(!stderr.contains(TOKEN));

    std::fs::set_permissions(&url_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let clear_text = "crosses the network unencrypted";
    let check = selfheal(&["check"]);
    assert!(!String::from_utf8_lossy(&check.stderr).contains(clear_text));
    std::fs::write(&url_path, format!("http://ntfy.example.org/{TOKEN}")).unwrap();
    let check = selfheal(&["check"]);
    assert_contains(&String::from_utf8_lossy(&check.stderr), clear_text);
    assert!(!String::from_utf8_lossy(&check.stderr).contains(TOKEN));
    std::fs::write(&url_path, receiver.url("ntfy")).unwrap();
    // At -vv the HTTP library's own trace (request lines, URIs) is not logged.
    let test = selfheal(&["-vv", "test-notify"]);
    assert_eq!(exit_code(&test), ExitCode::Failure);
    assert!(
        !String::from_utf8_lossy(&test.stderr).contains(TOKEN),
        "the webhook URL leaked into the -vv log: {}",
        String::from_utf8_lossy(&test.stderr)
    );
    let stdout = String::from_utf8_lossy(&test.stdout);
    assert_contains(&stdout, "webhook (ntfy, URL in ");
    assert_contains(&stdout, ": accepted");
    assert_contains(
        &stdout,
        &format!("alertmanager http://127.0.0.1:{refused_port}: FAILED: connection refused"),
    );
    assert!(!stdout.contains(TOKEN));
    let posts = receiver.posts();
    assert_eq!(posts.len(), 1);
    assert_contains(&posts[0].body, "selfheal test-notify");
}

#[test]
fn an_unknown_channel_or_a_reserved_label_is_refused_with_the_choices() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("selfheal.yml");
    let check = |yaml: &str| {
        std::fs::write(&config_path, yaml).unwrap();
        let output = std::process::Command::new(common::selfheal_bin())
            .arg("--config")
            .arg(&config_path)
            .arg("check")
            .output()
            .unwrap();
        assert_eq!(exit_code(&output), ExitCode::Usage);
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let said = check("notify:\n  - slack: { url_file: /etc/x }\n");
    assert_contains(&said, "selfheal.yml:2:");
    assert_contains(&said, "webhook");
    assert_contains(&said, "alertmanager");
    let said = check(
        "notify:\n  - alertmanager:\n      url: http://127.0.0.1:9093\n      labels: { severity: page }\n",
    );
    assert_contains(&said, "selfheal.yml:4:");
    assert_contains(&said, "severity is set by selfheal on every alert");
    let said = check("notify:\n  - webhook: { url_file: hooks/url }\n");
    assert_contains(&said, "must be an absolute path");
    // An attempt holds its channel's queue, and a run queueing behind it waits.
    let said = check("notify:\n  - alertmanager: { url: http://127.0.0.1:9093, timeout: 5min }\n");
    assert_contains(
        &said,
        "alertmanager.timeout must be longer than 0 and at most 1m (it is 5m)",
    );
}
