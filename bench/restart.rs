//! `cargo bench --bench restart` (root): what one incident of a `Restart=on-failure` service
//! costs and gives, on the host's systemd and (with `SELFHEAL_TEST_ROOT=<Debian 13 tree>`)
//! on 257. Two incidents, each in a fresh sandbox with the hook installed:
//!
//! - **one SIGKILL** of a service that systemd's `Restart=on-failure` brings back;
//! - **a crash loop**: the service exits 3 at every start while its settings file is gone
//!   (`StartLimitBurst=4`); the file comes back after 10 s.
//!
//! For each: the reports that would be mailed (the SMTP relay is closed, so each one waits in
//! the outbox: counted there), restarts by selfheal (healing attempts in history), restarts by
//! systemd ("Scheduled restart job" in the unit's journal), and the time from the incident
//! until the service listens again (and has for 1 s). `SELFHEAL_BENCH_BIN` runs another
//! selfheal build inside the sandbox (an older one, for a before/after table).
//!
//! Prints a table; no assertions.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use selfheal::sandbox::{Sandbox, free_port, wait_for};
use selfheal::state::StateDir;

#[path = "common.rs"]
mod bench;
#[path = "../tests/common/mod.rs"]
mod common;

use common::config::{Config, Service};
use serde_json::json;

const SELFHEAL: &str = env!("CARGO_BIN_EXE_selfheal");
/// How long an incident is given to end healthy.
const GIVE_UP: Duration = Duration::from_secs(90);

struct Figures {
    mails: usize,
    by_selfheal: usize,
    by_systemd: usize,
    healthy_after: Option<Duration>,
}

fn main() -> anyhow::Result<()> {
    let exe = std::env::var_os("SELFHEAL_BENCH_BIN")
        .map_or_else(|| PathBuf::from(SELFHEAL), PathBuf::from);
    let systemd = bench::sandbox_systemd(&[&exe, Path::new(SELFHEAL)]);
    println!("selfheal: {}", exe.display());
    println!(
        "{:<12} {:>8} {:>6} {:>11} {:>10} {:>16}",
        "incident", "systemd", "mails", "by selfheal", "by systemd", "healthy after"
    );
    for (name, incident) in [
        (
            "SIGKILL",
            sigkill as fn(&Sandbox, &Path, u16) -> anyhow::Result<Instant>,
        ),
        ("crash loop", crash_loop),
    ] {
        // The sandbox is this build's; only the commands run inside are `exe`.
        let sandbox = Sandbox::boot_with(Path::new(SELFHEAL), &systemd)?;
        let version = version(&sandbox);
        let figures = measure(&sandbox, &exe, incident)?;
        println!(
            "{name:<12} {version:>8} {:>6} {:>11} {:>10} {:>16}",
            figures.mails,
            figures.by_selfheal,
            figures.by_systemd,
            figures.healthy_after.map_or_else(
                || format!("not in {}s", GIVE_UP.as_secs()),
                |after| format!("{} ms", after.as_millis())
            )
        );
    }
    Ok(())
}

/// Installs `web`, lets `incident` happen, waits until it is healthy again (or gives up) and
/// everything has settled, and counts.
fn measure(
    sandbox: &Sandbox,
    exe: &Path,
    incident: fn(&Sandbox, &Path, u16) -> anyhow::Result<Instant>,
) -> anyhow::Result<Figures> {
    let port = free_port()?;
    let state_dir = sandbox.scratch_dir().join("state");
    let config = sandbox.scratch_dir().join("selfheal.yml");
    // A relay nobody listens on: every report waits in the outbox, where it is counted.
    std::fs::write(
        &config,
        Config::new()
            .with("system_name", "Bench")
            .with("owner", "ops@example.org")
            .with("retry_after", "20s")
            .with(
                "email",
                json!({"transport": "smtp", "smtp": {
                    "host": "127.0.0.1", "port": 1, "security": "none", "timeout": "1s",
                }}),
            )
            .service(Service::new("web").port(port).stable_for("500ms"))
            .yaml(),
    )?;
    let selfheal = |args: &[&str]| {
        sandbox
            .command(exe)
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(&state_dir)
            .args(args)
            .output()
    };
    let install = selfheal(&[
        "install",
        "--unit-dir",
        &sandbox.unit_dir().to_string_lossy(),
    ])?;
    anyhow::ensure!(install.status.success(), "install: {install:?}");
    let started = incident(sandbox, sandbox.scratch_dir(), port)?;
    let healthy_after = wait_for(GIVE_UP.saturating_sub(started.elapsed()), || {
        selfheal::ports::is_listening(port)
    })
    .ok()
    .map(|()| started.elapsed());
    // Settled: no job, no heal unit running, for a second in a row.
    let mut calm_since = Instant::now();
    let _ = wait_for(Duration::from_secs(60), || {
        let busy = sandbox.property("web.service", "Job").unwrap_or_default() != ""
            || ["selfheal@web.service", "web-self-heal.service"]
                .iter()
                .any(|heal| {
                    sandbox.property(heal, "ActiveState").unwrap_or_default() == "activating"
                });
        if busy {
            calm_since = Instant::now();
        }
        calm_since.elapsed() > Duration::from_secs(2)
    });
    // What the watch timer would have seen by now (a build without `watch` says so and exits).
    let _ = selfheal(&["watch"]);
    let history = StateDir::new(&state_dir).history().unwrap_or_default();
    let mails = std::fs::read_dir(state_dir.join("outbox")).map_or(0, |dir| {
        dir.flatten()
            .filter(|entry| entry.path().extension().is_some_and(|e| e == "eml"))
            .count()
    });
    let journal = sandbox
        .command("journalctl")
        .args(["--no-pager", "-o", "cat", "-u", "web.service"])
        .output()?;
    Ok(Figures {
        mails,
        by_selfheal: history
            .iter()
            .filter(|r| r.outcome.is_healing_attempt())
            .count(),
        by_systemd: String::from_utf8_lossy(&journal.stdout)
            .matches("Scheduled restart job")
            .count(),
        healthy_after,
    })
}

/// `Restart=on-failure` service, running, then SIGKILL.
fn sigkill(sandbox: &Sandbox, _scratch: &Path, port: u16) -> anyhow::Result<Instant> {
    sandbox.add_unit(
        "web.service",
        &format!(
            "[Service]\nExecStart={SELFHEAL} serve-demo --port {port}\nRestart=on-failure\nRestartSec=200ms\n"
        ),
    )?;
    sandbox.systemctl(["start", "web.service"])?;
    wait_for(Duration::from_secs(10), || {
        selfheal::ports::is_listening(port)
    })?;
    let killed = Instant::now();
    sandbox.systemctl(["kill", "--signal=SIGKILL", "web.service"])?;
    wait_for(Duration::from_secs(5), || {
        !selfheal::ports::is_listening(port)
    })?;
    Ok(killed)
}

/// A service that exits 3 while its settings file is missing, started without it; the file
/// comes back 10 s later.
fn crash_loop(sandbox: &Sandbox, scratch: &Path, port: u16) -> anyhow::Result<Instant> {
    let settings = scratch.join("web.conf");
    sandbox.add_unit(
        "web.service",
        &format!(
            "[Unit]\nStartLimitIntervalSec=30s\nStartLimitBurst=4\n[Service]\n\
             ExecStart=/bin/sh -c 'test -e {s} || {{ echo web: {s} missing; exit 3; }}; exec {SELFHEAL} serve-demo --port {port}'\n\
             Restart=on-failure\nRestartSec=100ms\n",
            s = settings.display()
        ),
    )?;
    let started = Instant::now();
    let _ = sandbox.systemctl(["start", "web.service"]);
    let restore = settings.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(10));
        let _ = std::fs::write(restore, "");
    });
    Ok(started)
}

fn version(sandbox: &Sandbox) -> String {
    sandbox
        .command("systemctl")
        .arg("--version")
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .nth(1)
                .unwrap_or("?")
                .to_owned()
        })
        .unwrap_or_default()
}
