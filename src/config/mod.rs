//! The YAML configuration: its serde model (here the top level; one service's entry in
//! `service.rs`, the names of its units in `units.rs`), loading with file:line:column in every
//! error (`load.rs`, `locate.rs`) and the semantic validation that runs once, at load time
//! (`validate.rs`; each section's own checks beside its model: `email.rs`, `notify.rs`,
//! `probe.rs`, `strategies.rs`).
//!
//! Everything below `Config` is plain data; nothing here talks to systemd or the network.

pub(crate) mod all_services;
pub(crate) mod email;
pub(crate) mod evidence;
pub(crate) mod health_url;
mod load;
mod locate;
pub(crate) mod maintenance;
pub(crate) mod notify;
pub(crate) mod notify_policy;
pub(crate) mod probe;
pub(crate) mod receiver;
mod service;
pub(crate) mod strategies;
pub(crate) mod units;
mod validate;

pub(crate) use service::ServiceConfig;
pub(crate) use units::{FLUSH_SERVICE, is_valid_service_name};
pub(crate) use validate::require_absolute;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ui::duration::HumanDuration;
use email::EmailConfig;
use probe::ProbeConfig;

/// Where the config is read from when neither `--config` nor `$SELFHEAL_CONFIG` is given.
pub(crate) const DEFAULT_CONFIG_PATH: &str = "/etc/selfheal/selfheal.yml";

/// A configuration problem, always phrased so the user can find and fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The cause is part of the message, not a `source`, so `{:#}` does not say it twice.
    #[error("cannot read config {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: crate::host::bounded_read::ReadError,
    },
    /// A problem at a place in the file: YAML syntax, a value of the wrong type, or a
    /// semantic problem found after parsing (placed at the key it is about).
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "refusing config {path}: it is {why}; selfheal runs as root, so only root may be able to change what it does (chown root {path} && chmod go-w {path})"
    )]
    Insecure { path: PathBuf, why: String },
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Name used in subjects and headers; defaults to the host name.
    pub system_name: Option<String>,
    /// Default recipient of reports (the seed's key).
    pub owner: Option<String>,
    /// Healing runs per service within `threshold_window`; past it, runs are suppressed.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// Window of the loop protection.
    #[serde(default = "default_threshold_window")]
    pub threshold_window: HumanDuration,
    /// A failure after the service ran healthy this long is a new incident: healed at once,
    /// its count toward `failure_threshold` starts afresh (default 10 min).
    pub new_incident_after: Option<HumanDuration>,
    /// A burst of failures like this gets one combined report.
    pub cascade: Option<CascadeConfig>,
    /// More than `max_failing` services failing within `within`: one report for the host, and
    /// healing one service at a time (on by default: 5 within 2m).
    #[serde(default)]
    pub guard: GuardConfig,
    /// How many automatic restarts by systemd within how long make a crash loop worth a
    /// report (default 5 within 10 min).
    #[serde(default)]
    pub crash_loop: CrashLoopConfig,
    /// A service suppressed by loop protection is tried again after this (doubling, capped at
    /// 2 h), or `never`; default 15 min.
    pub retry_after: Option<RetryAfter>,
    /// `daily`: `selfheal digest` by timer. Accepted and validated; not acted on yet.
    pub digest: Option<DigestSchedule>,
    /// Health probes of the services that stay `active` while they hang (`selfheal probe`
    /// by timer); absent means none.
    pub probe: Option<ProbeConfig>,
    /// Alertmanager's webhooks start heals (`selfheal receive`, socket-activated); absent
    /// means no receiver.
    pub receiver: Option<receiver::ReceiverConfig>,
    /// Optional Prometheus textfile for node_exporter.
    pub metrics_file: Option<PathBuf>,
    /// Optional directory whose templates override the built-in ones.
    pub templates_dir: Option<PathBuf>,
    /// How reports are delivered; absent means reports are only printed and logged.
    pub email: Option<EmailConfig>,
    /// Channels beside email: webhooks, Alertmanager.
    #[serde(default)]
    pub notify: Vec<notify::ChannelConfig>,
    /// Every other service unit on the host: armed by one top-level drop-in, reported (and
    /// healed with the section's strategies, if any) when it fails. Absent means off.
    #[serde(default, deserialize_with = "all_services::on_with_defaults")]
    pub all_services: Option<all_services::AllServicesConfig>,
    /// What is worth a message now (RESOLVED in the digest only, folding, reminders).
    #[serde(default)]
    pub notify_policy: notify_policy::NotifyPolicy,
    /// Windows in which selfheal holds back for every service, as under `selfheal pause`.
    #[serde(default)]
    pub maintenance: Vec<maintenance::MaintenanceWindow>,
    /// The services selfheal heals.
    #[serde(default)]
    pub monitored_services: Vec<ServiceConfig>,
}

/// `retry_after:` a duration, or `never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) enum RetryAfter {
    Never,
    After(HumanDuration),
}

impl TryFrom<String> for RetryAfter {
    type Error = String;
    fn try_from(text: String) -> Result<RetryAfter, String> {
        if text == "never" {
            return Ok(RetryAfter::Never);
        }
        let after: HumanDuration = text.parse().map_err(|err| format!("{err}, or never"))?;
        // Below a second a failed retry would start the next at once: a restart loop.
        if Duration::from(after) < Duration::from_secs(1) {
            return Err(format!(
                "at least 1s, not {text} (a retry at once after a failed one is a restart loop); write never to turn retries off"
            ));
        }
        Ok(RetryAfter::After(after))
    }
}

impl From<RetryAfter> for String {
    fn from(retry: RetryAfter) -> String {
        match retry {
            RetryAfter::Never => "never".to_owned(),
            RetryAfter::After(duration) => duration.to_string(),
        }
    }
}

/// `digest:` how often the summary is mailed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DigestSchedule {
    Daily,
}

/// `crash_loop:` what `selfheal watch` reports of the restarts systemd makes by itself.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CrashLoopConfig {
    /// Automatic restarts ...
    pub restarts: u32,
    /// ... within this window make a crash loop.
    pub within: HumanDuration,
}

impl Default for CrashLoopConfig {
    fn default() -> CrashLoopConfig {
        CrashLoopConfig {
            restarts: 5,
            within: HumanDuration(Duration::from_secs(600)),
        }
    }
}

/// `guard:` the host guard (see `heal::guard`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GuardConfig {
    /// More failing services than this within `within` start the guard.
    pub max_failing: u32,
    pub within: HumanDuration,
}

impl Default for GuardConfig {
    fn default() -> GuardConfig {
        GuardConfig {
            max_failing: 5,
            within: HumanDuration(Duration::from_secs(120)),
        }
    }
}

/// Grouping of simultaneous failures into one report.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CascadeConfig {
    /// How many services must fail ...
    pub services: u32,
    /// ... within this window to count as a cascade.
    pub within: HumanDuration,
}

fn default_failure_threshold() -> u32 {
    3
}

fn default_threshold_window() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}

impl Config {
    /// `new_incident_after`, or its default.
    pub(crate) fn new_incident_after(&self) -> Duration {
        self.new_incident_after
            .map_or(DEFAULT_NEW_INCIDENT_AFTER, Duration::from)
    }

    /// Finds a monitored service by its name, with or without `.service`.
    /// The notification policy of `service` (a listed one's settings over the top-level).
    pub(crate) fn notify_policy_of(&self, service: &str) -> notify_policy::NotifyPolicy {
        self.notify_policy.with(
            self.service(service)
                .and_then(|listed| listed.notify_policy.as_ref()),
        )
    }

    pub(crate) fn service(&self, name: &str) -> Option<&ServiceConfig> {
        let bare = name.strip_suffix(".service").unwrap_or(name);
        self.monitored_services.iter().find(|s| s.name == bare)
    }

    /// The entry a run of `name` (with or without `.service`) uses: its `monitored_services`
    /// entry, or, with `all_services:`, the section's entry for a unit no entry names and no
    /// glob excludes. `None`: selfheal does not cover it.
    pub(crate) fn entry(&self, name: &str) -> Option<std::borrow::Cow<'_, ServiceConfig>> {
        if let Some(listed) = self.service(name) {
            return Some(std::borrow::Cow::Borrowed(listed));
        }
        let (all, bare, unit) = self.unlisted_unit(name)?;
        (!all.excludes(&unit) && is_valid_service_name(bare))
            .then(|| std::borrow::Cow::Owned(all.entry(bare)))
    }

    /// True when `name` is no monitored service's and `all_services:` keeps its unit off (an
    /// `exclude:` glob, or one of selfheal's own units): a unit installed after `install` is
    /// armed all the same, and its run must end at once.
    pub(crate) fn is_excluded(&self, name: &str) -> bool {
        self.service(name).is_none()
            && self
                .unlisted_unit(name)
                .is_some_and(|(all, _, unit)| all.excludes(&unit))
    }

    /// With `all_services:`, the section, `name` without `.service` and its unit, when no
    /// `monitored_services` entry has that unit.
    fn unlisted_unit<'n>(
        &self,
        name: &'n str,
    ) -> Option<(&all_services::AllServicesConfig, &'n str, String)> {
        let all = self.all_services.as_ref()?;
        let bare = name.strip_suffix(".service").unwrap_or(name);
        let unit = format!("{bare}.service");
        let listed = self
            .monitored_services
            .iter()
            .any(|s| s.unit_name() == unit);
        (!listed).then_some((all, bare, unit))
    }

    /// True when `name` is an unlisted unit `all_services:` covers.
    pub(crate) fn is_unlisted(&self, name: &str) -> bool {
        self.service(name).is_none() && self.entry(name).is_some()
    }

    /// The names of all monitored services, for error messages.
    pub(crate) fn service_names(&self) -> Vec<&str> {
        self.monitored_services
            .iter()
            .map(|s| s.name.as_str())
            .collect()
    }

    /// The system name used in subjects: `system_name`, else the host name.
    pub(crate) fn system_name(&self) -> String {
        self.system_name
            .clone()
            .unwrap_or_else(crate::host::hostname)
    }
}

/// `new_incident_after` when the config does not say: as Kubernetes resets a container's
/// restart back-off after 10 minutes without a problem.
pub(crate) const DEFAULT_NEW_INCIDENT_AFTER: Duration = Duration::from_secs(10 * 60);

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;
    use std::path::Path;

    use super::load::yaml_options;
    use super::strategies::StrategyName;
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/selfheal/selfheal.yml"))
    }

    const SEED: &str = r"
monitored_services:
  - name: story-stages
    port: 5002
    domain: books.jbyrd.org
    critical: true
    healing_strategies:
      - service_restart
      - port_conflict
  - name: my-new-service
    port: 8080
    domain: myservice.jbyrd.org
    critical: true
    healing_strategies:
      - service_restart
      - port_conflict
      - environment_check
";

    #[test]
    fn loads_the_seed_entries_verbatim() {
        let config = parse(SEED).unwrap();
        assert_eq!(config.service_names(), ["story-stages", "my-new-service"]);
        let service = config.service("story-stages.service").unwrap();
        assert_eq!(service.unit_name(), "story-stages.service");
        assert_eq!(service.port, Some(5002));
        assert_eq!(service.verify_timeout.0, Duration::from_secs(30));
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let text = include_str!("../../config/selfheal.example.yml");
        let config = parse(text).unwrap();
        assert_eq!(config.monitored_services.len(), 4);
    }

    #[test]
    fn unknown_keys_name_the_valid_choices_and_the_position() {
        let err = parse("monitored_services:\n  - name: a\n    prot: 5\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("/etc/selfheal/selfheal.yml:3:5: "),
            "{text}"
        );
        assert!(text.contains("unknown field `prot`"), "{text}");
        assert!(text.contains("expected one of name, unit, port,"), "{text}");
    }

    #[test]
    fn unknown_strategies_name_the_valid_choices() {
        let err = parse("monitored_services:\n  - name: a\n    healing_strategies: [reboot]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `reboot`"), "{err}");
        for name in StrategyName::ALL {
            assert!(err.contains(name.as_str()), "{err} lacks {name}");
        }
    }

    #[test]
    fn broken_yaml_names_line_and_column() {
        let err =
            parse("system_name: x\nmonitored_services:\n  - name: a\n   port: 5\n").unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Syntax {
                    line: 4,
                    column: 4,
                    ..
                }
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with("/etc/selfheal/selfheal.yml:4:4: ")
                && text.contains("did not find expected '-'"),
            "{text}"
        );
        assert!(!text.contains("line 4"), "location said twice: {text}");
    }

    #[test]
    fn semantic_errors_name_the_service() {
        let table = [
            (
                "  - name: a\n    healing_strategies: [port_conflict]\n",
                "port_conflict needs `port`",
            ),
            ("  - name: 'a;b'\n", "name may only contain"),
            ("  - name: a\n  - name: a\n", "used twice"),
            (
                "  - name: a\n  - name: b\n    unit: a.service\n",
                "its unit a.service is a's too",
            ),
            (
                "  - name: a\n    stable_for: 1m\n    verify_timeout: 10s\n",
                "stable_for (1m)",
            ),
            ("  - name: a\n    health_url: ftp://x/\n", "health_url"),
            (
                "  - name: a\n    healing_strategies: [config_validation]\n",
                "config_validation needs",
            ),
        ];
        for (services, expected) in table {
            let err = parse(&format!("monitored_services:\n{services}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{services:?}: {err}");
        }
    }

    #[test]
    fn an_inline_smtp_password_is_an_unknown_key() {
        let text = "email:\n  to: [a@b]\n  smtp:\n    host: h\n    password: hunter2\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("unknown field `password`"), "{err}");
        assert!(err.contains("password_file"), "{err}");
    }

    #[test]
    fn service_names_are_checked_strictly() {
        for good in ["web", "story-stages", "a.b", "getty@tty1"] {
            assert!(is_valid_service_name(good), "{good}");
        }
        for bad in ["", "web;touch /x", "../etc", "-x", "a b", "a/b", "$(id)"] {
            assert!(!is_valid_service_name(bad), "{bad}");
        }
    }

    #[test]
    fn an_alias_bomb_is_refused_before_it_expands() {
        // One 1 MB anchor referenced 1,500 times: 1.5 GB if expanded.
        let mut text = format!(
            "system_name: &big \"{}\"\nmonitored_services:\n",
            "x".repeat(1_000_000)
        );
        for index in 0..1_500 {
            let _ = writeln!(text, "  - {{name: s{index}, domain: *big}}");
        }
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("/etc/selfheal/selfheal.yml:"), "{err}");
        assert!(err.contains("selfheal refuses configs"), "{err}");
        // Fewer aliases, under the parser's alias limit, still hit the expansion budget.
        let mut text = format!(
            "system_name: &big \"{}\"\nmonitored_services:\n",
            "x".repeat(400_000)
        );
        for index in 0..20 {
            let _ = writeln!(text, "  - {{name: s{index}, domain: *big}}");
        }
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("once aliases are expanded"), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused_at_once() {
        // 100,000 levels: the parser streams, so the first level the schema does not expect
        // ends it; where the schema would accept nesting, the depth budget does.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let err = parse(&format!("system_name: {deep}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/etc/selfheal/selfheal.yml:1:14: "),
            "{err}"
        );
        let err = parse(&format!(
            "monitored_services:\n  - name: a\n    healing_strategies: {deep}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("/etc/selfheal/selfheal.yml:3:"), "{err}");
        let mut options = yaml_options();
        options.budget.as_mut().unwrap().max_depth = 3;
        let err =
            serde_saphyr::from_str_with_options::<serde::de::IgnoredAny>("a: [[[[1]]]]\n", options)
                .unwrap_err();
        assert!(err.to_string().contains("budget"), "{err}");
    }

    #[test]
    fn a_config_that_is_a_fifo_or_too_large_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("selfheal.yml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = Config::load(&fifo).unwrap_err().to_string();
        assert!(err.contains("a FIFO, not a regular file"), "{err}");

        let big = dir.path().join("big.yml");
        std::fs::write(&big, vec![b'#'; 2 * 1024 * 1024]).unwrap();
        let err = Config::load(&big).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
    }

    #[test]
    fn a_missing_config_says_why_once() {
        let err = Config::load(Path::new("/nonexistent/selfheal.yml"))
            .unwrap_err()
            .to_string();
        assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    }

    #[test]
    fn credentials_without_tls_are_refused_unless_explicitly_allowed() {
        let config = |extra: &str| {
            format!(
                "email:\n  to: [ops@example.org]\n  smtp:\n    host: 127.0.0.1\n    security: none\n    username: alerts\n    password_file: /etc/selfheal/smtp-password\n{extra}"
            )
        };
        let err = parse(&config("")).unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { line: 5, .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("clear text") && text.contains("allow_plaintext_auth"),
            "{text}"
        );
        assert!(parse(&config("    allow_plaintext_auth: true\n")).is_ok());
        // Without credentials there is nothing to leak.
        let anonymous =
            "email:\n  to: [ops@example.org]\n  smtp:\n    host: 127.0.0.1\n    security: none\n";
        assert!(parse(anonymous).is_ok());
    }

    #[test]
    fn a_unit_name_is_checked_when_the_config_is_read() {
        for (unit, expected) in [
            ("web", "must end in .service"),
            ("a;b.service", "not a valid unit name"),
        ] {
            let err = parse(&format!(
                "monitored_services:\n  - name: web\n    unit: '{unit}'\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(err.starts_with("/etc/selfheal/selfheal.yml:3:"), "{err}");
            assert!(err.contains(expected), "{err}");
        }
        let config =
            parse("monitored_services:\n  - name: web\n    unit: web-blue.service\n").unwrap();
        assert_eq!(config.monitored_services[0].unit_name(), "web-blue.service");
    }

    #[test]
    fn semantic_errors_point_at_their_key() {
        let table = [
            (
                "monitored_services:\n  - name: web\n    port: 80\n  - name: api\n    port: 80\n",
                "5:11: monitored_services[1] (api): port 80 is also web's",
            ),
            (
                "monitored_services:\n  - name: web\n  - name: api\n    unit: web.service\n",
                "4:11: monitored_services[1] (api): its unit web.service is web's too: one entry per unit",
            ),
            (
                "maintenance:\n  - on: Sun 03:00\n    for: 8d\nmonitored_services:\n  - name: web\n",
                "3:10: maintenance[0]: `for` must be longer than 0s and at most 7d (got 8d)",
            ),
            (
                "monitored_services:\n  - name: web\n    maintenance: [{on: '', for: 1h}]\n",
                "3:19: monitored_services[0].maintenance[0]: `on` needs a calendar event",
            ),
            (
                "monitored_services:\n  - name: web\n  - name: web-self-heal\n",
                "2:11: monitored_services[0] (web): its heal unit web-self-heal.service is web-self-heal's unit",
            ),
            (
                "monitored_services:\n  - name: web\n    stable_for: 1m\n    verify_timeout: 10s\n",
                "3:17: monitored_services[0] (web): stable_for (1m) must be shorter",
            ),
            (
                "monitored_services:\n  - name: web\n    healing_strategies: [port_conflict]\n",
                "3:25: monitored_services[0] (web): port_conflict needs `port`",
            ),
            (
                "monitored_services:\n  - name: web\n    healing_strategies: [database_check]\n    database_check:\n      files: [{path: rel/app.db}]\n",
                "5:7: monitored_services[0] (web): rel/app.db must be an absolute path",
            ),
            (
                "notify_policy:\n  min_interval: 2d\n",
                "2:17: notify_policy: min_interval must be at most 1d (got 2d)",
            ),
            (
                "notify_policy: {remind: 30s}\n",
                "1:25: notify_policy.remind: at least 1m, not 30s (a reminder is a mail)",
            ),
            (
                "failure_threshold: 0\n",
                "1:20: failure_threshold must be at least 1",
            ),
        ];
        for (text, expected) in table {
            let err = parse(text).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("/etc/selfheal/selfheal.yml:{expected}")),
                "{text:?}: {err}"
            );
        }
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_key() {
        let err = parse("monitored_services:\n  - name: web\n    verify_timeout: 10 parsecs\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "/etc/selfheal/selfheal.yml:3:21: monitored_services[0].verify_timeout: invalid duration \"10 parsecs\""
            ),
            "{err}"
        );
        let err = parse("threshold_window: soon\n").unwrap_err().to_string();
        assert!(
            err.contains(":1:19: threshold_window: invalid duration"),
            "{err}"
        );
    }

    /// L13: two channels of one URL would share one queue.
    #[test]
    fn two_channels_of_one_url_are_refused() {
        let err = parse(
            "notify:\n  - webhook: { url_file: /etc/selfheal/hook, format: slack }\n  - webhook: { url_file: /etc/selfheal/hook, format: json }\n",
        )
        .map(|_| ())
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("notify[1]: the same URL as notify[0]"),
            "{err}"
        );
        assert!(err.contains(":3:"), "names the line: {err}");
    }

    /// L13: a window or wait of 584 billion years made `status` abort on overflow.
    #[test]
    fn windows_and_waits_are_bounded() {
        for (yaml, expected) in [
            (
                "threshold_window: 18446744073709551615s\n",
                "threshold_window must be between 1s and 30d",
            ),
            (
                "new_incident_after: 0s\n",
                "new_incident_after must be between 1s and 30d",
            ),
            ("retry_after: 1000days\n", "retry_after must be between"),
            (
                "crash_loop: { restarts: 5, within: 90days }\n",
                "crash_loop must be between",
            ),
        ] {
            let err = parse(yaml).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains(expected), "{yaml}: {err}");
        }
        let config = parse("new_incident_after: 30min\n").unwrap();
        assert_eq!(config.new_incident_after(), Duration::from_secs(1800));
    }

    #[test]
    fn durations_take_systemds_syntax() {
        let config = parse("threshold_window: 1h 30min\nmonitored_services:\n  - name: web\n    verify_timeout: 2min\n    stable_for: 1.5s\n").unwrap();
        assert_eq!(config.threshold_window.0, Duration::from_secs(5400));
        let web = &config.monitored_services[0];
        assert_eq!(web.verify_timeout.0, Duration::from_secs(120));
        assert_eq!(web.stable_for.0, Duration::from_millis(1500));
    }

    #[test]
    fn the_contracts_retry_and_digest_keys_are_accepted_and_checked() {
        let config = parse("retry_after: 15m\ndigest: daily\n").unwrap();
        assert_eq!(
            config.retry_after,
            Some(RetryAfter::After(HumanDuration(Duration::from_secs(900))))
        );
        assert_eq!(config.digest, Some(DigestSchedule::Daily));
        assert_eq!(
            parse("retry_after: never\n").unwrap().retry_after,
            Some(RetryAfter::Never)
        );
        let err = parse("retry_after: soon\n").unwrap_err().to_string();
        assert!(
            err.contains(":1:14: retry_after: invalid duration"),
            "{err}"
        );
        assert!(err.contains("or never"), "{err}");
        for bad in [
            "{ restarts: 0, within: 10m }",
            "{ restarts: 3, within: 0s }",
        ] {
            let err = parse(&format!("crash_loop: {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("crash_loop needs restarts of at least 1"),
                "{err}"
            );
        }
        for zero in ["0s", "500ms"] {
            let err = parse(&format!("retry_after: {zero}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(":1:14: retry_after: at least 1s, not "),
                "{err}"
            );
        }
        let err = parse("digest: hourly\n").unwrap_err().to_string();
        assert!(err.contains("daily"), "{err}");
    }

    #[test]
    fn a_name_with_the_service_suffix_is_refused_with_the_fix() {
        let err = parse("monitored_services:\n  - name: web.service\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains(":2:11: "), "{err}");
        assert!(err.contains("write `name: web`"), "{err}");
    }

    #[test]
    fn a_service_whose_unit_is_anothers_heal_unit_is_refused() {
        let err = parse("monitored_services:\n  - name: web\n  - name: web-self-heal\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains(":2:11: monitored_services[0] (web): its heal unit web-self-heal.service is web-self-heal's unit"), "{err}");
        let err = parse(
            "monitored_services:\n  - name: web\n  - name: x\n    unit: selfheal@web.service\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("its heal unit selfheal@web.service is x's unit"),
            "{err}"
        );
    }

    #[test]
    fn ports_are_checked_in_words() {
        for (port, expected) in [
            ("70000", "port must be 1–65535, not 70000"),
            ("0", "port must be 1–65535, not 0"),
        ] {
            let err = parse(&format!(
                "monitored_services:\n  - name: web\n    port: {port}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(err.starts_with("/etc/selfheal/selfheal.yml:3:"), "{err}");
            assert!(err.contains(expected), "{err}");
        }
        let err = parse(
            "monitored_services:\n  - name: web\n    port: 80\n  - name: api\n    port: 80\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("monitored_services[1] (api): port 80 is also web's"),
            "{err}"
        );
    }
}
