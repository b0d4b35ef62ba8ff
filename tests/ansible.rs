//! The Ansible role, for real: ansible-core from PyPI (`./bootstrap test` installs it into
//! `target/ansible`), `ansible/deploy-self-healing.yml` run with `connection: local` inside
//! the sandbox's namespaces against the sandboxed systemd. It writes exactly what `selfheal
//! install` writes, a second run and a check-mode run change nothing, and a killed service is
//! healed through the units it deployed.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{TestEnv, assert_contains, free_port, selfheal_bin, wait_until};
use selfheal::outcome::Outcome;

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn ansible_playbook() -> PathBuf {
    let path = repository().join("target/ansible/bin/ansible-playbook");
    assert!(
        path.exists(),
        "{} is missing: `./bootstrap test` installs ansible-core from PyPI there",
        path.display()
    );
    path
}

/// `ansible-playbook` inside the sandbox, its temporary files in the scratch directory.
fn play(env: &TestEnv, vars: &Path, extra: &[&str]) -> String {
    play_book(env, "deploy-self-healing.yml", vars, extra)
}

/// `play` of another playbook of `ansible/`.
fn play_book(env: &TestEnv, book: &str, vars: &Path, extra: &[&str]) -> String {
    let scratch = env.sandbox.scratch_dir();
    let output: Output = env
        .sandbox
        .command(ansible_playbook())
        .args(["-i", "localhost,", "-c", "local"])
        .arg("-e")
        .arg(format!("@{}", vars.display()))
        .args(extra)
        .arg(repository().join("ansible").join(book))
        .env("ANSIBLE_HOME", scratch.join("ansible-home"))
        .env("ANSIBLE_LOCAL_TEMP", scratch.join("ansible-tmp"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env(
            "ANSIBLE_PYTHON_INTERPRETER",
            repository().join("target/ansible/bin/python3"),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the playbook failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `changed=N` of the play recap.
fn changed(recap: &str) -> u32 {
    recap
        .lines()
        .filter(|line| line.starts_with("localhost"))
        .find_map(|line| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix("changed="))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no recap in: {recap}"))
}

#[test]
fn the_playbook_deploys_what_install_writes_changes_nothing_twice_and_heals() {
    let env = TestEnv::new();
    let port = free_port();
    env.web_unit("web", port, "web deployed by ansible");
    env.start_listening("web", port);

    let scratch = env.sandbox.scratch_dir();
    std::fs::create_dir_all(scratch.join("bin")).unwrap();
    let binary = scratch.join("bin/selfheal");
    let config = scratch.join("etc/selfheal.yml");
    let vars = scratch.join("vars.json");
    let password = scratch.join("etc/smtp-password");
    let webhook_url = scratch.join("etc/slack-url");
    let receiver_token = scratch.join("etc/receiver-token");
    let receiver_port = free_port();
    let json = serde_json::json!({
        "selfheal_hosts": "all",
        "selfheal_binary_src": selfheal_bin(),
        "selfheal_binary_path": binary,
        "selfheal_config_path": config,
        "selfheal_state_dir": env.state_dir,
        "selfheal_unit_dir": env.sandbox.unit_dir(),
        "selfheal_system_name": "TestHost",
        "selfheal_settings": { "failure_threshold": 3, "digest": "daily" },
        "selfheal_owner": "ops@example.org",
        "selfheal_email": {
            "transport": "smtp",
            "smtp": { "host": "127.0.0.1", "port": free_port(), "security": "starttls", "username": "alerts" }
        },
        "selfheal_smtp_password": "pw-from-the-vault",
        "selfheal_smtp_password_file": password,
        "selfheal_notify": [
            { "webhook": { "url": "https://hooks.example.org/T0/vaulted-token", "url_file": webhook_url, "format": "slack" } },
            { "alertmanager": { "url": "http://127.0.0.1:9093", "labels": { "team": "ops" } } }
        ],
        "selfheal_receiver": { "listen": format!("127.0.0.1:{receiver_port}") },
        "selfheal_receiver_token": "receiver-token-from-the-vault",
        "selfheal_receiver_token_file": receiver_token,
        "selfheal_monitored_services": [
            { "name": "web", "port": port, "critical": true, "verify_timeout": "5s", "stable_for": "300ms" }
        ],
    });
    std::fs::write(&vars, serde_json::to_vec_pretty(&json).unwrap()).unwrap();

    let first = play(&env, &vars, &[]);
    assert!(changed(&first) > 0, "{first}");
    let written = std::fs::read_to_string(&config).unwrap();
    assert_contains(&written, "# Ansible managed");
    // The password the role wrote (0600) is the one the config names.
    assert_contains(&written, &format!("password_file: {}", password.display()));
    assert_eq!(
        std::fs::read_to_string(&password).unwrap(),
        "pw-from-the-vault"
    );
    let mode = std::fs::metadata(&password).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_webhook_url_kept_secret(&webhook_url, &written, &first);
    assert_receiver_token_kept_secret(&receiver_token, &written, &first);
    assert_eq!(
        env.property("selfheal-receiver.socket", "ActiveState"),
        "active"
    );
    assert_eq!(
        env.property("selfheal-digest.timer", "ActiveState"),
        "active"
    );
    assert_eq!(
        env.property("web.service", "OnFailure"),
        "selfheal@web.service"
    );
    assert_eq!(
        env.property("selfheal-flush.timer", "ActiveState"),
        "active"
    );
    // (The sandbox's /etc/systemd/system is a tmpfs of its own.)
    assert_eq!(
        env.property("selfheal-flush.timer", "UnitFileState"),
        "enabled"
    );

    // Byte-identical to what `selfheal install` (the deployed binary) writes: it would change
    // nothing.
    let plan = env
        .sandbox
        .command(&binary)
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(&env.state_dir)
        .args(["install", "--dry-run", "--unit-dir"])
        .arg(env.sandbox.unit_dir())
        .output()
        .unwrap();
    assert_contains(&String::from_utf8_lossy(&plan.stdout), "nothing to change");

    let second = play(&env, &vars, &[]);
    assert_eq!(changed(&second), 0, "{second}");
    let check = play(&env, &vars, &["--check", "--diff"]);
    assert_eq!(changed(&check), 0, "{check}");
    assert!(!check.contains("receiver-token-from-the-vault"), "{check}");

    // A killed service is healed through what the role deployed.
    env.systemctl(&["kill", "--signal=SIGKILL", "web.service"]);
    let history = env.wait_for_history(1, Duration::from_secs(30));
    assert_eq!(history[0].outcome, Outcome::Resolved, "{history:?}");
    assert_eq!(env.property("web.service", "ActiveState"), "active");
    let heal = env.property("selfheal@web.service", "ExecStart");
    assert_contains(&heal, &binary.to_string_lossy());

    deploy_under_a_pause(&env, &binary, &config);
}

/// `ansible/deploy-with-pause.yml` around a deploy that kills web: the failure meanwhile is
/// recorded `paused` and not healed; the play's resume heals it.
fn deploy_under_a_pause(env: &TestEnv, binary: &Path, config: &Path) {
    wait_until(Duration::from_secs(20), "the heal unit to end", || {
        env.property("selfheal@web.service", "ActiveState") != "activating"
    });
    let scratch = env.sandbox.scratch_dir();
    let tasks = scratch.join("deploy-tasks.yml");
    // The deploy kills web, and waits until selfheal has recorded the failure (and left it).
    std::fs::write(
        &tasks,
        "- name: The deploy stops web hard\n  ansible.builtin.command: systemctl kill --signal=SIGKILL web.service\n  changed_when: true\n\
         - name: Until web is failed and its heal unit is over\n  ansible.builtin.command: systemctl show -P ActiveState web.service selfheal@web.service\n  register: states\n  until: states.stdout_lines | select | list == ['failed', 'inactive']\n  retries: 60\n  delay: 0.5\n  changed_when: false\n",
    )
    .unwrap();
    let vars = scratch.join("deploy-vars.json");
    let json = serde_json::json!({
        "selfheal_hosts": "all",
        "app_services": ["web"],
        "app_deploy_tasks": tasks,
        "selfheal_command": [binary, "--config", config, "--state-dir", env.state_dir],
    });
    std::fs::write(&vars, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    let recap = play_book(env, "deploy-with-pause.yml", &vars, &[]);
    assert_eq!(changed(&recap), 3, "{recap}");
    let history = env.wait_for_history(3, Duration::from_secs(30));
    assert_eq!(history[1].outcome, Outcome::Paused, "{history:?}");
    assert_contains(&history[1].summary, "ansible deploy");
    assert_eq!(history[2].outcome, Outcome::Resolved, "{history:?}");
    assert_eq!(env.property("web.service", "ActiveState"), "active");
}

/// The receiver's token: in its root-only file, named by the config, shown nowhere.
fn assert_receiver_token_kept_secret(file: &Path, config: &str, play_output: &str) {
    assert_contains(config, &format!("token_file: {}", file.display()));
    assert_eq!(
        std::fs::read_to_string(file).unwrap(),
        "receiver-token-from-the-vault"
    );
    let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        !config.contains("receiver-token-from-the-vault"),
        "{config}"
    );
    assert!(
        !play_output.contains("receiver-token-from-the-vault"),
        "{play_output}"
    );
}

/// The webhook URL (a secret) is in its root-only file, the config names the file, and neither
/// the config nor the play's output shows the URL.
#[track_caller]
fn assert_webhook_url_kept_secret(url_file: &Path, config: &str, recap: &str) {
    assert_eq!(
        std::fs::read_to_string(url_file).unwrap(),
        "https://hooks.example.org/T0/vaulted-token"
    );
    let mode = std::fs::metadata(url_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_contains(config, &format!("url_file: {}", url_file.display()));
    assert!(!config.contains("vaulted-token"), "{config}");
    assert!(
        !recap.contains("vaulted-token"),
        "the play showed the URL: {recap}"
    );
}
