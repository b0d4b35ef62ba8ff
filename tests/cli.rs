//! Bad input: every mistake exits 2 with a message that says what and where, and never panics.
//! These fail before selfheal talks to systemd, so they need no sandbox.

mod common;

use selfheal::exit_code::ExitCode;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use common::{StatsRowJson, assert_contains, exit_code, selfheal_bin};

fn selfheal_with(config: &str, args: &[&str]) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("selfheal.yml");
    std::fs::write(&path, config).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = std::process::Command::new(selfheal_bin())
        .arg("--config")
        .arg(&path)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(args)
        .output()
        .unwrap();
    (output, dir)
}

fn assert_usage_error(output: &Output, expected: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(exit_code(output), ExitCode::Usage, "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for text in expected {
        assert!(stderr.contains(text), "{text:?} not in: {stderr}");
    }
}

const VALID: &str = "monitored_services:\n  - name: web\n  - name: db\n";

#[test]
fn broken_yaml_names_file_line_and_column() {
    let (output, _dir) = selfheal_with(
        "monitored_services:\n  - name: web\n   port: 80\n",
        &["check"],
    );
    assert_usage_error(
        &output,
        &["selfheal.yml:3:4: ", "did not find expected '-'"],
    );
}

#[test]
fn unknown_keys_list_the_valid_ones() {
    let (output, _dir) = selfheal_with(
        "monitored_services:\n  - name: web\n    prot: 80\n",
        &["run", "web"],
    );
    assert_usage_error(
        &output,
        &[
            "selfheal.yml:3:5: ",
            "unknown field `prot`",
            "expected one of name, unit, port,",
            "healing_strategies",
        ],
    );
}

#[test]
fn unknown_strategies_list_the_valid_ones() {
    let (output, _dir) = selfheal_with(
        "monitored_services:\n  - name: web\n    healing_strategies: [reboot_host]\n",
        &["check"],
    );
    assert_usage_error(
        &output,
        &[
            "unknown variant `reboot_host`",
            "service_restart",
            "port_conflict",
            "environment_check",
        ],
    );
}

#[test]
fn unknown_services_list_the_known_ones() {
    for command in ["run", "history"] {
        let (output, _dir) = selfheal_with(VALID, &[command, "mail"]);
        assert_usage_error(
            &output,
            &["unknown service \"mail\"", "known services: web, db"],
        );
    }
    // A known one, with or without .service, is fine for history (nothing recorded yet).
    let (output, _dir) = selfheal_with(VALID, &["history", "web.service"]);
    assert_eq!(exit_code(&output), ExitCode::Success);
}

#[test]
fn a_shell_injection_in_the_name_is_rejected_and_runs_nothing() {
    let marker = tempfile::tempdir().unwrap().path().join("pwned");
    let name = format!("web;touch {}", marker.display());
    let (output, _dir) = selfheal_with(VALID, &["run", &name]);
    assert_usage_error(
        &output,
        &["invalid service name", "known services: web, db"],
    );
    assert!(!marker.exists());
}

#[test]
fn a_config_others_can_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("selfheal.yml");
    std::fs::write(&path, VALID).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let output = std::process::Command::new(selfheal_bin())
        .arg("--config")
        .arg(&path)
        .arg("check")
        .output()
        .unwrap();
    assert_usage_error(&output, &["refusing config", "writable by group or others"]);
}

#[test]
fn check_finds_in_the_shipped_example_only_what_this_host_lacks() {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/selfheal.example.yml"),
    )
    .unwrap();
    // The config itself is valid; what `check` refuses on a bare host is exactly the files it
    // names that this host does not have (the unit test `the_shipped_example_is_valid` loads
    // it as a config).
    let (output, _dir) = selfheal_with(&example, &["check"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut expected = Vec::new();
    if !Path::new("/usr/local/bin/traefik").exists() {
        expected.push("monitored_services[2] (traefik): config_validation.command: /usr/local/bin/traefik: does not exist");
    }
    if !Path::new("/etc/selfheal/smtp-password").exists() {
        expected.push("email: SMTP password: cannot read /etc/selfheal/smtp-password");
    }
    // (Where systemd answers, `check` also looks at the heal units; here it says it cannot.)
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.starts_with("selfheal: warning: systemd did not answer"))
        .collect();
    assert_eq!(problems.len(), expected.len(), "{stderr}");
    for (problem, expected) in problems.iter().zip(&expected) {
        assert_contains(problem, expected);
    }
    if expected.is_empty() {
        assert_eq!(exit_code(&output), ExitCode::Success, "{stderr}");
    } else {
        assert_eq!(exit_code(&output), ExitCode::Usage, "{stderr}");
    }
}

#[test]
fn a_missing_config_is_a_usage_error_naming_the_file() {
    let output = std::process::Command::new(selfheal_bin())
        .args(["--config", "/nonexistent/selfheal.yml", "check"])
        .output()
        .unwrap();
    assert_usage_error(&output, &["cannot read config /nonexistent/selfheal.yml"]);
}

#[test]
fn sandbox_init_refuses_to_run_outside_a_fresh_pid_namespace() {
    // In a private mount namespace, so that even a regression could not touch the host's
    // /run: the guard must refuse before the first mount.
    let output = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private"])
        .arg(selfheal_bin())
        .args(["sandbox-init", "--units", "/nonexistent"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(exit_code(&output), ExitCode::Usage, "{stderr}");
    assert_contains(&stderr, "must be PID 1 of a fresh PID namespace");
}

/// `history` over a state directory holding these runs, at these times.
fn history_of(records: &[(&str, &str, std::time::SystemTime)], args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("selfheal.yml");
    std::fs::write(&config, VALID).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let state = selfheal::state::StateDir::new(dir.path().join("state"));
    for (service, summary, at) in records {
        state
            .append_history(&selfheal::state::HistoryRecord {
                service: (*service).to_owned(),
                outcome: selfheal::outcome::Outcome::Resolved,
                started_at: selfheal::state::Timestamp::millis(*at),
                duration_ms: 41,
                healed_by: Some("service_restart".into()),
                summary: (*summary).to_owned(),
                manual: false,
                relapse: false,
                restarts: 0,
            })
            .unwrap();
    }
    std::process::Command::new(selfheal_bin())
        .env("NO_COLOR", "")
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("history")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn history_takes_since_as_journalctl_does_and_prints_plain_aligned_columns() {
    let now = std::time::SystemTime::now();
    let hours = |h: u64| now - std::time::Duration::from_secs(h * 3600);
    let runs = [
        ("web", "killed by SIGKILL three days ago", hours(72)),
        ("db", "exited with status 3 an hour ago", hours(1)),
    ];
    for since in ["yesterday", "-2h", "2h ago", "1h 59min"] {
        let output = history_of(&runs, &["--since", since]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(exit_code(&output), ExitCode::Success, "{since}: {stdout}");
        assert!(!stdout.contains("three days ago"), "{since}: {stdout}");
        assert_contains(&stdout, "exited with status 3 an hour ago");
        assert!(
            !stdout.contains('\x1b'),
            "escape codes in a pipe: {stdout:?}"
        );
        assert!(stdout.starts_with("TIME "), "{stdout}");
    }
    let output = history_of(&runs, &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    // Aligned: every column starts where its header does.
    let column = |line: &str, text: &str| line.find(text).unwrap();
    assert_eq!(column(lines[0], "OUTCOME"), column(lines[1], "resolved"));
    assert_eq!(column(lines[0], "OUTCOME"), column(lines[2], "resolved"));

    let output = history_of(&runs, &["--since", "2026-13-01"]);
    assert_usage_error(&output, &["invalid time \"2026-13-01\"", "yesterday"]);
    let output = history_of(&[], &[]);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "-- no healing runs --\n"
    );
}

#[test]
fn check_catches_what_would_fail_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str, mode: u32| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path.display().to_string()
    };
    let not_executable = file("validate", "#!/bin/sh\n", 0o644);
    let readable_password = file("password", "hunter2\n", 0o644);
    let not_a_certificate = file("ca.pem", "hello\n", 0o644);
    let readable_token = file("receiver-token", "s3cret-token\n", 0o644);
    let service = |extra: &str| format!("monitored_services:\n  - name: web\n{extra}");
    let email = |smtp: &str| {
        format!("email:\n  to: [ops@example.org]\n  smtp:\n    host: 127.0.0.1\n{smtp}")
    };
    let table = [
        (
            service("    healing_strategies: [config_validation]\n    config_validation: {command: [/nonexistent/nginx, -t]}\n"),
            "monitored_services[0] (web): config_validation.command: /nonexistent/nginx: does not exist".to_owned(),
        ),
        (
            service(&format!("    healing_strategies: [config_validation]\n    config_validation: {{command: [{not_executable}]}}\n")),
            format!("{not_executable} is not executable"),
        ),
        (
            service("    healing_strategies: [config_validation]\n    config_validation: {command: [no-such-validator]}\n"),
            "no-such-validator: not found in systemd's default PATH (/usr/local/sbin:".to_owned(),
        ),
        (
            service("    healing_strategies: [database_check]\n    database_check:\n      files: [{path: /srv/app.db, owner: no-such-user}]\n"),
            "database_check.files: /srv/app.db: user \"no-such-user\" does not exist".to_owned(),
        ),
        (
            format!("{}{}", email(&format!("    username: alerts\n    password_file: {readable_password}\n")), service("")),
            "lets group or others read it (chmod 600".to_owned(),
        ),
        (
            format!("{}{}", email("    username: alerts\n    password_file: /nonexistent/password\n"), service("")),
            "cannot read /nonexistent/password".to_owned(),
        ),
        (
            format!("{}{}", email(&format!("    ca_file: {not_a_certificate}\n")), service("")),
            "holds no PEM certificate".to_owned(),
        ),
        // What loads today and breaks later: no report sent, no loop protection, a window
        // no report waits out, a file the kernel owns.
        (
            format!("email:\n  to: [ops@example.org]\n  from: \"@\"\n{}", service("")),
            "email: \"@\" is not an email address".to_owned(),
        ),
        (
            format!("threshold_window: 0s\n{}", service("")),
            "threshold_window must be longer than 0s".to_owned(),
        ),
        (
            format!("cascade: {{services: 3, within: 3650d}}\n{}", service("")),
            "cascade.within must be between 1s and 10m".to_owned(),
        ),
        (
            format!("metrics_file: /proc/selfheal.prom\n{}", service("")),
            "metrics_file: /proc/selfheal.prom is under /proc".to_owned(),
        ),
        (
            format!("receiver: {{listen: 127.0.0.1:9095, token_file: {readable_token}}}\n{}", service("")),
            "receiver: refusing the token file".to_owned(),
        ),
        (
            format!("receiver: {{listen: 127.0.0.1:0, token_file: {readable_token}}}\n{}", service("")),
            "receiver: listen needs a port other than 0".to_owned(),
        ),
        (
            format!("receiver: {{listen: localhost:9095, token_file: /t}}\n{}", service("")),
            "receiver.listen".to_owned(),
        ),
        (
            format!("metrics_file: /nonexistent/node-exporter/selfheal.prom\n{}", service("")),
            "metrics_file: its directory /nonexistent/node-exporter does not exist".to_owned(),
        ),
    ];
    for (config, expected) in table {
        let (output, _dir) = selfheal_with(&config, &["check"]);
        assert_usage_error(&output, &[&expected]);
    }

    // Valid, but worth saying: no email section, no services.
    let (output, _dir) = selfheal_with(VALID, &["check"]);
    assert_eq!(exit_code(&output), ExitCode::Success);
    assert_contains(
        &String::from_utf8_lossy(&output.stderr),
        "warning: there is no `email:` section",
    );
    let (output, _dir) = selfheal_with("", &["check"]);
    assert_eq!(exit_code(&output), ExitCode::Success);
    assert_contains(
        &String::from_utf8_lossy(&output.stdout),
        "valid, but there are no monitored services",
    );
}

#[test]
fn history_stats_give_the_figures_per_service() {
    let now = std::time::SystemTime::now();
    let runs = [
        ("web", "killed by SIGKILL", now),
        ("web", "killed by SIGKILL", now),
        ("db", "exited with status 3", now),
    ];
    let output = history_of(&runs, &["--stats", "--json"]);
    assert_eq!(exit_code(&output), ExitCode::Success);
    let rows: Vec<StatsRowJson> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].service, "web");
    assert_eq!((rows[0].runs, rows[0].resolved, rows[0].failed), (2, 2, 0));
    assert_eq!(rows[0].success_rate, Some(1.0));
    assert_eq!(rows[0].mean_time_to_heal_ms, Some(41));
    let text = history_of(&runs, &["--stats"]);
    assert_contains(&String::from_utf8_lossy(&text.stdout), "MEAN TO HEAL");
}

#[test]
fn bash_completes_commands_without_the_internal_ones_and_service_names_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("selfheal.yml");
    std::fs::write(&config, VALID).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let bin_dir = selfheal_bin().parent().unwrap();
    // What bash does on <TAB>: the registered function, with the words typed so far.
    let complete = |words: &str, current: usize| {
        let script = format!(
            "source <(selfheal completions bash); COMP_WORDS=({words}); COMP_CWORD={current}; COMP_TYPE=9; _clap_complete_selfheal selfheal \"${{COMP_WORDS[{current}]}}\" x; printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let output = std::process::Command::new("bash")
            .args(["-c", &script])
            .env(
                "PATH",
                format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()),
            )
            .env("SELFHEAL_CONFIG", &config)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let commands = complete("selfheal ''", 1);
    for command in ["run", "status", "digest", "install"] {
        assert!(
            commands.lines().any(|l| l == command),
            "{command}: {commands}"
        );
    }
    for internal in ["serve-demo", "sandbox-init"] {
        assert!(!commands.contains(internal), "{internal}: {commands}");
    }
    let services = complete("selfheal run ''", 2);
    assert!(services.lines().any(|l| l == "web"), "{services}");
    assert!(services.lines().any(|l| l == "db"), "{services}");
    let history = complete("selfheal history w", 2);
    assert_eq!(history.trim(), "web");
}

/// The crate (and so the .deb and `--version`) carries the version of the changelog's latest
/// release, and every release there has its date.
#[test]
fn the_version_is_the_changelogs_latest_release() {
    let changelog =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("CHANGELOG.md"))
            .unwrap();
    let releases: Vec<&str> = changelog
        .lines()
        .filter_map(|line| line.strip_prefix("## "))
        .filter(|title| *title != "Unreleased")
        .collect();
    assert!(releases.len() >= 4, "{releases:?}");
    let latest = releases[0].split(" - ").next().unwrap();
    assert_eq!(latest, env!("CARGO_PKG_VERSION"), "{releases:?}");
    for release in releases {
        let (_, date) = release
            .split_once(" - ")
            .unwrap_or_else(|| panic!("no date: {release}"));
        assert!(
            jiff::civil::Date::strptime("%Y-%m-%d", date).is_ok(),
            "{release}"
        );
    }
}

#[test]
fn version_names_the_revision_no_pager_is_accepted_and_man_pages_exist() {
    let run = |args: &[&str]| {
        std::process::Command::new(selfheal_bin())
            .args(args)
            .output()
            .unwrap()
    };
    let version = String::from_utf8_lossy(&run(&["--version"]).stdout).into_owned();
    // `selfheal 0.4.0 (<revision>)`: a git revision, or `unknown` outside a checkout.
    let revision = version
        .trim()
        .strip_prefix(&format!("selfheal {} (", env!("CARGO_PKG_VERSION")))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{version}"));
    assert!(
        revision == "unknown"
            || revision
                .trim_end_matches("+dirty")
                .chars()
                .all(|c| c.is_ascii_hexdigit()),
        "{version}"
    );
    let (output, _dir) = selfheal_with(VALID, &["--no-pager", "check"]);
    assert_eq!(exit_code(&output), ExitCode::Success);

    let dir = tempfile::tempdir().unwrap();
    let written = run(&["man", "--dir", &dir.path().to_string_lossy()]);
    assert!(written.status.success(), "{written:?}");
    for page in [
        "man1/selfheal.1",
        "man1/selfheal-run.1",
        "man5/selfheal.yml.5",
    ] {
        let roff = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(
            roff.starts_with(".TH") || roff.starts_with(".ie"),
            "{page}: {roff}"
        );
    }
    let run_page = String::from_utf8_lossy(&run(&["man", "run"]).stdout).into_owned();
    assert_contains(&run_page, "selfheal\\-run");
    let unknown = run(&["man", "nope"]);
    assert_eq!(exit_code(&unknown), ExitCode::Usage);
    assert_contains(&String::from_utf8_lossy(&unknown.stderr), "selfheal.yml");

    // At a terminal (script(1) gives it one) the page is shown by man, not printed as roff.
    if std::path::Path::new("/usr/bin/man").exists() {
        let shown = std::process::Command::new("script")
            .args(["-qec"])
            .arg(format!("{} man run", selfheal_bin().display()))
            .arg("/dev/null")
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&shown.stdout);
        assert!(!text.contains(".TH"), "raw roff at a terminal: {text}");
        assert_contains(&text, "selfheal-run");
    } else {
        eprintln!("skipped the terminal half: no man(1) on this host");
    }
}

/// The tests' config builder writes block YAML that `check` accepts.
#[test]
fn the_tests_config_builder_writes_yaml_that_selfheal_reads() {
    use common::config::{Config, Service};
    let yaml = Config::new()
        .with("failure_threshold", 2)
        .with(
            "crash_loop",
            serde_json::json!({"restarts": 3, "within": "4s"}),
        )
        .service(
            Service::new("web")
                .port(8080)
                .strategies(&["service_restart"]),
        )
        .yaml();
    assert_eq!(
        yaml,
        "system_name: \"TestHost\"\nfailure_threshold: 2\ncrash_loop:\n  restarts: 3\n  within: \"4s\"\nmonitored_services:\n  - name: \"web\"\n    verify_timeout: \"5s\"\n    stable_for: \"300ms\"\n    port: 8080\n    healing_strategies:\n      - \"service_restart\"\n"
    );
    let (output, _dir) = selfheal_with(&yaml, &["check"]);
    assert_eq!(exit_code(&output), ExitCode::Success, "{output:?}");
}
