//! `cargo bench --bench status` (root): `selfheal status` for 30 and 300 monitored services in
//! one sandbox, against the loop a shell script would run (`systemctl is-active` per unit).
//! Half of the services run (`sleep`), a tenth serve HTTP on a port with a health URL; `install`
//! has armed them (its timers stopped). Beside
//! it, one round of `selfheal watch` over the same services (after a first one that only takes
//! note).
//!
//! Prints a table; no assertions (targets are in the table, not in a timed test).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use selfheal::sandbox::{Sandbox, free_port, wait_for};

#[path = "common.rs"]
mod bench;
#[path = "../tests/common/mod.rs"]
mod common;

use common::config::{Config, Service};

const SELFHEAL: &str = env!("CARGO_BIN_EXE_selfheal");

fn main() -> anyhow::Result<()> {
    let runs = bench::runs();
    let exe = Path::new(SELFHEAL);
    let sandbox = Sandbox::boot_with(exe, &bench::sandbox_systemd(&[exe]))?;
    let mut rows = Vec::new();
    let mut created = 0;
    let mut ports = std::collections::HashMap::new();
    for count in [30, 300] {
        // Units svc0..svc{count}: the first 30 are kept for the second size.
        let mut config = Config::new();
        for index in 0..count {
            let mut service = Service::named(&format!("svc{index}"));
            if index % 10 == 0 {
                // A unit made for the smaller size keeps its port.
                let port = match ports.get(&index) {
                    Some(port) => *port,
                    None => *ports.entry(index).or_insert(free_port()?),
                };
                service = service.port(port).health_url(port);
                if index >= created {
                    std::fs::write(
                        sandbox.unit_dir().join(format!("svc{index}.service")),
                        format!("[Service]\nExecStart={SELFHEAL} serve-demo --port {port}\n"),
                    )?;
                }
            } else if index >= created {
                std::fs::write(
                    sandbox.unit_dir().join(format!("svc{index}.service")),
                    "[Service]\nExecStart=/bin/sleep infinity\n",
                )?;
            }
            config = config.service(service);
        }
        let path = sandbox.scratch_dir().join(format!("status-{count}.yml"));
        std::fs::write(&path, config.yaml())?;
        let config = path;
        // Installed as a host has it (its timers left stopped: a watch round every 30 s
        // would run into the timings).
        let unit_dir = sandbox.unit_dir();
        let installed = selfheal(&sandbox, &config, &["install", "--no-reload", "--unit-dir"])
            .arg(&unit_dir)
            .output()?;
        anyhow::ensure!(installed.status.success(), "install: {installed:?}");
        sandbox.systemctl(["daemon-reload"])?;
        let start: Vec<String> = (created..count)
            .filter(|index| index % 2 == 0)
            .map(|index| format!("svc{index}.service"))
            .collect();
        if !start.is_empty() {
            sandbox.systemctl(std::iter::once("start".to_owned()).chain(start))?;
        }
        created = count;
        wait_until_serving(&sandbox, &config)?;
        let status = time(runs, || status_command(&sandbox, &config))?;
        // The watch's first round only takes note; the timed ones compare.
        time(1, || selfheal(&sandbox, &config, &["watch"]))?;
        let watch = time(runs, || selfheal(&sandbox, &config, &["watch"]))?;
        let units: Vec<String> = (0..count).map(|i| format!("svc{i}.service")).collect();
        let script = format!(
            "for unit in {}; do systemctl is-active \"$unit\" >/dev/null; done; true",
            units.join(" ")
        );
        let loop_runs = runs.min(3);
        let shell_loop = time(loop_runs, || {
            let mut command = sandbox.command("/bin/sh");
            command.args(["-c", &script]);
            command
        })?;
        if std::env::var_os("BENCH_DEBUG").is_some() {
            print_timings(&sandbox, count, &config)?;
        }
        rows.push((count, status, shell_loop, watch));
    }

    println!(
        "\nselfheal status benchmark ({runs} runs each, medians; half the units running, a tenth with a port and a health URL)\n"
    );
    println!(
        "| services | `selfheal status --json` | `systemctl is-active` per unit | speed-up | a `selfheal watch` round | targets at 300 |"
    );
    println!("|---|---|---|---|---|---|");
    for (count, status, shell_loop, watch) in rows {
        println!(
            "| {count} | {:.1} ms | {:.1} ms | {:.0}× | {:.1} ms | status ≤ 50 ms, watch ≤ 30 ms |",
            status.as_secs_f64() * 1000.0,
            shell_loop.as_secs_f64() * 1000.0,
            shell_loop.as_secs_f64() / status.as_secs_f64(),
            watch.as_secs_f64() * 1000.0
        );
    }
    println!("\n(every column includes one nsenter into the sandbox, ~1 ms)");
    Ok(())
}

/// `selfheal <args>` with `config`, run inside the sandbox.
fn selfheal(sandbox: &Sandbox, config: &Path, args: &[&str]) -> Command {
    let mut command = sandbox.command(SELFHEAL);
    command
        .arg("--config")
        .arg(config)
        .arg("--state-dir")
        .arg(sandbox.scratch_dir().join("state"))
        .args(args);
    command
}

/// `status --json` of `config`, run inside the sandbox.
fn status_command(sandbox: &Sandbox, config: &Path) -> Command {
    selfheal(sandbox, config, &["status", "--json"])
}

/// Waits until every service with a port serves it, so that the timing sees a steady state.
fn wait_until_serving(sandbox: &Sandbox, config: &Path) -> anyhow::Result<()> {
    let last = std::cell::RefCell::new(String::new());
    let ready = wait_for(Duration::from_secs(20), || {
        status_command(sandbox, config)
            .output()
            .is_ok_and(|output| {
                let text = String::from_utf8_lossy(&output.stdout).into_owned();
                let ready = !text.is_empty() && !text.contains("\"port_listening\": false");
                *last.borrow_mut() = format!("{text}{}", String::from_utf8_lossy(&output.stderr));
                ready
            })
    });
    ready.map_err(|err| anyhow::anyhow!("{err}; last status: {}", last.borrow()))
}

/// `BENCH_DEBUG=1`: one more run at debug level, and where its time went (from the journal).
fn print_timings(sandbox: &Sandbox, count: usize, config: &Path) -> anyhow::Result<()> {
    let timings = bench::debug_timings(sandbox, status_command(sandbox, config), 4)?;
    println!("{count} services:\n{timings}");
    Ok(())
}

/// The median wall time of `runs` runs of the command `make` builds.
fn time(runs: usize, make: impl Fn() -> Command) -> anyhow::Result<Duration> {
    let mut samples = Vec::new();
    for _ in 0..runs {
        let mut command = make();
        command.stdout(std::process::Stdio::null());
        let started = Instant::now();
        let status = command.status()?;
        samples.push(started.elapsed());
        // status exits 1 when a service is down, which half of them are.
        anyhow::ensure!(status.code().is_some(), "killed: {status}");
    }
    Ok(bench::Spread::of(&samples).median)
}
