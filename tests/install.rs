//! `selfheal install` against a real systemd in a sandbox: the hook as systemd reports it, a
//! second install that changes and reloads nothing, a foreign unit file left alone, a removed
//! service's units gone, a masked heal unit kept masked, the heal unit's hardening as systemd
//! loaded it, an uninstall that leaves no trace (also of services the config no longer names,
//! and no retry timer), heal units no other unit's drop-ins reach, and `check` of them.

mod common;

use common::config::{Config, Service};
use common::{TestEnv, assert_contains, exit_code, exposure, wait_until};
use selfheal::exit_code::ExitCode;
use serde_json::json;

fn install(env: &TestEnv) -> std::process::Output {
    env.selfheal([
        "install",
        "--unit-dir",
        &env.sandbox.unit_dir().to_string_lossy(),
    ])
}

#[test]
fn install_arms_the_hook_once_and_owns_exactly_its_files() {
    let env = TestEnv::new();
    env.configure(
        &Config::new()
            .service(Service::named("web"))
            .service(Service::named("db")),
    )
    .unit("web", "ExecStart=/bin/sleep 600")
    .unit("db", "ExecStart=/bin/sleep 600");

    let first = install(&env);
    assert_eq!(exit_code(&first), ExitCode::Success);
    assert_contains(&String::from_utf8_lossy(&first.stdout), "reloaded systemd");
    for service in ["web", "db"] {
        assert_eq!(
            env.property(&format!("{service}.service"), "OnFailure"),
            format!("selfheal@{service}.service")
        );
    }

    let second = install(&env);
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert_eq!(exit_code(&second), ExitCode::Success);
    assert_contains(&stdout, "unchanged");
    assert!(!stdout.contains("reloaded"), "{stdout}");

    // db leaves the config, web's healing is masked by hand: db's units go, the mask stays.
    let units = env.sandbox.unit_dir();
    let web_heal = units.join("selfheal@web.service");
    std::fs::remove_file(&web_heal).unwrap();
    std::os::unix::fs::symlink("/dev/null", &web_heal).unwrap();
    env.configure(&Config::new().service(Service::named("web")));
    let third = install(&env);
    assert_eq!(exit_code(&third), ExitCode::Success);
    assert!(!units.join("selfheal@db.service").exists());
    assert!(!units.join("db-self-heal.service").exists());
    assert!(!units.join("db.service.d").exists());
    assert_eq!(env.property("db.service", "OnFailure"), "");
    assert_eq!(env.property("selfheal@web.service", "LoadState"), "masked");

    // A unit file a person wrote at a path install wants is never replaced.
    env.configure(
        &Config::new()
            .service(Service::named("web"))
            .service(Service::named("api")),
    );
    std::fs::write(
        units.join("selfheal@api.service"),
        "[Service]\nExecStart=/bin/true\n",
    )
    .unwrap();
    let refused = install(&env);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(exit_code(&refused), ExitCode::CannotWrite, "{stderr}");
    assert_contains(&stderr, "refusing to overwrite");
    assert_eq!(
        std::fs::read_to_string(units.join("selfheal@api.service")).unwrap(),
        "[Service]\nExecStart=/bin/true\n"
    );
    assert!(
        !units.join("api.service.d").exists(),
        "nothing written when one file is refused"
    );
}

#[test]
fn the_installed_heal_unit_is_hardened_and_systemd_applies_it() {
    let env = TestEnv::new();
    let password = env.sandbox.scratch_dir().join("smtp-password");
    std::fs::write(&password, "pw").unwrap();
    env.configure(
        &Config::new()
            .with("owner", "ops@example.org")
            .with(
                "email",
                json!({"transport": "smtp", "smtp": {
                    "host": "127.0.0.1", "port": 2525, "security": "none",
                    "allow_plaintext_auth": true, "username": "u", "password_file": password,
                }}),
            )
            .service(Service::named("web")),
    )
    .unit("web", "ExecStart=/bin/sleep 600");
    let installed = install(&env);
    assert_eq!(exit_code(&installed), ExitCode::Success, "{installed:?}");
    let heal = env.sandbox.unit_dir().join("selfheal@web.service");
    let flush = env.sandbox.unit_dir().join("selfheal-flush.service");
    // The heal unit goes without a mount namespace (its start is the service's downtime);
    // the mail-only units have the whole set.
    let (heal_level, flush_level) = (exposure(&heal), exposure(&flush));
    assert!(
        heal_level <= 6.5,
        "heal unit exposure {heal_level} (9.6 unhardened)"
    );
    assert!(
        flush_level <= 5.0,
        "flush unit exposure {flush_level} (9.6 unhardened)"
    );
    // systemd loaded what install wrote, not just the text.
    for (unit, property, value) in [
        ("selfheal@web.service", "NoNewPrivileges", "yes"),
        ("selfheal@web.service", "UMask", "0077"),
        ("selfheal@web.service", "ProtectSystem", "no"),
        ("selfheal-flush.service", "ProtectSystem", "full"),
        ("selfheal-flush.service", "ProtectHome", "read-only"),
        ("selfheal-flush.service", "NoNewPrivileges", "yes"),
    ] {
        assert_eq!(env.property(unit, property), value, "{unit} {property}");
    }
    let credential = env
        .sandbox
        .command("busctl")
        .args([
            "get-property",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1/unit/selfheal_2dflush_2eservice",
            "org.freedesktop.systemd1.Service",
            "LoadCredential",
        ])
        .output()
        .unwrap();
    assert_contains(
        &String::from_utf8_lossy(&credential.stdout),
        &format!("\"smtp-password\" \"{}\"", password.display()),
    );
    // Never on the heal unit: a password file that went missing must not stop healing.
    assert!(
        !std::fs::read_to_string(&heal)
            .unwrap()
            .contains("LoadCredential")
    );
}

#[test]
fn uninstall_leaves_no_trace_of_what_install_wrote() {
    let env = TestEnv::new();
    env.configure(
        &Config::new()
            .with("digest", "daily")
            .service(Service::named("web"))
            .service(Service::named("db")),
    )
    .unit("web", "ExecStart=/bin/false")
    .unit("db", "ExecStart=/bin/sleep 600");
    let units = env.sandbox.unit_dir();
    let listing = |dir: &std::path::Path| {
        let mut names: Vec<String> = walk(dir)
            .iter()
            .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
            .collect();
        names.sort();
        names
    };
    let before = listing(&units);
    assert_eq!(exit_code(&install(&env)), ExitCode::Success);
    assert_eq!(
        env.property("selfheal-digest.timer", "ActiveState"),
        "active"
    );
    assert!(listing(&units).len() > before.len());
    // A run that fails leaves its retry timer; db leaves the config without an install.
    let (_, report) = env.run_json("web", &[]);
    assert_eq!(report.outcome, selfheal::outcome::Outcome::Failed);
    // The restart's failure also started the hook, whose run sets the same retry again (it
    // stops and restarts the timer): the timer is looked at once that run is over.
    env.wait_for_history(2, std::time::Duration::from_secs(20));
    wait_until(
        std::time::Duration::from_secs(20),
        "the hook's run to end",
        || env.property("selfheal@web.service", "ActiveState") != "activating",
    );
    assert_eq!(
        env.property("selfheal@web.timer", "ActiveState"),
        "active",
        "{report:?}\n{}",
        env.journal(&["-n", "30"])
    );
    env.configure(
        &Config::new()
            .with("digest", "daily")
            .service(Service::named("web")),
    );

    let output = env.selfheal(["uninstall", "--unit-dir", &units.to_string_lossy()]);
    assert_eq!(exit_code(&output), ExitCode::Success, "{output:?}");
    assert_eq!(listing(&units), before, "every file install wrote is gone");
    assert_eq!(env.property("web.service", "OnFailure"), "");
    assert_eq!(env.property("db.service", "OnFailure"), "");
    assert_eq!(
        env.property("selfheal@web.timer", "LoadState"),
        "not-found",
        "the retry timer is gone"
    );
    assert!(!env.state_dir.join("installed.json").exists());
    assert_ne!(
        env.property("selfheal-digest.timer", "ActiveState"),
        "active"
    );
}

/// Every file and directory below `dir`, recursively.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}

#[test]
fn uninstall_in_etc_systemd_system_also_undoes_the_readmes_enable_of_the_flush_timer() {
    let env = TestEnv::new();
    env.configure(&Config::new().service(Service::named("web")))
        .unit("web", "ExecStart=/bin/sleep 600");
    // Inside the sandbox /etc/systemd/system is a tmpfs of its own; make sure of it before
    // anything writes there.
    let inside = |dir: &str| {
        let output = env.sandbox.command("find").arg(dir).output().unwrap();
        let mut lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    };
    let before = inside("/etc/systemd/system");
    assert_eq!(
        before,
        ["/etc/systemd/system"],
        "not the sandbox's own directory"
    );

    let unit_dir = ["--unit-dir", "/etc/systemd/system"];
    let installed = env.selfheal(["install"].iter().chain(&unit_dir));
    assert_eq!(exit_code(&installed), ExitCode::Success, "{installed:?}");
    // install starts the flush timer itself (and timers.target wants it from boot on).
    assert_eq!(
        env.property("selfheal-flush.timer", "ActiveState"),
        "active"
    );
    assert_contains(
        &String::from_utf8_lossy(&installed.stdout),
        "started selfheal-flush.timer",
    );
    // An enable, as the README used to ask for, is harmless and undone too.
    env.systemctl(&["enable", "--now", "selfheal-flush.timer"]);
    assert_eq!(
        env.property("selfheal-flush.timer", "ActiveState"),
        "active"
    );
    assert!(
        inside("/etc/systemd/system")
            .iter()
            .any(|p| p.ends_with("timers.target.wants/selfheal-flush.timer"))
    );

    let removed = env.selfheal(["uninstall"].iter().chain(&unit_dir));
    assert_eq!(exit_code(&removed), ExitCode::Success, "{removed:?}");
    assert_eq!(inside("/etc/systemd/system"), before, "no trace");
    assert_ne!(
        env.property("selfheal-flush.timer", "ActiveState"),
        "active"
    );
}

/// systemd reads `web@blue-self-heal.service` as an instance of `web@.service` (so it loads
/// what `systemctl edit web@` wrote) and `app-self-heal.service` as one of the `app-` family
/// (`app-.service.d/`). The unit `OnFailure=` starts must load only what install wrote.
#[test]
fn the_hook_starts_a_heal_unit_no_other_units_drop_ins_reach() {
    let env = TestEnv::new();
    env.configure(
        &Config::new()
            .service(Service::named("web@blue"))
            .service(Service::named("app")),
    )
    .unit("app", "ExecStart=/bin/sleep 600");
    env.sandbox
        .add_unit(
            "web@.service",
            "[Unit]\nDescription=web %i\n[Service]\nExecStart=/bin/sleep 600\n",
        )
        .unwrap();
    let units = env.sandbox.unit_dir();
    // What a person writes for the service and its family: harmless to them, fatal to a
    // healer (it cannot write its state as nobody; a oneshot without ExecStart= never loads).
    for (dir, text) in [
        ("web@.service.d", "[Service]\nUser=nobody\n"),
        ("app-.service.d", "[Service]\nExecStart=\n"),
    ] {
        std::fs::create_dir_all(units.join(dir)).unwrap();
        std::fs::write(units.join(dir).join("override.conf"), text).unwrap();
    }
    env.install();
    for service in ["web@blue", "app"] {
        let unit = format!("{service}.service");
        let heal = env.property(&unit, "OnFailure");
        assert_eq!(env.property(&heal, "LoadState"), "loaded", "{heal}");
        assert_eq!(env.property(&heal, "DropInPaths"), "", "{heal}");
        assert_eq!(env.property(&heal, "User"), "", "{heal}");
        env.systemctl(&["start", &unit]);
        env.systemctl(&["kill", "--signal=KILL", &unit]);
    }
    let history = env.wait_for_history(2, std::time::Duration::from_secs(30));
    for service in ["web@blue", "app"] {
        let record = history.iter().find(|r| r.service == service);
        assert_eq!(
            record.map(|r| r.outcome.as_str()),
            Some("resolved"),
            "{history:?}"
        );
    }
    for row in env.status().services {
        assert!(row.hook_armed, "{row:?}");
    }
    // L14: the first names run nothing of their own. As nobody (web@.service.d), the
    // runbook's `systemctl start web@blue-self-heal` still runs the heal, as root.
    let before = env.history().len();
    env.systemctl(&["kill", "--signal=KILL", "web@blue.service"]);
    env.wait_for_history(before + 1, std::time::Duration::from_secs(30));
    let started = env
        .sandbox
        .systemctl(["start", "web@blue-self-heal.service"]);
    assert!(started.is_ok(), "{started:?}");
    assert_eq!(env.property("web@blue.service", "ActiveState"), "active");
    // A family drop-in that breaks the first name (app-.service.d empties ExecStart=) is
    // named by check, with the way around it.
    let check = env.selfheal(["check"]);
    let said = String::from_utf8_lossy(&check.stderr);
    assert_contains(
        &said,
        "app-self-heal.service (the first name of a heal unit) does not load",
    );
    assert_contains(&said, "app-.service.d");
}

#[test]
fn check_refuses_a_service_whose_unit_systemd_does_not_know() {
    let env = TestEnv::new();
    env.configure(
        &Config::new()
            .service(Service::named("web"))
            .service(Service::named("memcache")),
    )
    .unit("web", "ExecStart=/bin/sleep 600");

    let output = env.selfheal(["check"]);

    assert_eq!(exit_code(&output), ExitCode::Usage, "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_contains(
        &stderr,
        "memcache.service is not known to systemd (LoadState=not-found)",
    );
    assert!(!stderr.contains("web.service is not known"), "{stderr}");
}

#[test]
fn check_refuses_a_heal_unit_that_cannot_load_and_warns_of_an_unarmed_hook() {
    let env = TestEnv::new();
    env.configure(&Config::new().service(Service::named("web")))
        .unit("web", "ExecStart=/bin/sleep 600");
    let before = env.selfheal(["check"]);
    assert_eq!(exit_code(&before), ExitCode::Success, "{before:?}");
    let stderr = String::from_utf8_lossy(&before.stderr);
    assert_contains(&stderr, "selfheal@web.service is not installed");

    env.install();
    let armed = env.selfheal(["check"]);
    assert_eq!(exit_code(&armed), ExitCode::Success, "{armed:?}");
    assert!(!String::from_utf8_lossy(&armed.stderr).contains("selfheal@web"));
    // The hook as an older install left it.
    let hook = env
        .sandbox
        .unit_dir()
        .join("web.service.d/50-selfheal.conf");
    let text = std::fs::read_to_string(&hook).unwrap();
    std::fs::write(
        &hook,
        text.replace("selfheal@web.service", "web-self-heal.service"),
    )
    .unwrap();
    env.systemctl(&["daemon-reload"]);
    let old_hook = env.selfheal(["check"]);
    assert_eq!(exit_code(&old_hook), ExitCode::Success, "{old_hook:?}");
    assert_contains(
        &String::from_utf8_lossy(&old_hook.stderr),
        "OnFailure= of web.service does not start selfheal@web.service (it starts: web-self-heal.service): run `selfheal install`",
    );
    env.install();

    let drop_in = env.sandbox.unit_dir().join("selfheal@.service.d");
    std::fs::create_dir_all(&drop_in).unwrap();
    std::fs::write(drop_in.join("broken.conf"), "[Service]\nExecStart=\n").unwrap();
    env.systemctl(&["daemon-reload"]);
    let broken = env.selfheal(["check"]);
    assert_eq!(exit_code(&broken), ExitCode::Usage, "{broken:?}");
    assert_contains(
        &String::from_utf8_lossy(&broken.stderr),
        "selfheal@web.service does not load (bad-setting)",
    );
}
