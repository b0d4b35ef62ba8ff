//! Debian's Prometheus and node_exporter, each a process of its own on 127.0.0.1 outside the
//! sandbox: node_exporter's textfile collector reads selfheal's metrics file, Prometheus
//! scrapes it every second and answers PromQL over its HTTP API.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use super::{free_port, wait_until};

pub(crate) struct Prometheus {
    children: Vec<Child>,
    pub port: u16,
    /// node_exporter's address, as Prometheus labels its `instance`.
    pub target: String,
}

impl Prometheus {
    /// Starts node_exporter on `textfile_dir` and Prometheus scraping it (every 1 s), with
    /// `rule_files` loaded; returns once Prometheus has scraped it.
    pub(crate) fn start(dir: &Path, textfile_dir: &Path, rule_files: &[&Path]) -> Prometheus {
        Prometheus::launch(dir, textfile_dir, rule_files, None)
    }

    /// As `start`, sending its alerts to the Alertmanager at `alertmanager` (`host:port`).
    pub(crate) fn start_alerting(
        dir: &Path,
        textfile_dir: &Path,
        rule_files: &[&Path],
        alertmanager: &str,
    ) -> Prometheus {
        Prometheus::launch(dir, textfile_dir, rule_files, Some(alertmanager))
    }

    fn launch(
        dir: &Path,
        textfile_dir: &Path,
        rule_files: &[&Path],
        alertmanager: Option<&str>,
    ) -> Prometheus {
        std::fs::create_dir_all(dir).unwrap();
        let (exporter_port, port) = (free_port(), free_port());
        let target = format!("127.0.0.1:{exporter_port}");
        let exporter = Command::new("/usr/bin/prometheus-node-exporter")
            .args(["--collector.disable-defaults", "--collector.textfile"])
            .arg(format!(
                "--collector.textfile.directory={}",
                textfile_dir.display()
            ))
            .arg(format!("--web.listen-address={target}"))
            .stderr(std::fs::File::create(dir.join("node-exporter.log")).unwrap())
            .spawn()
            .expect("starting prometheus-node-exporter (apt install prometheus-node-exporter)");
        let rules: Vec<String> = rule_files
            .iter()
            .map(|file| format!("  - {}\n", file.display()))
            .collect();
        let alerting = alertmanager.map_or(String::new(), |target| {
            format!("alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{target}']\n")
        });
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{alerting}rule_files:\n{}scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['{target}']\n",
                if rules.is_empty() { "  []\n".to_owned() } else { rules.concat() }
            ),
        )
        .unwrap();
        let server = Command::new("/usr/bin/prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("starting prometheus (apt install prometheus)");
        let prometheus = Prometheus {
            children: vec![exporter, server],
            port,
            target,
        };
        wait_until(
            Duration::from_secs(60),
            "Prometheus to scrape node_exporter",
            || {
                prometheus
                    .query("up{job=\"node\"} == 1")
                    .is_some_and(|result| !result.is_empty())
            },
        );
        prometheus
    }

    /// The result of an instant PromQL query (`data.result`), `None` when Prometheus does not
    /// answer; panics when it refuses the query (a syntax error, an unknown function).
    pub(crate) fn query(&self, expr: &str) -> Option<Vec<serde_json::Value>> {
        let body = self.get(&format!("/api/v1/query?query={}", encode(expr)))?;
        let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
        answer["data"]["result"].as_array().cloned()
    }

    /// The body of `GET path`, `None` when nothing answers.
    pub(crate) fn get(&self, path: &str) -> Option<String> {
        super::receivers::http_get(self.port, path)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `text` percent-encoded for a query string (all but the unreserved characters).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}
