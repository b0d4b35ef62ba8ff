//! The YAML configuration: its serde model, loading (with file/line/column in every syntax
//! error) and the semantic validation that runs once, at load time.
//!
//! Everything below `Config` is plain data; nothing here talks to systemd or the network.

pub(crate) mod email;
pub(crate) mod health_url;
mod locate;
pub(crate) mod notify;
pub(crate) mod probe;
pub(crate) mod strategies;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ui::duration::HumanDuration;
use email::EmailConfig;
use health_url::HealthUrl;
use probe::{ProbeConfig, ServiceProbe};
use strategies::{
    ConfigValidationConfig, DatabaseCheckConfig, EnvironmentCheckConfig, PortConflictConfig,
    StrategyName,
};

use locate::{Located, Position, Seg};

/// Where the config is read from when neither `--config` nor `$SELFHEAL_CONFIG` is given.
pub(crate) const DEFAULT_CONFIG_PATH: &str = "/etc/selfheal/selfheal.yml";

/// The unit that delivers the outbox (installed with a timer; a cascade's delivery starts it).
pub(crate) const FLUSH_SERVICE: &str = "selfheal-flush.service";

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
    /// Optional Prometheus textfile for node_exporter.
    pub metrics_file: Option<PathBuf>,
    /// Optional directory whose templates override the built-in ones.
    pub templates_dir: Option<PathBuf>,
    /// How reports are delivered; absent means reports are only printed and logged.
    pub email: Option<EmailConfig>,
    /// Channels beside email: webhooks, Alertmanager.
    #[serde(default)]
    pub notify: Vec<notify::ChannelConfig>,
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

/// Grouping of simultaneous failures into one report.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CascadeConfig {
    /// How many services must fail ...
    pub services: u32,
    /// ... within this window to count as a cascade.
    pub within: HumanDuration,
}

/// One monitored service.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServiceConfig {
    /// The name used on the command line, in reports and in `selfheal@<name>.service`.
    pub name: String,
    /// The systemd unit; defaults to `<name>.service`. Checked when the config is loaded.
    pub unit: Option<UnitName>,
    /// TCP port the service must listen on once healthy (1–65535).
    #[serde(default, deserialize_with = "tcp_port")]
    pub port: Option<u16>,
    /// Public domain, shown in reports.
    pub domain: Option<String>,
    /// Critical services get the critical marker in reports.
    #[serde(default)]
    pub critical: bool,
    /// Where a person finds what to do when it fails: in its reports and alerts.
    pub runbook: Option<String>,
    /// Who gets its reports, in place of `email.to` (a cascade mail goes to both).
    #[serde(default)]
    pub to: Vec<String>,
    /// URL that must answer 2xx once healthy (http only); parsed when the config is loaded.
    pub health_url: Option<HealthUrl>,
    /// Strategies, tried in this order.
    #[serde(default = "default_strategies")]
    pub healing_strategies: Vec<StrategyName>,
    /// How long to wait for active + port + health after an action.
    #[serde(default = "default_verify_timeout")]
    pub verify_timeout: HumanDuration,
    /// How long the service must stay up to count as healed.
    #[serde(default = "default_stable_for")]
    pub stable_for: HumanDuration,
    /// Settings of `config_validation`.
    pub config_validation: Option<ConfigValidationConfig>,
    /// Settings of `database_check`.
    pub database_check: Option<DatabaseCheckConfig>,
    /// Settings of `environment_check`.
    pub environment_check: Option<EnvironmentCheckConfig>,
    /// Settings of `port_conflict`.
    pub port_conflict: Option<PortConflictConfig>,
    /// Its probe settings over the top-level `probe:`, or `false` to leave it unprobed.
    pub probe: Option<ServiceProbe>,
}

fn default_failure_threshold() -> u32 {
    3
}
fn default_threshold_window() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}
fn default_strategies() -> Vec<StrategyName> {
    vec![StrategyName::ServiceRestart]
}
fn default_verify_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_stable_for() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}

impl ServiceConfig {
    /// The systemd unit name.
    pub(crate) fn unit_name(&self) -> String {
        self.unit
            .as_ref()
            .map_or_else(|| format!("{}.service", self.name), |unit| unit.0.clone())
    }

    /// The name of the oneshot unit that `OnFailure=` starts: an instance of selfheal's own
    /// template name, so systemd applies no drop-ins of the service's own family to it
    /// (`web@.service.d/` reaches `web@blue-self-heal.service`, `app-.service.d/` reaches
    /// `app-self-heal.service`; the prefix of `selfheal@…` is `selfheal`, which has no `-`).
    pub(crate) fn heal_unit_name(&self) -> String {
        format!("selfheal@{}.service", self.name)
    }

    /// The heal unit's first spelling, still installed for people and scripts that start it by
    /// name; `OnFailure=` no longer starts it.
    pub(crate) fn legacy_heal_unit_name(&self) -> String {
        format!("{}-self-heal.service", self.name)
    }

    /// The transient timer that starts the heal unit later (a timed retry): the heal unit's
    /// name with `.timer`, which systemd starts by default. `legacy`: its first spelling.
    pub(crate) fn retry_timer_name(&self, legacy: bool) -> String {
        let heal_unit = if legacy {
            self.legacy_heal_unit_name()
        } else {
            self.heal_unit_name()
        };
        format!("{}.timer", heal_unit.trim_end_matches(".service"))
    }
}

impl Config {
    /// `new_incident_after`, or its default.
    pub(crate) fn new_incident_after(&self) -> Duration {
        self.new_incident_after
            .map_or(DEFAULT_NEW_INCIDENT_AFTER, Duration::from)
    }

    /// Reads, parses and validates the config at `path`. The file is opened once: the
    /// ownership check and the read are of the same descriptor, a FIFO or device is refused
    /// without blocking, and the size is capped.
    pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
        let (bytes, metadata) =
            crate::host::bounded_read::read(path, crate::host::bounded_read::MAX_FILE_BYTES)
                .map_err(|cause| ConfigError::Read {
                    path: path.to_owned(),
                    cause,
                })?;
        refuse_if_writable_by_others(path, &metadata)?;
        let text = String::from_utf8(bytes).map_err(|err| ConfigError::Invalid {
            path: path.to_owned(),
            message: format!(
                "not UTF-8 text (invalid byte at offset {})",
                err.utf8_error().valid_up_to()
            ),
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text; `path` is only used in messages.
    ///
    /// The YAML parser runs under a budget (nesting, nodes, aliases, and scalar bytes counted
    /// after aliases are expanded): a small file whose anchor is referenced a thousand times
    /// is refused, not expanded into gigabytes.
    pub(crate) fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = serde_saphyr::from_str_with_options(text, yaml_options())
            .map_err(|err| syntax_error(path, text, &err))?;
        config.validate().map_err(|problem| {
            let at = Located::parse(text, yaml_options())
                .and_then(|located| located.position_of_any(&problem.keys));
            match at {
                Some(Position { line, column }) => ConfigError::Syntax {
                    path: path.to_owned(),
                    line,
                    column,
                    message: problem.message,
                },
                None => ConfigError::Invalid {
                    path: path.to_owned(),
                    message: problem.message,
                },
            }
        })?;
        Ok(config)
    }

    /// Finds a monitored service by its name, with or without `.service`.
    pub(crate) fn service(&self, name: &str) -> Option<&ServiceConfig> {
        let bare = name.strip_suffix(".service").unwrap_or(name);
        self.monitored_services.iter().find(|s| s.name == bare)
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

    fn validate(&self) -> Result<(), Problem> {
        if self.failure_threshold == 0 {
            return Err(Problem::at(
                &["failure_threshold".into()],
                "failure_threshold must be at least 1",
            ));
        }
        self.validate_windows()?;
        self.one_entry_per_unit()?;
        let mut seen = HashSet::new();
        let mut ports: Vec<(u16, &str)> = Vec::new();
        for (index, service) in self.monitored_services.iter().enumerate() {
            let at = format!("monitored_services[{index}] ({})", service.name);
            let key = |key: &str| vec![Seg::from("monitored_services"), index.into(), key.into()];
            if !seen.insert(service.name.as_str()) {
                return Err(Problem::at(
                    &key("name"),
                    format!("{at}: the name is used twice"),
                ));
            }
            // `web` and `web-self-heal` cannot both be monitored: web's heal unit would be
            // web-self-heal's own unit file.
            for heal_unit in [service.heal_unit_name(), service.legacy_heal_unit_name()] {
                if let Some(other) = self
                    .monitored_services
                    .iter()
                    .find(|other| other.unit_name() == heal_unit)
                {
                    return Err(Problem::at(
                        &key("name"),
                        format!(
                            "{at}: its heal unit {heal_unit} is {}'s unit: install would write one over the other; rename one of them",
                            other.name
                        ),
                    ));
                }
            }
            if let Some(port) = service.port {
                // Two services cannot both be healthy on one port: each would be "not
                // listening" or the other's holder.
                if let Some((_, other)) = ports.iter().find(|(p, _)| *p == port) {
                    return Err(Problem::at(
                        &key("port"),
                        format!("{at}: port {port} is also {other}'s"),
                    ));
                }
                ports.push((port, service.name.as_str()));
            }
            validate_service(service).map_err(|(keys, message)| Problem {
                keys: keys.iter().map(|name| key(name)).collect(),
                message: format!("{at}: {message}"),
            })?;
            probe::validate_service(service, self.probe.as_ref()).map_err(|(name, message)| {
                Problem {
                    keys: vec![
                        vec![
                            Seg::from("monitored_services"),
                            index.into(),
                            "probe".into(),
                            name.into(),
                        ],
                        key("probe"),
                    ],
                    message: format!("{at}: {message}"),
                }
            })?;
        }
        if let Some(probe) = &self.probe {
            probe::validate(probe).map_err(|(name, message)| Problem {
                keys: vec![
                    vec![Seg::from("probe"), name.into()],
                    vec![Seg::from("probe")],
                ],
                message,
            })?;
        }
        if let Some(path) = &self.metrics_file {
            require_absolute(path)
                .and_then(|()| writable_place(path))
                .map_err(|message| {
                    Problem::at(&["metrics_file".into()], format!("metrics_file: {message}"))
                })?;
        }
        self.validate_channels()?;
        if let Some(email) = &self.email {
            email::validate(email, self.owner.as_deref()).map_err(|(keys, message)| {
                let key: Vec<Seg> = std::iter::once("email")
                    .chain(keys.iter().copied())
                    .map(Seg::from)
                    .collect();
                Problem::at(&key, format!("email: {message}"))
            })?;
        }
        Ok(())
    }
}

impl Config {
    /// Two names for one unit: install would write its drop-in twice (the last wins) and the
    /// first would never be healed.
    fn one_entry_per_unit(&self) -> Result<(), Problem> {
        for (index, service) in self.monitored_services.iter().enumerate() {
            if let Some(other) = self.monitored_services[..index]
                .iter()
                .find(|other| other.unit_name() == service.unit_name())
                .filter(|other| other.name != service.name)
            {
                return Err(Problem::at(
                    &[Seg::from("monitored_services"), index.into(), "unit".into()],
                    format!(
                        "monitored_services[{index}] ({}): its unit {} is {}'s too: one entry per unit",
                        service.name,
                        service.unit_name(),
                        other.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Each entry of `notify:`.
    fn validate_channels(&self) -> Result<(), Problem> {
        for (index, channel) in self.notify.iter().enumerate() {
            // Each channel has a queue of its own, named after its URL (file): two entries for
            // one would share a queue and deliver each other's messages in the other's format.
            if let Some(first) = self.notify[..index]
                .iter()
                .position(|other| other.id() == channel.id())
            {
                return Err(Problem::at(
                    &[Seg::from("notify"), index.into()],
                    format!(
                        "notify[{index}]: the same URL as notify[{first}] ({}): one channel per URL (a second format needs a second URL file)",
                        channel.describe()
                    ),
                ));
            }
            notify::validate(channel).map_err(|(name, message)| {
                let kind = match channel {
                    notify::ChannelConfig::Webhook(_) => "webhook",
                    notify::ChannelConfig::Alertmanager(_) => "alertmanager",
                };
                Problem {
                    keys: vec![
                        vec![Seg::from("notify"), index.into(), kind.into(), name.into()],
                        vec![Seg::from("notify"), index.into()],
                    ],
                    message: format!("notify[{index}]: {message}"),
                }
            })?;
        }
        Ok(())
    }

    /// The top-level windows: each longer than 0, and a cascade's short enough to wait out.
    fn validate_windows(&self) -> Result<(), Problem> {
        if self.crash_loop.restarts == 0 || Duration::from(self.crash_loop.within).is_zero() {
            return Err(Problem::at(
                &["crash_loop".into()],
                "crash_loop needs restarts of at least 1 and a window longer than 0s (e.g. { restarts: 5, within: 10m })",
            ));
        }
        if Duration::from(self.threshold_window).is_zero() {
            return Err(Problem::at(
                &["threshold_window".into()],
                "threshold_window must be longer than 0s: loop protection counts the healing runs within it (e.g. 1h)",
            ));
        }
        // Bounded, so that every time computed from them stays a time (an unbounded one made
        // `status` abort on overflow and install write a timer that never fires).
        let bounded: [(&str, Option<Duration>, Duration); 4] = [
            (
                "threshold_window",
                Some(self.threshold_window.into()),
                LONGEST_WINDOW,
            ),
            (
                "new_incident_after",
                self.new_incident_after.map(Duration::from),
                LONGEST_WINDOW,
            ),
            (
                "retry_after",
                match self.retry_after {
                    Some(RetryAfter::After(after)) => Some(after.into()),
                    _ => None,
                },
                LONGEST_WINDOW,
            ),
            (
                "crash_loop",
                Some(self.crash_loop.within.into()),
                LONGEST_WINDOW,
            ),
        ];
        for (key, value, longest) in bounded {
            if let Some(value) = value
                && (value.is_zero() || value > longest)
            {
                return Err(Problem::at(
                    &[key.into()],
                    format!(
                        "{key} must be between 1s and {}, not {}",
                        HumanDuration(longest),
                        HumanDuration(value)
                    ),
                ));
            }
        }
        if let Some(cascade) = &self.cascade
            && !(Duration::from_secs(1)..=MAX_CASCADE_WINDOW)
                .contains(&Duration::from(cascade.within))
        {
            return Err(Problem::at(
                &["cascade".into(), "within".into()],
                format!(
                    "cascade.within must be between 1s and {}: reports wait for the window to close (e.g. 60s)",
                    HumanDuration(MAX_CASCADE_WINDOW)
                ),
            ));
        }
        Ok(())
    }
}

/// `new_incident_after` when the config does not say: as Kubernetes resets a container's
/// restart back-off after 10 minutes without a problem.
pub(crate) const DEFAULT_NEW_INCIDENT_AFTER: Duration = Duration::from_secs(10 * 60);

/// The longest window or wait a config may set (30 days).
const LONGEST_WINDOW: Duration = Duration::from_secs(30 * 86_400);

/// The longest `cascade.within`: a report held longer than this is late, not grouped.
const MAX_CASCADE_WINDOW: Duration = Duration::from_secs(600);

/// A file selfheal writes must be on a real file system: not under the kernel's /proc, /sys
/// or /dev, where a write fails or, worse, sets something.
fn writable_place(path: &Path) -> Result<(), String> {
    let kernel = ["/proc", "/sys", "/dev"]
        .iter()
        .find(|dir| path.starts_with(dir));
    match kernel {
        Some(dir) => Err(format!(
            "{} is under {dir}, which is the kernel's, not a file system a file can be written to (node_exporter's textfile directory, e.g. /var/lib/prometheus/node-exporter, is the usual place)",
            path.display()
        )),
        None => Ok(()),
    }
}

/// A semantic problem of a loaded config: the key it is about (placed in the file for the
/// message) and what is wrong, in words that name the key.
#[derive(Debug)]
struct Problem {
    /// Where to point, best first: the first key the file has.
    keys: Vec<Vec<Seg>>,
    message: String,
}

impl Problem {
    fn at(key: &[Seg], message: impl Into<String>) -> Problem {
        Problem {
            keys: vec![key.to_vec()],
            message: message.into(),
        }
    }
}

/// A service unit's name as the config gives it (`web.service`), checked once, when the
/// config is loaded: it ends in `.service` and its stem is a safe name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct UnitName(String);

impl TryFrom<String> for UnitName {
    type Error = String;
    fn try_from(unit: String) -> Result<UnitName, String> {
        match unit.strip_suffix(".service") {
            Some(stem) if is_valid_service_name(stem) => Ok(UnitName(unit)),
            Some(_) => Err(format!("unit {unit:?} is not a valid unit name")),
            None => Err(format!("unit {unit:?} must end in .service")),
        }
    }
}

impl From<UnitName> for String {
    fn from(unit: UnitName) -> String {
        unit.0
    }
}

/// A port as an operator writes it: any integer, refused in words when it is not 1–65535.
fn tcp_port<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u16>, D::Error> {
    let Some(number) = Option::<i64>::deserialize(deserializer)? else {
        return Ok(None);
    };
    u16::try_from(number)
        .ok()
        .filter(|port| *port != 0)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("port must be 1–65535, not {number}")))
}

/// True when `name` is safe to use as (part of) a unit name and a file name.
pub(crate) fn is_valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':'))
}

/// Keys of a service entry a problem is about: the first that the entry has is where the
/// message points.
type Keys = [&'static str; 2];

/// Checks one service; an error names the keys of the service it is about.
fn validate_service(service: &ServiceConfig) -> Result<(), (Keys, String)> {
    if let Some(bare) = service.name.strip_suffix(".service") {
        return Err((
            ["name"; 2],
            format!("name is the service's name without .service: write `name: {bare}`"),
        ));
    }
    if !is_valid_service_name(&service.name) {
        return Err((["name"; 2], "name may only contain letters, digits and - _ . @ : (and must start with a letter or digit)".into()));
    }
    if service.healing_strategies.is_empty() {
        return Err((
            ["healing_strategies"; 2],
            format!(
                "healing_strategies is empty; choose from: {}",
                StrategyName::ALL
                    .iter()
                    .map(|name| name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let mut seen = HashSet::new();
    for strategy in &service.healing_strategies {
        if !seen.insert(strategy) {
            return Err((
                ["healing_strategies"; 2],
                format!("healing_strategies lists {strategy} twice"),
            ));
        }
    }
    // A strategy's settings live under the key of its own name; a strategy listed without
    // them is placed at that list.
    strategies::validate(service).map_err(|(strategy, message)| {
        let placed = [strategy.as_str(), "healing_strategies"];
        (placed, message)
    })?;
    if let Some(runbook) = &service.runbook {
        notify::check_url(runbook)
            .map_err(|why| (["runbook"; 2], format!("runbook {runbook:?}: {why}")))?;
    }
    if let Some(address) = service.to.iter().find(|to| !email::is_address(to)) {
        return Err((["to"; 2], format!("{address:?} is not an email address")));
    }
    if service.verify_timeout.0.is_zero() {
        return Err((
            ["verify_timeout"; 2],
            "verify_timeout must be longer than 0".into(),
        ));
    }
    if service.stable_for >= service.verify_timeout {
        return Err((
            ["stable_for"; 2],
            format!(
                "stable_for ({}) must be shorter than verify_timeout ({})",
                service.stable_for, service.verify_timeout
            ),
        ));
    }
    Ok(())
}

/// A configured path must be absolute and plain: no `..` for a root process to be led by.
pub(crate) fn require_absolute(path: &Path) -> Result<(), String> {
    let plain = path
        .components()
        .all(|c| !matches!(c, std::path::Component::ParentDir));
    if path.is_absolute() && plain {
        Ok(())
    } else {
        Err(format!(
            "{} must be an absolute path without `..`",
            path.display()
        ))
    }
}

/// How deeply a config may nest (the deepest real one nests 5 levels).
const YAML_DEPTH: usize = 32;

/// The YAML parser's limits: deep enough for any real config, far below a stack or CPU
/// problem. Scalar bytes are counted as aliases expand them.
fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = YAML_DEPTH;
    budget.flow_nesting_limit = YAML_DEPTH;
    budget.max_events = 500_000;
    budget.max_nodes = 250_000;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_documents = 1;
    budget.max_total_scalar_bytes =
        usize::try_from(crate::host::bounded_read::MAX_FILE_BYTES).unwrap_or(usize::MAX);
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = 100_000;
    serde_saphyr::options! {
        budget: Some(budget),
        alias_limits: alias_limits,
        with_snippet: false,
    }
}

fn syntax_error(path: &Path, text: &str, err: &serde_saphyr::Error) -> ConfigError {
    let mut message = err.without_snippet().to_string();
    if message.contains("budget breached") || message.contains("recursion limit") {
        let _ = write!(
            message,
            " (selfheal refuses configs nested deeper than {YAML_DEPTH} levels or larger than {} bytes of text once aliases are expanded)",
            crate::host::bounded_read::MAX_FILE_BYTES
        );
    }
    match err.location() {
        Some(location) => {
            let at = Position {
                line: usize::try_from(location.line()).unwrap_or(0),
                column: usize::try_from(location.column()).unwrap_or(0),
            };
            // The prefix already says where; drop the parser's own " at line L, column C".
            let mut message = message.replace(
                &format!(" at line {}, column {}", location.line(), location.column()),
                "",
            );
            // A value of the wrong type: say whose value it is ("verify_timeout: invalid
            // duration …"), as the parser only knows the position.
            if let Some(key) = Located::parse(text, yaml_options())
                .and_then(|located| located.path_at(at))
                .map(|key| locate::dotted(&key))
            {
                message = format!("{key}: {message}");
            }
            ConfigError::Syntax {
                path: path.to_owned(),
                line: at.line,
                column: at.column,
                message,
            }
        }
        None => ConfigError::Invalid {
            path: path.to_owned(),
            message,
        },
    }
}

/// Refuses a config that someone other than root could have written, when we run as root.
/// `metadata` is that of the descriptor the config was read from.
fn refuse_if_writable_by_others(
    path: &Path,
    metadata: &std::fs::Metadata,
) -> Result<(), ConfigError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let insecure = |why: String| ConfigError::Insecure {
        path: path.to_owned(),
        why,
    };
    if metadata.uid() != 0 {
        return Err(insecure(format!("owned by uid {}", metadata.uid())));
    }
    if metadata.mode() & 0o022 != 0 {
        return Err(insecure(format!(
            "writable by group or others (mode {:04o})",
            metadata.mode() & 0o7777
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
