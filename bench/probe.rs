//! `cargo bench --bench probe` (root; Debian's `monit` for the comparison): what probing
//! costs and gives, in one sandbox on the host's systemd.
//!
//! - **hang → served again**: an HTTP service is SIGSTOPped (systemd still sees it active);
//!   the time until a new process answers its health URL. selfheal (`selfheal-probe.timer`)
//!   and Monit 5.33 (`check host … if failed port … protocol http … for 2 cycles then exec
//!   "systemctl restart …"`), with the same settings: a 1 s cycle, a 1 s timeout, 2 failed
//!   cycles. The floor at those settings is ~3 s (two failed checks of 1 s each, one cycle
//!   apart, and a restart).
//! - **one round at 30 and at 300 services** (a tenth serving HTTP, the others a port): wall
//!   and CPU time of `selfheal probe`, against `monit validate` on the same checks in the same
//!   run; and the CPU a day at a 10 s interval.
//!
//! Prints tables; no assertions.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use selfheal::sandbox::{Sandbox, free_port, wait_for};

#[path = "common.rs"]
mod bench;
#[path = "../tests/common/mod.rs"]
mod common;

use common::config::{Config, Service};
use serde_json::{Value, json};

const SELFHEAL: &str = env!("CARGO_BIN_EXE_selfheal");
const MONIT: &str = "/usr/bin/monit";

fn main() -> anyhow::Result<()> {
    let runs = bench::runs().min(5);
    let exe = Path::new(SELFHEAL);
    let sandbox = Sandbox::boot_with(exe, &bench::sandbox_systemd(&[exe]))?;
    let monit = Path::new(MONIT).exists();
    if !monit {
        println!("(no {MONIT}: apt install monit for the comparison)");
    }
    let hang = hang_to_served(&sandbox, runs, monit)?;
    let rounds = rounds(&sandbox, runs, monit)?;

    println!("\nhang → served again ({runs} runs each; 1 s cycle, 1 s timeout, 2 failed cycles)\n");
    println!("| | median | min | max |");
    println!("|---|---|---|---|");
    for (name, samples) in hang {
        println!("{}", bench::Spread::of(&samples).row(name, &[]));
    }
    println!("\none round ({runs} runs each, medians)\n");
    println!("| services | | wall | CPU (user + sys) | CPU a day at a 10 s interval |");
    println!("|---|---|---|---|---|");
    for (count, name, wall, cpu) in rounds {
        println!(
            "| {count} | {name} | {} | {} | {:.0} s |",
            bench::ms(wall),
            bench::ms(cpu),
            cpu.as_secs_f64() * 8640.0
        );
    }
    Ok(())
}

/// A config of services `{prefix}0..` on `ports` (the first `http` with a health URL, the
/// others a port alone), with `probe` as its probe section; writes it and returns its path.
fn config(
    sandbox: &Sandbox,
    name: &str,
    probe: Option<Value>,
    (prefix, ports): (&str, &[u16]),
    http: usize,
) -> anyhow::Result<PathBuf> {
    // Every hang is healed: loop protection would stop that after 3 (the default).
    let mut config = Config::new().with("failure_threshold", 1000);
    if let Some(probe) = probe {
        config = config.with("probe", probe);
    }
    for (index, port) in ports.iter().enumerate() {
        let mut service = Service::new(&format!("{prefix}{index}"))
            .port(*port)
            .stable_for("200ms");
        if index < http {
            service = service.health_url(*port);
        }
        config = config.service(service);
    }
    let path = sandbox.scratch_dir().join(name);
    std::fs::write(&path, config.yaml())?;
    Ok(path)
}

fn selfheal(sandbox: &Sandbox, config: &Path) -> Command {
    let mut command = sandbox.command(SELFHEAL);
    command
        .arg("--config")
        .arg(config)
        .arg("--state-dir")
        .arg(sandbox.scratch_dir().join("state"));
    command
}

/// Whether `port` answers `GET /health` with 200 within 200 ms.
fn serves(port: u16) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut answer = [0u8; 16];
    stream.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_ok()
        && stream
            .read(&mut answer)
            .is_ok_and(|read| answer[..read].starts_with(b"HTTP/1.0 200"))
}

/// One hang of web0: SIGSTOP, then the time until a new process serves again.
fn one_hang(sandbox: &Sandbox, port: u16) -> anyhow::Result<Duration> {
    let before = sandbox.property("web0.service", "InvocationID")?;
    let stopped = Instant::now();
    sandbox.systemctl(["kill", "--signal=SIGSTOP", "web0.service"])?;
    let served = wait_for(Duration::from_secs(60), || {
        serves(port)
            && sandbox
                .property("web0.service", "InvocationID")
                .is_ok_and(|now| now != before)
    });
    if let Err(err) = served {
        let journal = sandbox
            .command("journalctl")
            .args(["--no-pager", "-n", "60", "-o", "short-monotonic"])
            .output()?;
        anyhow::bail!(
            "{err}: web0 was not served again; the journal:\n{}",
            String::from_utf8_lossy(&journal.stdout)
        );
    }
    Ok(stopped.elapsed())
}

fn hang_to_served(
    sandbox: &Sandbox,
    runs: usize,
    monit: bool,
) -> anyhow::Result<Vec<(&'static str, Vec<Duration>)>> {
    let port = free_port()?;
    sandbox.add_unit(
        "web0.service",
        &format!("[Service]\nExecStart={SELFHEAL} serve-demo --port {port}\n"),
    )?;
    sandbox.systemctl(["start", "web0.service"])?;
    wait_for(Duration::from_secs(10), || serves(port))?;
    let probed = config(
        sandbox,
        "hang.yml",
        Some(json!({"interval": "1s", "timeout": "1s", "failures": 2, "start_grace": "1s"})),
        ("web", &[port]),
        1,
    )?;
    let install = |config: &Path| -> anyhow::Result<()> {
        let output = selfheal(sandbox, config)
            .args(["install", "--unit-dir"])
            .arg(sandbox.unit_dir())
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "install: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    };
    install(&probed)?;
    let mut selfheal_samples = Vec::new();
    for _ in 0..runs {
        settle(sandbox, port)?;
        selfheal_samples.push(one_hang(sandbox, port)?);
    }
    // The same service without selfheal's probes: its timer is removed and stopped.
    install(&config(sandbox, "no-probe.yml", None, ("web", &[port]), 1)?)?;
    let mut results = vec![("selfheal probe (timer)", selfheal_samples)];
    if monit {
        let monitrc = sandbox.scratch_dir().join("monitrc");
        let scratch = sandbox.scratch_dir().display().to_string();
        std::fs::write(
            &monitrc,
            format!(
                "set daemon 1\nset idfile {scratch}/monit.id\nset statefile {scratch}/monit.state\nset pidfile {scratch}/monit.pid\n\
                 check host web0 with address 127.0.0.1\n  if failed port {port} protocol http request \"/health\" with timeout 1 seconds for 2 cycles\n    then exec \"/bin/systemctl restart web0.service\"\n"
            ),
        )?;
        // Monit refuses a control file others can read.
        std::fs::set_permissions(
            &monitrc,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
        let output = sandbox
            .command("systemd-run")
            .args(["--unit=monit-bench", MONIT, "-I", "-c"])
            .arg(&monitrc)
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "monit: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut samples = Vec::new();
        for _ in 0..runs {
            settle(sandbox, port)?;
            samples.push(one_hang(sandbox, port)?);
        }
        sandbox.systemctl(["stop", "monit-bench.service"])?;
        results.push(("Monit 5.33 (daemon)", samples));
    }
    Ok(results)
}

/// Waits until web0 serves, its heal unit is idle, and a few cycles have seen it healthy.
fn settle(sandbox: &Sandbox, port: u16) -> anyhow::Result<()> {
    wait_for(Duration::from_secs(30), || {
        serves(port)
            && sandbox
                .property("selfheal@web0.service", "ActiveState")
                .is_ok_and(|state| state != "activating")
    })?;
    std::thread::sleep(Duration::from_secs(3));
    Ok(())
}

/// CPU time (user + system) of the children waited for so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given and touches nothing else.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_CHILDREN, &raw mut usage);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_micros(
            u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000
                + u64::try_from(t.tv_usec).unwrap_or(0),
        )
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Runs `command` `runs` times: the median wall time and CPU time.
fn measure(
    runs: usize,
    mut command: impl FnMut() -> Command,
) -> anyhow::Result<(Duration, Duration)> {
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    for _ in 0..runs {
        let cpu_before = children_cpu();
        let started = Instant::now();
        let output = command().output()?;
        walls.push(started.elapsed());
        cpus.push(children_cpu().saturating_sub(cpu_before));
        anyhow::ensure!(
            output.status.code().is_some_and(|code| code <= 1),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok((
        bench::Spread::of(&walls).median,
        bench::Spread::of(&cpus).median,
    ))
}

/// One round of each: the sizes, the tool, wall and CPU time.
type RoundRow = (usize, &'static str, Duration, Duration);

/// 300 units, each listening on a port; a round over the first 30 and over all 300.
fn rounds(sandbox: &Sandbox, runs: usize, monit: bool) -> anyhow::Result<Vec<RoundRow>> {
    let count = 300;
    // Held together while they are picked, so no two services get the same port.
    let held: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    let ports: Vec<u16> = held
        .iter()
        .map(|listener| listener.local_addr().map(|address| address.port()))
        .collect::<std::io::Result<_>>()?;
    drop(held);
    for (index, port) in ports.iter().enumerate() {
        sandbox.add_unit(
            &format!("svc{index}.service"),
            &format!("[Service]\nExecStart={SELFHEAL} serve-demo --port {port}\n"),
        )?;
    }
    sandbox.systemctl(["daemon-reload"])?;
    sandbox.systemctl(
        std::iter::once("start".to_owned()).chain((0..count).map(|i| format!("svc{i}.service"))),
    )?;
    wait_for(Duration::from_secs(60), || {
        ports
            .iter()
            .all(|port| selfheal::ports::is_listening(*port))
    })?;
    let mut rows = Vec::new();
    for size in [30, count] {
        rows.extend(round_at(sandbox, runs, monit, &ports[..size])?);
    }
    Ok(rows)
}

/// A round over the services on `ports` (a tenth of them serving HTTP), by selfheal and by
/// Monit.
fn round_at(
    sandbox: &Sandbox,
    runs: usize,
    monit: bool,
    ports: &[u16],
) -> anyhow::Result<Vec<RoundRow>> {
    let count = ports.len();
    let http = count / 10;
    let config = config(
        sandbox,
        &format!("round-{count}.yml"),
        Some(json!({"interval": "10s", "timeout": "2s", "failures": 3, "start_grace": "0s"})),
        ("svc", ports),
        http,
    )?;
    let selfheal_round = measure(runs, || {
        let mut command = selfheal(sandbox, &config);
        command.arg("probe");
        command
    })?;
    if std::env::var_os("BENCH_DEBUG").is_some() {
        let mut command = selfheal(sandbox, &config);
        command.arg("probe");
        println!("{}", bench::debug_timings(sandbox, command, 8)?);
    }
    let mut rows = vec![(
        count,
        "`selfheal probe`",
        selfheal_round.0,
        selfheal_round.1,
    )];
    if monit {
        let monitrc = sandbox.scratch_dir().join(format!("monitrc-{count}"));
        let scratch = sandbox.scratch_dir().display().to_string();
        let mut text = format!(
            "set idfile {scratch}/monit{count}.id\nset statefile {scratch}/monit{count}.state\n"
        );
        for (index, port) in ports.iter().enumerate() {
            let protocol = if index < http {
                " protocol http request \"/health\""
            } else {
                ""
            };
            let _ = write!(
                text,
                "check host svc{index} with address 127.0.0.1\n  if failed port {port}{protocol} with timeout 2 seconds then alert\n"
            );
        }
        std::fs::write(&monitrc, text)?;
        std::fs::set_permissions(
            &monitrc,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
        let validate = measure(runs, || {
            let mut command = sandbox.command(MONIT);
            command.arg("-c").arg(&monitrc).arg("validate");
            command
        })?;
        rows.push((count, "`monit validate`", validate.0, validate.1));
    }
    Ok(rows)
}
