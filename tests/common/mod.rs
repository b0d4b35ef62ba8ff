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

/// A real SMTP server (aiosmtpd, `tests/smtp_server.py`): STARTTLS required before AUTH
/// PLAIN/LOGIN, its own CA, accepted messages saved as files.
pub(crate) struct SmtpServer {
    child: Option<std::process::Child>,
    pub port: u16,
    root: PathBuf,
    pub user: String,
    password: String,
    /// How long it takes to accept a message.
    delay: Duration,
    /// Serves a self-signed CA:TRUE certificate instead of one signed by its CA.
    self_signed: bool,
}

impl SmtpServer {
    /// Starts a server with its files under `root`, accepting `user` / `password`.
    pub(crate) fn start(root: &Path, user: &str, password: &str) -> SmtpServer {
        SmtpServer::start_slow(root, user, password, Duration::ZERO)
    }

    /// A slow relay: it takes `delay` to accept each message, and creates `data_started()`
    /// when a message begins to arrive.
    pub(crate) fn start_slow(
        root: &Path,
        user: &str,
        password: &str,
        delay: Duration,
    ) -> SmtpServer {
        SmtpServer::launch(root, user, password, delay, false)
    }

    /// A relay whose certificate is self-signed and also a CA (what `openssl req -x509`
    /// makes by default); `self_signed_certificate()` is that certificate.
    pub(crate) fn start_self_signed(root: &Path, user: &str, password: &str) -> SmtpServer {
        SmtpServer::launch(root, user, password, Duration::ZERO, true)
    }

    fn launch(
        root: &Path,
        user: &str,
        password: &str,
        delay: Duration,
        self_signed: bool,
    ) -> SmtpServer {
        std::fs::create_dir_all(root).unwrap();
        let mut server = SmtpServer {
            child: None,
            port: free_port(),
            root: root.to_owned(),
            user: user.to_owned(),
            password: password.to_owned(),
            delay,
            self_signed,
        };
        server.resume();
        server
    }

    /// The self-signed certificate of `start_self_signed`.
    pub(crate) fn self_signed_certificate(&self) -> PathBuf {
        self.root.join("self-signed.pem")
    }

    /// Starts it again (same port, same CA) after `stop`.
    pub(crate) fn resume(&mut self) {
        use std::io::BufRead;
        let password_file = self.root.join("server-password");
        std::fs::write(&password_file, &self.password).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_server.py");
        let mut child = std::process::Command::new("/usr/bin/python3")
            .arg(script)
            .args(["--port", &self.port.to_string(), "--user", &self.user])
            .args(["--delay", &self.delay.as_secs_f64().to_string()])
            .arg("--dir")
            .arg(self.messages_dir())
            .arg("--password-file")
            .arg(&password_file)
            .args(self.self_signed.then_some("--self-signed"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("starting tests/smtp_server.py (apt install python3-aiosmtpd)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP server did not start");
        self.child = Some(child);
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn messages_dir(&self) -> PathBuf {
        self.root.join("received")
    }

    /// Exists once a slow server has started receiving a message.
    pub(crate) fn data_started(&self) -> PathBuf {
        self.root.join("data-started")
    }

    /// The CA that signed the server's certificate (for `ca_file`).
    pub(crate) fn ca_file(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    /// Every message the server accepted, in order, as raw bytes.
    pub(crate) fn messages(&self) -> Vec<Vec<u8>> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.messages_dir())
            .map(|dir| dir.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        paths.retain(|p| p.extension().is_some_and(|e| e == "eml"));
        paths.sort();
        paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
    }

    /// Waits until the server has accepted `count` messages.
    #[track_caller]
    pub(crate) fn wait_for_messages(&self, count: usize, timeout: Duration) -> Vec<Vec<u8>> {
        wait_until(timeout, &format!("{count} mail(s)"), || {
            self.messages().len() >= count
        });
        self.messages()
    }

    /// The config's `email:` section for this server, with the client's password in
    /// `password_file` (written root-owned, mode 0600, as selfheal requires).
    pub(crate) fn email_yaml(&self, password_file: &Path, password: &str) -> String {
        std::fs::write(password_file, format!("{password}\n")).unwrap();
        std::fs::set_permissions(password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        format!(
            "email:\n  to: [ops@example.org]\n  from: selfheal@testhost.example\n  transport: smtp\n  smtp:\n    host: 127.0.0.1\n    port: {}\n    security: starttls\n    username: {}\n    password_file: {}\n    ca_file: {}\n    timeout: 5s\n",
            self.port,
            self.user,
            password_file.display(),
            self.ca_file().display()
        )
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A parsed mail: decoded headers and the text and HTML parts.
pub(crate) struct Mail {
    pub subject: String,
    pub headers: Vec<(String, String)>,
    pub content_type: String,
    pub text: String,
    pub html: String,
}

impl Mail {
    pub(crate) fn parse(raw: &[u8]) -> Mail {
        let parsed = mailparse::parse_mail(raw).unwrap();
        let header = |name: &str| {
            parsed
                .headers
                .iter()
                .find(|h| h.get_key().eq_ignore_ascii_case(name))
                .map(mailparse::MailHeader::get_value)
                .unwrap_or_default()
        };
        let part = |mime: &str| {
            parsed
                .subparts
                .iter()
                .find(|p| p.ctype.mimetype == mime)
                .map(|p| p.get_body().unwrap())
                .unwrap_or_default()
        };
        Mail {
            subject: header("Subject"),
            headers: parsed
                .headers
                .iter()
                .map(|h| (h.get_key(), h.get_value()))
                .collect(),
            content_type: parsed.ctype.mimetype.clone(),
            text: part("text/plain"),
            html: part("text/html"),
        }
    }

    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map_or("", |(_, value)| value)
    }
}
