//! `cargo bench --bench notify` (root; needs `prometheus-alertmanager`): how soon the channels
//! beside email hear of a failure, in one sandbox.
//!
//! Each sample is its own service (so its alert and its loop-protection episode are new):
//! - failed: a unit that exits 3 at every start is started; its OnFailure= heal run tries
//!   `service_restart`, fails, and posts. Timed from `systemctl start` to the webhook POST
//!   (received by a listener in this process) and to the alert being active in Debian's
//!   Alertmanager (its API polled every 5 ms);
//! - resolved: a serving unit is SIGKILLed, healed, and the RESOLVED report posted: from the
//!   kill to the POST (the heal and `stable_for` included).
//!
//! Prints a table; no assertions.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use selfheal::sandbox::{Sandbox, free_port, wait_for};

#[path = "common.rs"]
mod bench;
#[path = "../tests/common/mod.rs"]
mod common;

use bench::Spread;
use common::config::{Config, Service};
use serde_json::json;

const SELFHEAL: &str = env!("CARGO_BIN_EXE_selfheal");

// The benchmark's steps in order: one function on purpose, like restore.rs.
#[allow(clippy::too_many_lines)]
fn main() -> anyhow::Result<()> {
    let runs = bench::runs();
    let exe = Path::new(SELFHEAL);
    let sandbox = Sandbox::boot_with(exe, &bench::sandbox_systemd(&[exe]))?;
    let scratch = sandbox.scratch_dir().to_owned();

    let (posts, arrivals) = mpsc::channel();
    let receiver = TcpListener::bind("127.0.0.1:0")?;
    let hook_port = receiver.local_addr()?.port();
    std::thread::spawn(move || receive(&receiver, &posts));
    let url_file = scratch.join("hook-url");
    std::fs::write(&url_file, format!("http://127.0.0.1:{hook_port}/hook"))?;
    std::fs::set_permissions(
        &url_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    let mut alertmanager = common::receivers::Alertmanager::reserve(&scratch.join("alertmanager"));
    alertmanager.start();

    let mut services = Vec::new();
    for run in 0..runs {
        sandbox.add_unit(
            &format!("down{run}.service"),
            "[Service]\nExecStart=/bin/sh -c 'exit 3'\n",
        )?;
        services.push(Service::new(&format!("down{run}")).stable_for("200ms"));
    }
    let web_port = free_port()?;
    sandbox.add_unit(
        "web.service",
        &format!("[Service]\nExecStart={SELFHEAL} serve-demo --port {web_port}\n"),
    )?;
    services.push(
        Service::new("web")
            .port(web_port)
            .verify_timeout("10s")
            .stable_for("200ms"),
    );
    let config = scratch.join("selfheal.yml");
    std::fs::write(
        &config,
        services
            .into_iter()
            .fold(
                Config::new()
                    .with("failure_threshold", 100_000)
                    .with("retry_after", "never")
                    .with(
                        "notify",
                        [
                            json!({"webhook": {"url_file": url_file, "format": "json"}}),
                            json!({"alertmanager": {"url": alertmanager.url()}}),
                        ],
                    ),
                Config::service,
            )
            .yaml(),
    )?;
    let install = sandbox
        .command(exe)
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(scratch.join("state"))
        .args(["install", "--unit-dir"])
        .arg(sandbox.unit_dir())
        .output()?;
    anyhow::ensure!(
        install.status.success(),
        "install: {}",
        String::from_utf8_lossy(&install.stderr)
    );

    let mut to_post = Vec::new();
    let mut to_alert = Vec::new();
    for run in 0..runs {
        let service = format!("down{run}");
        let started = Instant::now();
        sandbox.systemctl(["start", &format!("{service}.service")])?;
        let posted = arrivals.recv_timeout(Duration::from_secs(60))?;
        to_post.push(posted - started);
        wait_for(Duration::from_secs(30), || {
            alertmanager.active_for(&service).is_some()
        })?;
        to_alert.push(started.elapsed());
    }

    sandbox.systemctl(["start", "web.service"])?;
    wait_for(Duration::from_secs(10), || {
        selfheal::ports::is_listening(web_port)
    })?;
    let mut resolved = Vec::new();
    for _ in 0..runs {
        let killed = Instant::now();
        sandbox.systemctl(["kill", "--signal=SIGKILL", "web.service"])?;
        let posted = arrivals.recv_timeout(Duration::from_secs(60))?;
        resolved.push(posted - killed);
        // Drain the run before the next kill: it ends after its post.
        wait_for(Duration::from_secs(30), || {
            sandbox
                .property("selfheal@web.service", "ActiveState")
                .is_ok_and(|state| state != "activating")
        })?;
    }
    drop(alertmanager);

    println!("\n| {runs} runs, each its own service | median | min | max |\n|---|---|---|---|");
    println!(
        "{}",
        Spread::of(&to_post).row("failed: start → webhook POST received", &[])
    );
    println!(
        "{}",
        Spread::of(&to_alert).row("failed: start → alert active in Alertmanager", &[])
    );
    println!(
        "{}",
        Spread::of(&resolved).row("resolved: SIGKILL → RESOLVED report POST received", &[])
    );
    Ok(())
}

/// Accepts POSTs, answers 200, and sends the arrival time of each.
fn receive(listener: &TcpListener, posts: &mpsc::Sender<Instant>) {
    for stream in listener.incoming().flatten() {
        let mut reader = BufReader::new(stream);
        let mut length = 0usize;
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            if line == "\r\n" {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap_or(0);
            }
            line.clear();
        }
        let mut body = vec![0; length];
        let _ = reader.read_exact(&mut body);
        let arrived = Instant::now();
        let mut stream = reader.into_inner();
        let _ =
            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let _ = posts.send(arrived);
    }
}
