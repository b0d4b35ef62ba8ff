//! Incidents, not runs, against a real systemd and a real SMTP server: a service that loop
//! protection stopped is healed by its timed retry (one RECOVERED mail); services that fail
//! together get one cascade mail; the daily digest.

mod common;

use std::time::Duration;

use common::config::{Config, Service};
use common::{
    Mail, SmtpServer, StatsRowJson, TestEnv, assert_contains, free_port, selfheal_bin, wait_until,
};
use selfheal::outcome::Outcome;
use selfheal::state::{HistoryRecord, StateDir};

const USER: &str = "alerts@testhost.example";
const PASSWORD: &str = "pw-incidents";

fn smtp(env: &TestEnv) -> SmtpServer {
    SmtpServer::start(&env.sandbox.scratch_dir().join("smtp"), USER, PASSWORD)
}

/// A config mailing through `server`.
fn mailing(env: &TestEnv, server: &SmtpServer) -> Config {
    Config::new().with(
        "email",
        server.email_config(&env.sandbox.scratch_dir().join("smtp-password"), PASSWORD),
    )
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
fn a_failed_service_is_healed_by_its_timed_retry_with_one_failed_and_one_recovered_mail() {
    let env = TestEnv::new();
    let server = smtp(&env);
    let port = free_port();
    let marker = env.sandbox.scratch_dir().join("web-fixed");
    web_failing_until(&env, "web", port, &marker);
    env.configure(
        &mailing(&env, &server)
            .with("retry_after", "8s")
            .service(Service::new("web").port(port).verify_timeout("3s")),
    )
    .install();

    // It fails, the heal fails: FAILED, and a retry is scheduled. Whoever starts it again
    // before the retry gets the same failure: part of the episode, no restart, no mail.
    for runs in 1..=3 {
        let _ = env.sandbox.systemctl(["start", "web.service"]);
        env.wait_for_history(runs, Duration::from_secs(20));
        // Its report is mailed after the history line: a failure before the heal unit has
        // ended would be merged into that run.
        wait_until(Duration::from_secs(20), "the heal unit to end", || {
            env.property("selfheal@web.service", "ActiveState") != "activating"
        });
    }
    let history = env.history();
    let outcomes: Vec<Outcome> = history.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [Outcome::Failed, Outcome::Suppressed, Outcome::Suppressed]
    );
    assert_eq!(env.property("selfheal@web.timer", "ActiveState"), "active");
    let status = env.status();
    let web = &status.services[0];
    assert!(web.next_retry_at.is_some(), "{web:?}");

    // The cause goes away; nobody touches the service; the retry heals it.
    std::fs::write(&marker, "").unwrap();
    let history = env.wait_for_history(4, Duration::from_secs(30));
    assert_eq!(history[3].outcome, Outcome::Resolved);
    assert_eq!(env.property("web.service", "ActiveState"), "active");

    let mails = server.wait_for_messages(2, Duration::from_secs(20));
    wait_until(Duration::from_secs(20), "the retry's run to end", || {
        env.property("selfheal@web.service", "ActiveState") != "activating"
    });
    let subjects = subjects(&server);
    assert_eq!(mails.len(), 2, "{subjects:?}");
    assert_eq!(subjects.len(), 2, "{subjects:?}");
    assert_eq!(subjects[0], "❌ TestHost: web - FAILED");
    assert_contains(
        &subjects[1],
        "✅ TestHost: web - RECOVERED after 1 failure since ",
    );
    // The timer was transient: gone once it fired.
    wait_until(Duration::from_secs(5), "the retry timer to unload", || {
        env.property("selfheal@web.timer", "LoadState") == "not-found"
    });
}

/// A service that dies a second after each start: its healing never holds. RECOVERED keeps
/// the episode watched; each relapse is the next back-off step (no restart), told at once,
/// and waits twice as long as the last for its retry; the success rate says it is down.
#[test]
fn a_service_that_relapses_after_each_recovery_backs_off_with_one_mail_per_step() {
    let env = TestEnv::new();
    let server = smtp(&env);
    env.unit("web", "ExecStart=/bin/sh -c 'sleep 1; exit 3'");
    env.configure(
        &mailing(&env, &server)
            .with("failure_threshold", 1)
            .with("retry_after", "1s")
            .service(Service::new("web").verify_timeout("900ms")),
    )
    .install();
    env.systemctl(&["start", "web.service"]);
    // RESOLVED, SUPPRESSED (loop protection), then three back-off steps: RECOVERED by the
    // retry, and the relapse a second later.
    let history = env.wait_for_history(8, Duration::from_secs(60));
    let steps: Vec<(Outcome, bool)> = history.iter().map(|r| (r.outcome, r.relapse)).collect();
    assert_eq!(
        steps[..8],
        [
            (Outcome::Resolved, false),
            (Outcome::Suppressed, false),
            (Outcome::Resolved, false),
            (Outcome::Suppressed, true),
            (Outcome::Resolved, false),
            (Outcome::Suppressed, true),
            (Outcome::Resolved, false),
            (Outcome::Suppressed, true),
        ],
        "{history:?}"
    );
    // Each wait from a relapse to its retry is about twice the last (1 s, 2 s, 4 s).
    let at = |index: usize| history[index].started();
    let waits: Vec<Duration> = [(3, 4), (5, 6)]
        .iter()
        .map(|&(relapse, retry)| at(retry).duration_since(at(relapse)).unwrap())
        .collect();
    assert!(
        waits[0] >= Duration::from_millis(1_800) && waits[1] >= waits[0] + Duration::from_secs(1),
        "{waits:?}"
    );
    // One mail per step: each relapse is told when it happens, with its next try.
    let mails = server.wait_for_messages(8, Duration::from_secs(20));
    let subjects: Vec<String> = mails.iter().map(|raw| Mail::parse(raw).subject).collect();
    assert_contains(&subjects[0], "TestHost: web - RESOLVED");
    for (index, subject) in subjects[1..8].iter().enumerate() {
        let expected = if index % 2 == 0 {
            "TestHost: web - SUPPRESSED"
        } else {
            "✅ TestHost: web - RECOVERED after "
        };
        assert_contains(subject, expected);
    }
    let relapse = Mail::parse(&mails[3]);
    assert_contains(&relapse.text, "the healing did not hold");
    assert_contains(&relapse.text, "selfheal tries again at");
    let stats = env.selfheal(["history", "--stats", "--json"]);
    let line = String::from_utf8_lossy(&stats.stdout);
    let stats: StatsRowJson = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert!(
        stats.success_rate.unwrap() <= 0.5,
        "healings that did not hold count as failures: {stats:?}"
    );
}

/// Never quieter than systemd: a failure after the service ran healthy for
/// `new_incident_after` is a new incident, healed at once and told, however recently a
/// retry healed it (it used to be a quiet "relapse", left down until the next retry).
#[test]
fn a_failure_after_a_healthy_while_is_a_new_incident_healed_at_once() {
    let env = TestEnv::new();
    let server = smtp(&env);
    let port = free_port();
    let marker = env.sandbox.scratch_dir().join("web-fixed");
    web_failing_until(&env, "web", port, &marker);
    env.configure(
        &mailing(&env, &server)
            .with("failure_threshold", 1)
            .with("retry_after", "2s")
            .with("new_incident_after", "3s")
            .service(Service::new("web").port(port).verify_timeout("3s")),
    )
    .install();
    let _ = env.sandbox.systemctl(["start", "web.service"]);
    env.wait_for_history(1, Duration::from_secs(20));
    std::fs::write(&marker, "").unwrap();
    let history = env.wait_for_history(2, Duration::from_secs(20));
    assert_eq!(history[1].outcome, Outcome::Resolved, "{history:?}");
    // Within new_incident_after a failure would be a relapse: the dashboard says held.
    assert!(env.status().services[0].suppressed, "{:?}", env.status());
    // Once it has run healthy that long, a failure would be healed at once.
    wait_until(Duration::from_secs(10), "a new incident's turn", || {
        !env.status().services[0].suppressed
    });
    env.systemctl(&["kill", "--signal=SIGKILL", "web.service"]);
    let history = env.wait_for_history(3, Duration::from_secs(20));
    assert_eq!(
        (history[2].outcome, history[2].relapse),
        (Outcome::Resolved, false),
        "{history:?}"
    );
    assert_eq!(env.property("web.service", "ActiveState"), "active");
    // Each run's mail, in any order (under load a mail may wait in the outbox for flush).
    let expected = [
        "❌ TestHost: web - FAILED",
        "✅ TestHost: web - RECOVERED after ",
        "✅ TestHost: web - RESOLVED",
    ];
    let mut subjects = Vec::new();
    let all_told = (0..30).any(|_| {
        subjects = server
            .messages()
            .iter()
            .map(|raw| Mail::parse(raw).subject)
            .collect();
        let told = expected
            .iter()
            .all(|want| subjects.iter().any(|s| s.starts_with(want)));
        if !told {
            env.selfheal(["flush"]);
            std::thread::sleep(Duration::from_secs(1));
        }
        told
    });
    assert!(all_told, "{subjects:?}\n{:?}", env.history());
}

/// M3: a service whose unit is disabled (`systemctl disable --now`, or never enabled) while
/// it waits for its timed retry is left down: the retry restarts nothing, the episode ends,
/// and the owner hears that the promised retry is not made.
#[test]
fn a_timed_retry_leaves_a_disabled_unit_down() {
    let env = TestEnv::new();
    let server = smtp(&env);
    let port = free_port();
    let marker = env.sandbox.scratch_dir().join("web-fixed");
    env.sandbox
        .add_unit(
            "web.service",
            &format!(
                "[Unit]\nDescription=test web\n[Service]\nExecStart=/bin/sh -c 'test -e {m} || exit 3; exec {bin} serve-demo --port {port}'\n[Install]\nWantedBy=multi-user.target\n",
                m = marker.display(),
                bin = selfheal_bin().display()
            ),
        )
        .unwrap();
    env.configure(
        &mailing(&env, &server)
            .with("retry_after", "3s")
            .service(Service::new("web").port(port).verify_timeout("2s")),
    )
    .install();
    let _ = env.sandbox.systemctl(["start", "web.service"]);
    env.wait_for_history(1, Duration::from_secs(20));
    let _ = env.sandbox.systemctl(["disable", "--now", "web.service"]);
    assert_eq!(env.property("web.service", "UnitFileState"), "disabled");
    let failed_invocation = env.property("web.service", "InvocationID");
    // The cause is gone too: only the person's decision keeps it down.
    std::fs::write(&marker, "").unwrap();
    let history = env.wait_for_history(2, Duration::from_secs(20));
    assert_eq!(
        history[1].outcome,
        Outcome::Suppressed,
        "{history:?}\n{}",
        env.journal(&["-u", "selfheal@web.service"])
    );
    assert_eq!(
        env.property("web.service", "InvocationID"),
        failed_invocation,
        "not started again"
    );
    assert_ne!(env.property("web.service", "ActiveState"), "active");
    assert_contains(&env.heal_report("web"), "is disabled");
    wait_until(Duration::from_secs(20), "the retry's run to end", || {
        env.property("selfheal@web.service", "ActiveState") != "activating"
    });
    // Told, since the retry the FAILED mail promised is not made.
    let mails = server.wait_for_messages(2, Duration::from_secs(20));
    let subjects: Vec<String> = mails.iter().map(|raw| Mail::parse(raw).subject).collect();
    assert_eq!(
        subjects,
        ["❌ TestHost: web - FAILED", "⏸️ TestHost: web - SUPPRESSED"]
    );
    assert_contains(&Mail::parse(&mails[1]).text, "is disabled");
    assert!(env.status().services[0].next_retry_at.is_none());
}

/// Services named `names`, all healthy, then killed together with SIGKILL; returns once
/// every one is healed and every report delivered (no heal unit running, nothing held or
/// queued).
fn kill_together(names: &[&str], cascade: (u32, &str)) -> (TestEnv, SmtpServer) {
    let env = TestEnv::new();
    let server = smtp(&env);
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let (services, within) = cascade;
    let mut config = mailing(&env, &server).with(
        "cascade",
        serde_json::json!({"services": services, "within": within}),
    );
    for (name, port) in names.iter().zip(&ports) {
        env.web_unit(name, *port, &format!("{name} serves"));
        config = config.service(Service::new(name).port(*port));
    }
    env.configure(&config).install();
    for (name, port) in names.iter().zip(&ports) {
        env.start_listening(name, *port);
    }

    let units: Vec<String> = names.iter().map(|n| format!("{n}.service")).collect();
    let mut kill = vec!["kill", "--signal=SIGKILL"];
    kill.extend(units.iter().map(String::as_str));
    env.systemctl(&kill);

    let history = env.wait_for_history(names.len(), Duration::from_secs(30));
    assert!(
        history.iter().all(|r| r.outcome == Outcome::Resolved),
        "{history:?}"
    );
    for unit in &units {
        assert_eq!(env.property(unit, "ActiveState"), "active", "{unit}");
    }
    server.wait_for_messages(1, Duration::from_secs(30));
    wait_until(Duration::from_secs(20), "every report delivered", || {
        let files = |dir: &str| {
            std::fs::read_dir(env.state_dir.join(dir)).map_or(0, |dir| {
                dir.flatten().filter(|e| e.path().is_file()).count()
            })
        };
        let (held, queued) = (files("outbox/held"), files("outbox"));
        let healing = names
            .iter()
            .any(|n| env.property(&format!("selfheal@{n}.service"), "ActiveState") == "activating");
        held == 0 && queued == 0 && !healing
    });
    (env, server)
}

#[test]
fn five_services_killed_together_are_all_healed_and_get_exactly_one_cascade_mail() {
    let names = ["alpha", "bravo", "charlie", "delta", "echo"];
    let (_env, server) = kill_together(&names, (3, "3s"));
    let mails = server.messages();
    let subjects = subjects(&server);
    assert_eq!(mails.len(), 1, "{subjects:?}");
    let mail = Mail::parse(&mails[0]);
    assert_eq!(
        mail.subject,
        "⚠ TestHost: cascade - 5 services failed within 3s"
    );
    assert_eq!(mail.header("X-Selfheal-Outcome"), "cascade");
    for name in names {
        assert_contains(mail.header("X-Selfheal-Service"), name);
        assert_contains(
            &mail.text,
            &format!("✅ {name} ({name}.service): RESOLVED by service_restart"),
        );
        // Each service's own journal evidence.
        assert_contains(&mail.text, &format!("{name} serves"));
        assert_contains(&mail.html, &format!("{name} serves"));
    }
    assert_contains(&mail.text, "all 5 were killed by SIGKILL");
    assert_contains(&mail.text, "Outcome:   5 resolved");
}

#[test]
fn a_burst_smaller_than_the_cascade_rule_gets_a_mail_per_service() {
    let (_env, server) = kill_together(&["alpha", "bravo"], (3, "2s"));
    let mut subjects = subjects(&server);
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "✅ TestHost: alpha - RESOLVED",
            "✅ TestHost: bravo - RESOLVED"
        ]
    );
}

#[test]
fn a_cascade_is_delivered_by_the_installed_flush_unit() {
    // The installed unit carries the hardening and the SMTP credential; a transient unit
    // running `selfheal flush` had neither, so a password given only as a credential kept the
    // cascade mail waiting for the periodic flush.
    let names = ["alpha", "bravo", "charlie"];
    let (env, server) = kill_together(&names, (3, "3s"));

    let subjects = subjects(&server);
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert_contains(&subjects[0], "cascade - 3 services failed");
    let flush = env.journal(&["-u", "selfheal-flush.service"]);
    assert_contains(&flush, "cascade: one report for 3 services");
    let transient = env.journal(&["-u", "selfheal-cascade-*.service"]);
    assert!(
        !transient.contains("cascade: one report"),
        "a transient unit delivered it: {transient}"
    );
}

fn past_run(service: &str, outcome: Outcome, hours_ago: u64, ms: u64) -> HistoryRecord {
    let at = std::time::SystemTime::now() - Duration::from_secs(hours_ago * 3600);
    HistoryRecord {
        service: service.into(),
        outcome,
        started_at: selfheal::state::Timestamp::millis(at),
        duration_ms: ms,
        healed_by: (outcome == Outcome::Resolved).then(|| "service_restart".into()),
        summary: format!("{service}.service failed"),
        manual: false,
        relapse: false,
        restarts: 0,
    }
}

#[test]
fn the_daily_digest_mails_the_days_figures_and_install_runs_its_timer_only_when_asked() {
    let env = TestEnv::new();
    let server = smtp(&env);
    let without_digest = mailing(&env, &server)
        .service(Service::new("web"))
        .service(Service::new("db"))
        .service(Service::new("mail"));
    env.configure(&without_digest.clone().with("digest", "daily"));
    let state = StateDir::new(&env.state_dir);
    for record in [
        past_run("web", Outcome::Resolved, 30, 100), // yesterday's news
        past_run("web", Outcome::Resolved, 20, 300),
        past_run("web", Outcome::Resolved, 10, 500),
        past_run("web", Outcome::Failed, 5, 9000),
        past_run("web", Outcome::Healthy, 4, 2),
        past_run("db", Outcome::Failed, 3, 2000),
    ] {
        state.append_history(&record).unwrap();
    }

    let output = env.selfheal(["digest"]);
    assert!(output.status.success(), "{output:?}");
    let mails = server.wait_for_messages(1, Duration::from_secs(10));
    let mail = Mail::parse(&mails[0]);
    assert_eq!(mail.subject, "📋 TestHost: digest - 4 healing runs in 24h");
    assert_eq!(mail.header("X-Selfheal-Outcome"), "digest");
    // The same figures as `history --since 24h --stats` (its RUNS count the healthy no-op).
    assert_contains(
        &mail.text,
        "web         4         2       1         0           0        1           0      67%        400 ms",
    );
    assert_contains(
        &mail.text,
        "db          1         0       1         0           0        0           0       0%             -",
    );
    let stats = env.selfheal(["history", "--since", "24h", "--stats", "--json"]);
    let web: StatsRowJson = String::from_utf8_lossy(&stats.stdout)
        .lines()
        .map(|line| serde_json::from_str::<StatsRowJson>(line).unwrap())
        .find(|row| row.service == "web")
        .unwrap();
    assert_eq!(web.runs, 4, "{web:?}");
    assert_contains(&mail.text, "Needed nothing: mail");
    assert_contains(&mail.html, "<td>67%</td>");
    // What was mailed is what was printed.
    assert_contains(
        &String::from_utf8_lossy(&output.stdout),
        "67%        400 ms",
    );

    // install runs the timer with `digest: daily`, and takes it away without.
    env.install();
    assert_eq!(
        env.property("selfheal-digest.timer", "ActiveState"),
        "active"
    );
    assert_contains(
        &env.property("timers.target", "Wants"),
        "selfheal-digest.timer",
    );
    env.configure(&without_digest).install();
    assert!(
        !env.sandbox
            .unit_dir()
            .join("selfheal-digest.timer")
            .exists()
    );
    assert!(
        !env.sandbox
            .unit_dir()
            .join("timers.target.d/50-selfheal-digest.conf")
            .exists()
    );
    // The watch timer stays: every host has it.
    assert_eq!(
        env.property("selfheal-watch.timer", "ActiveState"),
        "active"
    );
    assert_ne!(
        env.property("selfheal-digest.timer", "ActiveState"),
        "active"
    );
}

/// `notify_policy: {resolved: digest, remind: 1h}`: two heals of web are recorded, counted in
/// the metrics and the digest, and mail nobody; a FAILED run of api is mailed at once; an hour
/// after that mail (its record aged here), the watch's round reminds that api is still down.
#[test]
fn with_resolved_digest_heals_wait_for_the_digest_a_failure_is_mailed_at_once_and_reminded() {
    let env = TestEnv::new();
    let server = smtp(&env);
    let web_port = free_port();
    let metrics = env.sandbox.scratch_dir().join("selfheal.prom");
    let marker = env.sandbox.scratch_dir().join("api-config");
    web_failing_until(&env, "api", free_port(), &marker);
    env.configure(
        &mailing(&env, &server)
            .with(
                "notify_policy",
                serde_json::json!({"resolved": "digest", "remind": "1h"}),
            )
            .with("metrics_file", metrics.display().to_string())
            .service(Service::new("web").port(web_port))
            .service(Service::new("api").strategies(&["service_restart"])),
    )
    .web_unit("web", web_port, "up")
    .install()
    .start_listening("web", web_port);

    for heals in 1..=2 {
        env.systemctl(&["kill", "--signal=SIGKILL", "web.service"]);
        let history = env.wait_for_history(heals, Duration::from_secs(30));
        assert_eq!(history[heals - 1].outcome, Outcome::Resolved, "{history:?}");
        env.start_listening("web", web_port);
        // The next failure must find the heal unit over: one still running takes no second
        // start.
        wait_until(Duration::from_secs(20), "the heal unit to end", || {
            env.property("selfheal@web.service", "ActiveState") != "activating"
        });
    }
    let _ = env.sandbox.systemctl(["start", "api.service"]);
    let history = env.wait_for_history(3, Duration::from_secs(30));
    assert_eq!(history[2].outcome, Outcome::Failed, "{history:?}");
    let mails = server.wait_for_messages(1, Duration::from_secs(10));
    assert_eq!(
        subjects(&server),
        ["❌ TestHost: api - FAILED"],
        "only the failure"
    );
    drop(mails);
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert_contains(
        &text,
        "selfheal_notifications_held_total{reason=\"resolved_digest\"} 2",
    );

    let digest = env.selfheal(["digest"]);
    assert!(digest.status.success(), "{digest:?}");
    let mails = server.wait_for_messages(2, Duration::from_secs(10));
    let digest = Mail::parse(&mails[1]);
    assert_contains(&digest.subject, "digest - 3 healing runs in 24h");
    assert_contains(&digest.text, "web         2         2       0");

    // An hour later api is still down: one reminder from the watch's round.
    let told = env.state_dir.join("told/api.json");
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&told).unwrap()).unwrap();
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3601);
    record["at"] = selfheal::state::Timestamp::seconds(hour_ago)
        .to_string()
        .into();
    std::fs::write(&told, record.to_string()).unwrap();
    let watched = env.selfheal(["watch"]);
    assert!(watched.status.success(), "{watched:?}");
    let mails = server.wait_for_messages(3, Duration::from_secs(10));
    let reminder = Mail::parse(&mails[2]);
    assert_contains(
        &reminder.subject,
        "❌ TestHost: api - FAILED (reminder: down since ",
    );
    assert_contains(&reminder.text, "it has not come back");
    // Reminded: the next is an hour away.
    let again = env.selfheal(["watch"]);
    assert!(again.status.success(), "{again:?}");
    assert_eq!(server.messages().len(), 3);
}

/// Six services killed at once with `guard: {max_failing: 2}`: one report for the host, the
/// storm's services healed one at a time (those waiting record `held`, and each is started
/// when the one before it is verified), and all healthy in the end.
#[test]
fn six_services_killed_at_once_get_one_guard_report_and_are_healed_one_at_a_time() {
    let env = TestEnv::new();
    let server = smtp(&env);
    let mut alertmanager =
        common::receivers::Alertmanager::reserve(&env.sandbox.scratch_dir().join("am"));
    alertmanager.start();
    let names = ["s1", "s2", "s3", "s4", "s5", "s6"];
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let mut config = mailing(&env, &server)
        .with(
            "guard",
            serde_json::json!({"max_failing": 2, "within": "2m"}),
        )
        .with(
            "notify",
            serde_json::json!([{"alertmanager": {"url": alertmanager.url()}}]),
        );
    for (name, port) in names.iter().zip(&ports) {
        env.web_unit(name, *port, &format!("{name} serves"));
        // Each heal stays a second to be verified: the storm lasts long enough to be seen.
        config = config.service(Service::new(name).port(*port).stable_for("1s"));
    }
    env.configure(&config).install();
    for (name, port) in names.iter().zip(&ports) {
        env.start_listening(name, *port);
    }
    let units: Vec<String> = names.iter().map(|n| format!("{n}.service")).collect();
    let mut kill = vec!["kill", "--signal=SIGKILL"];
    kill.extend(units.iter().map(String::as_str));
    let killed = std::time::SystemTime::now();
    env.systemctl(&kill);
    let guard_alert = || {
        alertmanager
            .active_alerts()
            .into_iter()
            .find(|alert| alert["labels"]["alertname"] == "SelfhealHostGuard")
    };
    wait_until(Duration::from_secs(20), "the host guard's alert", || {
        guard_alert().is_some()
    });
    assert_eq!(guard_alert().unwrap()["labels"]["severity"], "critical");

    wait_until(Duration::from_secs(90), "every service healed", || {
        let history = StateDir::new(&env.state_dir).history().unwrap_or_default();
        names.iter().all(|name| {
            history
                .iter()
                .any(|r| r.service == *name && r.outcome == Outcome::Resolved)
        })
    });
    let history = StateDir::new(&env.state_dir).history().unwrap();
    print_timeline(&history, killed);
    for unit in &units {
        assert_eq!(env.property(unit, "ActiveState"), "active", "{unit}");
    }
    assert_one_turn_at_a_time(&history);
    wait_until(Duration::from_secs(20), "every heal unit over", || {
        names
            .iter()
            .all(|n| env.property(&format!("selfheal@{n}.service"), "ActiveState") != "activating")
    });
    let subjects = subjects(&server);
    let guard: Vec<&String> = subjects
        .iter()
        .filter(|s| s.contains("host guard - "))
        .collect();
    assert_eq!(guard.len(), 1, "{subjects:?}");
    assert_contains(guard[0], "⚠ TestHost: host guard - ");
    assert_eq!(
        subjects.len(),
        1,
        "the storm's heals are its report's: {subjects:?}"
    );
    let mail = Mail::parse(&server.messages()[0]);
    assert_contains(&mail.text, "HOST GUARD");
    // The run that ended the storm resolved the host's alert.
    wait_until(
        Duration::from_secs(10),
        "the host guard's alert resolved",
        || guard_alert().is_none(),
    );
}

/// Each run of `history`, from `since`: its start and duration (for the note on a storm).
fn print_timeline(history: &[HistoryRecord], since: std::time::SystemTime) {
    for record in history {
        let at = record.started().duration_since(since).unwrap_or_default();
        eprintln!(
            "{:>6} ms +{:>5} ms  {}  {}",
            at.as_millis(),
            record.duration_ms,
            record.service,
            record.outcome
        );
    }
}

/// At least three of six waited (`held`), and each held service's heal began only after the
/// one before it was over.
#[track_caller]
fn assert_one_turn_at_a_time(history: &[HistoryRecord]) {
    let held: Vec<&HistoryRecord> = history
        .iter()
        .filter(|r| r.outcome == Outcome::Held)
        .collect();
    assert!(
        held.len() >= 3,
        "at most 3 heal before the turn is taken: {history:?}"
    );
    let mut turns: Vec<(std::time::SystemTime, std::time::SystemTime)> = history
        .iter()
        .filter(|r| r.outcome == Outcome::Resolved && held.iter().any(|h| h.service == r.service))
        .map(|r| {
            (
                r.started(),
                r.started() + Duration::from_millis(r.duration_ms),
            )
        })
        .collect();
    turns.sort();
    for pair in turns.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "two turns at once: {history:?}");
    }
}
