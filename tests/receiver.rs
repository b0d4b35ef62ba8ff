//! Healing triggered by Alertmanager (`receiver:`), against a real systemd: the socket install
//! starts, the receiver systemd starts at the first post, the token, which alerts start a
//! heal, duplicates, and the report that names the alert. (Real Prometheus and Alertmanager
//! posting to it: tests/fleet_loop.rs.)
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::config::{Config, Service};
use common::*;
use selfheal::outcome::Outcome;
use serde_json::{Value, json};

const TOKEN: &str = "tok-3f9a7c1e5b2d4f60a8e9";

/// `status` and the body of a post of `body` to the receiver on `port`, with `token` as the
/// bearer token.
fn post(port: u16, token: Option<&str>, body: &str) -> (u16, String) {
    try_post(port, token, body).expect("the receiver answers")
}

/// `post`, or the error of a connection the receiver reset (one too many at once).
fn try_post(port: u16, token: Option<&str>, body: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    let authorization = token.map_or(String::new(), |token| {
        format!("Authorization: Bearer {token}\r\n")
    });
    write!(
        stream,
        "POST /alertmanager HTTP/1.1\r\nHost: 127.0.0.1\r\n{authorization}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer:?}"));
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok((status, body.to_owned()))
}

/// Alertmanager's webhook payload (version 4) with these alerts.
fn payload(alerts: &[Value]) -> String {
    json!({"version": "4", "groupKey": "{}:{}", "status": "firing", "receiver": "selfheal",
           "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
           "externalURL": "http://alertmanager:9093", "truncatedAlerts": 0, "alerts": alerts})
    .to_string()
}

/// One alert: `status`, its labels, a summary and the rule's link; it began firing now.
fn alert(status: &str, fingerprint: &str, labels: &Value) -> Value {
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    json!({"status": status, "labels": labels,
           "annotations": {"summary": "error rate above 5% for 1m"},
           "startsAt": now, "endsAt": "0001-01-01T00:00:00Z",
           "generatorURL": "http://prometheus:9090/graph?g0.expr=rate%28errors%5B1m%5D%29",
           "fingerprint": fingerprint})
}

/// The token file as the receiver requires it: root's, 0600.
fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("receiver-token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A sandbox whose `services` (demo HTTP services, each on its port) are monitored, with the
/// receiver on `receiver_port`, installed; the services are started.
fn receiving(services: &[&str]) -> (TestEnv, u16) {
    receiving_with(services, "")
}

/// `receiving`, each service's unit with `before` (an `ExecStartPre=` that makes a start slow).
fn receiving_with(services: &[&str], before: &str) -> (TestEnv, u16) {
    let env = TestEnv::new();
    let receiver_port = free_port();
    let token = token_file(env.sandbox.scratch_dir());
    let mut config = Config::new().with(
        "receiver",
        json!({"listen": format!("127.0.0.1:{receiver_port}"), "token_file": token}),
    );
    let mut ports = Vec::new();
    for name in services {
        let port = free_port();
        env.unit(
            name,
            &format!(
                "{before}\nExecStart={} serve-demo --port {port} --say serving",
                selfheal_bin().display()
            ),
        );
        config = config.service(
            Service::new(name)
                .port(port)
                .health_url(port)
                .verify_timeout("2s")
                .stable_for("100ms"),
        );
        ports.push(port);
    }
    env.configure(&config).install();
    for (name, port) in services.iter().zip(ports) {
        env.start_listening(name, port);
    }
    (env, receiver_port)
}

/// Waits until `unit`'s heal unit is neither starting nor running.
fn heal_unit_done(env: &TestEnv, service: &str) {
    wait_until(Duration::from_secs(30), "the heal unit to end", || {
        let state = env.property(&format!("selfheal@{service}.service"), "ActiveState");
        state != "activating" && state != "active"
    });
}

#[test]
fn a_firing_alert_heals_the_service_it_names_and_its_report_names_the_alert() {
    let (env, port) = receiving(&["web"]);
    // Socket activation: systemd listens, no receiver runs until a post arrives.
    assert_eq!(
        env.property("selfheal-receiver.socket", "ActiveState"),
        "active"
    );
    assert_eq!(
        env.property("selfheal-receiver.service", "ActiveState"),
        "inactive"
    );
    let service = env.sandbox.unit_dir().join("selfheal-receiver.service");
    let level = exposure(&service);
    assert!(level <= 5.0, "receiver exposure {level}");
    let first = env.property("web.service", "InvocationID");

    let web_errors = alert(
        "firing",
        "f1",
        &json!({"alertname": "WebErrors", "service": "web"}),
    );
    let starts_at = web_errors["startsAt"].as_str().unwrap().to_owned();
    let firing = payload(&[web_errors]);
    for token in [None, Some("wrong"), Some(&TOKEN[..TOKEN.len() - 1])] {
        let (status, body) = post(port, token, &firing);
        assert_eq!(status, 401, "{token:?}: {body}");
        assert!(
            !body.contains("WebErrors"),
            "a refusal quotes nothing: {body}"
        );
    }
    // Resolved, for a service selfheal does not heal, without a service, on another host.
    let nothing = payload(&[
        alert(
            "resolved",
            "f2",
            &json!({"alertname": "WebErrors", "service": "web"}),
        ),
        alert(
            "firing",
            "f3",
            &json!({"alertname": "MailQueue", "service": "postfix"}),
        ),
        alert("firing", "f4", &json!({"alertname": "DiskFull"})),
        alert(
            "firing",
            "f5",
            &json!({"alertname": "WebErrors", "service": "web", "instance": "elsewhere.example:9100"}),
        ),
    ]);
    let (status, body) = post(port, Some(TOKEN), &nothing);
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["started"], json!([]), "{answer}");
    assert_eq!(answer["ignored"].as_array().unwrap().len(), 4, "{answer}");
    assert_eq!(
        env.property("selfheal@web.service", "ActiveState"),
        "inactive"
    );
    assert_eq!(
        env.property("web.service", "InvocationID"),
        first,
        "nothing restarted web"
    );
    assert!(env.history().is_empty());

    let (status, body) = post(port, Some(TOKEN), &firing);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["started"],
        json!([{"service": "web", "alertname": "WebErrors"}])
    );
    let history = env.wait_for_history(1, Duration::from_secs(30));
    assert_eq!(history[0].outcome, Outcome::Resolved, "{history:?}");
    assert_ne!(
        env.property("web.service", "InvocationID"),
        first,
        "web was restarted"
    );
    let report = env.heal_report("web");
    for expected in [
        format!(
            "Alert:     WebErrors (Alertmanager), firing since {starts_at}: error rate above 5% for 1m"
        ),
        "http://prometheus:9090/graph?g0.expr=rate%28errors%5B1m%5D%29".to_owned(),
        "active, but Alertmanager's alert WebErrors is firing".to_owned(),
    ] {
        assert_contains(&report, &expected);
    }

    // The token is in no file selfheal wrote and in no line of the journal.
    let mut files = Vec::new();
    for dir in [env.state_dir.clone(), env.sandbox.unit_dir()] {
        collect_files(&dir, &mut files);
    }
    assert!(!files.is_empty());
    for file in files {
        let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
        assert!(!text.contains(TOKEN), "{} holds the token", file.display());
    }
    let journal = env.journal(&[]);
    assert_contains(&journal, "post(s) without the receiver's token (401)");
    assert!(!journal.contains(TOKEN), "the journal holds the token");
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, files);
        } else if path.is_file() {
            files.push(path);
        }
    }
}

/// `post`, again after each 503 or reset (one connection too many), as Alertmanager does.
fn post_until_taken(port: u16, body: &str) -> (u16, String) {
    loop {
        match try_post(port, Some(TOKEN), body) {
            Ok((status, answer)) if status != 503 => return (status, answer),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[test]
fn twenty_duplicate_posts_start_one_run_per_service() {
    // A start that takes a second: the heals are still under way when the last post lands.
    let (env, port) = receiving_with(&["web", "api"], "ExecStartPre=/bin/sleep 1");
    let both = payload(&[
        alert(
            "firing",
            "w1",
            &json!({"alertname": "WebErrors", "service": "web"}),
        ),
        alert(
            "firing",
            "a1",
            &json!({"alertname": "ApiLatency", "service": "api"}),
        ),
    ]);
    let answers: Vec<(u16, String)> = std::thread::scope(|scope| {
        let posts: Vec<_> = (0..20)
            .map(|_| scope.spawn(|| post_until_taken(port, &both)))
            .collect();
        posts.into_iter().map(|post| post.join().unwrap()).collect()
    });
    let mut started = Vec::new();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        let answer: Value = serde_json::from_str(body).unwrap();
        for start in answer["started"].as_array().unwrap() {
            started.push(start["service"].as_str().unwrap().to_owned());
        }
    }
    started.sort();
    assert_eq!(started, ["api", "web"], "{answers:?}");
    // Another alert for web while its heal is under way joins it; later, its repeat too
    // starts nothing.
    let other = payload(&[alert(
        "firing",
        "w2",
        &json!({"alertname": "WebLatency", "service": "web"}),
    )]);
    let (status, body) = post(port, Some(TOKEN), &other);
    assert_eq!(status, 200, "{body}");
    assert_contains(&body, "selfheal@web.service is healing it now");
    let history = env.wait_for_history(2, Duration::from_secs(30));
    heal_unit_done(&env, "web");
    heal_unit_done(&env, "api");
    // The alert that joined is recorded after the one that started the heal: the run still
    // names the one that started it.
    assert_contains(
        &env.heal_report("web"),
        "Alert:     WebErrors (Alertmanager)",
    );
    let (status, body) = post(port, Some(TOKEN), &other);
    assert_eq!(status, 200, "{body}");
    assert_contains(&body, "a repeat of the alert");
    assert_eq!(env.history().len(), 2, "{history:?}");
    assert!(
        history.iter().all(|run| run.outcome == Outcome::Resolved),
        "{history:?}"
    );
}

#[test]
fn an_alert_never_starts_a_service_a_person_stopped() {
    let (env, port) = receiving(&["web"]);
    env.systemctl(&["stop", "web.service"]);
    let down = payload(&[alert(
        "firing",
        "d1",
        &json!({"alertname": "WebDown", "service": "web"}),
    )]);
    let (status, body) = post(port, Some(TOKEN), &down);
    assert_eq!(status, 200, "{body}");
    let history = env.wait_for_history(1, Duration::from_secs(30));
    heal_unit_done(&env, "web");
    assert_eq!(history[0].outcome, Outcome::Suppressed, "{history:?}");
    assert_contains(&env.heal_report("web"), "an alert does not start it");
    assert_eq!(env.property("web.service", "ActiveState"), "inactive");
}

#[test]
fn a_paused_service_is_held_when_an_alert_names_it() {
    let (env, port) = receiving(&["web"]);
    let paused = env.selfheal(["pause", "web", "--for", "1h", "--reason", "deploy 4.2"]);
    assert!(paused.status.success(), "{paused:?}");
    let first = env.property("web.service", "InvocationID");
    let errors = payload(&[alert(
        "firing",
        "p1",
        &json!({"alertname": "WebErrors", "service": "web"}),
    )]);
    let (status, body) = post(port, Some(TOKEN), &errors);
    assert_eq!(status, 200, "{body}");
    let history = env.wait_for_history(1, Duration::from_secs(30));
    heal_unit_done(&env, "web");
    assert_eq!(history[0].outcome, Outcome::Paused, "{history:?}");
    assert_eq!(
        env.property("web.service", "InvocationID"),
        first,
        "web was left alone"
    );
}

/// A receiver whose socket does not listen loses every alert: the dashboard and `check` say
/// so, as of a stopped timer.
#[test]
fn a_receiver_socket_that_does_not_listen_is_shown_by_status() {
    let (env, _port) = receiving(&["web"]);
    let receiver = |env: &TestEnv| {
        let output = env.selfheal(["status", "--json"]);
        let status: Value = serde_json::from_slice(&output.stdout).unwrap();
        status["config"]["timers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|timer| timer["round"] == "receiver")
            .cloned()
            .unwrap_or_else(|| panic!("no receiver in {status}"))
    };
    let listening = receiver(&env);
    assert_eq!(listening["active_state"], "active", "{listening}");
    assert!(listening["problem"].is_null(), "{listening}");
    env.systemctl(&["stop", "selfheal-receiver.socket"]);
    let stopped = receiver(&env);
    assert_contains(
        stopped["problem"].as_str().unwrap(),
        "selfheal-receiver.socket is inactive: Alertmanager's posts go unheard",
    );
    let check = env.selfheal(["check"]);
    assert_contains(
        &String::from_utf8_lossy(&check.stderr),
        "warning: selfheal-receiver.socket is inactive",
    );
}
