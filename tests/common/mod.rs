//! The shared test harness: a real systemd booted in namespaces (selfheal's own `Sandbox`), a
//! config and state directory per test, and the built binary run inside the sandbox.
// Each test binary (cli, email, faults, run, strategies) uses part of this harness. They stay
// separate binaries so `cargo test --test faults` builds and runs one area alone.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use selfheal::exit_code::ExitCode;
use selfheal::sandbox::{Sandbox, SandboxSystemd};
use selfheal::state::{HistoryRecord, StateDir};

/// The selfheal binary under test.
pub(crate) fn selfheal_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_selfheal"))
}

/// A port nothing listens on right now (the sandbox shares the host's network).
pub(crate) fn free_port() -> u16 {
    selfheal::sandbox::free_port().unwrap()
}

/// What `run --json` prints, parsed from the outside: the fields the interface contract
/// promises (and the ones this version adds), so a test pins the contract rather than probing
/// raw JSON.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct RunReport {
    pub service: String,
    pub outcome: selfheal::outcome::Outcome,
    pub diagnosis: Option<DiagnosisReport>,
    pub steps: Vec<StepReport>,
    pub duration_ms: u64,
    pub healed_by: Option<String>,
    pub reason: Option<String>,
    pub manual_steps: Vec<String>,
    /// What its processes were doing before the restart.
    pub evidence: Option<serde_json::Value>,
}

impl RunReport {
    /// The step of `strategy`.
    #[track_caller]
    pub(crate) fn step(&self, strategy: &str) -> &StepReport {
        self.steps
            .iter()
            .find(|step| step.strategy == strategy)
            .unwrap_or_else(|| panic!("no {strategy} step in {self:#?}"))
    }
}

/// One step of a run, as `run --json` shows it.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct StepReport {
    pub strategy: String,
    pub action: String,
    /// `healed`, `not_applicable`, `no_fix`, `needs_human`, `planned`.
    pub result: String,
    pub detail: String,
    pub changes: Vec<String>,
}

/// The diagnosis, as `run --json` shows it.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct DiagnosisReport {
    /// `monitor` or `properties`.
    pub source: String,
    pub termination: TerminationReport,
    pub journal: Vec<JournalReport>,
    pub summary: String,
    pub root_cause: String,
    /// Set when the unit was active but not serving: "active, but port 5002 is not listening".
    pub unhealthy: Option<String>,
    pub symptoms: Vec<String>,
    /// Units it depends on that are down.
    pub upstream: Vec<UpstreamReport>,
    /// What held the memory, after an OOM kill.
    pub memory_hogs: Option<serde_json::Value>,
}

/// A unit the service depends on that was down, as `run --json` shows it.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct UpstreamReport {
    pub unit: String,
    pub relation: String,
    pub state: String,
    pub action: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct TerminationReport {
    pub kind: String,
    pub status: Option<i32>,
    pub signal: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct JournalReport {
    pub message: String,
}

impl DiagnosisReport {
    /// Every journal line, one per line.
    pub(crate) fn journal_text(&self) -> String {
        self.journal
            .iter()
            .map(|line| line.message.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The exit code a selfheal process ended with, as the documented `ExitCode` (a test then
/// reads `assert_eq!(code, ExitCode::Failure)`, and a crash names its signal).
#[track_caller]
pub(crate) fn exit_code(output: &Output) -> ExitCode {
    let code = output.status.code().unwrap_or_else(|| {
        panic!(
            "selfheal was killed ({}); stderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    });
    ExitCode::try_from(code).unwrap_or_else(|code| {
        panic!(
            "undocumented exit code {code}; stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Fails with both texts when `haystack` does not contain `needle`.
#[track_caller]
pub(crate) fn assert_contains(haystack: &str, needle: &str) {
    assert!(
        haystack.contains(needle),
        "expected to find {needle:?} in:\n{haystack}"
    );
}

/// Polls `ready` until it holds, failing the test after `timeout` with `what`.
#[track_caller]
pub(crate) fn wait_until(timeout: Duration, what: &str, ready: impl FnMut() -> bool) {
    if let Err(err) = selfheal::sandbox::wait_for(timeout, ready) {
        panic!("waiting for {what}: {err}");
    }
}

/// The systemd the sandbox tests boot: the host's, or with `SELFHEAL_TEST_ROOT=<a Debian
/// tree>` that tree's (`./bootstrap test` runs the suite on Debian 12's 252, then on Debian
/// 13's 257).
pub(crate) fn sandbox_systemd() -> SandboxSystemd {
    match std::env::var_os("SELFHEAL_TEST_ROOT") {
        None => SandboxSystemd::Host,
        Some(root) => {
            let repository = Path::new(env!("CARGO_MANIFEST_DIR"));
            SandboxSystemd::Tree {
                root: root.into(),
                // The tree lives under target/: the binary's directory, not the whole checkout.
                binds: vec![
                    selfheal_bin().parent().unwrap().to_owned(),
                    repository.join("config"),
                    repository.join("tests"),
                ],
            }
        }
    }
}

/// The systemd version the sandbox tests boot (252 on Debian 12, 257 on Debian 13).
pub(crate) fn systemd_version(sandbox: &Sandbox) -> u32 {
    let output = sandbox
        .command("systemctl")
        .arg("--version")
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("systemctl --version names a version")
}

/// What `status --json` prints, parsed from the outside: the fields the tests pin.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct StatusJson {
    pub system: serde_json::Value,
    pub summary: serde_json::Value,
    pub services: Vec<ServiceJson>,
    pub recent: Vec<serde_json::Value>,
    pub config: serde_json::Value,
}

/// One service of `status --json`.
// The JSON interface's own booleans.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, serde::Deserialize)]
pub(crate) struct ServiceJson {
    pub name: String,
    pub unit: String,
    pub active_state: String,
    pub sub_state: String,
    pub healthy: bool,
    pub port: Option<u16>,
    pub port_listening: Option<bool>,
    pub port_taken_by_other: bool,
    pub health_ok: Option<bool>,
    pub domain: Option<String>,
    pub critical: bool,
    pub hook_armed: bool,
    pub heal_unit_load_state: String,
    pub healing_masked: bool,
    pub recent_runs: usize,
    pub restarts_by_systemd_24h: usize,
    pub suppressed: bool,
    pub suppressed_until: Option<String>,
    pub next_retry_at: Option<String>,
    pub last_healing: Option<serde_json::Value>,
    pub probe: Option<ProbeJson>,
    pub unknown_reason: Option<String>,
}

/// A probed service's last round, in `status --json`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct ProbeJson {
    pub ok: Option<bool>,
    pub failures: u32,
    pub failures_to_heal: u32,
    pub detail: String,
    pub last_failed_at: Option<String>,
}

impl StatusJson {
    /// Parses `status --json` output, saying what it was when it is not that.
    #[track_caller]
    pub(crate) fn parse(output: &Output) -> StatusJson {
        serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
            panic!(
                "{err}: {}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        })
    }
}

/// One service in `selfheal probe --json`, as the interface promises it.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct ProbeOutcomeJson {
    pub name: String,
    pub ok: bool,
    pub judged: bool,
    pub failures: u32,
    pub failures_to_heal: u32,
    pub detail: String,
    pub healing_started: Option<String>,
}

/// One line of `selfheal history --stats --json`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct StatsRowJson {
    pub service: String,
    pub runs: usize,
    pub resolved: usize,
    pub failed: usize,
    pub success_rate: Option<f64>,
    pub mean_time_to_heal_ms: Option<u64>,
}

/// One test's world: a sandboxed systemd, a config file and a state directory.
pub(crate) struct TestEnv {
    pub sandbox: Sandbox,
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
}

impl TestEnv {
    pub(crate) fn new() -> TestEnv {
        let sandbox = Sandbox::boot_with(selfheal_bin(), &sandbox_systemd())
            .expect("booting the sandbox systemd");
        let config_path = sandbox.scratch_dir().join("selfheal.yml");
        let state_dir = sandbox.scratch_dir().join("state");
        TestEnv {
            sandbox,
            config_path,
            state_dir,
        }
    }

    /// Writes `config` (as `config` writes YAML).
    pub(crate) fn configure(&self, config: &config::Config) -> &TestEnv {
        self.config(&config.yaml())
    }

    /// Writes the config (root-owned, 0644, as selfheal requires).
    pub(crate) fn config(&self, yaml: &str) -> &TestEnv {
        std::fs::write(&self.config_path, yaml).unwrap();
        std::fs::set_permissions(&self.config_path, std::fs::Permissions::from_mode(0o644))
            .unwrap();
        self
    }

    /// Adds a service unit with this `[Service]` body.
    pub(crate) fn unit(&self, name: &str, service_section: &str) -> &TestEnv {
        let unit = format!("[Unit]\nDescription=test {name}\n[Service]\n{service_section}\n");
        self.sandbox
            .add_unit(&format!("{name}.service"), &unit)
            .unwrap();
        self
    }

    /// A unit running selfheal's demo HTTP service on `port`, printing `say` first.
    pub(crate) fn web_unit(&self, name: &str, port: u16, say: &str) -> &TestEnv {
        self.unit(
            name,
            &format!(
                "ExecStart={} serve-demo --port {port} --say \"{say}\"",
                selfheal_bin().display()
            ),
        )
    }

    /// Starts `<name>.service` and waits until something listens on `port`.
    #[track_caller]
    pub(crate) fn start_listening(&self, name: &str, port: u16) -> &TestEnv {
        self.systemctl(&["start", &format!("{name}.service")]);
        wait_until(
            Duration::from_secs(10),
            &format!("{name} to listen on {port}"),
            || selfheal::ports::is_listening(port),
        );
        self
    }

    /// Starts `<name>.service` and waits until it has failed.
    #[track_caller]
    pub(crate) fn start_failing(&self, name: &str) -> &TestEnv {
        let unit = format!("{name}.service");
        self.systemctl(&["start", &unit]);
        wait_until(Duration::from_secs(10), &format!("{unit} to fail"), || {
            self.property(&unit, "ActiveState") == "failed"
        });
        self
    }

    /// `selfheal install` into the sandbox's unit directory, reloading the sandbox's systemd.
    #[track_caller]
    pub(crate) fn install(&self) -> &TestEnv {
        let output = self.selfheal([
            "install",
            "--unit-dir",
            &self.sandbox.unit_dir().to_string_lossy(),
        ]);
        assert!(
            output.status.success(),
            "install failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        self
    }

    /// Runs selfheal inside the sandbox with this test's config and state dir.
    pub(crate) fn selfheal<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.selfheal_command(args).output().unwrap()
    }

    /// The command `selfheal` runs, for a test that runs it its own way.
    pub(crate) fn selfheal_command<I, S>(&self, args: I) -> std::process::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut command = self.sandbox.command(selfheal_bin());
        command
            .arg("--config")
            .arg(&self.config_path)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(args);
        command
    }

    /// `run <service> --json`, parsed; also returns the exit code.
    #[track_caller]
    pub(crate) fn run_json(&self, service: &str, extra: &[&str]) -> (ExitCode, RunReport) {
        let mut args = vec!["run", service, "--json"];
        args.extend_from_slice(extra);
        let output = self.selfheal(args);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let report = serde_json::from_str(&stdout).unwrap_or_else(|err| {
            panic!(
                "run --json printed no report ({err}): {stdout}\nstderr: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (exit_code(&output), report)
    }

    #[track_caller]
    pub(crate) fn systemctl(&self, args: &[&str]) -> String {
        self.sandbox.systemctl(args).unwrap()
    }

    #[track_caller]
    pub(crate) fn property(&self, unit: &str, property: &str) -> String {
        self.sandbox.property(unit, property).unwrap()
    }

    /// Lines the sandbox's journal holds for these match arguments.
    pub(crate) fn journal(&self, matches: &[&str]) -> String {
        let output = self
            .sandbox
            .command("journalctl")
            .args(["--no-pager", "-o", "cat"])
            .args(matches)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The report a heal unit printed, once all of it is in the journal: the history line is
    /// written before the report is printed, so waiting for history alone races the printing.
    #[track_caller]
    pub(crate) fn heal_report(&self, service: &str) -> String {
        let unit = format!("selfheal@{service}.service");
        let mut report = String::new();
        wait_until(Duration::from_secs(20), "the whole report", || {
            report = self.journal(&["-u", &unit]);
            report.contains("End of report:")
        });
        report
    }

    /// `status --json`, parsed.
    #[track_caller]
    pub(crate) fn status(&self) -> StatusJson {
        StatusJson::parse(&self.selfheal(["status", "--json"]))
    }

    pub(crate) fn history(&self) -> Vec<HistoryRecord> {
        StateDir::new(&self.state_dir).history().unwrap()
    }

    /// Waits until history holds at least `count` records.
    #[track_caller]
    pub(crate) fn wait_for_history(&self, count: usize, timeout: Duration) -> Vec<HistoryRecord> {
        wait_until(timeout, &format!("{count} history record(s)"), || {
            self.history().len() >= count
        });
        self.history()
    }
}

/// The exposure `systemd-analyze security` gives a unit file (0.0 safest, 10.0 worst).
pub(crate) fn exposure(unit_file: &std::path::Path) -> f64 {
    let output = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit_file)
        .output()
        .expect("systemd-analyze runs");
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| line.split("Overall exposure level for ").nth(1))
        .and_then(|rest| rest.split(": ").nth(1))
        .and_then(|level| level.split_whitespace().next())
        .and_then(|level| level.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"))
}

pub(crate) mod config;
pub(crate) mod fleet;
pub(crate) mod prometheus;
pub(crate) mod receivers;
#[allow(unused_imports)] // each test binary uses part of the harness
pub(crate) use receivers::{Mail, SmtpServer};
