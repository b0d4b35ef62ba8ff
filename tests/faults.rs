//! Fault tests against the sandboxed systemd: the bad day selfheal exists for. The bus is
//! down, the mail relay hangs, the state directory is full or read-only, systemd stops the
//! heal unit mid-run, a health URL never answers, a FIFO is planted as env file or config.
//! Each ends in a clear error or in a healed service and a report, never in a hang.

mod common;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::config::{Config, Service};
use common::{TestEnv, assert_contains, exit_code, free_port, selfheal_bin, wait_until};
use selfheal::exit_code::ExitCode;
use selfheal::outcome::Outcome;
use selfheal::state::HistoryRecord;
use serde_json::json;

/// `web` on `port`.
fn web(port: u16) -> Service {
    Service::new("web").port(port).stable_for("200ms")
}

/// A config of `web`, with an owner.
fn service(web: Service) -> Config {
    Config::new().with("owner", "ops@example.org").service(web)
}

/// Runs `command`, failing the test (instead of hanging it) when it takes longer than
/// `limit`: a blocked read is exactly the defect some of these tests guard against.
#[track_caller]
fn output_within(mut command: Command, limit: Duration) -> Output {
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    if let Ok(output) = finished.recv_timeout(limit) {
        output.unwrap()
    } else {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        panic!("still running after {limit:?}");
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn with_the_system_bus_down_run_says_so_and_exits_4() {
    let env = TestEnv::new();
    let port = free_port();
    env.configure(&service(web(port)))
        .web_unit("web", port, "web");
    env.systemctl(&["stop", "dbus.socket", "dbus.service"]);

    let output = output_within(
        env.selfheal_command(["run", "web"]),
        Duration::from_secs(30),
    );

    assert_eq!(
        exit_code(&output),
        ExitCode::SystemdUnavailable,
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("cannot connect to the D-Bus system bus"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_smtp_relay_that_never_answers_delays_only_the_mail() {
    let env = TestEnv::new();
    let port = free_port();
    // Accepts connections (the kernel completes the handshake) and never says a word.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let smtp_port = silent.local_addr().unwrap().port();
    env.configure(&service(web(port)).with(
        "email",
        json!({
            "from": "selfheal@testhost.example",
            "smtp": {"host": "127.0.0.1", "port": smtp_port, "security": "none", "timeout": "1s"},
        }),
    ))
    .web_unit("web", port, "web");

    let started = Instant::now();
    let output = output_within(
        env.selfheal_command(["run", "web"]),
        Duration::from_secs(30),
    );
    let took = started.elapsed();

    assert_eq!(exit_code(&output), ExitCode::Success, "{}", stderr(&output));
    assert_eq!(env.property("web.service", "ActiveState"), "active");
    let queued: Vec<_> = std::fs::read_dir(env.state_dir.join("outbox"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .collect();
    assert_eq!(queued.len(), 1, "the report waits in the outbox");
    assert!(
        took < Duration::from_secs(10),
        "the SMTP timeout held: {took:?}"
    );
    drop(silent);
}

/// Mounts a tmpfs over the test's state directory inside the sandbox (its mounts are its
/// own), with these options.
fn state_dir_on_tmpfs(env: &TestEnv, options: &str) {
    std::fs::create_dir_all(&env.state_dir).unwrap();
    let status = env
        .sandbox
        .command("mount")
        .args(["-t", "tmpfs", "-o", options, "selfheal-test"])
        .arg(&env.state_dir)
        .status()
        .unwrap();
    assert!(status.success(), "mount -o {options}");
}

/// A broken state directory (full, read-only) still heals, prints the report and mails it
/// directly; only the history line is lost, and the journal says so.
fn heals_and_tells_despite_the_state_dir(env: &TestEnv, port: u16) {
    let mail_dir = env.sandbox.scratch_dir().join("mail");
    env.configure(
        &service(web(port)).with("email", json!({"transport": "file", "file_dir": mail_dir})),
    )
    .web_unit("web", port, "web");

    let (code, report) = env.run_json("web", &[]);

    assert_eq!(code, ExitCode::Success, "{report:?}");
    assert_eq!(report.outcome, Outcome::Resolved);
    assert_eq!(env.property("web.service", "ActiveState"), "active");
    let mails: Vec<_> = std::fs::read_dir(&mail_dir).unwrap().flatten().collect();
    assert_eq!(mails.len(), 1, "the report was mailed without the outbox");
    let journal = env.journal(&["SYSLOG_IDENTIFIER=selfheal"]);
    assert_contains(&journal, "could not be recorded in history.jsonl");
}

#[test]
fn a_full_state_directory_does_not_stop_healing_or_telling() {
    let env = TestEnv::new();
    let port = free_port();
    state_dir_on_tmpfs(&env, "size=64k,mode=0750");
    // Fill it up.
    let _ = env
        .sandbox
        .command("sh")
        .arg("-c")
        .arg(format!(
            "cat /dev/zero > {}/fill 2>/dev/null",
            env.state_dir.display()
        ))
        .status();
    heals_and_tells_despite_the_state_dir(&env, port);
}

#[test]
fn a_read_only_state_directory_does_not_stop_healing_or_telling() {
    let env = TestEnv::new();
    let port = free_port();
    state_dir_on_tmpfs(&env, "ro,mode=0750");
    heals_and_tells_despite_the_state_dir(&env, port);
}

#[test]
fn sigterm_from_systemd_mid_run_leaves_the_lock_free_and_history_whole() {
    let env = TestEnv::new();
    let port = free_port();
    let scratch = env.sandbox.scratch_dir();
    let running = scratch.join("validator-running");
    let hold = scratch.join("hold");
    let fixed = scratch.join("fixed");
    let validator = scratch.join("validate");
    std::fs::write(&hold, "").unwrap();
    std::fs::write(
        &validator,
        format!(
            "#!/bin/sh\ntouch {running}\nwhile [ -e {hold} ]; do sleep 0.05; done\nexit 0\n",
            running = running.display(),
            hold = hold.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&validator, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.configure(&service(
        web(port)
            .strategies(&["config_validation", "service_restart"])
            .with(
                "config_validation",
                json!({"command": [validator], "timeout": "2m"}),
            ),
    ))
    .unit(
        "web",
        &format!(
            "ExecStart=/bin/sh -c 'test -e {fixed} || exit 1; exec {bin} serve-demo --port {port}'",
            fixed = fixed.display(),
            bin = selfheal_bin().display()
        ),
    )
    .install();
    env.start_failing("web");
    wait_until(Duration::from_secs(20), "the validator to start", || {
        running.exists()
    });

    // The hook's run holds the lock: a second run yields.
    let (code, report) = env.run_json("web", &[]);
    assert_eq!(code, ExitCode::Suppressed, "{report:?}");
    assert_eq!(report.outcome, Outcome::Suppressed);

    // systemd's stop: SIGTERM to selfheal and everything in the heal unit's cgroup.
    env.systemctl(&["stop", "selfheal@web.service"]);
    let state = env.property("selfheal@web.service", "ActiveState");
    assert!(state == "inactive" || state == "failed", "{state}");

    // The lock died with the process: the next run heals.
    std::fs::remove_file(&hold).unwrap();
    std::fs::write(&fixed, "").unwrap();
    let (code, report) = env.run_json("web", &[]);
    assert_eq!(code, ExitCode::Success, "{report:?}");
    assert_eq!(report.outcome, Outcome::Resolved);

    // Every line of history is whole: the killed run wrote none or all of one.
    let raw = std::fs::read_to_string(env.state_dir.join("history.jsonl")).unwrap();
    assert!(raw.ends_with('\n'), "{raw}");
    let records: Vec<HistoryRecord> = raw
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let outcomes: Vec<Outcome> = records.iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, [Outcome::Suppressed, Outcome::Resolved]);
}

#[test]
fn a_health_url_that_never_answers_is_bounded_by_verify_timeout() {
    let env = TestEnv::new();
    let port = free_port();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let health_port = silent.local_addr().unwrap().port();
    env.configure(
        &Config::new().service(
            Service::new("web")
                .port(port)
                .with(
                    "health_url",
                    format!("http://127.0.0.1:{health_port}/health"),
                )
                .verify_timeout("2s")
                .stable_for("200ms")
                .strategies(&["service_restart"]),
        ),
    )
    .web_unit("web", port, "web");

    let started = Instant::now();
    let (code, report) = env.run_json("web", &[]);
    let took = started.elapsed();

    assert_eq!(code, ExitCode::Failure, "{report:?}");
    assert_eq!(report.outcome, Outcome::Failed);
    assert!(
        report.steps[0]
            .detail
            .contains(&format!("127.0.0.1:{health_port}/health")),
        "{report:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "verify_timeout (2s) held: {took:?}"
    );
    drop(silent);
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

#[test]
fn a_fifo_as_config_is_refused_without_blocking() {
    let env = TestEnv::new();
    mkfifo(&env.config_path);

    let output = output_within(
        env.selfheal_command(["run", "web"]),
        Duration::from_secs(20),
    );

    assert_eq!(exit_code(&output), ExitCode::Usage, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("a FIFO, not a regular file"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_fifo_as_env_file_is_escalated_without_blocking() {
    let env = TestEnv::new();
    let port = free_port();
    let env_file = env.sandbox.scratch_dir().join("web.env");
    mkfifo(&env_file);
    env.configure(&service(web(port).strategies(&["environment_check"]).with(
        "environment_check",
        json!({"file": env_file, "required": ["SECRET_KEY"]}),
    )))
    .web_unit("web", port, "web");

    let output = output_within(
        env.selfheal_command(["run", "web", "--json"]),
        Duration::from_secs(20),
    );

    assert_eq!(exit_code(&output), ExitCode::Failure, "{}", stderr(&output));
    let report: common::RunReport = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report.steps[0].result, "needs_human", "{report:?}");
    assert!(
        report.steps[0]
            .detail
            .contains("a FIFO, not a regular file"),
        "{report:?}"
    );
}

#[test]
fn status_with_systemd_frozen_says_unknown_within_its_timeout() {
    let env = TestEnv::new();
    let port = free_port();
    env.configure(&service(web(port)))
        .web_unit("web", port, "web");
    let systemd = nix::unistd::Pid::from_raw(i32::try_from(env.sandbox.pid()).unwrap());
    nix::sys::signal::kill(systemd, nix::sys::signal::Signal::SIGSTOP).unwrap();

    let started = std::time::Instant::now();
    let output = output_within(
        env.selfheal_command(["status", "--json"]),
        Duration::from_secs(30),
    );
    let took = started.elapsed();
    nix::sys::signal::kill(systemd, nix::sys::signal::Signal::SIGCONT).unwrap();

    assert_eq!(exit_code(&output), ExitCode::Failure, "{}", stderr(&output));
    assert!(took < Duration::from_secs(6), "took {took:?}");
    let status = common::StatusJson::parse(&output);
    let web = &status.services[0];
    assert_eq!(web.active_state, "unknown", "{web:?}");
    assert_eq!(
        web.unknown_reason.as_deref(),
        Some("systemd did not answer in 2s"),
        "{web:?}"
    );
    assert_eq!(status.summary["unknown"], 1);
}
