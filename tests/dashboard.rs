//! The Grafana dashboard selfheal ships (`grafana/selfheal-dashboard.json`): every query of
//! every panel, and its host variable, evaluated by a real Prometheus (Debian's, with
//! node_exporter's textfile collector) against a metrics file selfheal wrote after a failed
//! heal. No Grafana is needed: a panel is its PromQL. The same Prometheus loads the shipped
//! rules and fires the alert for that failed heal.
mod common;

use std::time::Duration;

use common::config::{Config, Service};
use common::prometheus::Prometheus;
use common::receivers::url_file;
use common::*;
use serde_json::{Value, json};

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/grafana/selfheal-dashboard.json"
);

/// A panel's query as Grafana sends it: the host variable at "All", the ranges it fills in.
fn as_grafana_sends(expr: &str) -> String {
    expr.replace("$instance", ".*")
        .replace("$__range", "1h")
        .replace("$__rate_interval", "1m")
}

#[test]
fn every_panel_of_the_dashboard_is_answered_by_prometheus_from_selfheals_metrics() {
    let env = TestEnv::new();
    let textfiles = env.sandbox.scratch_dir().join("textfiles");
    std::fs::create_dir_all(&textfiles).unwrap();
    let hook = url_file(
        env.sandbox.scratch_dir(),
        "hook-url",
        "http://127.0.0.1:9/hook",
    );
    // A service that cannot start: one failed heal, an open incident, a webhook message
    // queued for a receiver that is not there.
    env.unit("web", "ExecStart=/bin/false");
    env.configure(
        &Config::new()
            .with(
                "metrics_file",
                textfiles.join("selfheal.prom").display().to_string(),
            )
            .with(
                "notify",
                [json!({"webhook": {"url_file": hook, "format": "json"}})],
            )
            .service(Service::new("web").verify_timeout("1s").stable_for("100ms")),
    );
    // Scraped before the failure: a counter must be seen at 0 to have an increase.
    assert!(env.selfheal(["watch"]).status.success());
    let rules =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("prometheus/selfheal.rules.yml");
    let prometheus = Prometheus::start(
        &env.sandbox.scratch_dir().join("prometheus"),
        &textfiles,
        &[&rules],
    );
    env.start_failing("web");
    let (code, report) = env.run_json("web", &[]);
    assert_eq!(code, selfheal::exit_code::ExitCode::Failure, "{report:?}");
    assert!(env.selfheal(["watch"]).status.success());
    // Two scrapes at least since the failure: a rate needs two samples.
    wait_until(
        Duration::from_secs(30),
        "the failure to be scraped twice",
        || {
            prometheus
                .query(
                    r#"count_over_time((selfheal_runs_total{outcome="failed"} == 1)[1m:1s]) >= 2"#,
                )
                .is_some_and(|result| !result.is_empty())
        },
    );

    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    // The host variable lists this host.
    let variable = &dashboard["templating"]["list"][1]["definition"];
    assert_eq!(variable, "label_values(selfheal_runs_total, instance)");
    let hosts = prometheus
        .get("/api/v1/label/instance/values?match[]=selfheal_runs_total")
        .unwrap();
    assert_contains(&hosts, &prometheus.target);

    let mut answered = std::collections::BTreeMap::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = as_grafana_sends(target["expr"].as_str().unwrap());
            // `query` panics when Prometheus refuses the query.
            let result = prometheus.query(&expr).expect("Prometheus answers");
            answered.insert(format!("{} {}", panel["title"], target["refId"]), result);
        }
    }
    let value = |key: &str| -> f64 {
        let result = &answered[key];
        assert!(!result.is_empty(), "{key}: no series");
        result[0]["value"][1].as_str().unwrap().parse().unwrap()
    };
    assert!((value("\"Hosts whose selfheal is silent\" \"A\"") - 0.0).abs() < f64::EPSILON);
    assert!((value("\"Open incidents\" \"A\"") - 1.0).abs() < f64::EPSILON);
    assert!(value("\"Reports waiting\" \"A\"") >= 1.0);
    assert!(value("\"Last watch round per host\" \"A\"") < 120.0);
    for key in [
        "\"Heals per service and outcome\" \"A\"",
        "\"Backlog per channel\" \"A\"",
        "\"Open incidents by service\" \"A\"",
    ] {
        assert!(
            !answered[key].is_empty(),
            "{key}: no series in {answered:#?}"
        );
    }
    assert_eq!(
        answered["\"Open incidents by service\" \"A\""][0]["metric"]["service"],
        "web"
    );
    // The shipped rules, loaded by the same Prometheus, see the failed heal.
    wait_until(
        Duration::from_secs(30),
        "SelfhealHealsFailing to fire",
        || {
            prometheus
            .query("ALERTS{alertname=\"SelfhealHealsFailing\",alertstate=\"firing\",service=\"web\"}")
            .is_some_and(|result| !result.is_empty())
        },
    );
}
