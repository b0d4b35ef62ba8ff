//! systemd-coredump keeps the core of a hung service that `evidence.signal: SIGABRT` ended, and
//! the report cites it: against a real systemd-coredump, in the sandbox.
//!
//! The kernel runs `kernel.core_pattern`'s helper in the host's namespaces, and this host's
//! PID 1 is not systemd: for the duration of this test the pattern enters the sandbox
//! (`nsenter`) and runs its systemd-coredump there, which hands the core to the sandbox's own
//! `systemd-coredump.socket`, as on a host that runs systemd. The pattern is put back when the
//! test ends, however it ends. This file is a test binary of its own: no other test runs while
//! the pattern is changed. It needs systemd-coredump in the sandbox's tree (`./bootstrap test`
//! installs it in the systemd 257 tree); on a systemd without it the test says so and passes.
mod common;

use std::time::Duration;

use common::config::{Config, Service};
use common::*;
use selfheal::outcome::Outcome;
use serde_json::json;

const CORE_PATTERN: &str = "/proc/sys/kernel/core_pattern";

/// Puts the kernel's core pattern back when dropped.
struct PatternBack(String);

impl Drop for PatternBack {
    fn drop(&mut self) {
        let _ = std::fs::write(CORE_PATTERN, &self.0);
    }
}

#[test]
fn a_hung_service_ended_with_sigabrt_leaves_a_core_that_coredumpctl_lists_and_the_report_cites() {
    let env = TestEnv::new();
    let coredump = "/usr/lib/systemd/systemd-coredump";
    let has_coredump = env
        .sandbox
        .command("test")
        .args(["-x", coredump])
        .status()
        .is_ok_and(|status| status.success());
    if !has_coredump {
        eprintln!("no {coredump} in the sandbox's systemd: not tested on this one");
        return;
    }
    // The sandbox's own coredump socket and service, from its tree.
    let units = std::env::var("SELFHEAL_TEST_ROOT").unwrap_or_default();
    for unit in ["systemd-coredump.socket", "systemd-coredump@.service"] {
        let text =
            std::fs::read_to_string(format!("{units}/usr/lib/systemd/system/{unit}")).unwrap();
        env.sandbox.add_unit(unit, &text).unwrap();
    }
    env.systemctl(&["daemon-reload"]);
    env.systemctl(&["start", "systemd-coredump.socket"]);
    let _back = PatternBack(
        std::fs::read_to_string(CORE_PATTERN)
            .unwrap()
            .trim_end()
            .to_owned(),
    );
    let pattern = format!(
        "|/usr/bin/nsenter -t {} -m -p -C -r -w {coredump} %p %u %g %s %t %c %h",
        env.sandbox.pid()
    );
    std::fs::write(CORE_PATTERN, &pattern).unwrap();

    let port = free_port();
    env.unit(
        "web",
        &format!(
            "ExecStart={} serve-demo --port {port}\nLimitCORE=infinity",
            selfheal_bin().display()
        ),
    );
    env.configure(
        &Config::new()
            .with(
                "probe",
                json!({"interval": "1s", "timeout": "1s", "failures": 2, "start_grace": "1s"}),
            )
            .service(
                Service::new("web")
                    .port(port)
                    .health_url(port)
                    .with("evidence", json!({"signal": "SIGABRT", "wait": "5s"})),
            ),
    );
    env.start_listening("web", port).install();
    let hung = env.property("web.service", "MainPID");
    env.systemctl(&["kill", "--signal=SIGSTOP", "web.service"]);
    let history = env.wait_for_history(1, Duration::from_secs(60));
    assert_eq!(history[0].outcome, Outcome::Resolved, "{history:?}");

    let listed = env
        .sandbox
        .command("coredumpctl")
        .args(["--no-pager", "list", &hung])
        .output()
        .unwrap();
    assert_contains(&String::from_utf8_lossy(&listed.stdout), &hung);
    let report = env.heal_report("web");
    for expected in [
        format!("SIGABRT sent to its main process (PID {hung})"),
        format!("Its core, kept by systemd-coredump (coredumpctl info {hung})"),
        "Signal: 6 (ABRT)".to_owned(),
    ] {
        assert_contains(&report, &expected);
    }
}
