//! selfheal and systemd's own `Restart=`, on the systemd the suite boots: Debian 12's 252,
//! where `OnFailure=` fires once systemd gives up, and (with `SELFHEAL_TEST_ROOT`) Debian
//! 13's 257, where it fires at every failed attempt. The same config behaves the same.
mod common;

use std::time::Duration;

use common::config::{Config, Service};
use common::*;
use selfheal::outcome::Outcome;
use serde_json::json;

#[test]
fn the_sandbox_boots_the_systemd_it_was_asked_for() {
    let env = TestEnv::new();
    let version = systemd_version(&env.sandbox);
    if std::env::var_os("SELFHEAL_TEST_ROOT").is_some() {
        assert!(version >= 254, "the tree's systemd is {version}");
    } else {
        assert_eq!(version, 252, "Debian 12's systemd");
    }
    // Transient units (retry and cascade timers are) survive a daemon-reload.
    let made = env
        .sandbox
        .command("systemd-run")
        .args(["--unit=later", "--on-active=1h", "/bin/true"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    env.systemctl(&["daemon-reload"]);
    assert_eq!(env.property("later.timer", "ActiveState"), "active");
}

#[test]
fn selfheal_demo_works_on_a_host_that_runs_this_systemd() {
    // The sandbox is such a host: the demo boots its own sandbox inside it (on 257, with
    // cgroup2 alone, where mounting cgroup2 over the host's once failed with EBUSY).
    let env = TestEnv::new();
    let output = env
        .sandbox
        .command("timeout")
        .arg("60")
        .arg(selfheal_bin())
        .arg("demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_contains(&stdout, "resolved");
}

const USER: &str = "alerts@testhost.example";
const PASSWORD: &str = "pw-restart";

/// A test's world with an SMTP server, and a config mailing through it.
fn mailing() -> (TestEnv, SmtpServer, Config) {
    let env = TestEnv::new();
    let server = SmtpServer::start(&env.sandbox.scratch_dir().join("smtp"), USER, PASSWORD);
    let email = server.email_config(&env.sandbox.scratch_dir().join("smtp-password"), PASSWORD);
    let config = Config::new().with("email", email);
    (env, server, config)
}

/// An SMTP server and a config with one service, `web` (its unit's `[Service]` is
/// `service`), installed.
fn installed(service: &str, web: Service) -> (TestEnv, SmtpServer) {
    let (env, server, config) = mailing();
    env.unit("web", service);
    env.configure(&config.service(web)).install();
    (env, server)
}

/// `web` with a 500 ms `stable_for`.
fn web() -> Service {
    Service::new("web").stable_for("500ms")
}

/// Waits until nothing is left to happen: web is settled (no job, no pending restart), its
/// heal unit is not running, and the outbox is empty (every report delivered). Returns the
/// subjects of the mails that arrived.
fn settled(env: &TestEnv, server: &SmtpServer) -> Vec<String> {
    wait_until(
        Duration::from_secs(40),
        "web and its heal unit to settle",
        || {
            let web = env.property("web.service", "ActiveState");
            let job = env.property("web.service", "Job");
            let healing = env.property("selfheal@web.service", "ActiveState");
            let queued = std::fs::read_dir(env.state_dir.join("outbox")).map_or(0, |dir| {
                dir.flatten().filter(|e| e.path().is_file()).count()
            });
            web != "activating" && job.is_empty() && healing != "activating" && queued == 0
        },
    );
    server
        .messages()
        .iter()
        .map(|raw| Mail::parse(raw).subject)
        .collect()
}

#[test]
fn one_sigkill_that_restart_absorbs_is_systemds_restart_on_both_systemds() {
    let port = free_port();
    let (env, server) = installed(
        &format!(
            "ExecStart={} serve-demo --port {port}\nRestart=on-failure\nRestartSec=200ms",
            selfheal_bin().display()
        ),
        web().port(port),
    );
    env.start_listening("web", port);
    let before = env.property("web.service", "InvocationID");
    // What `selfheal-watch.timer` does every 30 s: the first look takes note.
    watch(&env);

    env.systemctl(&["kill", "--signal=SIGKILL", "web.service"]);
    wait_until(Duration::from_secs(10), "systemd's restart", || {
        env.property("web.service", "InvocationID") != before
            && env.property("web.service", "ActiveState") == "active"
    });
    let subjects = settled(&env, &server);

    assert_eq!(
        subjects,
        Vec::<String>::new(),
        "no mail for a restart that worked"
    );
    assert_eq!(
        env.property("web.service", "NRestarts"),
        "1",
        "systemd's one restart, none of selfheal's"
    );
    // systemd >= 254 started the heal unit at the failure, and its run recorded what systemd
    // did; on 252 nothing fired, and the watch's next look records it. Once either way.
    watch(&env);
    let history = env.history();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(
        history[0].outcome,
        Outcome::RestartedBySystemd,
        "{history:?}"
    );
    let status = env.status();
    assert_eq!(status.services[0].restarts_by_systemd_24h, 1, "{status:?}");
}

/// One round of `selfheal watch`, as its timer runs it.
#[track_caller]
fn watch(env: &TestEnv) -> String {
    let output = env.selfheal(["watch"]);
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `web` whose command is `command` (`$$` for a shell's `$`, `SCRATCH` for the sandbox's
/// scratch directory), with `Restart=always` after
/// `restart_sec` and no start limit, watched with `crash_loop: {restarts: 3, within}`; an SMTP
/// server and the install. It is started once the watch has taken its first look.
fn looping(command: &str, restart_sec: &str, within: &str) -> (TestEnv, SmtpServer) {
    let (env, server, config) = mailing();
    let command = command.replace("SCRATCH", &env.sandbox.scratch_dir().to_string_lossy());
    env.sandbox
        .add_unit(
            "web.service",
            &format!(
                "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=/bin/sh -c '{command}'\nRestart=always\nRestartSec={restart_sec}\n"
            ),
        )
        .unwrap();
    env.configure(
        &config
            .with("crash_loop", json!({"restarts": 3, "within": within}))
            .service(Service::new("web").verify_timeout("2s").stable_for("200ms")),
    )
    .install();
    watch(&env);
    env.systemctl(&["start", "web.service"]);
    (env, server)
}

/// Rounds of the watch, as its timer makes them, until the crash loop is mailed.
#[track_caller]
fn watch_until_reported(env: &TestEnv, server: &SmtpServer) {
    wait_until(Duration::from_secs(40), "the crash loop report", || {
        watch(env);
        !server.messages().is_empty()
    });
}

/// A service that crashes a second after each start, with `Restart=always` and no start
/// limit: systemd never gives up, so no run ever fails. The watch reports the loop once, with
/// the evidence, on both systemds.
#[test]
fn a_restart_always_loop_that_never_hits_the_start_limit_is_reported_once_on_both_systemds() {
    let (env, server) = looping(
        "echo web: cache dir missing; sleep 1; exit 3",
        "100ms",
        "1m",
    );
    watch_until_reported(&env, &server);
    // More restarts, more rounds: still one report.
    let restarts: u32 = env.property("web.service", "NRestarts").parse().unwrap();
    wait_until(Duration::from_secs(20), "three more restarts", || {
        env.property("web.service", "NRestarts")
            .parse::<u32>()
            .unwrap()
            >= restarts + 3
    });
    watch(&env);
    let mails = server.messages();
    let subjects: Vec<String> = mails.iter().map(|raw| Mail::parse(raw).subject).collect();
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert_contains(&subjects[0], "TestHost: web - CRASH LOOP");
    let mail = Mail::parse(&mails[0]);
    assert_contains(&mail.text, "within 1m (Restart=always)");
    assert_contains(&mail.text, "status=3");
    assert_contains(&mail.text, "web: cache dir missing");
    let loops = env
        .history()
        .iter()
        .filter(|r| r.outcome == Outcome::CrashLoop)
        .count();
    assert_eq!(loops, 1);
}

/// A crash loop that goes on for longer than its window after it was told is still one report:
/// on systemd >= 254 the hook's runs end FAILED at each attempt, and once the window since the
/// CRASH LOOP report had passed, the next one was mailed as a new FAILED (found by the replay
/// bench on 257: a FAILED mail and alert a second before the mended service served again).
#[test]
fn a_crash_loop_that_outlasts_its_window_is_still_one_report_on_both_systemds() {
    let (env, server) = looping(
        "echo web: cache dir missing; sleep 0.5; exit 3",
        "300ms",
        "3s",
    );
    watch_until_reported(&env, &server);
    // Three windows more of the loop, looked at by the watch as its timer would.
    let told = std::time::Instant::now();
    while told.elapsed() < Duration::from_secs(10) {
        watch(&env);
        std::thread::sleep(Duration::from_millis(500));
    }
    env.systemctl(&["stop", "web.service"]);
    let subjects = settled(&env, &server);
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert_contains(&subjects[0], "TestHost: web - CRASH LOOP");
}

#[test]
fn a_crash_loop_that_systemd_gives_up_on_gets_exactly_one_report_on_both_systemds() {
    let (env, server) = installed(
        "ExecStart=/bin/sh -c 'echo web: settings missing; exit 3'\nRestart=on-failure\nRestartSec=100ms\nStartLimitBurst=4\nStartLimitIntervalSec=30s",
        web(),
    );
    let _ = env.sandbox.systemctl(["start", "web.service"]);
    server.wait_for_messages(1, Duration::from_secs(40));
    let subjects = settled(&env, &server);

    let history = env.history();
    assert_eq!(subjects.len(), 1, "{subjects:?} {history:#?}");
    assert_contains(&subjects[0], "TestHost: web - FAILED");
    // (systemd may still be at its own last restarts after selfheal's attempt.)
    wait_until(Duration::from_secs(20), "web to end failed", || {
        env.property("web.service", "ActiveState") == "failed"
    });
    let failed = history
        .iter()
        .filter(|r| r.outcome == Outcome::Failed)
        .count();
    assert_eq!(failed, 1, "{history:?}");
    // The FAILED run is not final: its retry is scheduled.
    assert_eq!(env.property("selfheal@web.timer", "ActiveState"), "active");
}

/// The FAILED report of a crash loop quotes the loop's own error, on 257 as on 252, even after
/// an earlier failure started the heal unit: systemd keeps that start's `MONITOR_*` on the
/// heal unit, and the report used to describe the run that was SIGKILLed before.
#[test]
fn a_crash_loops_report_quotes_the_loops_own_error_not_an_earlier_runs() {
    let (env, server, config) = mailing();
    let broken = env.sandbox.scratch_dir().join("web-broken");
    env.unit(
        "web",
        &format!(
            "ExecStart=/bin/sh -c 'if [ -e {b} ]; then echo \"web: unrecognized option --no-such-option\"; sleep 0.3; exit 2; fi; echo web: serving; exec sleep infinity'\nRestart=on-failure\nRestartSec=100ms\nStartLimitBurst=4\nStartLimitIntervalSec=30s",
            b = broken.display()
        ),
    );
    env.configure(&config.service(web())).install();
    env.systemctl(&["start", "web.service"]);
    let first = env.property("web.service", "InvocationID");
    // An earlier failure that Restart= absorbs (on 257 its hook's run records it).
    env.systemctl(&["kill", "--signal=SIGKILL", "web.service"]);
    wait_until(Duration::from_secs(20), "systemd's own restart", || {
        env.property("web.service", "ActiveState") == "active"
            && env.property("web.service", "InvocationID") != first
    });
    settled(&env, &server);
    // Now it is broken: a crash loop that systemd gives up on. (Each attempt lives a moment
    // after its error line, so journald can tag the line with the attempt's invocation.)
    std::fs::write(&broken, "").unwrap();
    env.systemctl(&["kill", "--signal=SIGKILL", "web.service"]);
    server.wait_for_messages(1, Duration::from_secs(40));
    settled(&env, &server);
    let mails: Vec<Mail> = server
        .messages()
        .iter()
        .map(|raw| Mail::parse(raw))
        .collect();
    let failed = mails
        .iter()
        .find(|mail| mail.subject.contains("web - FAILED"))
        .unwrap_or_else(|| {
            panic!(
                "a FAILED mail: {:?}",
                mails.iter().map(|m| &m.subject).collect::<Vec<_>>()
            )
        });
    assert_contains(&failed.text, "unrecognized option --no-such-option");
}

/// Never quieter than systemd, to the end: a crash loop that `Restart=` ends gets its
/// all-clear on every channel that heard CRASH LOOP, once a whole `crash_loop.within` passes
/// without a restart; its restarts are the loop's, not recoveries.
#[test]
fn a_crash_loop_that_restart_ends_gets_its_all_clear_on_both_systemds() {
    // Crashes at its first four starts, then stays up.
    let (env, server) = looping(
        "echo x >> SCRATCH/starts; [ $$(wc -l < SCRATCH/starts) -gt 4 ] || { echo web: cache dir missing; exit 3; }; exec sleep infinity",
        "300ms",
        "4s",
    );
    watch_until_reported(&env, &server);
    wait_until(Duration::from_secs(20), "the loop's end", || {
        env.property("web.service", "SubState") == "running"
    });
    wait_until(Duration::from_secs(30), "the all-clear", || {
        watch(&env);
        server.messages().len() >= 2
    });
    let subjects: Vec<String> = server
        .messages()
        .iter()
        .map(|raw| Mail::parse(raw).subject)
        .collect();
    assert_contains(&subjects[0], "TestHost: web - CRASH LOOP");
    assert_eq!(subjects[1], "✅ TestHost: web - BACK UP after CRASH LOOP");
    assert_eq!(subjects.len(), 2, "{subjects:?}");
    let history = env.history();
    let found = history
        .iter()
        .position(|r| r.outcome == Outcome::CrashLoop)
        .expect("the crash loop, recorded");
    // (On systemd >= 254 each attempt's hook run records what systemd did, by the spec; the
    // watch's own record of restarts it saw is the one that counted a loop as recoveries.)
    assert!(
        history[found..].iter().all(|r| {
            r.outcome != Outcome::RestartedBySystemd
                || !r.summary.contains("seen by selfheal watch")
        }),
        "the loop's restarts after it was found are not recoveries: {history:?}"
    );
}

/// A service people were told is FAILED, brought back by a person (`systemctl start` after a
/// fix, no run of selfheal): `flush` finds it serving and every channel hears it is back.
#[test]
fn a_failed_service_a_person_brings_back_gets_its_all_clear_from_flush() {
    let (env, server, config) = mailing();
    let fixed = env.sandbox.scratch_dir().join("fixed");
    let port = free_port();
    env.unit(
        "web",
        &format!(
            "ExecStart=/bin/sh -c 'test -e {f} || exit 3; exec {bin} serve-demo --port {port}'",
            f = fixed.display(),
            bin = selfheal_bin().display()
        ),
    );
    env.configure(
        &config.with("retry_after", "1h").service(
            Service::new("web")
                .port(port)
                .verify_timeout("2s")
                .stable_for("200ms"),
        ),
    )
    .install();
    let _ = env.sandbox.systemctl(["start", "web.service"]);
    server.wait_for_messages(1, Duration::from_secs(30));
    std::fs::write(&fixed, "").unwrap();
    env.start_listening("web", port);
    let flush = env.selfheal(["flush"]);
    assert_contains(&String::from_utf8_lossy(&flush.stdout), "web: back up");
    let mails = server.wait_for_messages(2, Duration::from_secs(20));
    let subjects: Vec<String> = mails.iter().map(|raw| Mail::parse(raw).subject).collect();
    assert_eq!(
        subjects,
        [
            "❌ TestHost: web - FAILED",
            "✅ TestHost: web - BACK UP after FAILED"
        ]
    );
    let back = Mail::parse(&mails[1]);
    assert_contains(&back.text, "brought back by other hands");
    // Told once: the next flush says nothing more.
    env.selfheal(["flush"]);
    assert_eq!(server.messages().len(), 2);
}
