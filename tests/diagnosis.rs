//! Diagnosis against real processes in the sandboxed systemd: the cause named as it is (an OOM
//! kill at the unit's MemoryMax=, a full file system with its mount and use, a failing start
//! command of a Type=forking unit), and the first sentence of the report true.

mod common;

use common::config::{Config, Service};
use common::{TestEnv, assert_contains};
use selfheal::exit_code::ExitCode;
use selfheal::outcome::Outcome;

/// Starts `name`, whose start job fails (the control process exits), and waits until systemd
/// has marked it failed.
fn start_refused(env: &TestEnv, name: &str) {
    let unit = format!("{name}.service");
    env.systemctl(&["start", "--no-block", &unit]);
    common::wait_until(
        std::time::Duration::from_secs(10),
        &format!("{unit} to fail"),
        || env.property(&unit, "ActiveState") == "failed",
    );
}

/// A config of one service, `name`, healed by a restart alone.
fn config(name: &str) -> Config {
    Config::new().service(
        Service::new(name)
            .verify_timeout("2s")
            .stable_for("200ms")
            .strategies(&["service_restart"]),
    )
}

#[test]
fn an_oom_kill_is_named_with_the_units_memory_limit() {
    let env = TestEnv::new();
    env.configure(&config("hog")).unit(
        "hog",
        // tail keeps the last 64 MB it read in memory: past the limit, or at 64 MB and idle
        // where nothing enforces it.
        "ExecStart=/usr/bin/tail -c 64000000 /dev/zero\nMemoryMax=16M\nMemorySwapMax=0",
    );
    env.unit("idle", "ExecStart=/bin/sleep infinity\nMemoryMax=16M");
    env.systemctl(&["start", "idle.service"]);
    if env.property("idle.service", "MemoryCurrent") == "[not set]" {
        // The unified hierarchy of a hybrid host has no memory controller to give the sandbox
        // (the 257 leg on such a host): nothing enforces MemoryMax= there.
        eprintln!("skipped: no memory controller in this sandbox");
        return;
    }
    env.systemctl(&["start", "--no-block", "hog.service"]);
    common::wait_until(
        std::time::Duration::from_secs(10),
        "hog.service to be killed",
        || env.property("hog.service", "ActiveState") == "failed",
    );

    let (code, report) = env.run_json("hog", &["--dry-run"]);

    assert_eq!(code, ExitCode::Success, "{report:#?}");
    let diagnosis = report.diagnosis.expect("a diagnosis");
    assert_contains(&diagnosis.root_cause, "OOM killer");
    assert_contains(&diagnosis.root_cause, "MemoryMax=16M");
    assert!(
        !diagnosis.root_cause.contains("an operator, a script"),
        "{}",
        diagnosis.root_cause
    );
    // What held the memory: the kernel's list of the unit's tasks at the kill, and the host's
    // largest processes.
    let hogs = diagnosis.memory_hogs.expect("what held the memory");
    assert_eq!(hogs["at_the_kill"][0]["name"], "tail", "{hogs:#}");
    assert!(
        hogs["at_the_kill"][0]["rss_bytes"].as_u64() > Some(0),
        "{hogs:#}"
    );
    assert!(
        !hogs["on_the_host"].as_array().unwrap().is_empty(),
        "{hogs:#}"
    );
}

#[test]
fn a_full_file_system_is_named_with_its_mount_and_use_and_not_restarted_into() {
    let env = TestEnv::new();
    let data = env.sandbox.scratch_dir().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mounted = env
        .sandbox
        .command("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "selfheal-full"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(mounted.success());
    env.configure(&config("writer")).unit(
        "writer",
        &format!(
            "WorkingDirectory={}\nExecStart=/bin/sh -c 'cat /dev/zero > spool.bin; exit 1'",
            data.display()
        ),
    );
    env.start_failing("writer");
    let invocation = env.property("writer.service", "InvocationID");

    let (code, report) = env.run_json("writer", &[]);

    assert_eq!(code, ExitCode::Failure, "{report:#?}");
    assert_eq!(report.outcome, Outcome::Failed);
    let diagnosis = report.diagnosis.as_ref().expect("a diagnosis");
    let cause = &diagnosis.root_cause;
    assert_contains(cause, &format!("{} is full", data.display()));
    assert_contains(cause, "256.0 KiB of 256.0 KiB, 100 %");
    assert_contains(cause, "A restart cannot free space");
    assert!(
        report.steps.is_empty(),
        "nothing is restarted into a full disk: {report:#?}"
    );
    assert_contains(report.reason.as_deref().unwrap_or_default(), "is full");
    assert_eq!(
        env.property("writer.service", "InvocationID"),
        invocation,
        "the unit was not started again"
    );
}

/// "No space left on device" with no path, and nothing declared (a Python service's
/// `OSError: [Errno 28]`): the report still names the full file system, found among the
/// host's usual places (here /var/log, full inside the sandbox only).
#[test]
fn a_full_disk_the_service_does_not_name_is_found_and_named() {
    let env = TestEnv::new();
    let mounted = env
        .sandbox
        .command("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "selfheal-full", "/var/log"])
        .status()
        .unwrap();
    assert!(mounted.success());
    let filled = env
        .sandbox
        .command("sh")
        .args(["-c", "cat /dev/zero > /var/log/fill 2>/dev/null; true"])
        .status()
        .unwrap();
    assert!(filled.success());
    env.configure(&config("writer")).unit(
        "writer",
        "ExecStart=/bin/sh -c 'echo \"OSError: [Errno 28] No space left on device\"; exit 1'",
    );
    env.start_failing("writer");
    common::wait_until(
        std::time::Duration::from_secs(10),
        "the line in the journal",
        || env.journal(&["-u", "writer.service"]).contains("Errno 28"),
    );

    let (_, report) = env.run_json("writer", &["--dry-run"]);

    let diagnosis = report.diagnosis.expect("a diagnosis");
    assert_contains(&diagnosis.root_cause, "/var/log is full");
    assert_contains(&diagnosis.summary, "/var/log is full");
}

#[test]
fn a_failing_start_command_of_a_forking_unit_is_named_with_its_own_status() {
    let env = TestEnv::new();
    env.configure(&config("forky"))
        .unit("forky", "Type=forking\nExecStart=/bin/sh -c 'exit 3'");
    start_refused(&env, "forky");

    let (_, report) = env.run_json("forky", &["--dry-run"]);

    let diagnosis = report.diagnosis.expect("a diagnosis");
    assert_contains(
        &diagnosis.summary,
        "its ExecStart= command /bin/sh exited with status 3",
    );
    assert!(
        !diagnosis.summary.contains("main process"),
        "{}",
        diagnosis.summary
    );
    assert_contains(&diagnosis.root_cause, "Type=forking");
    assert_contains(&diagnosis.root_cause, "exited with status 3");
}

#[test]
fn a_failing_exec_start_pre_is_named_before_the_service() {
    let env = TestEnv::new();
    env.configure(&config("pre")).unit(
        "pre",
        "ExecStartPre=/bin/sh -c 'echo config broken; exit 7'\nExecStart=/bin/sleep infinity",
    );
    start_refused(&env, "pre");

    let (_, report) = env.run_json("pre", &["--dry-run"]);

    let diagnosis = report.diagnosis.expect("a diagnosis");
    assert_contains(
        &diagnosis.summary,
        "ExecStartPre= command /bin/sh exited with status 7",
    );
    assert_contains(&diagnosis.root_cause, "before the service itself starts");
}

#[test]
fn escape_sequences_a_service_prints_reach_no_terminal_raw() {
    let env = TestEnv::new();
    env.configure(&config("noisy")).unit(
        "noisy",
        // Sets a terminal's title, moves up a line and clears it: what a hostile log line does.
        // It lives on a moment: journald tags a line with its invocation from the writer's
        // cgroup, and a writer gone by then leaves the line out of the invocation's journal.
        "ExecStart=/bin/sh -c 'printf \"boom \\033]0;pwned\\007\\033[1A\\033[2K\\n\"; sleep 1; exit 1'",
    );
    env.start_failing("noisy");
    common::wait_until(
        std::time::Duration::from_secs(10),
        "the line in the journal",
        || env.journal(&["-u", "noisy.service"]).contains("boom"),
    );

    let output = env.selfheal(["run", "noisy", "--dry-run"]);

    let text = String::from_utf8_lossy(&output.stdout);
    assert_contains(&text, "boom");
    assert!(
        !text.contains('\u{1b}'),
        "a raw ESC reached stdout: {text:?}"
    );
    assert!(
        !text.contains('\u{7}'),
        "a raw BEL reached stdout: {text:?}"
    );
    assert_contains(&text, "\\u{1b}]0;pwned\\u{7}");
}
