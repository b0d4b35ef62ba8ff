//! `cargo bench --bench restore` (root): selfheal against systemd's own restart, in one sandbox.
//!
//! - kill → listening again: a service healed by selfheal through OnFailure=, versus the same
//!   service under `Restart=on-failure` + `RestartSec=0`;
//! - wall time of `selfheal run` on a healthy service;
//! - peak RSS of a healthy run and of a full heal run (wait4's ru_maxrss).
//!
//! Prints a table; no assertions (targets are in the table, not in a timed test).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use selfheal::ports;
use selfheal::sandbox::{Sandbox, free_port, wait_for};
use selfheal::state::StateDir;

const SELFHEAL: &str = env!("CARGO_BIN_EXE_selfheal");

// The benchmark's steps in order, each printed as it runs: one function on purpose.
#[allow(clippy::too_many_lines)]
fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(9);
    let exe = Path::new(SELFHEAL);
    let sandbox = Sandbox::boot(exe)?;
    let [healed_port, systemd_port, victim_port] = [free_port()?, free_port()?, free_port()?];
    let state_dir = sandbox.scratch_dir().join("state");
    let service = |name: &str, port: u16| {
        format!(
            "  - name: {name}\n    port: {port}\n    health_url: http://127.0.0.1:{port}/health\n    verify_timeout: 10s\n    stable_for: 200ms\n"
        )
    };
    // `installed` gets the OnFailure= hook; `manual` adds a service healed by hand (for RSS).
    let header = "failure_threshold: 100000\nmonitored_services:\n";
    let installed = sandbox.scratch_dir().join("installed.yml");
    std::fs::write(
        &installed,
        format!("{header}{}", service("web", healed_port)),
    )?;
    let manual = sandbox.scratch_dir().join("manual.yml");
    std::fs::write(
        &manual,
        format!(
            "{header}{}{}",
            service("web", healed_port),
            service("victim", victim_port)
        ),
    )?;

    let serve = |port: u16, extra: &str| {
        format!("[Service]\nExecStart={SELFHEAL} serve-demo --port {port}\n{extra}")
    };
    sandbox.add_unit("web.service", &serve(healed_port, ""))?;
    sandbox.add_unit(
        "websd.service",
        &serve(
            systemd_port,
            "Restart=on-failure\nRestartSec=0\nStartLimitBurst=0",
        ),
    )?;
    sandbox.add_unit("victim.service", &serve(victim_port, ""))?;
    let install = sandbox
        .command(exe)
        .arg("--config")
        .arg(&installed)
        .arg("--state-dir")
        .arg(&state_dir)
        .args(["install", "--unit-dir"])
        .arg(sandbox.unit_dir())
        .output()?;
    anyhow::ensure!(
        install.status.success(),
        "install: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    sandbox.systemctl(["start", "web.service", "websd.service", "victim.service"])?;
    for port in [healed_port, systemd_port, victim_port] {
        wait_for(Duration::from_secs(10), || ports::is_listening(port))?;
    }

    let state = StateDir::new(&state_dir);
    let mut by_selfheal = Vec::new();
    for run in 0..runs {
        let restore = kill_and_time_restore(healed_port).map_err(|err| {
            let journal = sandbox
                .command("journalctl")
                .args([
                    "--no-pager",
                    "-n",
                    "40",
                    "-u",
                    "web-self-heal.service",
                    "-u",
                    "web.service",
                ])
                .output();
            anyhow::anyhow!(
                "{err}: {}",
                journal
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default()
            )
        })?;
        by_selfheal.push(restore);
        // Let the healing run finish (it verifies stable_for) and its unit go inactive before the
        // next kill: a start request for a oneshot unit that is still running is merged into it.
        wait_for(Duration::from_secs(30), || {
            state.history().is_ok_and(|h| h.len() > run)
        })?;
        wait_for(Duration::from_secs(10), || {
            sandbox
                .property("web-self-heal.service", "ActiveState")
                .is_ok_and(|s| s == "inactive")
        })?;
    }
    let mut by_systemd = Vec::new();
    for _ in 0..runs {
        by_systemd.push(kill_and_time_restore(systemd_port)?);
    }

    // A healthy run, straight from the host to the sandbox's bus: no nsenter in the timing.
    let bus = format!(
        "unix:path=/proc/{}/root/run/dbus/system_bus_socket",
        sandbox.pid()
    );
    let mut healthy = Vec::new();
    let mut healthy_rss = 0;
    for _ in 0..runs.max(20) {
        let mut command = Command::new(exe);
        command
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus)
            .arg("--config")
            .arg(&installed)
            .arg("--state-dir")
            .arg(&state_dir)
            .args(["-q", "run", "web"]);
        let (took, rss, code) = timed(&mut command)?;
        anyhow::ensure!(code == 0, "healthy run exited {code}");
        healthy.push(took);
        healthy_rss = healthy_rss.max(rss);
    }

    // Full heal runs (diagnosis, journal, restart, verify with stable_for) of a killed service.
    let mut heal_rss = 0;
    let mut heal_wall = Vec::new();
    for _ in 0..3 {
        sandbox.systemctl(["kill", "--signal=SIGKILL", "victim.service"])?;
        wait_for(Duration::from_secs(10), || {
            sandbox
                .property("victim.service", "ActiveState")
                .is_ok_and(|s| s == "failed")
        })?;
        let mut command = sandbox.command(exe);
        command
            .arg("--config")
            .arg(&manual)
            .arg("--state-dir")
            .arg(&state_dir)
            .args(["-q", "run", "victim"]);
        let (took, rss, code) = timed(&mut command)?;
        if code != 0 {
            sandbox.systemctl(["kill", "--signal=SIGKILL", "victim.service"])?;
            std::thread::sleep(Duration::from_millis(300));
            let again = sandbox
                .command(exe)
                .arg("--config")
                .arg(&manual)
                .arg("--state-dir")
                .arg(&state_dir)
                .args(["run", "victim", "--json"])
                .output()?;
            anyhow::bail!(
                "heal run exited {code}: {}",
                String::from_utf8_lossy(&again.stdout)
            );
        }
        heal_wall.push(took);
        heal_rss = heal_rss.max(rss);
    }

    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    let mb = |kib: i64| format!("{:.1} MB", kib as f64 / 1024.0);
    let ratio = median(&by_selfheal).as_secs_f64() / median(&by_systemd).as_secs_f64();
    println!(
        "\nselfheal restore benchmark ({runs} runs each, medians; systemd {})\n",
        systemd_version()
    );
    println!("| metric | median | min | max | target |");
    println!("|---|---|---|---|---|");
    let row = |name: &str, samples: &[Duration], target: &str| {
        println!(
            "| {name} | {} | {} | {} | {target} |",
            ms(median(samples)),
            ms(min(samples)),
            ms(max(samples))
        );
    };
    row(
        "kill → listening, healed by selfheal (OnFailure=)",
        &by_selfheal,
        "≤ 1.5× systemd",
    );
    row(
        "kill → listening, systemd Restart=on-failure, RestartSec=0",
        &by_systemd,
        "baseline",
    );
    println!("| ratio selfheal / systemd | {ratio:.2}× | | | ≤ 1.5× |");
    row(
        "`selfheal run` on a healthy service (wall)",
        &healthy,
        "≤ 15 ms",
    );
    row(
        "`selfheal run` healing a killed service (wall, incl. stable_for 200ms)",
        &heal_wall,
        "-",
    );
    println!(
        "| peak RSS, healthy run | {} | | | ≤ 15 MB |",
        mb(healthy_rss)
    );
    println!(
        "| peak RSS, heal run (incl. nsenter) | {} | | | ≤ 15 MB |",
        mb(heal_rss)
    );
    Ok(())
}

/// SIGKILLs the process listening on `port` and times until a new process listens there.
fn kill_and_time_restore(port: u16) -> anyhow::Result<Duration> {
    let holder = ports::holders(port)
        .first()
        .map(|h| h.pid)
        .ok_or_else(|| anyhow::anyhow!("nothing on {port}"))?;
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(holder as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let deadline = started + Duration::from_secs(30);
    loop {
        let holders = ports::holders(port);
        if holders.iter().any(|h| h.pid != holder) {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(Instant::now() < deadline, "port {port} did not come back");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Runs a command to completion: wall time, peak RSS (KiB, including its reaped children), exit code.
fn timed(command: &mut Command) -> anyhow::Result<(Duration, i64, i32)> {
    let started = Instant::now();
    let child = command.stdout(std::process::Stdio::null()).spawn()?;
    let mut status = 0;
    // SAFETY: rusage is plain old data; all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child, with valid pointers to locals.
    let pid = unsafe { libc::wait4(child.id() as i32, &raw mut status, 0, &raw mut usage) };
    anyhow::ensure!(pid > 0, "wait4 failed");
    Ok((
        started.elapsed(),
        usage.ru_maxrss,
        libc::WEXITSTATUS(status),
    ))
}

fn systemd_version() -> String {
    Command::new("systemctl")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

fn sorted(samples: &[Duration]) -> Vec<Duration> {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted
}
fn median(samples: &[Duration]) -> Duration {
    sorted(samples)[samples.len() / 2]
}
fn min(samples: &[Duration]) -> Duration {
    sorted(samples)[0]
}
fn max(samples: &[Duration]) -> Duration {
    sorted(samples)[samples.len() - 1]
}
