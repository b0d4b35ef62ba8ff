//! Probes: the hangs systemd cannot see, against a real systemd and real services (selfheal's
//! demo HTTP service, Debian's memcached). Rounds are run by hand (`selfheal probe`) where a
//! test counts them, and by the installed timer where the whole path is the point.
mod common;

use std::time::Duration;

use common::config::{Config, Service};
use common::*;
use selfheal::exit_code::ExitCode;
use selfheal::outcome::Outcome;
use serde_json::{Value, json};

/// `selfheal probe --json`, parsed, with its exit code.
#[track_caller]
fn round(env: &TestEnv) -> (ExitCode, Vec<ProbeOutcomeJson>) {
    let output = env.selfheal(["probe", "--json"]);
    let outcomes = serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "{err}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (exit_code(&output), outcomes)
}

/// The top-level `probe:` section: a round every `interval`, `failures` failed rounds in a
/// row start healing, a timeout of 1 s.
fn probe(interval: &str, failures: u32, start_grace: &str) -> Value {
    json!({"interval": interval, "timeout": "1s", "failures": failures, "start_grace": start_grace})
}

/// A config with `probe` as its top-level probe section and one service, `web`.
fn config(env: &TestEnv, probe: Value, web: Service) {
    env.configure(&Config::new().with("probe", probe).service(web));
}

/// Waits until web's heal unit has run and gone, and returns history.
#[track_caller]
fn after_the_heal_unit(env: &TestEnv, runs: usize) -> Vec<selfheal::state::HistoryRecord> {
    let history = env.wait_for_history(runs, Duration::from_secs(30));
    wait_until(Duration::from_secs(20), "the heal unit to end", || {
        env.property("selfheal@web.service", "ActiveState") != "activating"
    });
    history
}

/// `web`: listening on `port`, but every health answer is a 503, restart or not.
fn deaf_web(env: &TestEnv, port: u16) {
    env.unit(
        "web",
        &format!(
            "ExecStart={} serve-demo --port {port} --status 503",
            selfheal_bin().display()
        ),
    );
}

/// The config for `deaf_web`: every round fails and starts healing at once (failures 1), two
/// healing runs fill loop protection's window; `top` adds top-level keys.
fn deaf_config(port: u16) -> Config {
    Config::new()
        .with("failure_threshold", 2)
        .with("probe", probe("1h", 1, "0s"))
        .service(
            Service::new("web")
                .port(port)
                .health_url(port)
                .verify_timeout("1s")
                .stable_for("100ms"),
        )
}

#[test]
fn a_sigstopped_http_service_is_healed_by_the_probe_timer() {
    let env = TestEnv::new();
    let port = free_port();
    env.web_unit("web", port, "serving");
    config(
        &env,
        probe("1s", 2, "1s"),
        Service::new("web").port(port).health_url(port),
    );
    env.start_listening("web", port).install();
    assert_eq!(
        env.property("selfheal-probe.timer", "ActiveState"),
        "active"
    );
    let before = env.property("web.service", "InvocationID");

    // Hung: systemd still says active/running, and the port still completes handshakes.
    env.systemctl(&["kill", "--signal=SIGSTOP", "web.service"]);
    assert_eq!(env.property("web.service", "ActiveState"), "active");
    let history = after_the_heal_unit(&env, 1);

    assert_eq!(history[0].outcome, Outcome::Resolved, "{history:?}");
    assert_contains(&history[0].summary, "the probes saw it fail: health URL");
    assert_contains(&history[0].summary, "timed out after 1s, 2 rounds in a row");
    assert_ne!(
        env.property("web.service", "InvocationID"),
        before,
        "restarted"
    );
    let report = env.heal_report("web");
    assert!(!report.contains("crashed"), "{report}");
    // Served again, and the next rounds say so; a round every second never meets systemd's
    // default start limit (5 starts in 10 s).
    let mut rounds = String::new();
    wait_until(Duration::from_secs(20), "7 rounds", || {
        rounds = env.journal(&["-u", "selfheal-probe.service"]);
        rounds.matches("Finished selfheal-probe.service").count() >= 7
    });
    assert!(
        !rounds.contains("Start request repeated too quickly"),
        "{rounds}"
    );
    wait_until(Duration::from_secs(10), "a passing round", || {
        let status = env.status();
        status.services[0].healthy
            && status.services[0]
                .probe
                .as_ref()
                .is_some_and(|probe| probe.ok == Some(true))
    });
}

#[test]
fn a_slow_start_is_not_judged_inside_its_grace_and_a_single_bad_answer_is_not_acted_on() {
    let env = TestEnv::new();
    let port = free_port();
    env.web_unit("web", port, "serving");
    // An interval of an hour: the timer stays out of the way, the rounds are the test's.
    config(
        &env,
        probe("1h", 2, "1h"),
        Service::new("web").port(port).health_url(port),
    );
    env.start_listening("web", port).install();
    env.systemctl(&["kill", "--signal=SIGSTOP", "web.service"]);

    // Active for less than start_grace: not judged, whatever it answers.
    let (code, outcomes) = round(&env);
    assert_eq!(code, ExitCode::Success, "{outcomes:?}");
    assert!(!outcomes[0].judged, "{outcomes:?}");
    assert_eq!(outcomes[0].failures, 0);
    assert_contains(&outcomes[0].detail, "within its start_grace of 1h");

    // Past its grace: hung for one round, answering in the next, hung again. Never two in a
    // row, so never healed.
    config(
        &env,
        probe("1h", 2, "0s"),
        Service::new("web").port(port).health_url(port),
    );
    for hung in [true, false, true] {
        let signal = if hung { "SIGSTOP" } else { "SIGCONT" };
        env.systemctl(&["kill", &format!("--signal={signal}"), "web.service"]);
        let (code, outcomes) = round(&env);
        let expected = if hung {
            ExitCode::Failure
        } else {
            ExitCode::Success
        };
        assert_eq!(code, expected, "{outcomes:?}");
        assert_eq!(outcomes[0].failures, u32::from(hung), "{outcomes:?}");
        assert!(outcomes[0].healing_started.is_none(), "{outcomes:?}");
    }
    assert_contains(
        env.status().services[0]
            .probe
            .as_ref()
            .unwrap()
            .detail
            .as_str(),
        "no answer: timed out after 1s",
    );
    assert!(env.history().is_empty(), "{:?}", env.history());
    assert_eq!(
        env.property("selfheal@web.service", "ActiveState"),
        "inactive"
    );
    env.systemctl(&["kill", "--signal=SIGCONT", "web.service"]);
}

#[test]
fn a_service_that_keeps_failing_its_probe_is_escalated_once_without_a_run_storm() {
    let env = TestEnv::new();
    let server = SmtpServer::start(&env.sandbox.scratch_dir().join("smtp"), "a@b.example", "pw");
    let email = server.email_config(&env.sandbox.scratch_dir().join("smtp-password"), "pw");
    let port = free_port();
    deaf_web(&env, port);
    env.configure(&deaf_config(port).with("email", email));
    env.start_listening("web", port).install();

    let (_, first) = round(&env);
    assert_eq!(
        first[0].healing_started.as_deref(),
        Some("selfheal@web.service"),
        "{first:?}"
    );
    let history = after_the_heal_unit(&env, 1);
    assert_eq!(history[0].outcome, Outcome::Failed, "{history:?}");
    // The FAILED run scheduled its retry: the probes leave it to that, round after round.
    for _ in 0..3 {
        let (code, outcomes) = round(&env);
        assert_eq!(code, ExitCode::Failure);
        assert!(outcomes[0].healing_started.is_none(), "{outcomes:?}");
        assert_contains(
            &outcomes[0].detail,
            "not healed: loop protection holds web until its timed retry at",
        );
    }
    assert_eq!(env.history().len(), 1, "one run: {:?}", env.history());
    // The run mailed before it ended, and nothing has run since.
    let mails = server.messages();
    assert_eq!(mails.len(), 1, "one escalation");
    let mail = Mail::parse(&mails[0]);
    assert_contains(&mail.subject, "web - FAILED");
    assert_contains(&mail.text, "the probes saw it fail: health URL");
    assert_contains(&mail.text, "answered HTTP 503");
}

#[test]
fn without_timed_retries_loop_protection_still_holds_the_probes_back() {
    let env = TestEnv::new();
    let port = free_port();
    deaf_web(&env, port);
    // No retry to wait for: only the count of healing runs says "enough".
    env.configure(&deaf_config(port).with("retry_after", "never"));
    env.start_listening("web", port).install();
    let mut started = 0;
    for _ in 0..6 {
        let (_, outcomes) = round(&env);
        if outcomes[0].healing_started.is_some() {
            started += 1;
            after_the_heal_unit(&env, started);
        }
    }
    // failure_threshold runs, then one that records and tells the hold, then none.
    assert_eq!(started, 3, "{:?}", env.history());
    let outcomes: Vec<Outcome> = env.history().iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [Outcome::Failed, Outcome::Failed, Outcome::Suppressed]
    );
    let (_, outcomes) = round(&env);
    assert_contains(
        &outcomes[0].detail,
        "not healed: loop protection holds web; no retry is scheduled",
    );
}

/// `web`: serves, then hangs (SIGSTOP) a second after each start.
fn web_hanging_after_each_start(env: &TestEnv, port: u16) {
    env.unit(
        "web",
        &format!(
            "ExecStart=/bin/sh -c '( sleep 1; kill -STOP $$$$ ) & exec {} serve-demo --port {port}'",
            selfheal_bin().display()
        ),
    );
}

/// Runs probe rounds until one starts the heal unit (the hang may need a moment to come).
#[track_caller]
fn a_round_that_starts_healing(env: &TestEnv) {
    let mut last = Vec::new();
    let started = (0..60).any(|_| {
        last = round(env).1;
        let started = last[0].healing_started.is_some();
        if !started {
            std::thread::sleep(Duration::from_millis(250));
        }
        started
    });
    assert!(
        started,
        "no round started healing: {last:?}\n{:?}",
        env.history()
    );
}

/// A hang that keeps coming back is never silent: after `failure_threshold` heals, the probes
/// start the heal unit once more so that the hold is recorded and told (SUPPRESSED, with
/// what the probes saw and the next try), and then hold quietly until the retry.
#[test]
fn a_hang_that_keeps_coming_back_is_told_when_loop_protection_holds_it() {
    let env = TestEnv::new();
    let server = SmtpServer::start(&env.sandbox.scratch_dir().join("smtp"), "a@b.example", "pw");
    let email = server.email_config(&env.sandbox.scratch_dir().join("smtp-password"), "pw");
    let port = free_port();
    web_hanging_after_each_start(&env, port);
    env.configure(
        &Config::new()
            .with("failure_threshold", 2)
            .with("retry_after", "1h")
            .with("email", email)
            .with("probe", probe("1h", 1, "0s"))
            .service(
                Service::new("web")
                    .port(port)
                    .health_url(port)
                    .verify_timeout("3s"),
            ),
    );
    env.start_listening("web", port).install();
    for runs in 1..=3 {
        a_round_that_starts_healing(&env);
        after_the_heal_unit(&env, runs);
    }
    let history = env.history();
    let outcomes: Vec<Outcome> = history.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [Outcome::Resolved, Outcome::Resolved, Outcome::Suppressed],
        "{history:?}"
    );
    let (_, outcomes) = round(&env);
    assert!(outcomes[0].healing_started.is_none(), "{outcomes:?}");
    assert_contains(&outcomes[0].detail, "until its timed retry at");
    let mails = server.wait_for_messages(3, Duration::from_secs(20));
    let held = Mail::parse(&mails[2]);
    assert_contains(&held.subject, "TestHost: web - SUPPRESSED");
    assert_contains(&held.text, "the probes saw it fail");
    assert_contains(&held.text, "selfheal tries again at");
    env.systemctl(&["kill", "--signal=SIGCONT", "web.service"]);
}

#[test]
fn a_send_expect_probe_catches_a_hung_memcached() {
    let env = TestEnv::new();
    let port = free_port();
    env.unit(
        "web",
        &format!("ExecStart=/usr/bin/memcached -u nobody -l 127.0.0.1 -p {port} -U 0"),
    );
    config(
        &env,
        probe("1h", 2, "0s"),
        Service::new("web")
            .port(port)
            .with("probe", json!({"send": "version\r\n", "expect": "VERSION"})),
    );
    env.start_listening("web", port).install();
    let (code, outcomes) = round(&env);
    assert_eq!(code, ExitCode::Success, "{outcomes:?}");
    assert_contains(&outcomes[0].detail, "answered \"VERSION 1.");

    // Stopped, memcached's port still accepts connections; only the answer is missing.
    env.systemctl(&["kill", "--signal=SIGSTOP", "web.service"]);
    let (_, outcomes) = round(&env);
    assert_eq!(outcomes[0].failures, 1, "{outcomes:?}");
    assert_contains(
        &outcomes[0].detail,
        &format!("port {port}: no answer: timed out after 1s"),
    );
    let (_, outcomes) = round(&env);
    assert_eq!(
        outcomes[0].healing_started.as_deref(),
        Some("selfheal@web.service")
    );
    let history = after_the_heal_unit(&env, 1);
    assert_eq!(history[0].outcome, Outcome::Resolved, "{history:?}");
    assert_contains(
        &history[0].summary,
        &format!(
            "the probes saw it fail: port {port}: no answer: timed out after 1s, 2 rounds in a row"
        ),
    );
    let (code, outcomes) = round(&env);
    assert_eq!(code, ExitCode::Success, "{outcomes:?}");
}

#[test]
fn a_localhost_health_url_reaches_a_service_on_127_0_0_1_alone() {
    let env = TestEnv::new();
    let port = free_port();
    // serve-demo binds 127.0.0.1 only; `localhost` may resolve to ::1 first.
    env.web_unit("web", port, "serving");
    config(
        &env,
        probe("1h", 1, "0s"),
        Service::new("web")
            .port(port)
            .with("health_url", format!("http://localhost:{port}/health")),
    );
    env.start_listening("web", port).install();
    let (code, outcomes) = round(&env);
    assert_eq!(code, ExitCode::Success, "{outcomes:?}");
    assert_eq!(
        outcomes[0].detail,
        format!("http://localhost:{port}/health answered 200")
    );
    assert!(env.history().is_empty());
}
