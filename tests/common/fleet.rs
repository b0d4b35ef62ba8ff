//! The fleet loop on one machine, with the real daemons: a metric the test controls in
//! node_exporter's textfile directory, Prometheus (scrape and evaluation every 1 s) firing a
//! rule on it, Alertmanager routing the alert to selfheal's receiver (installed in the
//! sandbox, socket-activated) with the bearer token, and the heal. Used by
//! `tests/fleet_loop.rs` (once, asserted) and `bench/fleet_loop.rs` (timed).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::config::{Config, Service};
use super::prometheus::Prometheus;
use super::receivers::Alertmanager;
use super::{TestEnv, free_port, wait_until};

/// The rule the loop fires: a share of errors the test sets, above 10 %.
const RULES: &str = "groups:
  - name: web
    rules:
      - alert: WebErrors
        expr: web_errors_ratio > 0.1
        labels:
          service: web
        annotations:
          summary: 'web answers {{ $value }} of its requests with an error'
";

pub(crate) struct FleetLoop {
    pub env: TestEnv,
    pub alertmanager: Alertmanager,
    pub prometheus: Prometheus,
    textfile_dir: PathBuf,
}

/// One heal by the loop, timed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoopHeal {
    /// From the receiver's taking of Alertmanager's post to the service healed (verified).
    pub post_to_healed: Duration,
    /// From the metric crossing its threshold (the file written) to the service healed.
    pub crossing_to_healed: Duration,
}

impl FleetLoop {
    /// The sandbox with `web` (a demo HTTP service) monitored and the receiver installed;
    /// Alertmanager routing to it; Prometheus scraping the metric (0 for now) and alerting.
    /// `failure_threshold` is loop protection's (a benchmark heals web again and again).
    pub(crate) fn start(failure_threshold: u32) -> FleetLoop {
        let env = TestEnv::new();
        let scratch = env.sandbox.scratch_dir().to_owned();
        let (receiver_port, web_port) = (free_port(), free_port());
        let token = scratch.join("receiver-token");
        std::fs::write(&token, "fleet-loop-token-5e1d\n").unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        env.web_unit("web", web_port, "serving");
        env.configure(
            &Config::new()
                .with("failure_threshold", failure_threshold)
                .with(
                    "receiver",
                    json!({"listen": format!("127.0.0.1:{receiver_port}"), "token_file": token}),
                )
                .service(
                    Service::new("web")
                        .port(web_port)
                        .health_url(web_port)
                        .verify_timeout("2s")
                        .stable_for("100ms"),
                ),
        )
        .install()
        .start_listening("web", web_port);

        let mut alertmanager = Alertmanager::reserve(&scratch.join("alertmanager"));
        std::fs::write(
            alertmanager.dir.join("alertmanager.yml"),
            format!(
                "route:
  receiver: selfheal
  group_by: [alertname, service]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: selfheal
    webhook_configs:
      - url: http://127.0.0.1:{receiver_port}/alertmanager
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials_file: {}
",
                token.display()
            ),
        )
        .unwrap();
        alertmanager.start();

        let textfile_dir = scratch.join("textfile");
        std::fs::create_dir_all(&textfile_dir).unwrap();
        let rules = scratch.join("web.rules.yml");
        std::fs::write(&rules, RULES).unwrap();
        let prometheus = Prometheus::start_alerting(
            &scratch.join("prometheus"),
            &textfile_dir,
            &[&rules],
            &format!("127.0.0.1:{}", alertmanager.port),
        );
        FleetLoop {
            env,
            alertmanager,
            prometheus,
            textfile_dir,
        }
    }

    /// Writes the metric (atomically: node_exporter never reads half a file); returns when.
    pub(crate) fn set_errors(&self, ratio: f64) -> SystemTime {
        let file = self.textfile_dir.join("web.prom");
        let partial = self.textfile_dir.join(".web.prom.tmp");
        std::fs::write(&partial, format!("web_errors_ratio {ratio}\n")).unwrap();
        std::fs::rename(&partial, &file).unwrap();
        SystemTime::now()
    }

    /// One turn of the loop: the metric crosses, the alert fires, the receiver starts the heal,
    /// web is healed; the metric falls back, the alert resolves, Alertmanager posts the
    /// resolution, and nothing more is started. `heals_before`: runs in history before it.
    pub(crate) fn one_heal(&self, heals_before: usize) -> LoopHeal {
        let env = &self.env;
        let first = env.property("web.service", "InvocationID");
        let crossing = self.set_errors(0.5);
        let history = env.wait_for_history(heals_before + 1, Duration::from_secs(60));
        let run = history.last().unwrap();
        let healed = run.started() + Duration::from_millis(run.duration_ms);
        let alerts: serde_json::Value =
            serde_json::from_slice(&std::fs::read(env.state_dir.join("alerts/web.json")).unwrap())
                .unwrap();
        let newest = &alerts["alerts"][alerts["alerts"].as_array().unwrap().len() - 1];
        let received = humantime::parse_rfc3339(newest["received_at"].as_str().unwrap()).unwrap();
        assert_ne!(
            env.property("web.service", "InvocationID"),
            first,
            "web was restarted"
        );

        wait_until(Duration::from_secs(30), "the heal unit to end", || {
            env.property("selfheal@web.service", "ActiveState") == "inactive"
        });
        let heal_run = env.property("selfheal@web.service", "InvocationID");
        let resolutions_before =
            self.receiver_said("resolved alert: only firing alerts start a heal");
        self.set_errors(0.0);
        wait_until(
            Duration::from_secs(60),
            "the alert's resolution to reach selfheal",
            || {
                self.receiver_said("resolved alert: only firing alerts start a heal")
                    > resolutions_before
            },
        );
        // The receiver logs each start before it answers: none but this turn's.
        assert_eq!(
            self.receiver_said("selfheal@web.service started"),
            heals_before + 1,
            "the resolution started nothing"
        );
        assert_eq!(
            env.property("selfheal@web.service", "InvocationID"),
            heal_run
        );
        LoopHeal {
            post_to_healed: healed.duration_since(received).unwrap_or_default(),
            crossing_to_healed: healed.duration_since(crossing).unwrap_or_default(),
        }
    }

    /// How many times the receiver's journal says `what` so far.
    fn receiver_said(&self, what: &str) -> usize {
        self.env
            .journal(&["-u", "selfheal-receiver.service"])
            .matches(what)
            .count()
    }
}
