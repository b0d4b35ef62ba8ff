//! The Prometheus rules selfheal ships (`prometheus/selfheal.rules.yml`): Debian's `promtool`
//! checks them and runs their unit tests, and every metric they read is one a real metrics file
//! written by `selfheal watch` in the sandbox has (with `promtool check metrics` content with it).
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
