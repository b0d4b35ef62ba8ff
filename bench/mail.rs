//! `cargo bench --bench mail` (root): how long from a crash to the report accepted by a real
//! SMTP server (aiosmtpd, STARTTLS + AUTH, on localhost), through the whole real path:
//! SIGKILL → systemd's OnFailure= → `selfheal run` (diagnose, restart, verify `stable_for`,
//! render, queue, send). Also the crash → listening-again time of the same runs.
//!
//! Prints a table; no assertions.

#[path = "common.rs"]
mod bench;
#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::config::{Config, Service};
use common::{SmtpServer, TestEnv, free_port};

fn main() {
    let runs = bench::runs();
    let env = TestEnv::new();
    let server = SmtpServer::start(
        &env.sandbox.scratch_dir().join("smtp"),
        "bench@example.org",
        "bench-password",
    );
    let port = free_port();
    let password_file = env.sandbox.scratch_dir().join("smtp-password");
    env.configure(
        &Config::new()
            .with("system_name", "Bench")
            .with("failure_threshold", 100_000)
            .with(
                "email",
                server.email_config(&password_file, "bench-password"),
            )
            .service(
                Service::new("web")
                    .port(port)
                    .health_url(port)
                    .verify_timeout("10s")
                    .stable_for("200ms"),
            ),
    )
    .web_unit("web", port, "bench")
    .install();
    env.start_listening("web", port);

    let mut to_mail = Vec::new();
    let mut to_listening = Vec::new();
    for run in 0..runs {
        let before = server.messages().len();
        let victim = selfheal::ports::holders(port)[0].pid;
        let killed = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(victim as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let mut listening = None;
        loop {
            if listening.is_none()
                && selfheal::ports::holders(port)
                    .iter()
                    .any(|h| h.pid != victim)
            {
                listening = Some(killed.elapsed());
            }
            if server.messages().len() > before {
                to_mail.push(killed.elapsed());
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "run {run}: no mail"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
        to_listening.push(listening.unwrap_or_default());
        // The next kill must find the heal unit finished, or its OnFailure= start merges.
        common::wait_until(Duration::from_secs(10), "the heal unit to finish", || {
            env.property("selfheal@web.service", "ActiveState") != "activating"
        });
    }

    println!("selfheal crash → mail, {runs} runs (stable_for 200ms is part of every heal)\n");
    println!("| metric | median | min | max |");
    println!("|---|---|---|---|");
    println!(
        "{}",
        bench::Spread::of(&to_listening).row("SIGKILL → listening again", &[])
    );
    println!(
        "{}",
        bench::Spread::of(&to_mail).row("SIGKILL → RESOLVED mail accepted by the SMTP server", &[])
    );
}
