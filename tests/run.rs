//! `selfheal run` against a real systemd in a sandbox: healed through OnFailure=, diagnosed,
//! healthy services left alone, a service that stays down, dry-run, locks and loop protection.

mod common;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use common::config::{Config, Service};
use common::{TestEnv, assert_contains, exit_code, free_port, selfheal_bin, wait_until};
use selfheal::exit_code::ExitCode;
use selfheal::outcome::Outcome;

/// `web` on `port`, with its health URL.
fn web(port: u16) -> Service {
    Service::new("web")
        .port(port)
        .health_url(port)
        .verify_timeout("10s")
}

/// A config of `web` alone.
fn web_config(port: u16) -> Config {
    Config::new().service(web(port))
}

#[test]
fn a_sigkilled_service_is_healed_through_its_on_failure_hook() {
    let env = TestEnv::new();
    let port = free_port();
    env.configure(&web_config(port))
        .web_unit("web", port, "web says hello before dying")
        .install();
    env.start_listening("web", port);
    let first_pid = env.property("web.service", "MainPID");

    env.systemctl(&["kill", "--signal=SIGKILL", "web.service"]);

    let history = env.wait_for_history(1, Duration::from_secs(30));
    assert_eq!(history[0].outcome, Outcome::Resolved, "{history:?}");
    assert_eq!(history[0].healed_by.as_deref(), Some("service_restart"));
    assert!(
        history[0].summary.contains("killed by SIGKILL"),
        "{}",
        history[0].summary
    );
    assert_eq!(env.property("web.service", "ActiveState"), "active");
    assert_ne!(
        env.property("web.service", "MainPID"),
        first_pid,
        "a new process serves"
    );
    assert!(selfheal::ports::is_listening(port));

    // The report the OnFailure= run printed: systemd's facts, from the hook, and the line the
    // service printed before it died.
    let report = env.heal_report("web");
    assert_contains(&report, "✅ TestHost self-healing report: web - RESOLVED");
    assert_contains(&report, "from the OnFailure= hook");
    assert_contains(&report, "Signal:      SIGKILL");
    assert_contains(&report, "web says hello before dying");

    // journald carries the structured fields.
    let entries = env.journal(&[
        "SYSLOG_IDENTIFIER=selfheal",
        "SELFHEAL_SERVICE=web",
        "SELFHEAL_OUTCOME=resolved",
    ]);
    assert_contains(&entries, "web resolved in");
}

#[test]
fn an_exit_3_failure_is_diagnosed_and_healed() {
    let env = TestEnv::new();
    let port = free_port();
    let marker = env.sandbox.scratch_dir().join("crashed-once");
    // First start: print a reason and exit 3. Every later start: serve.
    let script = format!(
        "if [ -e {m} ]; then exec {bin} serve-demo --port {port}; else touch {m}; echo 'fatal: cannot open /srv/web/config.toml'; exit 3; fi",
        m = marker.display(),
        bin = selfheal_bin().display()
    );
    env.configure(&web_config(port))
        .unit("web", &format!("ExecStart=/bin/sh -c \"{script}\""))
        .install();
    env.systemctl(&["start", "web.service"]);

    let history = env.wait_for_history(1, Duration::from_secs(30));
    assert_eq!(history[0].outcome, Outcome::Resolved, "{history:?}");
    assert!(
        history[0].summary.contains("exited with status 3"),
        "{}",
        history[0].summary
    );
    let report = env.heal_report("web");
    assert_contains(&report, "Exit status: 3");
    assert_contains(&report, "fatal: cannot open /srv/web/config.toml");
    assert_contains(&report, "exited with status 3 by itself");
    assert_eq!(env.property("web.service", "ActiveState"), "active");
}

#[test]
fn a_manual_run_heals_a_killed_service_and_verifies_port_and_health() {
    let env = TestEnv::new();
    let port = free_port();
    env.configure(&web_config(port)).web_unit("web", port, "up");
    env.start_listening("web", port);
    env.systemctl(&["kill", "--signal=SIGKILL", "web.service"]);
    wait_until(Duration::from_secs(10), "web to fail", || {
        env.property("web.service", "ActiveState") == "failed"
    });

    let (code, report) = env.run_json("web", &[]);

    assert_eq!(code, ExitCode::Success, "{report:?}");
    assert_eq!(report.outcome, Outcome::Resolved);
    let diagnosis = report.diagnosis.as_ref().unwrap();
    assert_eq!(
        diagnosis.source, "properties",
        "no MONITOR_* outside OnFailure="
    );
    assert_eq!(diagnosis.termination.signal.as_deref(), Some("SIGKILL"));
    let detail = &report.steps[0].detail;
    assert_contains(detail, &format!("port {port} listening"));
    assert_contains(detail, "/health answered 200");
    assert_eq!(env.property("web.service", "ActiveState"), "active");
}

#[test]
fn a_healthy_service_is_left_alone() {
    let env = TestEnv::new();
    let port = free_port();
    env.configure(&web_config(port)).web_unit("web", port, "up");
    env.start_listening("web", port);
    let pid = env.property("web.service", "MainPID");
    let invocation = env.property("web.service", "InvocationID");

    let (code, report) = env.run_json("web", &[]);

    assert_eq!(code, ExitCode::Success, "{report:?}");
    assert_eq!(report.outcome, Outcome::Healthy);
    assert!(report.steps.is_empty(), "{report:?}");
    assert_eq!(env.property("web.service", "MainPID"), pid);
    assert_eq!(env.property("web.service", "InvocationID"), invocation);
    assert_eq!(env.history()[0].outcome, Outcome::Healthy);
}

#[test]
fn a_service_that_stays_down_fails_within_verify_timeout() {
    let env = TestEnv::new();
    let port = free_port();
    // The process exits right after printing, so journald cannot tag the line with the
    // invocation; selfheal finds it by unit within the invocation's span.
    env.configure(&web_config(port)).unit(
        "web",
        "ExecStart=/bin/sh -c 'echo database unreachable; exit 1'",
    );
    env.start_failing("web");

    let started = Instant::now();
    let (code, report) = env.run_json("web", &[]);

    assert_eq!(code, ExitCode::Failure, "{report:?}");
    assert_eq!(report.outcome, Outcome::Failed);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let step = &report.steps[0];
    assert_eq!(step.strategy, "service_restart");
    assert_eq!(step.result, "no_fix");
    assert!(step.detail.contains("failed"), "{step:?}");
    let diagnosis = report.diagnosis.as_ref().unwrap();
    assert_eq!(diagnosis.termination.status, Some(1));
    assert_contains(&diagnosis.journal_text(), "database unreachable");
    assert_contains(
        &report.manual_steps.join("\n"),
        "journalctl -u web.service -n 100",
    );
    assert_eq!(env.history()[0].outcome, Outcome::Failed);
}

#[test]
fn dry_run_changes_nothing() {
    let env = TestEnv::new();
    let port = free_port();
    env.configure(&web_config(port))
        .unit("web", "ExecStart=/bin/sh -c 'exit 3'");
    env.start_failing("web");
    let invocation = env.property("web.service", "InvocationID");

    let (code, report) = env.run_json("web", &["--dry-run"]);

    assert_eq!(code, ExitCode::Success, "{report:?}");
    assert_eq!(report.outcome, Outcome::Planned);
    assert_eq!(report.steps[0].result, "planned");
    assert!(report.steps[0].action.starts_with("would "));
    assert_eq!(env.property("web.service", "ActiveState"), "failed");
    assert_eq!(env.property("web.service", "InvocationID"), invocation);
    assert!(!env.state_dir.exists(), "dry-run wrote state");
}

#[test]
fn a_run_already_holding_the_service_suppresses_a_second_one() {
    let env = TestEnv::new();
    let port = free_port();
    env.configure(&web_config(port))
        .unit("web", "ExecStart=/bin/sh -c 'exit 3'");
    let locks = env.state_dir.join("locks");
    std::fs::create_dir_all(&locks).unwrap();
    // A concurrent run, as far as the lock is concerned.
    let mut holder = std::process::Command::new("flock")
        .arg(locks.join("web.lock"))
        .args(["sleep", "60"])
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(5), "flock to hold the lock", || {
        flock_held(&locks.join("web.lock"))
    });

    let (code, report) = env.run_json("web", &[]);
    holder.kill().unwrap();
    holder.wait().unwrap();

    assert_eq!(code, ExitCode::Suppressed, "{report:?}");
    assert_eq!(report.outcome, Outcome::Suppressed);
    assert!(
        report
            .reason
            .as_deref()
            .unwrap()
            .contains("another selfheal run"),
        "{report:?}"
    );
}

#[test]
fn loop_protection_stops_healing_at_the_failure_threshold() {
    let env = TestEnv::new();
    let port = free_port();
    env.configure(&web_config(port).with("failure_threshold", 2))
        .unit("web", "ExecStart=/bin/sh -c 'exit 3'");
    env.start_failing("web");

    let first = env.run_json("web", &[]);
    let second = env.run_json("web", &[]);
    let invocation = env.property("web.service", "InvocationID");
    let third = env.run_json("web", &[]);

    assert_eq!(
        (first.0, second.0, third.0),
        (ExitCode::Failure, ExitCode::Failure, ExitCode::Suppressed),
        "{third:?}"
    );
    assert_eq!(third.1.outcome, Outcome::Suppressed);
    assert_contains(third.1.reason.as_deref().unwrap(), "loop protection");
    assert_eq!(
        env.property("web.service", "InvocationID"),
        invocation,
        "the suppressed run restarted it"
    );
}

#[test]
fn a_pending_automatic_restart_is_awaited_not_raced() {
    let env = TestEnv::new();
    let port = free_port();
    env.configure(&web_config(port)).unit(
        "web",
        &format!(
            "ExecStart={} serve-demo --port {port}\nRestart=on-failure\nRestartSec=3s",
            selfheal_bin().display()
        ),
    );
    env.start_listening("web", port);
    env.systemctl(&["kill", "--signal=SIGKILL", "web.service"]);
    wait_until(Duration::from_secs(5), "auto-restart", || {
        env.property("web.service", "SubState") == "auto-restart"
    });

    let (code, report) = env.run_json("web", &[]);

    assert_eq!(code, ExitCode::Success, "{report:?}");
    assert_eq!(report.outcome, Outcome::RestartedBySystemd);
    assert!(
        report
            .reason
            .as_deref()
            .unwrap()
            .contains("systemd's own Restart= brought web.service back"),
        "{report:?}"
    );
    assert_eq!(
        env.property("web.service", "NRestarts"),
        "1",
        "only systemd's own restart happened"
    );
}

/// Whether some process holds a flock on `path` (from /proc/locks: "... FLOCK ... maj:min:inode ...").
fn flock_held(path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(inode) = std::fs::metadata(path).map(|m| m.ino()) else {
        return false;
    };
    let suffix = format!(":{inode}");
    std::fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .any(|line| {
            line.contains("FLOCK")
                && line
                    .split_whitespace()
                    .nth(5)
                    .is_some_and(|f| f.ends_with(&suffix))
        })
}

#[test]
fn a_unit_stopped_by_its_start_limit_is_reset_before_it_is_started() {
    let env = TestEnv::new();
    let port = free_port();
    let marker = env.sandbox.scratch_dir().join("fixed");
    // Fails until the marker exists; systemd's own restarts run into the start limit.
    env.configure(&web_config(port)).unit(
        "web",
        &format!(
            "ExecStart=/bin/sh -c 'test -e {m} || exit 1; exec {bin} serve-demo --port {port}'\nRestart=on-failure\nRestartSec=0\n[Unit]\nStartLimitBurst=2\nStartLimitIntervalSec=1h",
            m = marker.display(),
            bin = selfheal_bin().display()
        ),
    );
    env.systemctl(&["start", "web.service"]);
    wait_until(Duration::from_secs(10), "systemd to give up", || {
        env.property("web.service", "ActiveState") == "failed"
            && env.property("web.service", "NRestarts") == "2"
    });
    // The limit is in force: a plain start is refused. (systemd 252 keeps Result=exit-code
    // here; Result=start-limit-hit appears only for some paths, so selfheal resets any failed
    // unit rather than trusting that value.)
    assert!(env.sandbox.systemctl(["start", "web.service"]).is_err());
    std::fs::write(&marker, "").unwrap();

    let (code, report) = env.run_json("web", &[]);

    assert_eq!(code, ExitCode::Success, "{report:?}");
    assert!(
        report.steps[0].detail.starts_with("reset-failed;"),
        "{report:?}"
    );
    assert_eq!(env.property("web.service", "ActiveState"), "active");
}

#[test]
fn a_run_that_begins_while_a_start_job_hangs_ends_failed_and_names_the_job() {
    let env = TestEnv::new();
    let port = free_port();
    // The start waits on something that never comes (a mount, a database, a lock).
    env.configure(&Config::new().service(web(port).verify_timeout("2s")))
        .unit(
            "web",
            &format!(
                "ExecStartPre=/bin/sleep 600\nExecStart={} serve-demo --port {port}",
                selfheal_bin().display()
            ),
        );
    env.systemctl(&["start", "--no-block", "web.service"]);
    wait_until(Duration::from_secs(10), "the start job", || {
        env.property("web.service", "ActiveState") == "activating"
    });

    let started = Instant::now();
    let (code, report) = env.run_json("web", &[]);

    assert_eq!(code, ExitCode::Failure, "{report:?}");
    assert_eq!(report.outcome, Outcome::Failed);
    let reason = report.reason.as_deref().unwrap();
    assert_contains(
        reason,
        "for web.service was still running after verify_timeout (2s)",
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // selfheal queued nothing of its own behind systemd's job.
    assert_eq!(env.property("web.service", "ActiveState"), "activating");
}

#[test]
fn a_broken_template_override_never_blocks_healing_and_check_names_it() {
    let env = TestEnv::new();
    let port = free_port();
    let templates = env.sandbox.scratch_dir().join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    std::fs::write(templates.join("report.txt.j2"), "{% if %}\n").unwrap();
    env.configure(&web_config(port).with("templates_dir", &templates))
        .web_unit("web", port, "web");

    let check = env.selfheal(["check"]);
    assert_eq!(exit_code(&check), ExitCode::Usage);
    assert_contains(
        &String::from_utf8_lossy(&check.stderr),
        "template report.txt.j2 in ",
    );

    let run = env.selfheal(["run", "web"]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(exit_code(&run), ExitCode::Success, "{stdout}");
    assert!(
        stdout.starts_with("⚠ template report.txt.j2 in "),
        "{stdout}"
    );
    assert_contains(&stdout, "built-in template used");
    assert_contains(&stdout, "RESOLVED");
    assert_eq!(env.property("web.service", "ActiveState"), "active");
}

#[test]
fn an_active_service_that_does_not_listen_is_healed_and_the_report_names_the_port() {
    let env = TestEnv::new();
    let port = free_port();
    let marker = env.sandbox.scratch_dir().join("hung-once");
    // First start: active but hung before it binds (a deadlock, a stuck migration). Every
    // later start: serves.
    let script = format!(
        "if [ -e {m} ]; then exec {bin} serve-demo --port {port}; else touch {m}; exec sleep 600; fi",
        m = marker.display(),
        bin = selfheal_bin().display()
    );
    env.configure(&web_config(port))
        .unit("web", &format!("ExecStart=/bin/sh -c \"{script}\""));
    env.systemctl(&["start", "web.service"]);
    assert_eq!(env.property("web.service", "ActiveState"), "active");

    let (code, report) = env.run_json("web", &[]);

    assert_eq!(code, ExitCode::Success, "{report:?}");
    assert_eq!(report.outcome, Outcome::Resolved);
    let diagnosis = report.diagnosis.as_ref().unwrap();
    let expected = format!("active, but port {port} is not listening");
    assert_contains(&diagnosis.summary, &expected);
    assert_contains(
        &diagnosis.root_cause,
        &format!("port {port} is not listening"),
    );
    assert!(
        !diagnosis.root_cause.contains("nothing crashed"),
        "{diagnosis:?}"
    );
    assert_eq!(diagnosis.unhealthy.as_deref(), Some(expected.as_str()));
    assert!(selfheal::ports::is_listening(port));
    assert_contains(&env.history()[0].summary, &expected);
}

#[test]
fn a_heal_rewrites_the_metrics_file_and_its_counters_match_history() {
    let env = TestEnv::new();
    let port = free_port();
    let metrics = env
        .sandbox
        .scratch_dir()
        .join("textfile")
        .join("selfheal.prom");
    std::fs::create_dir_all(metrics.parent().unwrap()).unwrap();
    env.configure(&web_config(port).with("metrics_file", &metrics))
        .web_unit("web", port, "up")
        .install();
    env.start_listening("web", port);
    // Healed through the installed heal unit, whose UMask=0077 must not make the file
    // unreadable for node_exporter.
    env.systemctl(&["kill", "--signal=SIGKILL", "web.service"]);
    env.wait_for_history(1, Duration::from_secs(30));
    wait_until(Duration::from_secs(10), "the metrics file", || {
        metrics.exists()
    });
    let mode = std::fs::metadata(&metrics).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "node_exporter reads it");

    let (code, _) = env.run_json("web", &[]);
    assert_eq!(code, ExitCode::Success);
    let (code, _) = env.run_json("web", &["--dry-run"]);
    assert_eq!(code, ExitCode::Success);

    let text = std::fs::read_to_string(&metrics).unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let counter = |outcome: &str| {
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "selfheal_runs_total"
                    && s.labels.get("service") == Some("web")
                    && s.labels.get("outcome") == Some(outcome)
            })
            .map(|s| s.value.clone())
    };
    let history = env.history();
    let count = |outcome: Outcome| history.iter().filter(|r| r.outcome == outcome).count();
    assert_eq!(count(Outcome::Resolved), 1);
    assert_eq!(count(Outcome::Healthy), 1);
    assert_eq!(
        counter("resolved"),
        Some(prometheus_parse::Value::Counter(1.0)),
        "{text}"
    );
    assert_eq!(
        counter("healthy"),
        Some(prometheus_parse::Value::Counter(1.0)),
        "{text}"
    );
    assert_eq!(
        counter("planned"),
        None,
        "a dry run is not recorded: {text}"
    );
    assert_contains(&text, "selfheal_episode_open{service=\"web\"} 0");
    assert_contains(&text, "selfheal_outbox_messages 0");
    // Written atomically: no temporary file is left beside it.
    let siblings: Vec<_> = std::fs::read_dir(metrics.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(siblings, [std::ffi::OsString::from("selfheal.prom")]);
}

/// `db` (a oneshot that stays active once it succeeded) fails until `marker` exists; `web`
/// requires it, so web's start fails with db's.
fn web_requiring_db(env: &TestEnv, port: u16, marker: &std::path::Path) {
    env.sandbox
        .add_unit(
            "db.service",
            &format!(
                "[Unit]\nDescription=db\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c \"if [ ! -e {m} ]; then echo 'db: disk full'; exit 1; fi\"\n",
                m = marker.display()
            ),
        )
        .unwrap();
    env.sandbox
        .add_unit(
            "web.service",
            &format!(
                "[Unit]\nDescription=web\nRequires=db.service\nAfter=db.service\n[Service]\nExecStart={} serve-demo --port {port}\n",
                selfheal_bin().display()
            ),
        )
        .unwrap();
}

#[test]
fn a_failed_unit_the_service_requires_is_named_first_and_healed_first_when_monitored() {
    let env = TestEnv::new();
    let port = free_port();
    let marker = env.sandbox.scratch_dir().join("db-fixed");
    web_requiring_db(&env, port, &marker);
    env.configure(&Config::new().service(web(port).verify_timeout("3s")));
    let _ = env.sandbox.systemctl(["start", "db.service"]);
    assert_eq!(env.property("db.service", "ActiveState"), "failed");
    // Starting web pulls db in, which fails again: web's start fails on its dependency.
    let _ = env.sandbox.systemctl(["start", "web.service"]);

    // db is not monitored: the report says where the wall is.
    let (code, report) = env.run_json("web", &[]);
    assert_eq!(code, ExitCode::Failure, "{report:?}");
    let diagnosis = report.diagnosis.as_ref().unwrap();
    assert_contains(
        &diagnosis.root_cause,
        "db.service, which web.service requires, is failed/failed",
    );
    assert_contains(&diagnosis.summary, "web.service requires db.service");
    assert_eq!(diagnosis.upstream[0].unit, "db.service");
    assert_eq!(diagnosis.upstream[0].action, None);

    // Monitored, and fixed meanwhile: db is healed first (by its own heal unit), then web.
    std::fs::write(&marker, "").unwrap();
    env.configure(&web_config(port).service(Service::new("db").stable_for("200ms")))
        .install();
    let (code, report) = env.run_json("web", &[]);
    assert_eq!(code, ExitCode::Success, "{report:?}");
    assert_eq!(report.outcome, Outcome::Resolved);
    let upstream = &report.diagnosis.as_ref().unwrap().upstream[0];
    assert_eq!(upstream.unit, "db.service");
    assert_contains(
        upstream.action.as_deref().unwrap_or_default(),
        "selfheal healed db.service first with selfheal@db.service; it is now active/exited",
    );
    assert_eq!(env.property("db.service", "ActiveState"), "active");
    assert_eq!(env.property("web.service", "ActiveState"), "active");
    let history = env.history();
    assert!(
        history
            .iter()
            .any(|r| r.service == "db" && r.outcome == Outcome::Resolved),
        "db's own run is in history: {history:?}"
    );
}

#[test]
fn a_wanted_unit_that_does_not_exist_is_not_a_cause() {
    // Debian's PrivateTmp= services want and wait for tmp.mount, which Debian does not ship.
    let env = TestEnv::new();
    let port = free_port();
    env.configure(&web_config(port)).sandbox
        .add_unit(
            "web.service",
            &format!(
                "[Unit]\nDescription=web\nWants=tmp.mount\nAfter=tmp.mount\n[Service]\nExecStart={} serve-demo --port {port}\n",
                selfheal_bin().display()
            ),
        )
        .unwrap();
    env.start_listening("web", port);
    env.systemctl(&["kill", "--signal=SIGKILL", "web.service"]);
    wait_until(Duration::from_secs(5), "web to fail", || {
        env.property("web.service", "ActiveState") == "failed"
    });

    let (code, report) = env.run_json("web", &[]);

    assert_eq!(code, ExitCode::Success, "{report:?}");
    let diagnosis = report.diagnosis.unwrap();
    assert!(diagnosis.upstream.is_empty(), "{diagnosis:?}");
    assert!(
        !diagnosis.summary.contains("tmp.mount"),
        "{}",
        diagnosis.summary
    );
}

/// Loop protection yields to a person, not to whatever has a terminal: a run inside
/// `script(1)` (a pty, as `expect` or a loop in tmux have) is only asked, and end of input is
/// a no; a typed `y` or `--force` is a person's run, after which the count starts afresh.
#[test]
fn only_a_person_who_says_so_overrides_loop_protection() {
    let env = TestEnv::new();
    env.configure(
        &Config::new()
            .with("failure_threshold", 1)
            .service(Service::new("web").verify_timeout("3s").stable_for("200ms")),
    )
    .unit("web", "ExecStart=/bin/sleep 600");
    let kill = || {
        env.systemctl(&["start", "web.service"]);
        env.systemctl(&["kill", "--signal=SIGKILL", "web.service"]);
        wait_until(Duration::from_secs(10), "web to fail", || {
            env.property("web.service", "ActiveState") == "failed"
        });
    };
    // `selfheal run web` at a pseudo-terminal, with `input` typed into it.
    let at_a_terminal = |input: &str| {
        let command = format!(
            "{} --config {} --state-dir {} run web",
            selfheal_bin().display(),
            env.config_path.display(),
            env.state_dir.display()
        );
        let mut child = env
            .sandbox
            .command("script")
            .args(["-qec", &command, "/dev/null"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
        drop(stdin);
        let output = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let last = |env: &TestEnv| env.history().pop().expect("a run recorded");

    kill();
    assert_eq!(env.run_json("web", &[]).1.outcome, Outcome::Resolved);
    kill();
    let asked = at_a_terminal("");
    assert_contains(
        &asked,
        "loop protection holds web: 1 healing runs of this incident within 1h",
    );
    assert_contains(&asked, "[y/N]");
    let record = last(&env);
    assert_eq!(
        (record.outcome, record.manual),
        (Outcome::Suppressed, false)
    );
    assert_eq!(env.property("web.service", "ActiveState"), "failed");

    at_a_terminal("y\n");
    let record = last(&env);
    assert_eq!((record.outcome, record.manual), (Outcome::Resolved, true));
    // The count starts afresh after a person's run: the next failure is healed.
    kill();
    assert_eq!(env.run_json("web", &[]).1.outcome, Outcome::Resolved);
    kill();
    assert_eq!(env.run_json("web", &[]).1.outcome, Outcome::Suppressed);
    let (_, forced) = env.run_json("web", &["--force"]);
    assert_eq!(forced.outcome, Outcome::Resolved);
    assert!(last(&env).manual);
}

/// "It serves its port" is one rule: the unit's own process listens on it. A run that finds
/// the unit active while another unit holds its port does not call it healthy (`status` calls
/// the same `port_taken_by_other`).
#[test]
fn an_active_service_whose_port_another_unit_holds_is_not_healthy() {
    let env = TestEnv::new();
    let port = free_port();
    env.configure(
        &Config::new().service(
            Service::new("web")
                .port(port)
                .verify_timeout("2s")
                .stable_for("200ms")
                .strategies(&["service_restart"]),
        ),
    )
    .unit("web", "ExecStart=/bin/sleep 600")
    .web_unit("squatter", port, "squatting");
    env.start_listening("squatter", port);
    env.systemctl(&["start", "web.service"]);

    let (_, report) = env.run_json("web", &["--dry-run"]);
    assert_ne!(report.outcome, Outcome::Healthy, "{report:?}");
    let diagnosis = report.diagnosis.as_ref().unwrap();
    assert_contains(
        diagnosis.unhealthy.as_deref().unwrap_or_default(),
        &format!("port {port} is held by pid"),
    );
    let status = env.status();
    assert!(status.services[0].port_taken_by_other, "{status:?}");
}
