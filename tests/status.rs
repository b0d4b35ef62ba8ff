//! `selfheal status` against a real systemd in a sandbox: every kind of service state, the
//! hook, masked healing, loop protection and the last healing, as JSON (checked against what
//! systemctl says) and as plain text in a pipe; exit codes; 300 services.

mod common;

use std::time::{Duration, SystemTime};

use common::config::{Config, Service};
use common::{StatusJson, TestEnv, assert_contains, exit_code, free_port, selfheal_bin};
use selfheal::exit_code::ExitCode;
use selfheal::outcome::Outcome;
use selfheal::state::{HistoryRecord, StateDir};
use serde_json::json;

fn record(service: &str, outcome: Outcome, minutes_ago: u64) -> HistoryRecord {
    let at = SystemTime::now() - Duration::from_secs(minutes_ago * 60);
    HistoryRecord {
        service: service.into(),
        outcome,
        started_at: selfheal::state::Timestamp::millis(at),
        duration_ms: 40,
        healed_by: (outcome == Outcome::Resolved).then(|| "service_restart".into()),
        summary: format!("{service}.service was killed by SIGKILL"),
        manual: false,
        relapse: false,
        restarts: 0,
    }
}

// One scenario, set up and checked top to bottom.
#[allow(clippy::too_many_lines)]
#[test]
fn status_shows_systemds_truth_for_every_kind_of_service() {
    let env = TestEnv::new();
    let [ok_port, deaf_port] = [free_port(), free_port()];
    let serve = |port: u16| {
        format!(
            "ExecStart={} serve-demo --port {port}",
            selfheal_bin().display()
        )
    };
    let names = [
        "ok", "down", "idle", "ghost", "deaf", "masked", "nohook", "healed", "looping", "broken",
    ];
    let mut config = Config::new().with("owner", "ops@example.org");
    for name in names {
        let service = match name {
            "ok" => Service::named(name)
                .port(ok_port)
                .health_url(ok_port)
                .with("domain", "ok.example.org")
                .with("critical", true),
            "deaf" => Service::named(name).port(deaf_port),
            _ => Service::named(name),
        };
        config = config.service(service);
    }
    env.configure(&config);
    env.unit("ok", &serve(ok_port))
        .unit("down", "ExecStart=/bin/false")
        .unit("idle", "ExecStart=/bin/sleep 600")
        .unit("deaf", "ExecStart=/bin/sleep 600")
        .unit("masked", "ExecStart=/bin/sleep 600")
        .unit("nohook", "ExecStart=/bin/sleep 600")
        .unit("healed", "ExecStart=/bin/sleep 600")
        .unit("looping", "ExecStart=/bin/sleep 600")
        .unit("broken", "ExecStart=/bin/sleep 600")
        .install();
    // Healing disabled by hand for one, the hook gone for another (as after a package
    // replaced the unit's drop-ins).
    let units = env.sandbox.unit_dir();
    std::fs::remove_file(units.join("selfheal@masked.service")).unwrap();
    std::os::unix::fs::symlink("/dev/null", units.join("selfheal@masked.service")).unwrap();
    // A drop-in that leaves the heal unit without ExecStart=: it cannot load.
    std::fs::create_dir_all(units.join("selfheal@broken.service.d")).unwrap();
    std::fs::write(
        units.join("selfheal@broken.service.d/override.conf"),
        "[Service]\nExecStart=\n",
    )
    .unwrap();
    std::fs::remove_dir_all(units.join("nohook.service.d")).unwrap();
    env.systemctl(&["daemon-reload"]);
    env.start_listening("ok", ok_port);
    for unit in ["deaf", "masked", "nohook", "healed", "looping", "broken"] {
        env.systemctl(&["start", &format!("{unit}.service")]);
    }
    // `down` fails; its heal unit would heal it: stop the hook from racing the test.
    std::fs::remove_dir_all(units.join("down.service.d")).unwrap();
    env.systemctl(&["daemon-reload"]);
    env.start_failing("down");
    let state = StateDir::new(&env.state_dir);
    state
        .append_history(&record("healed", Outcome::Resolved, 120))
        .unwrap();
    // Four runs of one incident (never up for new_incident_after, 10 min, in between),
    // threshold 3: healing is allowed again once the second oldest (7 min ago) leaves the
    // window, in 53 minutes.
    for minutes in [9, 7, 5, 3] {
        state
            .append_history(&record("looping", Outcome::Resolved, minutes))
            .unwrap();
    }

    let output = env.selfheal(["status", "--json"]);
    assert_eq!(exit_code(&output), ExitCode::Failure, "not all are healthy");
    let status = StatusJson::parse(&output);
    let service = |name: &str| {
        status
            .services
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert_eq!(status.services.len(), names.len());
    // Every state is what systemctl says.
    for row in &status.services {
        if row.name == "ghost" {
            continue;
        }
        assert_eq!(
            row.active_state,
            env.property(&row.unit, "ActiveState"),
            "{row:?}"
        );
        assert_eq!(
            row.sub_state,
            env.property(&row.unit, "SubState"),
            "{row:?}"
        );
    }
    let ok = service("ok");
    assert!(ok.healthy && ok.hook_armed && ok.critical, "{ok:?}");
    assert_eq!(ok.port, Some(ok_port));
    assert_eq!(ok.port_listening, Some(true));
    assert_eq!(ok.health_ok, Some(true));
    assert_eq!(ok.domain.as_deref(), Some("ok.example.org"));
    assert_eq!(service("down").active_state, "failed");
    assert!(!service("down").healthy);
    assert_eq!(service("idle").active_state, "inactive");
    assert_eq!(service("ghost").active_state, "not-found");
    let deaf = service("deaf");
    assert_eq!(deaf.active_state, "active");
    assert_eq!(deaf.port_listening, Some(false));
    assert!(!deaf.healthy, "active but not listening is not healthy");
    assert!(service("masked").healing_masked);
    assert!(!service("ok").healing_masked);
    assert!(!service("nohook").hook_armed);
    let broken = service("broken");
    assert!(
        !broken.hook_armed,
        "its heal unit does not load: {broken:?}"
    );
    assert_eq!(broken.heal_unit_load_state, "bad-setting");
    assert!(service("healed").last_healing.is_some());
    assert!(service("idle").last_healing.is_none());
    assert_eq!(service("healed").recent_runs, 0, "two hours ago, window 1h");
    let looping = service("looping");
    assert_eq!(looping.recent_runs, 4);
    assert!(looping.suppressed);
    let until =
        humantime::parse_rfc3339_weak(looping.suppressed_until.as_deref().unwrap()).unwrap();
    let expected = SystemTime::now() + Duration::from_secs(53 * 60);
    let off = until
        .duration_since(expected)
        .unwrap_or_else(|early| early.duration());
    assert!(off < Duration::from_secs(60), "{looping:?}");
    assert!(!service("healed").suppressed);
    assert_eq!(status.system["name"], "TestHost");
    assert_eq!(status.system["owner"], "ops@example.org");
    assert!(status.system["uptime_seconds"].as_u64().is_some());
    assert_eq!(status.config["monitored"], names.len());
    assert_eq!(status.recent.len(), 5);

    // Text in a pipe: every service, the overview, no escape codes.
    let text = env.selfheal(["status"]);
    assert_eq!(exit_code(&text), ExitCode::Failure);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(!text.contains('\x1b'), "escape codes in a pipe: {text:?}");
    for expected in [
        "TestHost self-healing status",
        "Uptime",
        "Memory",
        "Summary: 6 running, 1 unhealthy, 1 failed, 1 inactive, 1 not found",
        &format!(":{deaf_port} not listening"),
        "NOT ARMED: OnFailure= of nohook.service does not start selfheal@nohook.service",
        "NOT ARMED: selfheal@broken.service does not load (bad-setting;",
        "healing disabled: selfheal@masked.service is masked",
        "4/3 healing runs in the last 1h: SUPPRESSED until",
        "↳ last healing",
        "Loop protection  3 healing runs per 1h",
    ] {
        assert_contains(&text, expected);
    }
    for name in names {
        assert_contains(&text, &format!(" {name} "));
    }

    // Only the healthy one: exit 0.
    let only = env.selfheal(["status", "ok"]);
    assert_eq!(exit_code(&only), ExitCode::Success);
    assert!(!String::from_utf8_lossy(&only.stdout).contains(" down "));
}

/// The dashboard trusts install's record of a hook only while no drop-in that reaches the unit
/// changed since: a person who masks the hook's drop-in (a `/dev/null` link in its place, as
/// systemd documents) sees it at once. (An empty `OnFailure=` in a later drop-in resets
/// nothing: systemd does not take dependencies away.)
#[test]
fn a_hook_masked_after_install_shows_not_armed() {
    let env = TestEnv::new();
    env.configure(
        &Config::new()
            .service(Service::named("web"))
            .service(Service::named("api")),
    )
    .unit("web", "ExecStart=/bin/sleep 600")
    .unit("api", "ExecStart=/bin/sleep 600")
    .install();
    let armed = |env: &TestEnv| {
        let output = env.selfheal(["status", "--json"]);
        let status: StatusJson = serde_json::from_slice(&output.stdout).unwrap();
        let by_name = |name: &str| {
            status
                .services
                .iter()
                .find(|row| row.name == name)
                .unwrap()
                .hook_armed
        };
        (by_name("web"), by_name("api"))
    };
    assert_eq!(armed(&env), (true, true));
    let drop_in = env
        .sandbox
        .unit_dir()
        .join("web.service.d/50-selfheal.conf");
    std::fs::remove_file(&drop_in).unwrap();
    std::os::unix::fs::symlink("/dev/null", &drop_in).unwrap();
    env.systemctl(&["daemon-reload"]);
    assert_eq!(env.property("web.service", "OnFailure"), "");
    assert_eq!(armed(&env), (false, true));
}

/// A healer whose timer stopped looks like a healthy host unless something says so: the
/// dashboard names each of selfheal's timers that the config needs and is not running.
#[test]
fn a_stopped_probe_timer_is_shown_by_status() {
    let env = TestEnv::new();
    let port = free_port();
    env.configure(
        &Config::new()
            .with("probe", json!({"interval": "2s"}))
            .service(Service::new("web").port(port)),
    )
    .web_unit("web", port, "up")
    .install()
    .start_listening("web", port);
    env.systemctl(&["stop", "selfheal-probe.timer"]);

    let output = env.selfheal(["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let timers = status["config"]["timers"].as_array().unwrap();
    let timer = |round: &str| {
        timers
            .iter()
            .find(|timer| timer["round"] == round)
            .unwrap_or_else(|| panic!("no {round} in {timers:?}"))
    };
    assert_eq!(timer("watch")["active_state"], "active", "{timers:?}");
    assert!(timer("watch")["problem"].is_null(), "{timers:?}");
    assert_eq!(timer("probe")["active_state"], "inactive", "{timers:?}");
    assert_contains(
        timer("probe")["problem"].as_str().unwrap(),
        "selfheal-probe.timer is inactive: its rounds do not run",
    );
    let text = String::from_utf8_lossy(&env.selfheal(["status"]).stdout).into_owned();
    assert_contains(&text, "⚠ selfheal-probe.timer is inactive");
    let check = env.selfheal(["check"]);
    assert_contains(
        &String::from_utf8_lossy(&check.stderr),
        "warning: selfheal-probe.timer is inactive",
    );
}

#[test]
fn status_lists_300_services() {
    let env = TestEnv::new();
    let port = free_port();
    let mut config = Config::new();
    for index in 0..300 {
        let mut service = Service::named(&format!("svc{index}"));
        let mut exec = "/bin/sleep 600".to_owned();
        // The last one serves: its own process on its port must be seen at any size (dbus-
        // daemon refuses more than 128 calls in flight on one connection).
        if index == 299 {
            service = service.port(port);
            exec = format!("{} serve-demo --port {port}", selfheal_bin().display());
        }
        config = config.service(service);
        std::fs::write(
            env.sandbox.unit_dir().join(format!("svc{index}.service")),
            format!("[Service]\nExecStart={exec}\n"),
        )
        .unwrap();
    }
    env.configure(&config);
    env.systemctl(&["daemon-reload"]);
    env.systemctl(&["start", "svc7.service"]);
    env.start_listening("svc299", port);

    let output = env.selfheal(["status", "--json"]);
    let status = StatusJson::parse(&output);
    assert_eq!(status.services.len(), 300);
    let active: Vec<&str> = status
        .services
        .iter()
        .filter(|s| s.active_state == "active")
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(active, ["svc7", "svc299"]);
    assert!(status.services.iter().all(|s| s.active_state != "unknown"));
    let last = &status.services[299];
    assert_eq!(last.port_listening, Some(true), "{last:?}");
    assert!(last.healthy, "{last:?}");
}

#[test]
fn a_unit_named_by_its_alias_is_found_and_its_port_is_its_own() {
    let env = TestEnv::new();
    let port = free_port();
    env.configure(
        &Config::new().service(
            Service::named("db")
                .with("unit", "db-alias.service")
                .port(port),
        ),
    );
    env.unit(
        "db-real",
        &format!(
            "ExecStart={} serve-demo --port {port}",
            selfheal_bin().display()
        ),
    );
    // What `Alias=` in an [Install] section makes: a second name for the same unit.
    std::os::unix::fs::symlink(
        env.sandbox.unit_dir().join("db-real.service"),
        env.sandbox.unit_dir().join("db-alias.service"),
    )
    .unwrap();
    env.systemctl(&["daemon-reload"]);
    env.start_listening("db-real", port);

    let output = env.selfheal(["status", "--json"]);
    let status = StatusJson::parse(&output);
    let db = &status.services[0];
    assert_eq!(db.active_state, "active", "{db:?}");
    assert_eq!(db.port_listening, Some(true), "{db:?}");
    assert!(db.healthy, "{db:?}");
    assert_eq!(exit_code(&output), ExitCode::Success);
}

/// `discover` names the running services that listen on a port, with a health URL only for
/// one whose `/` answers 2xx, leaves out what the config lists, and prints YAML selfheal reads.
#[test]
fn discover_prints_entries_for_the_running_services_that_listen() {
    let env = TestEnv::new();
    let [shop, cache, listed] = [free_port(), free_port(), free_port()];
    env.web_unit("shop", shop, "shop")
        .unit(
            "cache",
            &format!("ExecStart=/usr/bin/memcached -u nobody -l 127.0.0.1 -p {cache} -U 0"),
        )
        .web_unit("listed", listed, "listed")
        .configure(&Config::new().service(Service::named("listed").port(listed)));
    env.start_listening("shop", shop)
        .start_listening("cache", cache)
        .start_listening("listed", listed);

    let output = env.selfheal(["discover"]);

    assert_eq!(exit_code(&output), ExitCode::Success, "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_contains(
        &text,
        &format!("  - name: shop\n    port: {shop}\n    health_url: http://127.0.0.1:{shop}/\n"),
    );
    assert_contains(&text, &format!("  - name: cache\n    port: {cache}\n"));
    assert!(!text.contains(&format!("127.0.0.1:{cache}/")), "{text}");
    assert!(!text.contains("name: listed"), "{text}");
    // Pasted as it is, it is a config selfheal accepts.
    env.config(&text);
    let check = env.selfheal(["check"]);
    assert_eq!(exit_code(&check), ExitCode::Success, "{check:?}");
}
