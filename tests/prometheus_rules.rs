//! The Prometheus rules selfheal ships (`prometheus/selfheal.rules.yml`): Debian's `promtool`
//! checks them and runs their unit tests, and every metric they read is one a real metrics file
//! written by `selfheal watch` in the sandbox has (with `promtool check metrics` content with it).
//! And the Alertmanager route the README shows, read by Debian's `amtool`.
mod common;

use std::path::Path;
use std::process::Command;

use common::config::{Config, Service};
use common::receivers::url_file;
use common::*;
use serde_json::json;

const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/prometheus/selfheal.rules.yml");
const RULE_TESTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/prometheus/selfheal.rules.test.yml"
);

/// `promtool <args>`: its output, after asserting it succeeded.
#[track_caller]
fn promtool(args: &[&str], stdin: Option<&Path>) -> String {
    let mut command = Command::new("promtool");
    command.args(args);
    if let Some(file) = stdin {
        command.stdin(std::fs::File::open(file).unwrap());
    }
    let output = command
        .output()
        .expect("promtool (apt install prometheus; ./bootstrap test does)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}: {text}");
    text
}

#[test]
fn the_shipped_rules_pass_promtools_checks_and_their_unit_tests() {
    assert_contains(
        &promtool(&["check", "rules", RULES], None),
        "SUCCESS: 8 rules found",
    );
    assert_contains(&promtool(&["test", "rules", RULE_TESTS], None), "SUCCESS");
}

#[test]
fn every_metric_the_rules_read_is_in_the_metrics_file_selfheal_writes() {
    let env = TestEnv::new();
    let metrics = env.sandbox.scratch_dir().join("selfheal.prom");
    let hook = url_file(
        env.sandbox.scratch_dir(),
        "hook-url",
        "http://127.0.0.1:9/hook",
    );
    env.configure(
        &Config::new()
            .with("metrics_file", metrics.display().to_string())
            .with(
                "notify",
                [json!({"webhook": {"url_file": hook, "format": "json"}})],
            )
            .service(Service::new("web")),
    );
    let watch = env.selfheal(["watch"]);
    assert!(watch.status.success(), "{watch:?}");
    let written = std::fs::read_to_string(&metrics).unwrap();
    promtool(&["check", "metrics"], Some(&metrics));

    let rules = std::fs::read_to_string(RULES).unwrap();
    let read: std::collections::BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("selfheal_"))
        .map(|name| name.strip_suffix("_bucket").unwrap_or(name))
        .collect();
    assert!(read.len() >= 5, "{read:?}");
    for name in read {
        assert!(
            written.contains(&format!("# TYPE {name} ")),
            "the rules read {name}, which selfheal does not write:\n{written}"
        );
    }
}

/// The Alertmanager route the README shows: valid for Debian's Alertmanager, and it sends
/// selfheal only the alerts labelled to be healed, while people still get each of them.
#[test]
fn the_readmes_alertmanager_route_heals_only_what_is_labelled_and_still_pages() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let route = readme
        .split("In Alertmanager, a route")
        .nth(1)
        .and_then(|rest| rest.split("```yaml\n").nth(1))
        .and_then(|block| block.split("```").next())
        .expect("the README's Alertmanager route");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(&config, route).unwrap();
    let amtool = |args: &[&str]| {
        let output = Command::new("amtool")
            .args(args)
            .output()
            .expect("amtool (apt install prometheus-alertmanager)");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "amtool {args:?}: {text}");
        text
    };
    let file = format!("--config.file={}", config.display());
    assert_contains(
        &amtool(&["check-config", &config.to_string_lossy()]),
        "SUCCESS",
    );
    assert_eq!(
        amtool(&[
            "config",
            "routes",
            "test",
            &file,
            "heal=yes",
            "service=web",
            "host=web2"
        ])
        .trim(),
        "selfheal-web2,oncall"
    );
    assert_eq!(
        amtool(&["config", "routes", "test", &file, "service=web"]).trim(),
        "oncall"
    );
}
