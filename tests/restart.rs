//! selfheal and systemd's own `Restart=`, on the systemd the suite boots: Debian 12's 252,
//! where `OnFailure=` fires once systemd gives up, and (with `SELFHEAL_TEST_ROOT`) Debian
//! 13's 257, where it fires at every failed attempt. The same config behaves the same.
mod common;

use common::*;

#[test]
fn the_sandbox_boots_the_systemd_it_was_asked_for() {
    let env = TestEnv::new();
    let version = systemd_version(&env.sandbox);
    if std::env::var_os("SELFHEAL_TEST_ROOT").is_some() {
        assert!(version >= 254, "the tree's systemd is {version}");
    } else {
        assert_eq!(version, 252, "Debian 12's systemd");
    }
    // Transient units (retry and cascade timers are) survive a daemon-reload.
    let made = env
        .sandbox
        .command("systemd-run")
        .args(["--unit=later", "--on-active=1h", "/bin/true"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    env.systemctl(&["daemon-reload"]);
    assert_eq!(env.property("later.timer", "ActiveState"), "active");
}

#[test]
fn selfheal_demo_works_on_a_host_that_runs_this_systemd() {
    // The sandbox is such a host: the demo boots its own sandbox inside it (on 257, with
    // cgroup2 alone, where mounting cgroup2 over the host's once failed with EBUSY).
    let env = TestEnv::new();
    let output = env
        .sandbox
        .command("timeout")
        .arg("60")
        .arg(selfheal_bin())
        .arg("demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_contains(&stdout, "resolved");
}
