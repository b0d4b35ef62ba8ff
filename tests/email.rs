//! Reports by email through a real SMTP server (aiosmtpd: STARTTLS + AUTH) from a real
//! systemd in a sandbox: RESOLVED and FAILED mails, escaping, the outbox when the server is
//! down, `flush` exactly once, `test-email` errors, and the password nowhere.

mod common;

use std::os::unix::fs::PermissionsExt as _;

use std::time::Duration;

use common::config::{Config, Service};
use common::{Mail, SmtpServer, TestEnv, assert_contains, exit_code, free_port, wait_until};
use selfheal::exit_code::ExitCode;
use selfheal::outcome::Outcome;

const USER: &str = "alerts@testhost.example";
const PASSWORD: &str = "pw-9d4e1c-never-shown";

/// A config of a critical `web` on `port`, mailing through `server` with `password`.
fn config(env: &TestEnv, server: &SmtpServer, port: u16, password: &str) -> Config {
    let password_file = env.sandbox.scratch_dir().join("smtp-password");
    Config::new()
        .with("email", server.email_config(&password_file, password))
        .service(Service::new("web").port(port).with("critical", true))
}

fn smtp(env: &TestEnv) -> SmtpServer {
    SmtpServer::start(&env.sandbox.scratch_dir().join("smtp"), USER, PASSWORD)
}

/// Everything selfheal wrote that a password must never be in.
fn assert_password_nowhere(env: &TestEnv, outputs: &[&[u8]], server: &SmtpServer) {
    let mut places: Vec<(String, Vec<u8>)> = vec![
        ("journal".into(), env.journal(&[]).into_bytes()),
        (
            "history".into(),
            std::fs::read(env.state_dir.join("history.jsonl")).unwrap_or_default(),
        ),
    ];
    for (index, mail) in server.messages().into_iter().enumerate() {
        places.push((format!("mail {index}"), mail));
    }
    for (index, output) in outputs.iter().enumerate() {
        places.push((format!("output {index}"), output.to_vec()));
    }
    if let Ok(dir) = std::fs::read_dir(env.state_dir.join("outbox")) {
        for entry in dir.flatten() {
            places.push((
                entry.path().display().to_string(),
                std::fs::read(entry.path()).unwrap(),
            ));
        }
    }
    for (place, bytes) in places {
        assert!(
            !String::from_utf8_lossy(&bytes).contains(PASSWORD),
            "the SMTP password leaked into {place}"
        );
    }
}

#[test]
fn a_healed_crash_sends_one_resolved_mail_with_the_services_last_line() {
    let env = TestEnv::new();
    let server = smtp(&env);
    let port = free_port();
    env.configure(&config(&env, &server, port, PASSWORD))
        .web_unit("web", port, "web says goodbye before dying")
        .install();
    env.start_listening("web", port);

    env.systemctl(&["kill", "--signal=SIGKILL", "web.service"]);

    let mails = server.wait_for_messages(1, Duration::from_secs(30));
    let history = env.wait_for_history(1, Duration::from_secs(10));
    assert_eq!(history[0].outcome, Outcome::Resolved);
    let mail = Mail::parse(&mails[0]);
    assert_eq!(mail.subject, "✅ TestHost: web - RESOLVED");
    assert_eq!(mail.header("X-Selfheal-Service"), "web");
    assert_eq!(mail.header("X-Selfheal-Outcome"), "resolved");
    assert_eq!(mail.header("X-Test-Envelope-To"), "ops@example.org");
    assert_eq!(mail.content_type, "multipart/alternative");
    assert!(
        mail.text.contains("web says goodbye before dying"),
        "{}",
        mail.text
    );
    assert!(mail.text.contains("Signal:      SIGKILL"), "{}", mail.text);
    assert!(mail.html.contains("web says goodbye before dying"));
    // Sent and gone from the outbox; one mail only.
    wait_for_empty_outbox(&env);
    assert_eq!(server.messages().len(), 1);
    assert_password_nowhere(&env, &[], &server);
}

#[test]
fn a_failure_while_the_report_is_being_sent_is_healed_too() {
    let env = TestEnv::new();
    let server = SmtpServer::start_slow(
        &env.sandbox.scratch_dir().join("smtp"),
        USER,
        PASSWORD,
        Duration::from_secs(2),
    );
    let port = free_port();
    env.configure(&config(&env, &server, port, PASSWORD))
        .web_unit("web", port, "up")
        .install();
    env.start_listening("web", port);
    env.systemctl(&["kill", "--signal=SIGKILL", "web.service"]);

    // The first heal is done and its report is on its way: the heal unit is still running, so
    // systemd merges the next failure's OnFailure= start into it.
    wait_until(
        Duration::from_secs(30),
        "the first report to be sent",
        || server.data_started().exists(),
    );
    assert_eq!(
        env.property("selfheal@web.service", "ActiveState"),
        "activating"
    );
    env.systemctl(&["kill", "--signal=SIGKILL", "web.service"]);

    let history = env.wait_for_history(2, Duration::from_secs(30));
    assert_eq!(history[0].outcome, Outcome::Resolved, "{history:?}");
    assert_eq!(history[1].outcome, Outcome::Resolved, "{history:?}");
    assert!(history[1].summary.contains("SIGKILL"), "{history:?}");
    wait_until(Duration::from_secs(10), "web to serve", || {
        env.property("web.service", "ActiveState") == "active"
            && selfheal::ports::is_listening(port)
    });
    server.wait_for_messages(2, Duration::from_secs(20));
}

#[test]
fn a_service_that_stays_down_sends_a_failed_mail_with_manual_steps_and_escaped_html() {
    let env = TestEnv::new();
    let server = smtp(&env);
    let port = free_port();
    env.configure(&config(&env, &server, port, PASSWORD)).unit(
        "web",
        "ExecStart=/bin/sh -c 'echo \"<script>alert(1)</script> boom\"; exit 1'",
    );
    env.start_failing("web");

    let output = env.selfheal(["run", "web"]);

    assert_eq!(exit_code(&output), ExitCode::Failure);
    let mails = server.wait_for_messages(1, Duration::from_secs(10));
    let mail = Mail::parse(&mails[0]);
    assert_eq!(mail.subject, "❌ TestHost: web - FAILED");
    assert_eq!(mail.header("X-Selfheal-Outcome"), "failed");
    assert!(mail.text.contains("web is STILL DOWN"), "{}", mail.text);
    assert!(mail.text.contains("CRITICAL SERVICE"), "{}", mail.text);
    assert!(mail.text.contains("journalctl -u web.service -n 100"));
    assert!(mail.text.contains("free -h && df -h"));
    assert!(
        mail.text.contains("<script>alert(1)</script> boom"),
        "text is verbatim"
    );
    assert!(
        mail.html.contains("&lt;script&gt;alert(1)"),
        "{}",
        mail.html
    );
    assert!(!mail.html.contains("<script>"), "unescaped in HTML");
    assert!(mail.html.contains("free -h &amp;&amp; df -h"));
    assert_password_nowhere(&env, &[&output.stdout, &output.stderr], &server);
}

#[test]
fn with_the_server_down_the_report_is_queued_and_one_flush_delivers_it_once() {
    let env = TestEnv::new();
    let mut server = smtp(&env);
    server.stop();
    let port = free_port();
    env.configure(&config(&env, &server, port, PASSWORD))
        .unit("web", "ExecStart=/bin/sh -c 'exit 1'");
    env.start_failing("web");

    let run = env.selfheal(["run", "web"]);
    assert_eq!(
        exit_code(&run),
        ExitCode::Failure,
        "mail trouble never changes the outcome"
    );
    let queued = outbox_files(&env, "eml");
    assert_eq!(queued.len(), 1, "{queued:?}");
    let queued_id = Mail::parse(&std::fs::read(&queued[0]).unwrap())
        .header("Message-ID")
        .to_owned();
    let meta = std::fs::read_to_string(queued[0].with_extension("json")).unwrap();
    assert_contains(&meta, "\"attempts\": 1");
    assert!(
        meta.contains("Connection refused") || meta.contains("connection"),
        "{meta}"
    );

    let status = String::from_utf8_lossy(&env.selfheal(["status"]).stdout).into_owned();
    assert_contains(&status, "Outbox           1 report(s) queued, oldest ");
    let status = env.status();
    assert_eq!(status.config["outbox_queued"], 1, "{status:?}");
    assert_eq!(status.config["email_transport"], "smtp");
    assert!(status.config["outbox_oldest"].is_string(), "{status:?}");

    server.resume();
    let first = env.selfheal(["flush"]);
    let second = env.selfheal(["flush"]);

    assert_eq!(
        exit_code(&first),
        ExitCode::Success,
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("delivered"));
    assert_eq!(exit_code(&second), ExitCode::Success);
    assert!(String::from_utf8_lossy(&second.stdout).contains("outbox empty"));
    let mails = server.messages();
    assert_eq!(mails.len(), 1, "delivered exactly once");
    assert_eq!(Mail::parse(&mails[0]).header("Message-ID"), queued_id);
    assert!(outbox_files(&env, "eml").is_empty());
    assert!(outbox_files(&env, "json").is_empty());
    assert_password_nowhere(&env, &[&run.stderr, &first.stdout, &first.stderr], &server);
}

#[test]
fn test_email_reports_a_wrong_password_clearly_and_works_with_the_right_one() {
    let env = TestEnv::new();
    let server = smtp(&env);
    let port = free_port();

    env.configure(&config(&env, &server, port, "not-the-password"));
    let wrong = env.selfheal(["test-email"]);
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(exit_code(&wrong), ExitCode::EmailError, "{stderr}");
    assert_contains(&stderr, "refused the login");
    assert_contains(&stderr, "535");
    assert!(!stderr.contains("not-the-password"), "{stderr}");

    env.configure(&config(&env, &server, port, PASSWORD));
    let password_file = env.sandbox.scratch_dir().join("smtp-password");
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let readable = env.selfheal(["test-email"]);
    let stderr = String::from_utf8_lossy(&readable.stderr);
    assert_eq!(exit_code(&readable), ExitCode::EmailError, "{stderr}");
    assert_contains(&stderr, "lets group or others read it");

    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let right = env.selfheal(["test-email"]);
    assert_eq!(
        exit_code(&right),
        ExitCode::Success,
        "{}",
        String::from_utf8_lossy(&right.stderr)
    );
    let mails = server.wait_for_messages(1, Duration::from_secs(10));
    assert!(Mail::parse(&mails[0]).subject.starts_with("🧪 TEST"));
    assert_password_nowhere(
        &env,
        &[&wrong.stdout, &wrong.stderr, &right.stdout, &right.stderr],
        &server,
    );
}

fn outbox_files(env: &TestEnv, extension: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(env.state_dir.join("outbox"))
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p: &std::path::PathBuf| p.extension().is_some_and(|e| e == extension));
    files
}

fn wait_for_empty_outbox(env: &TestEnv) {
    common::wait_until(Duration::from_secs(10), "the outbox to empty", || {
        outbox_files(env, "eml").is_empty()
    });
}

#[test]
fn the_file_transport_writes_the_message_into_file_dir() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("selfheal.yml");
    let mail_dir = dir.path().join("mail");
    std::fs::write(
        &config,
        Config::new()
            .with("owner", "ops@example.org")
            .with(
                "email",
                serde_json::json!({"transport": "file", "file_dir": mail_dir}),
            )
            .service(Service::named("web"))
            .yaml(),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

    let output = std::process::Command::new(common::selfheal_bin())
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("test-email")
        .output()
        .unwrap();

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let files: Vec<_> = std::fs::read_dir(&mail_dir).unwrap().flatten().collect();
    assert_eq!(files.len(), 1);
    let mail = Mail::parse(&std::fs::read(files[0].path()).unwrap());
    assert_eq!(mail.subject, "🧪 TEST 💚 TestHost: web - HEALTHY");
    assert!(mail.text.contains("This is a test report"), "{}", mail.text);
    assert_eq!(mail.header("To"), "ops@example.org");
}

#[test]
fn a_self_signed_ca_certificate_on_the_relay_is_explained_in_words() {
    let env = TestEnv::new();
    let server =
        SmtpServer::start_self_signed(&env.sandbox.scratch_dir().join("smtp"), USER, PASSWORD);
    // The operator trusts the relay's own certificate, as one does with a self-signed one.
    let mut email = server.email_config(&env.sandbox.scratch_dir().join("smtp-password"), PASSWORD);
    email["smtp"]["ca_file"] = serde_json::json!(server.self_signed_certificate());
    env.configure(&config(&env, &server, free_port(), PASSWORD).with("email", email));

    let output = env.selfheal(["test-email"]);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(exit_code(&output), ExitCode::EmailError, "{stderr}");
    assert_contains(&stderr, "the TLS handshake with 127.0.0.1:");
    assert_contains(&stderr, "presents a CA certificate (CA:TRUE");
    assert_contains(&stderr, "CA:FALSE");
    assert!(server.messages().is_empty());
}
