//! `cargo bench --bench restore` (root): selfheal against systemd's own restart, in one sandbox.
//!
//! - kill → serving again: a service healed by selfheal through OnFailure=, versus the same
//!   service under `Restart=on-failure` + `RestartSec=0`, each timed two ways: (a) a new
//!   process holds the port (sock_diag + a walk of /proc/*/fd, as `ports::holders`), and
//!   (b) a TCP connect to the port succeeds while a new PID is in the unit's cgroup (no /proc
//!   walk: one connect and one small read per poll);
//! - the journal timeline of one selfheal restore (SIGKILL = 0 ms), to see where it goes;
//! - wall time of `selfheal run` on a healthy service;
//! - peak RSS of a healthy run and of a full heal run (wait4's ru_maxrss).
//!
//! Prints a table; no assertions (targets are in the table, not in a timed test).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use selfheal::ports;
use selfheal::sandbox::{Sandbox, free_port, wait_for};

#[path = "common.rs"]
mod bench;
#[path = "../tests/common/mod.rs"]
mod common;

use common::config::{Config, Service};
use selfheal::state::StateDir;

const SELFHEAL: &str = env!("CARGO_BIN_EXE_selfheal");

// The benchmark's steps in order, each printed as it runs: one function on purpose.
#[allow(clippy::too_many_lines)]
fn main() -> anyhow::Result<()> {
    let runs = bench::runs();
    let exe = Path::new(SELFHEAL);
    let sandbox = Sandbox::boot_with(exe, &bench::sandbox_systemd(&[exe]))?;
    let [healed_port, systemd_port, victim_port] = [free_port()?, free_port()?, free_port()?];
    let [py_port, py_systemd_port] = [free_port()?, free_port()?];
    let python = python_in_sandbox();
    let state_dir = sandbox.scratch_dir().join("state");
    let service = |name: &str, port: u16| {
        Service::new(name)
            .port(port)
            .health_url(port)
            .verify_timeout("10s")
            .stable_for("200ms")
    };
    // `installed` gets the OnFailure= hook; `manual` adds a service healed by hand (for RSS).
    let mut web = Config::new()
        .with("failure_threshold", 100_000)
        .service(service("web", healed_port));
    if python {
        web = web.service(
            Service::new("py")
                .port(py_port)
                .verify_timeout("10s")
                .stable_for("200ms"),
        );
    }
    let installed = sandbox.scratch_dir().join("installed.yml");
    std::fs::write(&installed, web.yaml())?;
    let manual = sandbox.scratch_dir().join("manual.yml");
    std::fs::write(&manual, web.service(service("victim", victim_port)).yaml())?;

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
    if python {
        let py = |port: u16, extra: &str| {
            format!(
                "[Service]\nExecStart=/usr/bin/python3 -m http.server --bind 127.0.0.1 {port}\n{extra}"
            )
        };
        sandbox.add_unit("py.service", &py(py_port, ""))?;
        sandbox.add_unit(
            "pysd.service",
            &py(
                py_systemd_port,
                "Restart=on-failure\nRestartSec=0\nStartLimitBurst=0",
            ),
        )?;
    }
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
    let mut ports_up = vec![healed_port, systemd_port, victim_port];
    if python {
        sandbox.systemctl(["start", "py.service", "pysd.service"])?;
        ports_up.extend([py_port, py_systemd_port]);
    }
    for port in ports_up {
        wait_for(Duration::from_secs(10), || ports::is_listening(port))?;
    }

    let state = StateDir::new(&state_dir);
    let mut by_selfheal = Vec::new();
    let mut by_selfheal_connect = Vec::new();
    for run in 0..2 * runs {
        let method = if run % 2 == 0 {
            Method::Holders
        } else {
            Method::Connect
        };
        let restore = kill_and_time_restore(healed_port, method).map_err(|err| {
            let journal = sandbox
                .command("journalctl")
                .args([
                    "--no-pager",
                    "-n",
                    "40",
                    "-u",
                    "selfheal@web.service",
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
        match method {
            Method::Holders => by_selfheal.push(restore),
            Method::Connect => by_selfheal_connect.push(restore),
        }
        // Let the healing run finish (it verifies stable_for) and its unit go inactive before the
        // next kill: a start request for a oneshot unit that is still running is merged into it.
        wait_for(Duration::from_secs(30), || {
            state.history().is_ok_and(|h| h.len() > run)
        })?;
        wait_for(Duration::from_secs(10), || {
            sandbox
                .property("selfheal@web.service", "ActiveState")
                .is_ok_and(|s| s == "inactive")
        })?;
    }
    let mut by_systemd = Vec::new();
    let mut by_systemd_connect = Vec::new();
    for _ in 0..runs {
        by_systemd.push(kill_and_time_restore(systemd_port, Method::Holders)?);
        by_systemd_connect.push(kill_and_time_restore(systemd_port, Method::Connect)?);
    }
    // A python service (an interpreter that takes tens of ms to serve): the same two ways.
    let (mut py_by_selfheal, mut py_by_systemd) = (Vec::new(), Vec::new());
    if python {
        for run in 0..runs {
            py_by_selfheal.push(kill_and_time_restore(py_port, Method::Connect)?);
            wait_for(Duration::from_secs(30), || {
                state.history().is_ok_and(|h| h.len() > 2 * runs + run)
            })?;
            wait_for(Duration::from_secs(10), || {
                sandbox
                    .property("selfheal@py.service", "ActiveState")
                    .is_ok_and(|s| s == "inactive")
            })?;
            py_by_systemd.push(kill_and_time_restore(py_systemd_port, Method::Connect)?);
        }
    }
    let runs_before = if python { 3 * runs } else { 2 * runs };
    let timeline = restore_timeline(&sandbox, healed_port, &state, runs_before)?;
    // What one poll of each method costs: the poller shares the 2 cores with systemd and the
    // heal run it times.
    let poll_cost = |poll: &dyn Fn() -> bool| {
        let started = Instant::now();
        for _ in 0..50 {
            std::hint::black_box(poll());
        }
        started.elapsed() / 50
    };
    let holders_poll = poll_cost(&|| !ports::holders(systemd_port).is_empty());
    let connect_poll =
        poll_cost(&|| std::net::TcpStream::connect(("127.0.0.1", systemd_port)).is_ok());

    // A healthy run, inside the sandbox (one nsenter, ~1 ms, in the timing). Not from the
    // host: there the sandbox's cgroups sit below a cgroup that is no slice, and a unit owns
    // only the cgroups below its slices, so the run would not find web's own listener.
    let mut healthy = Vec::new();
    let mut healthy_rss = 0;
    for _ in 0..runs.max(20) {
        let mut command = sandbox.command(exe);
        command
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

    let ms = bench::ms;
    let mb = |kib: i64| format!("{:.1} MB", kib as f64 / 1024.0);
    let ratio = median(&by_selfheal).as_secs_f64() / median(&by_systemd).as_secs_f64();
    let added = |selfheal: &[Duration], systemd: &[Duration]| {
        (median(selfheal).as_secs_f64() - median(systemd).as_secs_f64()) * 1000.0
    };
    println!(
        "\nselfheal restore benchmark ({runs} runs each, medians; systemd {})\n",
        systemd_version()
    );
    println!("| metric | median | min | max | target |");
    println!("|---|---|---|---|---|");
    let row = |name: &str, samples: &[Duration], target: &str| {
        println!("{}", bench::Spread::of(samples).row(name, &[target]));
    };
    row(
        "(a) kill → new holder of the port, healed by selfheal (OnFailure=)",
        &by_selfheal,
        "",
    );
    row(
        "(a) kill → new holder of the port, systemd Restart=on-failure, RestartSec=0",
        &by_systemd,
        "baseline",
    );
    println!(
        "| (a) added by selfheal | {:.1} ms | | | ≤ 10 ms |",
        added(&by_selfheal, &by_systemd)
    );
    row(
        "(b) kill → connect succeeds + new PID in the cgroup, selfheal",
        &by_selfheal_connect,
        "",
    );
    row(
        "(b) kill → connect succeeds + new PID in the cgroup, systemd",
        &by_systemd_connect,
        "baseline",
    );
    println!(
        "| (b) added by selfheal | {:.1} ms | | | ≤ 10 ms |",
        added(&by_selfheal_connect, &by_systemd_connect)
    );
    println!("| ratio selfheal / systemd (a) | {ratio:.2}× | | | |");
    if python {
        row(
            "python http.server: kill → connect + new PID, selfheal",
            &py_by_selfheal,
            "",
        );
        row(
            "python http.server: the same, systemd Restart=",
            &py_by_systemd,
            "baseline",
        );
        println!(
            "| python: ratio selfheal / systemd | {:.2}× | | | ≤ 1.05× |",
            median(&py_by_selfheal).as_secs_f64() / median(&py_by_systemd).as_secs_f64()
        );
    }
    println!(
        "| one poll: (a) holders (sock_diag + /proc walk) / (b) connect | {} / {} | | | |",
        ms(holders_poll),
        ms(connect_poll)
    );
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
    println!(
        "\nOne selfheal restore, from the sandbox's journal (SIGKILL at 0 ms; journald's receive times):\n"
    );
    println!("| ms | unit | message |");
    println!("|---|---|---|");
    for (ms, unit, message) in timeline {
        println!("| {ms:.1} | {unit} | {message} |");
    }
    Ok(())
}

/// How "serving again" is detected.
#[derive(Debug, Clone, Copy)]
enum Method {
    /// A process other than the killed one holds the port (`ports::holders`: sock_diag, then
    /// a walk of every process' fds to find the socket's owner).
    Holders,
    /// A TCP connect to the port succeeds and the unit's cgroup holds a PID that is not the
    /// killed one: a poll costs one connect and one read of `cgroup.procs`.
    Connect,
}

/// SIGKILLs the process listening on `port` and times until it is served again, as `method`
/// sees it.
fn kill_and_time_restore(port: u16, method: Method) -> anyhow::Result<Duration> {
    let holder = ports::holders(port)
        .first()
        .map(|h| h.pid)
        .ok_or_else(|| anyhow::anyhow!("nothing on {port}"))?;
    let procs = cgroup_procs_file(holder)?;
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(holder as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let deadline = started + Duration::from_secs(30);
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        let served = match method {
            Method::Holders => ports::holders(port).iter().any(|h| h.pid != holder),
            Method::Connect => {
                std::net::TcpStream::connect(address).is_ok()
                    && std::fs::read_to_string(&procs).is_ok_and(|pids| {
                        pids.lines()
                            .any(|pid| pid.parse::<u32>().is_ok_and(|pid| pid != holder))
                    })
            }
        };
        if served {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(Instant::now() < deadline, "port {port} did not come back");
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// The host path of the `cgroup.procs` of the cgroup `pid` is in (the unified hierarchy).
fn cgroup_procs_file(pid: u32) -> anyhow::Result<std::path::PathBuf> {
    let cgroup = ports::cgroup_of(pid).ok_or_else(|| anyhow::anyhow!("no cgroup for {pid}"))?;
    let root = if Path::new("/sys/fs/cgroup/unified").is_dir() {
        "/sys/fs/cgroup/unified"
    } else {
        "/sys/fs/cgroup"
    };
    Ok(Path::new(root)
        .join(cgroup.trim_start_matches('/'))
        .join("cgroup.procs"))
}

/// One more selfheal restore with the heal unit logging at debug level: the journal entries
/// of the service, its heal unit and selfheal from the SIGKILL until the port is served, in
/// ms after the kill (CLOCK_MONOTONIC, shared by the host and the sandbox).
fn restore_timeline(
    sandbox: &Sandbox,
    port: u16,
    state: &StateDir,
    runs_before: usize,
) -> anyhow::Result<Vec<(f64, String, String)>> {
    let dropin = sandbox.unit_dir().join("selfheal@web.service.d");
    std::fs::create_dir_all(&dropin)?;
    std::fs::write(
        dropin.join("debug.conf"),
        "[Service]\nEnvironment=SELFHEAL_LOG=debug\n",
    )?;
    sandbox.systemctl(["daemon-reload"])?;
    // systemd's own steps too (job queued, unit started), once, for this run only.
    sandbox.systemctl(["log-level", "debug"])?;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the local we pass.
    anyhow::ensure!(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) } == 0);
    let killed_at = now.tv_sec * 1_000_000 + now.tv_nsec / 1_000;
    let served = kill_and_time_restore(port, Method::Connect)?;
    wait_for(Duration::from_secs(30), || {
        state.history().is_ok_and(|h| h.len() > runs_before)
    })?;
    sandbox.systemctl(["log-level", "info"])?;
    // systemd's own exact clock readings of the heal unit's start (journald's receive times
    // can lag behind what they stamp).
    let shown = sandbox.systemctl([
        "show",
        "-p",
        "InactiveExitTimestampMonotonic,ExecMainStartTimestampMonotonic",
        "selfheal@web.service",
    ])?;
    let mut exact: Vec<(f64, String, String)> = shown
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once('=')?;
            let us: i64 = value.trim().parse().ok()?;
            Some((
                (us - killed_at) as f64 / 1000.0,
                "selfheal@web.service".to_owned(),
                format!("(systemd's clock) {name}"),
            ))
        })
        .collect();
    let output = sandbox
        .command("journalctl")
        .args(["--no-pager", "-o", "json", "_PID=1", "+"])
        .args(["_SYSTEMD_UNIT=web.service", "+"])
        .args([
            "_SYSTEMD_UNIT=selfheal@web.service",
            "+",
            "SYSLOG_IDENTIFIER=selfheal",
        ])
        .output()?;
    let window = served.as_secs_f64() * 1000.0 + 2.0;
    let mut timeline: Vec<(f64, String, String)> = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let field = |name: &str| entry[name].as_str().unwrap_or_default().to_owned();
        let Ok(at) = field("__MONOTONIC_TIMESTAMP").parse::<i64>() else {
            continue;
        };
        let message = field("MESSAGE");
        // selfheal's own clock reading is exact where journald's receive time lags.
        let at = message
            .strip_prefix("run started at CLOCK_MONOTONIC ")
            .and_then(|rest| rest.strip_suffix(" µs"))
            .and_then(|us| us.parse().ok())
            .unwrap_or(at);
        let ms = (at - killed_at) as f64 / 1000.0;
        if (0.0..window).contains(&ms) {
            let unit = [field("UNIT"), field("_SYSTEMD_UNIT")]
                .into_iter()
                .find(|u| !u.is_empty())
                .unwrap_or_default();
            timeline.push((ms, unit, message.replace('|', "/")));
        }
    }
    std::fs::remove_dir_all(&dropin)?;
    sandbox.systemctl(["daemon-reload"])?;
    timeline.append(&mut exact);
    timeline.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(timeline)
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

/// Whether the sandbox's root has python3 (Debian's; the 257 tree has none).
fn python_in_sandbox() -> bool {
    let root = std::env::var("SELFHEAL_TEST_ROOT").unwrap_or_default();
    Path::new(&format!("{root}/usr/bin/python3")).exists()
}

fn median(samples: &[Duration]) -> Duration {
    bench::Spread::of(samples).median
}
