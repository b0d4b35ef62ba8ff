//! The shared test harness: a real systemd booted in namespaces (selfheal's own `Sandbox`), a
//! config and state directory per test, and the built binary run inside the sandbox.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use selfheal::sandbox::Sandbox;
use selfheal::state::{HistoryRecord, StateDir};

/// The selfheal binary under test.
pub fn selfheal_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_selfheal"))
}

/// A port nothing listens on right now (the sandbox shares the host's network).
pub fn free_port() -> u16 {
    selfheal::sandbox::free_port().unwrap()
}

/// Polls `ready` until it holds, failing the test after `timeout` with `what`.
pub fn wait_until(timeout: Duration, what: &str, ready: impl FnMut() -> bool) {
    if let Err(err) = selfheal::sandbox::wait_for(timeout, ready) {
        panic!("waiting for {what}: {err}");
    }
}

/// One test's world: a sandboxed systemd, a config file and a state directory.
pub struct TestEnv {
    pub sandbox: Sandbox,
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let sandbox = Sandbox::boot(selfheal_bin()).expect("booting the sandbox systemd");
        let config_path = sandbox.scratch_dir().join("selfheal.yml");
        let state_dir = sandbox.scratch_dir().join("state");
        TestEnv {
            sandbox,
            config_path,
            state_dir,
        }
    }

    /// Writes the config (root-owned, 0644, as selfheal requires).
    pub fn config(&self, yaml: &str) -> &TestEnv {
        std::fs::write(&self.config_path, yaml).unwrap();
        std::fs::set_permissions(&self.config_path, std::fs::Permissions::from_mode(0o644))
            .unwrap();
        self
    }

    /// Adds a service unit with this `[Service]` body.
    pub fn unit(&self, name: &str, service_section: &str) -> &TestEnv {
        let unit = format!("[Unit]\nDescription=test {name}\n[Service]\n{service_section}\n");
        self.sandbox
            .add_unit(&format!("{name}.service"), &unit)
            .unwrap();
        self
    }

    /// A unit running selfheal's demo HTTP service on `port`, printing `say` first.
    pub fn web_unit(&self, name: &str, port: u16, say: &str) -> &TestEnv {
        self.unit(
            name,
            &format!(
                "ExecStart={} serve-demo --port {port} --say \"{say}\"",
                selfheal_bin().display()
            ),
        )
    }

    /// Starts `<name>.service` and waits until something listens on `port`.
    pub fn start_listening(&self, name: &str, port: u16) -> &TestEnv {
        self.systemctl(&["start", &format!("{name}.service")]);
        wait_until(
            Duration::from_secs(10),
            &format!("{name} to listen on {port}"),
            || selfheal::ports::is_listening(port),
        );
        self
    }

    /// Starts `<name>.service` and waits until it has failed.
    pub fn start_failing(&self, name: &str) -> &TestEnv {
        let unit = format!("{name}.service");
        self.systemctl(&["start", &unit]);
        wait_until(Duration::from_secs(10), &format!("{unit} to fail"), || {
            self.property(&unit, "ActiveState") == "failed"
        });
        self
    }

    /// `selfheal install` into the sandbox's unit directory, reloading the sandbox's systemd.
    pub fn install(&self) -> &TestEnv {
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
    pub fn selfheal<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.sandbox
            .command(selfheal_bin())
            .arg("--config")
            .arg(&self.config_path)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(args)
            .output()
            .unwrap()
    }

    /// `run <service> --json`, parsed; also returns the exit code.
    pub fn run_json(&self, service: &str, extra: &[&str]) -> (i32, serde_json::Value) {
        let mut args = vec!["run", service, "--json"];
        args.extend_from_slice(extra);
        let output = self.selfheal(args);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let json = serde_json::from_str(&stdout).unwrap_or_else(|err| {
            panic!(
                "run --json printed no JSON ({err}): {stdout}\nstderr: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output.status.code().unwrap_or(-1), json)
    }

    pub fn systemctl(&self, args: &[&str]) -> String {
        self.sandbox.systemctl(args).unwrap()
    }

    pub fn property(&self, unit: &str, property: &str) -> String {
        self.sandbox.property(unit, property).unwrap()
    }

    /// Lines the sandbox's journal holds for these match arguments.
    pub fn journal(&self, matches: &[&str]) -> String {
        let output = self
            .sandbox
            .command("journalctl")
            .args(["--no-pager", "-o", "cat"])
            .args(matches)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn history(&self) -> Vec<HistoryRecord> {
        StateDir::new(&self.state_dir).history().unwrap()
    }

    /// Waits until history holds at least `count` records.
    pub fn wait_for_history(&self, count: usize, timeout: Duration) -> Vec<HistoryRecord> {
        wait_until(timeout, &format!("{count} history record(s)"), || {
            self.history().len() >= count
        });
        self.history()
    }
}
