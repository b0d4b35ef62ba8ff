//! The healing strategies against a real systemd in a sandbox: a stale port holder stopped, a
//! foreign one named and left alone, a broken config not restarted, a missing secret named but
//! never shown, files fixed, data never invented, and the diagnosis of common failures.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::config::{Config, Service};
use common::{TestEnv, assert_contains, exit_code, free_port, selfheal_bin, wait_until};
use selfheal::exit_code::ExitCode;
use selfheal::outcome::Outcome;
use serde_json::json;

/// `web` on `port` with the strategy chain `strategies`.
fn web(port: u16, strategies: &[&str]) -> Service {
    Service::new("web")
        .port(port)
        .verify_timeout("10s")
        .strategies(strategies)
}

/// A config of `web` alone.
fn config(web: Service) -> Config {
    Config::new().service(web)
}

fn serve(port: u16, say: &str) -> String {
    format!(
        "{} serve-demo --port {port} --say {say}",
        selfheal_bin().display()
    )
}

/// The PID the sandbox's processes (selfheal, systemd) know a host PID by: the last entry of
/// `NSpid:` in its status.
fn sandbox_pid(host_pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))
        .and_then(|pids| pids.split_whitespace().last())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no NSpid for {host_pid}"))
}

#[test]
fn a_stale_instance_holding_the_port_is_terminated_and_the_service_comes_back() {
    let env = TestEnv::new();
    let port = free_port();
    // KillMode=process: stopping the unit kills only the shell, and the server it started
    // stays behind in the unit's cgroup, holding the port: the classic stale instance.
    env.configure(&config(
        web(port, &["service_restart", "port_conflict"])
            .with("port_conflict", json!({"grace": "2s"})),
    ))
    .unit(
        "web",
        &format!(
            "ExecStart=/bin/sh -c '{} & wait $$!'\nKillMode=process",
            serve(port, "web")
        ),
    )
    .install();
    env.start_listening("web", port);
    env.systemctl(&["stop", "web.service"]);
    let stale = selfheal::ports::holders(port);
    assert_eq!(stale.len(), 1, "the server outlived its unit: {stale:?}");
    let stale_pid = stale[0].pid;
    let stale_in_sandbox = sandbox_pid(stale_pid);

    // The next start cannot bind and fails; OnFailure= heals it.
    env.systemctl(&["start", "web.service"]);

    let history = env.wait_for_history(1, Duration::from_secs(30));
    assert_eq!(history[0].outcome, Outcome::Resolved, "{history:?}");
    assert_eq!(history[0].healed_by.as_deref(), Some("port_conflict"));
    assert!(
        !std::path::Path::new(&format!("/proc/{stale_pid}")).exists(),
        "the stale server is gone"
    );
    let holders = selfheal::ports::holders(port);
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_ne!(holders[0].pid, stale_pid);
    assert_eq!(env.property("web.service", "ActiveState"), "active");
    let report = env.heal_report("web");
    assert!(
        report.contains(&format!("pid {stale_in_sandbox} (")),
        "the report names the stale pid: {report}"
    );
    assert!(
        report.contains("changed: SIGTERM pid"),
        "the report lists the signal: {report}"
    );
    // The failed run's evidence came through although its process exited at once.
    assert_contains(&report, "Address already in use");
}

#[test]
fn a_port_holders_command_line_reaches_the_terminal_escaped() {
    let env = TestEnv::new();
    let port = free_port();
    // systemd turns \x1b and \x07 into the bytes: the squatter's argv carries a sequence that
    // would set a terminal's title and clear its line.
    env.configure(&config(web(port, &["port_conflict"])))
        .unit(
            "squatter",
            &format!(
                "ExecStart={}",
                serve(port, "\"\\x1b]0;pwned\\x07\\x1b[2K\"")
            ),
        )
        .unit("web", &format!("ExecStart={}", serve(port, "web")));
    env.start_listening("squatter", port);
    env.start_failing("web");

    let output = env.selfheal(["run", "web", "--force"]);

    let text = String::from_utf8_lossy(&output.stdout);
    assert_contains(&text, "squatter.service: pid");
    assert_contains(&text, "\\u{1b}]0;pwned\\u{7}");
    assert!(
        !text.contains('\u{1b}'),
        "a raw ESC reached stdout: {text:?}"
    );
    assert!(
        !text.contains('\u{7}'),
        "a raw BEL reached stdout: {text:?}"
    );
}

#[test]
fn a_port_held_by_another_unit_is_left_alone_and_named() {
    let env = TestEnv::new();
    let port = free_port();
    env.configure(&config(web(port, &["service_restart", "port_conflict"])))
        .unit(
            "squatter",
            &format!("ExecStart={}", serve(port, "squatter")),
        )
        .unit("web", &format!("ExecStart={}", serve(port, "web")));
    env.start_listening("squatter", port);
    let squatter_pid = env.property("squatter.service", "MainPID");
    env.start_failing("web");

    let (code, report) = env.run_json("web", &[]);

    assert_eq!(code, ExitCode::Failure, "{report:?}");
    assert_eq!(report.outcome, Outcome::Failed);
    let step = report.step("port_conflict");
    assert_eq!(step.result, "needs_human", "{step:?}");
    let detail = &step.detail;
    // The unit first, by name, then its process.
    assert_contains(detail, &format!("squatter.service: pid {squatter_pid} ("));
    assert!(
        report
            .reason
            .as_deref()
            .unwrap()
            .contains("squatter.service")
    );
    assert_eq!(env.property("squatter.service", "ActiveState"), "active");
    assert_eq!(env.property("squatter.service", "MainPID"), squatter_pid);
}

#[test]
fn dry_run_names_the_pid_it_would_signal_and_signals_nothing() {
    let env = TestEnv::new();
    let port = free_port();
    env.configure(&config(web(port, &["port_conflict"])))
        .unit("web", &format!("ExecStart={}", serve(port, "web")));
    // The same command line, started outside the unit: a stale instance by definition.
    let mut by_hand = env
        .sandbox
        .command(selfheal_bin())
        .args(["serve-demo", "--port", &port.to_string(), "--say", "web"])
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "the stray instance", || {
        selfheal::ports::is_listening(port)
    });
    let stray = selfheal::ports::holders(port)[0].pid;
    let stray_in_sandbox = sandbox_pid(stray);
    env.start_failing("web");

    let (code, report) = env.run_json("web", &["--dry-run"]);

    assert_eq!(code, ExitCode::Success, "{report:?}");
    let step = report.step("port_conflict");
    assert_eq!(step.result, "planned", "{step:?}");
    assert!(step.detail.contains("ExecStart= command line"), "{step:?}");
    assert!(
        step.changes
            .join("\n")
            .contains(&format!("SIGTERM pid {stray_in_sandbox}")),
        "{step:?}"
    );
    assert!(by_hand.try_wait().unwrap().is_none(), "it was signalled");
    assert!(std::path::Path::new(&format!("/proc/{stray}")).exists());

    // For real: it is stopped and the unit serves.
    let (code, report) = env.run_json("web", &[]);
    assert_eq!(code, ExitCode::Success, "{report:?}");
    assert_eq!(report.healed_by.as_deref(), Some("port_conflict"));
    by_hand.wait().unwrap();
    assert!(!std::path::Path::new(&format!("/proc/{stray}")).exists());
}

#[test]
fn a_broken_config_is_reported_with_the_validator_output_and_not_restarted() {
    let env = TestEnv::new();
    let port = free_port();
    let scratch = env.sandbox.scratch_dir();
    let app_conf = scratch.join("app.conf");
    let starts = scratch.join("starts");
    let validator = scratch.join("validate");
    std::fs::write(&app_conf, "valid=no\n").unwrap();
    std::fs::write(
        &validator,
        format!(
            "#!/bin/sh\ngrep -qx valid=yes {c} && exit 0\necho \"{c}:1: expected valid=yes, found '$(head -n1 {c})'\" >&2\nexit 1\n",
            c = app_conf.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&validator, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A short retry_after: the FAILED run's retry comes within the test.
    env.configure(
        &config(
            web(port, &["config_validation", "service_restart"])
                .with("config_validation", json!({"command": [validator], "timeout": "5s"})),
        )
        .with("retry_after", "3s"),
    )
    .unit(
        "web",
        &format!(
            "ExecStart=/bin/sh -c 'echo start >> {s}; grep -qx valid=yes {c} || exit 1; exec {serve}'",
            s = starts.display(),
            c = app_conf.display(),
            serve = serve(port, "web")
        ),
    )
    .install();
    env.systemctl(&["start", "web.service"]);

    let history = env.wait_for_history(1, Duration::from_secs(30));
    assert_eq!(history[0].outcome, Outcome::Failed, "{history:?}");
    wait_until(Duration::from_secs(10), "the heal unit to finish", || {
        env.property("selfheal@web.service", "ActiveState") != "activating"
    });
    let report = env.heal_report("web");
    assert!(
        report.contains("expected valid=yes, found 'valid=no'"),
        "the validator's output is in the report: {report}"
    );
    assert_contains(&report, "not restarting on a broken config");
    let start_count = || std::fs::read_to_string(&starts).unwrap().lines().count();
    assert_eq!(start_count(), 1, "no start after the first, failed one");

    // Once the config is fixed, the same chain, run by the installed (hardened) heal unit
    // when the FAILED run's timed retry starts it, validates and restarts.
    std::fs::write(&app_conf, "valid=yes\n").unwrap();
    wait_until(Duration::from_secs(30), "the retry to heal it", || {
        env.history().iter().any(|r| r.outcome == Outcome::Resolved)
    });
    let history = env.history();
    let healed = history.last().unwrap();
    assert_eq!(healed.outcome, Outcome::Resolved, "{history:?}");
    assert_eq!(healed.healed_by.as_deref(), Some("config_validation"));
    assert_eq!(start_count(), 2);
}

#[test]
fn a_missing_env_key_is_named_and_no_secret_value_appears_anywhere() {
    let env = TestEnv::new();
    let port = free_port();
    let secret = "hunter2-db-password-7f3a";
    let env_file = env.sandbox.scratch_dir().join("web.env");
    std::fs::write(
        &env_file,
        format!("DATABASE_URL=postgres://app:{secret}@db/app\nSECRET_KEY=\n"),
    )
    .unwrap();
    env.configure(&config(
        web(port, &["environment_check", "service_restart"]).with(
            "environment_check",
            json!({"required": ["DATABASE_URL", "SECRET_KEY"]}),
        ),
    ))
    .unit(
        "web",
        &format!(
            "EnvironmentFile={}\nExecStart=/bin/sh -c 'test -n \"$$SECRET_KEY\" || exit 78; exec {}'",
            env_file.display(),
            serve(port, "web")
        ),
    )
    .install();
    env.systemctl(&["start", "web.service"]);

    let history = env.wait_for_history(1, Duration::from_secs(30));
    assert_eq!(history[0].outcome, Outcome::Failed, "{history:?}");
    let invocation = env.property("web.service", "InvocationID");
    let output = env.selfheal(["run", "web", "--json"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: common::RunReport = serde_json::from_str(&stdout).unwrap();
    let step = report.step("environment_check");
    assert_eq!(step.result, "needs_human", "{step:?}");
    let detail = &step.detail;
    assert_contains(detail, "SECRET_KEY");
    assert!(
        !detail.contains("DATABASE_URL"),
        "present keys are not named missing: {detail}"
    );
    assert_eq!(
        env.property("web.service", "InvocationID"),
        invocation,
        "no restart with a missing secret"
    );

    // The secret appears nowhere selfheal writes.
    let journal = env.journal(&[]);
    let history_file = std::fs::read_to_string(env.state_dir.join("history.jsonl")).unwrap();
    for (place, text) in [
        ("stdout", stdout.to_string()),
        (
            "stderr",
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ),
        ("journal", journal),
        ("history", history_file),
    ] {
        assert!(!text.contains(secret), "the secret leaked into {place}");
    }

    // With the key supplied, environment_check has nothing to say and the restart heals.
    std::fs::write(
        &env_file,
        format!("DATABASE_URL=postgres://app:{secret}@db/app\nSECRET_KEY=s3cr3t-key\n"),
    )
    .unwrap();
    wait_until(Duration::from_secs(10), "the heal unit to finish", || {
        env.property("selfheal@web.service", "ActiveState") != "activating"
    });
    let output = env.selfheal(["run", "web", "--json"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(exit_code(&output), ExitCode::Success, "{stdout}");
    assert!(
        !stdout.contains("s3cr3t-key"),
        "the secret leaked into run --json"
    );
    let report: common::RunReport = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report.step("environment_check").result, "not_applicable");
    assert_eq!(report.healed_by.as_deref(), Some("service_restart"));
}

#[test]
fn a_missing_symlink_is_recreated_and_a_wrong_mode_fixed() {
    let env = TestEnv::new();
    let port = free_port();
    let scratch = env.sandbox.scratch_dir();
    let data = scratch.join("app.db");
    let link = scratch.join("current.db");
    std::fs::write(&data, "precious rows").unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o600)).unwrap();
    env.configure(&config(
        web(port, &["service_restart", "database_check"]).with(
            "database_check",
            json!({
                "files": [{"path": data, "owner": "root", "mode": "0640"}],
                "symlinks": [{"path": link, "target": data}],
            }),
        ),
    ))
    .unit(
        "web",
        &format!(
            "ExecStart=/bin/sh -c 'test -L {l} && test $$(stat -c %%a {d}) = 640 || {{ echo \"cannot open {l}: Permission denied\"; exit 1; }}; exec {serve}'",
            l = link.display(),
            d = data.display(),
            serve = serve(port, "web")
        ),
    )
    .install();
    env.systemctl(&["start", "web.service"]);

    let history = env.wait_for_history(1, Duration::from_secs(30));
    assert_eq!(history[0].outcome, Outcome::Resolved, "{history:?}");
    assert_eq!(history[0].healed_by.as_deref(), Some("database_check"));
    assert_eq!(std::fs::read_link(&link).unwrap(), data);
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640);
    assert_eq!(std::fs::read_to_string(&data).unwrap(), "precious rows");
    let report = env.heal_report("web");
    assert!(
        report.contains(&format!(
            "changed: chmod 0640 {} (was 0600)",
            data.display()
        )),
        "{report}"
    );
    assert_contains(&report, "changed: ln -s");
    // "Permission denied" put database_check before a blind restart.
    assert!(
        report.contains("1. database_check"),
        "evidence reordered the chain: {report}"
    );
}

#[test]
fn a_missing_database_file_is_never_created() {
    let env = TestEnv::new();
    let port = free_port();
    let data = env.sandbox.scratch_dir().join("app.db");
    env.configure(&config(
        web(port, &["database_check", "service_restart"]).with(
            "database_check",
            json!({"files": [{"path": data, "mode": "0640"}]}),
        ),
    ))
    .unit(
        "web",
        &format!(
            "ExecStart=/bin/sh -c 'test -e {} || exit 1; exec {}'",
            data.display(),
            serve(port, "web")
        ),
    );
    env.start_failing("web");

    let (code, report) = env.run_json("web", &[]);

    assert_eq!(code, ExitCode::Failure, "{report:?}");
    let step = report.step("database_check");
    assert_eq!(step.result, "needs_human", "{step:?}");
    assert!(step.detail.contains("is missing"), "{step:?}");
    assert_eq!(report.steps.len(), 1, "the chain stopped");
    assert!(!data.exists(), "selfheal created the data file");
}

#[test]
fn an_oom_like_killed_line_is_diagnosed_as_memory_exhaustion() {
    let env = TestEnv::new();
    let port = free_port();
    // What a shell prints when the OOM killer took its child, and the status it exits with.
    env.configure(&config(web(port, &["service_restart"])))
        .unit("web", "ExecStart=/bin/sh -c 'echo Killed; exit 137'");
    env.start_failing("web");

    let (code, report) = env.run_json("web", &["--dry-run"]);

    assert_eq!(code, ExitCode::Success, "{report:?}");
    let diagnosis = report.diagnosis.as_ref().unwrap();
    assert_eq!(diagnosis.termination.status, Some(137));
    assert_eq!(diagnosis.symptoms, ["out_of_memory"], "{diagnosis:?}");
    assert_contains(&diagnosis.root_cause, "ran out of memory");
}

#[test]
fn a_live_service_that_fails_its_health_check_is_never_signalled_as_a_stale_holder() {
    let env = TestEnv::new();
    let port = free_port();
    // Listening but unhealthy: service_restart restarts it, verification fails on the 503,
    // and port_conflict then finds the unit's new main process holding the port. The unit
    // was down before the chain; it is not any more, and its live process is not a leftover.
    // A short verify_timeout: the 503 never turns into a 200, so each verification waits it out.
    let short = web(port, &["service_restart", "port_conflict"])
        .health_url(port)
        .verify_timeout("2s");
    env.configure(&config(short)).unit(
        "web",
        &format!("ExecStart={} --status 503", serve(port, "web")),
    );

    let (code, report) = env.run_json("web", &[]);

    assert_eq!(code, ExitCode::Failure, "{report:?}");
    let step = report.step("port_conflict");
    assert_eq!(step.result, "not_applicable", "{step:?}");
    assert!(step.detail.contains("web.service itself"), "{step:?}");
    assert!(step.changes.is_empty(), "{step:?}");
    let main_pid = env.property("web.service", "MainPID");
    assert_eq!(env.property("web.service", "ActiveState"), "active");
    let holders = selfheal::ports::holders(port);
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_eq!(sandbox_pid(holders[0].pid).to_string(), main_pid);
    assert_eq!(
        env.property("web.service", "NRestarts"),
        "0",
        "the live process was never killed"
    );
}

#[test]
fn another_unit_running_the_same_command_line_is_never_signalled() {
    let env = TestEnv::new();
    let port = free_port();
    // Blue/green: web-green runs exactly web's ExecStart= and holds the port.
    let exec_start = format!("ExecStart={}", serve(port, "web"));
    env.configure(&config(web(port, &["port_conflict", "service_restart"])))
        .unit("web-green", &exec_start)
        .unit("web", &exec_start);
    env.start_listening("web-green", port);
    let green_pid = env.property("web-green.service", "MainPID");
    env.start_failing("web");

    let (code, report) = env.run_json("web", &[]);

    assert_eq!(code, ExitCode::Failure, "{report:?}");
    let step = report.step("port_conflict");
    assert_eq!(step.result, "needs_human", "{step:?}");
    let detail = &step.detail;
    assert_contains(detail, &format!("web-green.service: pid {green_pid} ("));
    assert_eq!(env.property("web-green.service", "ActiveState"), "active");
    assert_eq!(env.property("web-green.service", "MainPID"), green_pid);
}
