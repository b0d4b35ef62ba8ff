//! `cargo bench --bench hang` (root; needs Debian's `nginx`): a hang, from the moment Debian's
//! own `nginx.service` (port 80) is SIGSTOPped until it serves again.
//!
//! 1. **The restart alone**, on a SIGSTOPped nginx: `systemctl restart` (what a heal did
//!    before: the graceful stop runs nginx's `ExecStop=` `--retry QUIT/5` against processes
//!    that cannot answer) against SIGKILL to its cgroup then `systemctl restart` (what a heal
//!    of a hang does now).
//! 2. **The whole path**: SIGSTOP → the probe timer (every 1 s, 2 failed rounds) → selfheal's
//!    run → served, with the evidence taken (the default) and with `evidence.capture: false`;
//!    and the capture's own time, as the run logs it.
//!
//! `BENCH_RUNS` runs of each (default 9); prints a table, no assertions.

#[path = "common.rs"]
mod bench;
#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::config::{Config, Service};
use common::{TestEnv, wait_until};
use serde_json::json;

fn main() {
    let runs = bench::runs();
    let env = TestEnv::new();
    let tree = std::env::var("SELFHEAL_TEST_ROOT").unwrap_or_default();
    let nginx_unit =
        std::fs::read_to_string(format!("{tree}/usr/lib/systemd/system/nginx.service"))
            .expect("Debian's nginx.service (apt install nginx-light)");
    env.sandbox.add_unit("nginx.service", &nginx_unit).unwrap();
    let config = |capture: bool| {
        Config::new()
            .with("failure_threshold", 100_000)
            .with(
                "probe",
                json!({"interval": "1s", "timeout": "1s", "failures": 2, "start_grace": "1s"}),
            )
            .service(
                Service::named("nginx")
                    .port(80)
                    .with("health_url", "http://127.0.0.1/")
                    .with("evidence", json!({"capture": capture})),
            )
    };
    env.configure(&config(true));
    env.systemctl(&["start", "nginx.service"]);
    wait_until(Duration::from_secs(10), "nginx to serve", nginx_serves);
    println!(
        "selfheal {} on systemd {}, {runs} runs each\n",
        env!("CARGO_PKG_VERSION"),
        common::systemd_version(&env.sandbox)
    );

    // 1. The restart alone, before anything of selfheal is installed.
    let graceful = sample(runs, || {
        hang(&env);
        let started = Instant::now();
        env.systemctl(&["restart", "nginx.service"]);
        served_after(started)
    });
    let killed = sample(runs, || {
        hang(&env);
        let started = Instant::now();
        // As a heal does: SIGKILL, and the restart once systemd has seen the main process die.
        env.systemctl(&["kill", "--signal=SIGKILL", "nginx.service"]);
        wait_until(Duration::from_secs(5), "systemd to see nginx die", || {
            env.property("nginx.service", "SubState") != "running"
        });
        // Five starts within 10 s would hit systemd's start limit; the probes' pace never does.
        env.systemctl(&["reset-failed", "nginx.service"]);
        env.systemctl(&["restart", "nginx.service"]);
        served_after(started)
    });

    // 2. The whole path, through the installed probe timer.
    env.install();
    let mut heals = 0;
    let mut whole = |capture: bool| {
        env.configure(&config(capture));
        sample(runs, || {
            settle(&env, heals);
            let started = hang(&env);
            let took = served_after(started);
            heals += 1;
            took
        })
    };
    let with_evidence = whole(true);
    let without_evidence = whole(false);
    settle(&env, heals);
    let captures: Vec<Duration> = env
        .journal(&["-u", "selfheal@nginx.service", "-o", "cat"])
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("evidence before the restart (")?;
            let micros: u64 = rest.split(' ').next()?.parse().ok()?;
            Some(Duration::from_micros(micros))
        })
        .collect();

    println!("| SIGSTOPped nginx → serving again | median | min | max |");
    println!("|---|---|---|---|");
    println!(
        "{}",
        bench::Spread::of(&graceful).row("restart job alone, graceful stop (before)", &[])
    );
    println!(
        "{}",
        bench::Spread::of(&killed).row("SIGKILL to the cgroup, then restart job (now)", &[])
    );
    println!(
        "{}",
        bench::Spread::of(&with_evidence).row("whole path via probes, evidence taken", &[])
    );
    println!(
        "{}",
        bench::Spread::of(&without_evidence)
            .row("whole path via probes, evidence.capture: false", &[])
    );
    if !captures.is_empty() {
        println!(
            "{}",
            bench::Spread::of(&captures).row("the capture itself (the run's log)", &[])
        );
    }
    evidence_sizes(&env);
}

/// How much evidence adds to a report, for three hung units: nginx (3 processes), a demo
/// server (1), and a shell with 24 children (16 described, the rest counted).
fn evidence_sizes(env: &TestEnv) {
    env.unit(
        "crowd",
        "ExecStart=/bin/sh -c 'for i in $$(seq 24); do sleep infinity & done; wait'",
    );
    let demo_port = common::free_port();
    env.unit(
        "demo",
        &format!(
            "ExecStart={} serve-demo --port {demo_port}",
            common::selfheal_bin().display(),
        ),
    );
    // Each is found not serving: a health URL that times out, or a port nobody listens on.
    env.configure(
        &Config::new()
            .service(
                Service::named("nginx")
                    .port(80)
                    .with("health_url", "http://127.0.0.1/"),
            )
            .service(Service::named("crowd").port(common::free_port()))
            .service(Service::named("demo").port(demo_port).health_url(demo_port)),
    );
    println!(
        "\n| a SIGSTOPped unit's report | processes | `evidence` in JSON | EVIDENCE in the text report |"
    );
    println!("|---|---|---|---|");
    for unit in ["nginx", "demo", "crowd"] {
        let service = format!("{unit}.service");
        env.systemctl(&["start", &service]);
        env.systemctl(&["kill", "--signal=SIGSTOP", &service]);
        let json = env.selfheal(["run", unit, "--dry-run", "--json"]).stdout;
        let report: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let evidence = &report["evidence"];
        let text = env.selfheal(["run", unit, "--dry-run"]).stdout;
        let text = String::from_utf8_lossy(&text);
        let section = text
            .split("\nEVIDENCE")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .map_or(0, str::len);
        println!(
            "| {unit} | {} (+{} more) | {} bytes | {section} bytes |",
            evidence["processes"].as_array().map_or(0, Vec::len),
            evidence["more_processes"],
            evidence.to_string().len(),
        );
        env.systemctl(&["kill", "--signal=SIGKILL", &service]);
    }
}

/// `runs` timings of `once`.
fn sample(runs: usize, mut once: impl FnMut() -> Duration) -> Vec<Duration> {
    (0..runs).map(|_| once()).collect()
}

/// SIGSTOPs every process of nginx (it still completes TCP handshakes) and returns when.
fn hang(env: &TestEnv) -> Instant {
    let started = Instant::now();
    env.systemctl(&["kill", "--signal=SIGSTOP", "nginx.service"]);
    started
}

/// How long from `started` until nginx serves again (polled every 10 ms).
fn served_after(started: Instant) -> Duration {
    wait_until(Duration::from_secs(60), "nginx to serve again", || {
        let served = nginx_serves();
        if !served {
            std::thread::sleep(Duration::from_millis(10));
        }
        served
    });
    started.elapsed()
}

/// Waits until `heals` heal runs are in history, the heal unit is done and the probes have
/// seen nginx serve again (past their start grace), so that the next hang starts clean.
fn settle(env: &TestEnv, heals: usize) {
    env.wait_for_history(heals, Duration::from_secs(60));
    wait_until(Duration::from_secs(30), "the heal unit to end", || {
        env.property("selfheal@nginx.service", "ActiveState") != "activating"
    });
    wait_until(Duration::from_secs(30), "a passing probe round", || {
        env.status().services[0]
            .probe
            .as_ref()
            .is_some_and(|probe| probe.ok == Some(true))
    });
}

fn nginx_serves() -> bool {
    let timeout = Duration::from_millis(300);
    let Ok(mut stream) = TcpStream::connect_timeout(&([127, 0, 0, 1], 80).into(), timeout) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let mut answer = [0u8; 64];
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok()
        && stream
            .read(&mut answer)
            .is_ok_and(|n| String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"))
}
