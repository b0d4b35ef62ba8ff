//! One entry of `monitored_services:`: the service model, its defaults, and the checks of one
//! entry on its own.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::health_url::HealthUrl;
use super::probe::ServiceProbe;
use super::strategies::{
    ConfigValidationConfig, DatabaseCheckConfig, EnvironmentCheckConfig, PortConflictConfig,
    StrategyName,
};
use super::units::{UnitName, is_valid_service_name};
use super::{email, notify, strategies};
use crate::ui::duration::HumanDuration;

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
    /// Its own maintenance windows (beside the top-level ones).
    #[serde(default)]
    pub maintenance: Vec<super::maintenance::MaintenanceWindow>,
    /// Its notification policy over the top-level `notify_policy:`.
    pub notify_policy: Option<super::notify_policy::PolicyOverride>,
    /// What is kept of it before a restart.
    #[serde(default)]
    pub evidence: super::evidence::EvidenceConfig,
}

impl ServiceConfig {
    /// An unlisted unit's entry (`all_services:`): its name, these strategies (none: report
    /// only), and the defaults of everything else.
    pub(crate) fn unlisted(name: &str, healing_strategies: Vec<StrategyName>) -> ServiceConfig {
        ServiceConfig {
            name: name.to_owned(),
            unit: None,
            port: None,
            domain: None,
            critical: false,
            runbook: None,
            to: Vec::new(),
            health_url: None,
            healing_strategies,
            verify_timeout: default_verify_timeout(),
            stable_for: default_stable_for(),
            config_validation: None,
            database_check: None,
            environment_check: None,
            port_conflict: None,
            probe: None,
            maintenance: Vec::new(),
            notify_policy: None,
            evidence: super::evidence::EvidenceConfig::default(),
        }
    }
}

pub(super) fn default_strategies() -> Vec<StrategyName> {
    vec![StrategyName::ServiceRestart]
}

pub(super) fn default_verify_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

pub(super) fn default_stable_for() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}

/// A port as an operator writes it: any integer, refused in words when it is not 1–65535.
pub(super) fn tcp_port<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u16>, D::Error> {
    let Some(number) = Option::<i64>::deserialize(deserializer)? else {
        return Ok(None);
    };
    u16::try_from(number)
        .ok()
        .filter(|port| *port != 0)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("port must be 1–65535, not {number}")))
}

/// Keys of a service entry a problem is about: the first that the entry has is where the
/// message points.
pub(super) type Keys = [&'static str; 2];

/// Checks one service; an error names the keys of the service it is about.
pub(super) fn validate_service(service: &ServiceConfig) -> Result<(), (Keys, String)> {
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
    if service.evidence.wait.0 > Duration::from_secs(60) {
        return Err((
            ["evidence"; 2],
            format!(
                "evidence.wait ({}) is at most 1min: the service is down while it waits",
                service.evidence.wait
            ),
        ));
    }
    Ok(())
}
