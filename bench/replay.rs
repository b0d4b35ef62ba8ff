//! `cargo bench --bench replay` (root; needs Debian's `nginx`, `memcached`,
//! `prometheus-alertmanager` and `python3-aiosmtpd`): an operator's afternoon, replayed on real
//! daemons with every channel listening, to read what selfheal did and what each channel said.
//!
//! 1. **nginx, killed again 21 s after a recovery**: Debian's own `nginx.service` (port 80) is
//!    SIGKILLed, healed, and SIGKILLed again 21 s after it served again.
//! 2. **memcached, a crash loop a while after a recovery**: SIGKILLed and healed; after
//!    `REPLAY_GAP` seconds (default 180) a drop-in gives it `Restart=always`, `RestartSec=3` and
//!    a command line memcached refuses, and it is SIGKILLed: systemd restarts it every 3 s for
//!    90 s; then the command line is mended and systemd's next restart serves.
//! 3. **a hang that keeps coming back**: memcached is SIGSTOPped 3 s after each start, probed
//!    every 1 s (`failures: 2`), with `failure_threshold: 2`.
//!
//! The channels: mail (a real SMTP server with STARTTLS + AUTH), Slack and ntfy webhooks, and
//! Debian's Alertmanager; each message is listed with its time from the step's event. The
//! crash-loop window is 1 min (not the default 10) so the all-clear comes within the replay.
//! Prints what happened; no assertions (the behaviour is pinned by the tests).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::config::{Config, Service};
use common::receivers::{Alertmanager, WebhookServer, url_file};
use common::{Mail, SmtpServer, TestEnv, free_port, wait_until};
use serde_json::json;

/// One thing a channel said.
struct Heard {
    at: Instant,
    channel: &'static str,
    text: String,
}

type Log = Arc<Mutex<Vec<Heard>>>;

fn main() {
    let env = TestEnv::new();
    let scratch = env.sandbox.scratch_dir().to_owned();
    let smtp = SmtpServer::start(&scratch.join("smtp"), "selfheal", "s3cret");
    let webhooks = WebhookServer::start(&scratch.join("webhooks"));
    let mut alertmanager = Alertmanager::reserve(&scratch.join("alertmanager"));
    alertmanager.start();
    let channels = [
        json!({"webhook": {"url_file": url_file(&scratch, "slack-url", &webhooks.url("slack")), "format": "slack"}}),
        json!({"webhook": {"url_file": url_file(&scratch, "ntfy-url", &webhooks.url("ntfy")), "format": "ntfy"}}),
        json!({"alertmanager": {"url": alertmanager.url()}}),
    ];
    let [loop_port, hang_port] = [free_port(), free_port()];
    // Every service with selfheal's defaults, but for the probes and the crash loop's window.
    let memcached = |name: &str, port: u16| {
        Service::named(name)
            .port(port)
            .with("probe", json!({"send": "version\r\n", "expect": "VERSION"}))
    };
    let config = Config::new()
        .with("system_name", "replay")
        .with("crash_loop", json!({"restarts": 5, "within": "1m"}))
        .with(
            "probe",
            json!({"interval": "1s", "timeout": "1s", "failures": 2, "start_grace": "1s"}),
        )
        .with(
            "email",
            smtp.email_config(&scratch.join("smtp-password"), "s3cret"),
        )
        .with("notify", channels)
        .service(
            Service::named("nginx")
                .port(80)
                .with("health_url", "http://127.0.0.1/"),
        )
        .service(memcached("memcached-loop", loop_port))
        .service(memcached("memcached-hang", hang_port));
    env.configure(&config);
    let tree = std::env::var("SELFHEAL_TEST_ROOT").unwrap_or_default();
    let nginx_unit =
        std::fs::read_to_string(format!("{tree}/usr/lib/systemd/system/nginx.service"))
            .expect("Debian's nginx.service (apt install nginx-light)");
    env.sandbox.add_unit("nginx.service", &nginx_unit).unwrap();
    let memcached =
        |port: u16| format!("ExecStart=/usr/bin/memcached -u nobody -l 127.0.0.1 -p {port} -U 0");
    env.unit("memcached-loop", &memcached(loop_port));
    env.unit("memcached-hang", &memcached(hang_port));
    env.install();

    let log: Log = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let listener = {
        let (log, stop) = (Arc::clone(&log), Arc::clone(&stop));
        std::thread::spawn(move || listen(&smtp, &webhooks, &alertmanager, &log, &stop))
    };
    println!(
        "selfheal {} on systemd {}",
        env!("CARGO_PKG_VERSION"),
        common::systemd_version(&env.sandbox)
    );
    nginx_killed_after_a_recovery(&env, &log);
    crash_loop_after_a_recovery(&env, &log, loop_port);
    env.configure(&config.with("failure_threshold", 2));
    repeating_hang(&env, &log, hang_port);
    stop.store(true, Ordering::Relaxed);
    let _ = listener.join();
}

fn nginx_killed_after_a_recovery(env: &TestEnv, log: &Log) {
    println!("\n## 1. nginx: SIGKILL, healed; SIGKILL again 21 s after it served again\n");
    env.systemctl(&["start", "nginx.service"]);
    wait_until(Duration::from_secs(10), "nginx to serve", nginx_serves);
    let (killed, healthy) = kill_and_time(env, "nginx", nginx_serves);
    settle(env, "nginx");
    print_heard(log, killed, "first SIGKILL", healthy);
    std::thread::sleep(
        (killed + healthy + Duration::from_secs(21)).saturating_duration_since(Instant::now()),
    );
    let (killed, healthy) = kill_and_time(env, "nginx", nginx_serves);
    settle(env, "nginx");
    print_heard(log, killed, "SIGKILL 21 s after it served again", healthy);
}

fn crash_loop_after_a_recovery(env: &TestEnv, log: &Log, port: u16) {
    let gap = std::env::var("REPLAY_GAP")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180);
    println!(
        "\n## 2. memcached: SIGKILL, healed; {gap} s later a crash loop (RestartSec=3) for 90 s, then mended\n"
    );
    let serves = || answers(port, b"version\r\n", "VERSION");
    env.systemctl(&["start", "memcached-loop.service"]);
    wait_until(Duration::from_secs(10), "memcached to serve", serves);
    let (killed, healthy) = kill_and_time(env, "memcached-loop", serves);
    settle(env, "memcached-loop");
    print_heard(log, killed, "SIGKILL", healthy);
    std::thread::sleep(Duration::from_secs(gap));

    let mended = env.sandbox.scratch_dir().join("memcached-mended");
    let drop_in = env.sandbox.unit_dir().join("memcached-loop.service.d");
    std::fs::create_dir_all(&drop_in).unwrap();
    std::fs::write(
        drop_in.join("crash-loop.conf"),
        format!(
            "[Service]\nRestart=always\nRestartSec=3\nExecStart=\nExecStart=/bin/sh -c 'test -e {} && exec /usr/bin/memcached -u nobody -l 127.0.0.1 -p {port} -U 0; exec /usr/bin/memcached --no-such-option'\n",
            mended.display()
        ),
    )
    .unwrap();
    env.systemctl(&["daemon-reload"]);
    let started = Instant::now();
    env.systemctl(&["kill", "--signal=SIGKILL", "memcached-loop.service"]);
    std::thread::sleep(Duration::from_secs(90));
    let restarts = env.property("memcached-loop.service", "NRestarts");
    print_heard(
        log,
        started,
        &format!("crash loop, 90 s ({restarts} restarts by systemd)"),
        Duration::ZERO,
    );

    std::fs::write(&mended, "").unwrap();
    let fixed = Instant::now();
    wait_until(Duration::from_secs(30), "memcached to serve again", serves);
    let serving = fixed.elapsed();
    let all_clear = wait_for_heard(log, fixed, Duration::from_secs(180), |heard| {
        heard.channel == "mail" && heard.text.contains("memcached-loop")
    });
    print_heard(
        log,
        fixed,
        &format!(
            "mended: systemd's next restart serves (mail heard {})",
            all_clear.map_or("nothing in 180 s".to_owned(), |at| format!(
                "after {}",
                secs(at)
            ))
        ),
        serving,
    );
}

fn repeating_hang(env: &TestEnv, log: &Log, port: u16) {
    println!(
        "\n## 3. memcached hangs 3 s after each start (probe every 1 s, failures: 2; failure_threshold: 2)\n"
    );
    let serves = || answers(port, b"version\r\n", "VERSION");
    env.systemctl(&["start", "memcached-hang.service"]);
    wait_until(Duration::from_secs(10), "memcached to serve", serves);
    let began = Instant::now();
    let mut hangs = Vec::new();
    let mut last_pid = String::new();
    while began.elapsed() < Duration::from_secs(120) {
        let pid = env.property("memcached-hang.service", "MainPID");
        if pid != "0" && pid != last_pid && serves() {
            std::thread::sleep(Duration::from_secs(3));
            env.sandbox
                .command("kill")
                .args(["-STOP", &pid])
                .output()
                .unwrap();
            let hung = Instant::now();
            last_pid = pid;
            let healed = selfheal::sandbox::wait_for(Duration::from_secs(30), || {
                env.property("memcached-hang.service", "MainPID") != last_pid && serves()
            });
            hangs.push(healed.map_or("not healed in 30 s".to_owned(), |()| secs(hung.elapsed())));
            if hangs.len() >= 4 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(10));
    print_heard(
        log,
        began,
        &format!("hang → serving again, per hang: {}", hangs.join(", ")),
        Duration::ZERO,
    );
}

/// SIGKILLs the unit and returns when, and how long until it served again.
fn kill_and_time(env: &TestEnv, service: &str, serves: impl Fn() -> bool) -> (Instant, Duration) {
    let killed = Instant::now();
    env.systemctl(&["kill", "--signal=SIGKILL", &format!("{service}.service")]);
    let _ = selfheal::sandbox::wait_for(Duration::from_secs(2), || !serves());
    let healthy = selfheal::sandbox::wait_for(Duration::from_secs(600), &serves)
        .map_or(Duration::MAX, |()| killed.elapsed());
    (killed, healthy)
}

/// Waits until the heal unit is done and the channels had 5 s more to hear of it.
fn settle(env: &TestEnv, service: &str) {
    let unit = format!("selfheal@{service}.service");
    let _ = selfheal::sandbox::wait_for(Duration::from_secs(60), || {
        !matches!(
            env.property(&unit, "ActiveState").as_str(),
            "activating" | "active"
        )
    });
    std::thread::sleep(Duration::from_secs(5));
}

fn wait_for_heard(
    log: &Log,
    since: Instant,
    timeout: Duration,
    what: impl Fn(&Heard) -> bool,
) -> Option<Duration> {
    let mut found = None;
    let _ = selfheal::sandbox::wait_for(timeout, || {
        found = log
            .lock()
            .unwrap()
            .iter()
            .find(|h| h.at >= since && what(h))
            .map(|h| h.at - since);
        found.is_some()
    });
    found
}

fn print_heard(log: &Log, since: Instant, step: &str, healthy: Duration) {
    if healthy > Duration::ZERO {
        println!("**{step}**: serving again after {}\n", secs(healthy));
    } else {
        println!("**{step}**\n");
    }
    println!("| after | channel | what it said |\n|---|---|---|");
    let mut log = log.lock().unwrap();
    for heard in log.iter().filter(|heard| heard.at >= since) {
        println!(
            "| {} | {} | {} |",
            secs(heard.at - since),
            heard.channel,
            heard.text.replace('|', "\\|")
        );
    }
    println!();
    log.retain(|heard| heard.at < since);
}

fn secs(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

fn nginx_serves() -> bool {
    answers(80, b"GET / HTTP/1.0\r\n\r\n", "HTTP/1.1 200")
}

/// Whether something on `port` answers `request` with a line starting with `expect` within 300 ms.
fn answers(port: u16, request: &[u8], expect: &str) -> bool {
    let timeout = Duration::from_millis(300);
    let Ok(mut stream) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let mut answer = [0u8; 64];
    stream.write_all(request).is_ok()
        && stream
            .read(&mut answer)
            .is_ok_and(|n| String::from_utf8_lossy(&answer[..n]).starts_with(expect))
}

/// Polls the receivers every 100 ms and logs each new mail, post and alert change.
fn listen(
    smtp: &SmtpServer,
    webhooks: &WebhookServer,
    alertmanager: &Alertmanager,
    log: &Log,
    stop: &AtomicBool,
) {
    let (mut mails, mut posts) = (0, 0);
    let mut alerts: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        let mut heard = Vec::new();
        let messages = smtp.messages();
        for raw in &messages[mails..] {
            heard.push(("mail", Mail::parse(raw).subject));
        }
        mails = messages.len();
        let all_posts = webhooks.posts();
        for post in &all_posts[posts..] {
            if post.path.starts_with("/slack") {
                let body: serde_json::Value = serde_json::from_str(&post.body).unwrap_or_default();
                let text = body["text"].as_str().unwrap_or_default();
                heard.push(("slack", text.lines().next().unwrap_or_default().to_owned()));
            } else {
                // ntfy's Title is RFC 2047 encoded when it is not ASCII.
                let title = format!("Title: {}", post.header("Title"));
                let decoded = mailparse::parse_header(title.as_bytes())
                    .map_or_else(|_| title.clone(), |(header, _)| header.get_value());
                heard.push(("ntfy", decoded));
            }
        }
        posts = all_posts.len();
        let now: std::collections::BTreeMap<String, String> = alertmanager
            .active_alerts()
            .iter()
            .map(|alert| {
                let service = alert["labels"]["service"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let said = format!(
                    "{} ({})",
                    alert["annotations"]["summary"].as_str().unwrap_or_default(),
                    alert["labels"]["severity"].as_str().unwrap_or_default()
                );
                (service, said)
            })
            .collect();
        for (service, said) in &now {
            if alerts.get(service) != Some(said) {
                heard.push(("alert", format!("firing: {said}")));
            }
        }
        for service in alerts.keys().filter(|service| !now.contains_key(*service)) {
            heard.push(("alert", format!("resolved: {service}")));
        }
        alerts = now;
        let at = Instant::now();
        log.lock()
            .unwrap()
            .extend(
                heard
                    .into_iter()
                    .map(|(channel, text)| Heard { at, channel, text }),
            );
        std::thread::sleep(Duration::from_millis(100));
    }
}
