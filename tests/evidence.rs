//! Evidence before a restart, against a real systemd: what a hung service's processes were
//! doing is in its report (text, and the JSON webhook), the hang is ended at once instead of
//! waiting out a graceful stop, and no secret of its command line reaches any report.
mod common;

use std::time::Duration;

use common::config::{Config, Service};
use common::receivers::{WebhookServer, url_file};
use common::*;
use selfheal::outcome::Outcome;
use serde_json::{Value, json};

/// A config whose probes judge every second and start healing after 2 failed rounds.
fn probed() -> Config {
    Config::new().with(
        "probe",
        json!({"interval": "1s", "timeout": "1s", "failures": 2, "start_grace": "1s"}),
    )
}

#[test]
fn a_hung_service_found_by_the_probes_is_killed_at_once_with_its_evidence_and_no_secret() {
    let env = TestEnv::new();
    let port = free_port();
    let receiver = WebhookServer::start(&env.sandbox.scratch_dir().join("hooks"));
    let hook = url_file(env.sandbox.scratch_dir(), "json-url", &receiver.url("json"));
    // A shell that stays in front of the server (`; :`) holds a password on its command line;
    // the stop command, like nginx's `--retry QUIT/5`, waits for processes that cannot answer.
    env.unit(
        "web",
        &format!(
            "ExecStart=/bin/sh -c '{} serve-demo --port {port}; :' --password=hunter2\nExecStop=/bin/sh -c 'echo graceful stop asked; sleep 5'",
            selfheal_bin().display()
        ),
    );
    env.configure(
        &probed()
            .with(
                "notify",
                [json!({"webhook": {"url_file": hook, "format": "json"}})],
            )
            .service(Service::new("web").port(port).health_url(port)),
    );
    env.start_listening("web", port).install();

    env.systemctl(&["kill", "--signal=SIGSTOP", "web.service"]);
    let history = env.wait_for_history(1, Duration::from_secs(30));

    assert_eq!(history[0].outcome, Outcome::Resolved, "{history:?}");
    let report = env.heal_report("web");
    for expected in [
        "EVIDENCE (its processes before the restart, taken in ",
        ": T (stopped), ",
        " thread",
        "--password=***",
        "killed every process of its cgroup (SIGKILL)",
        "was stopped (state T",
    ] {
        assert_contains(&report, expected);
    }
    // A hang is no failure systemd reported: no hook's facts describe it.
    assert!(!report.contains("from the OnFailure= hook"), "{report}");
    let posts = receiver.wait_for_posts(1);
    let sent: Value = serde_json::from_str(&posts[0].body).unwrap();
    let processes = sent["evidence"]["processes"].as_array().expect("evidence");
    assert!(processes.len() >= 2, "the shell and the server: {sent:#}");
    for process in processes {
        assert_eq!(process["state"], "T (stopped)", "{sent:#}");
        assert!(process["threads"].as_u64() >= Some(1), "{sent:#}");
    }
    let history_file = std::fs::read_to_string(env.state_dir.join("history.jsonl")).unwrap();
    for (place, text) in [
        ("report", &report),
        ("webhook", &posts[0].body),
        ("history", &history_file),
    ] {
        assert!(
            !text.contains("hunter2"),
            "the password reached the {place}: {text}"
        );
    }
    // The hung processes were never asked to stop gracefully.
    let web = env.journal(&["-u", "web.service"]);
    assert!(!web.contains("graceful stop asked"), "{web}");
    wait_until(Duration::from_secs(10), "web to serve again", || {
        selfheal::ports::is_listening(port)
    });
}

#[test]
fn a_signal_set_in_evidence_makes_the_hung_main_process_leave_its_stack_dump_in_the_report() {
    let env = TestEnv::new();
    let port = free_port();
    // A runtime that prints its stacks on SIGQUIT and exits, as the JVM and Go do.
    env.unit(
        "web",
        &format!(
            "ExecStart=/bin/sh -c 'trap \"echo goroutine 1 [running]: main.serve >&2; exit 2\" QUIT; {} serve-demo --port {port} & wait $$!'",
            selfheal_bin().display()
        ),
    );
    env.configure(
        &probed().service(
            Service::new("web")
                .port(port)
                .health_url(port)
                .with("evidence", json!({"signal": "SIGQUIT", "wait": "3s"})),
        ),
    );
    env.start_listening("web", port).install();

    env.systemctl(&["kill", "--signal=SIGSTOP", "web.service"]);
    let history = env.wait_for_history(1, Duration::from_secs(30));

    assert_eq!(history[0].outcome, Outcome::Resolved, "{history:?}");
    let report = env.heal_report("web");
    for expected in [
        "SIGQUIT sent to its main process (PID ",
        "for its own evidence: it exited after ",
        "What it wrote after the signal",
        "goroutine 1 [running]: main.serve",
    ] {
        assert_contains(&report, expected);
    }
}

#[test]
fn a_service_that_answers_with_an_error_is_restarted_gracefully_not_killed() {
    let env = TestEnv::new();
    let port = free_port();
    // It answers at once, with a 503: no hang, so its stop is asked for, not forced.
    env.unit(
        "web",
        &format!(
            "ExecStart={} serve-demo --port {port} --status 503\nExecStop=/bin/sh -c 'echo graceful stop asked'",
            selfheal_bin().display()
        ),
    );
    env.configure(
        &probed().service(
            Service::new("web")
                .port(port)
                .health_url(port)
                .verify_timeout("1s")
                .stable_for("100ms"),
        ),
    );
    env.start_listening("web", port).install();

    let history = env.wait_for_history(1, Duration::from_secs(30));

    assert_eq!(history[0].outcome, Outcome::Failed, "{history:?}");
    let report = env.heal_report("web");
    assert_contains(&report, "EVIDENCE (its processes before the restart");
    assert_contains(&report, ": S (sleeping), ");
    assert!(!report.contains("SIGKILL"), "{report}");
    assert_contains(&env.journal(&["-u", "web.service"]), "graceful stop asked");
}
