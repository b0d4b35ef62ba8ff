//! The strategies' names and settings, as the config spells them, and the checks of those
//! settings at load time. What each strategy does with them is in `heal/strategy/`: the
//! config is the floor every layer reads, so it names the strategies without knowing them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ServiceConfig, require_absolute};
use crate::ui::duration::HumanDuration;

/// The healing strategies selfheal knows, in the spelling the config uses. Each has one
/// implementation in `heal/strategy/` (its registry matches on every variant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StrategyName {
    ServiceRestart,
    PortConflict,
    ConfigValidation,
    DatabaseCheck,
    EnvironmentCheck,
}

impl StrategyName {
    /// Every strategy, in the order the seed documents them.
    pub(crate) const ALL: &[StrategyName] = &[
        StrategyName::ServiceRestart,
        StrategyName::PortConflict,
        StrategyName::ConfigValidation,
        StrategyName::DatabaseCheck,
        StrategyName::EnvironmentCheck,
    ];

    /// The config spelling.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StrategyName::ServiceRestart => "service_restart",
            StrategyName::PortConflict => "port_conflict",
            StrategyName::ConfigValidation => "config_validation",
            StrategyName::DatabaseCheck => "database_check",
            StrategyName::EnvironmentCheck => "environment_check",
        }
    }
}

impl fmt::Display for StrategyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every strategy's check of `service`'s settings; an error names the strategy whose settings
/// (under the key of its name) are wrong or missing. `listed`: the service's
/// `healing_strategies` names it, so its settings must be there.
pub(crate) fn validate(service: &ServiceConfig) -> Result<(), (StrategyName, String)> {
    StrategyName::ALL.iter().try_for_each(|name| {
        let listed = service.healing_strategies.contains(name);
        match name {
            StrategyName::ServiceRestart => Ok(()),
            StrategyName::PortConflict => port_conflict(service, listed),
            StrategyName::ConfigValidation => config_validation(service, listed),
            StrategyName::DatabaseCheck => database_check(service, listed),
            StrategyName::EnvironmentCheck => environment_check(service, listed),
        }
        .map_err(|message| (*name, message))
    })
}

/// `config_validation`: a validator command.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigValidationConfig {
    /// argv of the validator; never run through a shell.
    pub command: Vec<String>,
    /// How long the validator may run.
    #[serde(default = "default_validation_timeout")]
    pub timeout: HumanDuration,
}

fn default_validation_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

fn config_validation(service: &ServiceConfig, listed: bool) -> Result<(), String> {
    let command = service
        .config_validation
        .as_ref()
        .map(|c| c.command.as_slice());
    if listed && command.is_none_or(<[String]>::is_empty) {
        return Err("config_validation needs `config_validation: { command: [...] }`".into());
    }
    Ok(())
}

/// `database_check`: files and symlinks the service depends on.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DatabaseCheckConfig {
    /// Files that must exist, with their expected ownership and mode.
    #[serde(default)]
    pub files: Vec<FileExpectation>,
    /// Symlinks that must exist and point at `target`.
    #[serde(default)]
    pub symlinks: Vec<SymlinkExpectation>,
}

/// A file that must exist.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileExpectation {
    /// Absolute path.
    pub path: PathBuf,
    /// Expected owner (user name).
    pub owner: Option<String>,
    /// Expected group (group name).
    pub group: Option<String>,
    /// Expected mode, octal ("0640").
    pub mode: Option<FileMode>,
}

/// A symlink that must exist.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SymlinkExpectation {
    /// Absolute path of the link.
    pub path: PathBuf,
    /// What it must point to.
    pub target: PathBuf,
}

/// A file mode as the config writes it, octal: `"0640"` (a bare `0640` is read the same way).
/// Parsed once, when the config is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileMode(pub u32);

impl FileMode {
    pub(crate) fn parse(text: &str) -> Result<FileMode, String> {
        let mode = u32::from_str_radix(text, 8)
            .ok()
            .filter(|mode| *mode <= 0o7777)
            .ok_or_else(|| format!("mode {text:?} is not an octal mode like \"0640\""))?;
        // Data files are never set-id: root setting that bit on a file a service user wrote
        // (and may still hold open) would hand out root.
        if mode & 0o6000 != 0 {
            return Err(format!(
                "mode {text:?} sets setuid/setgid bits; selfheal never sets them on data files"
            ));
        }
        Ok(FileMode(mode))
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Octal;
        impl serde::de::Visitor<'_> for Octal {
            type Value = FileMode;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an octal mode like \"0640\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<FileMode, E> {
                FileMode::parse(text).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, digits: u64) -> Result<FileMode, E> {
                FileMode::parse(&digits.to_string()).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Octal)
    }
}

impl Serialize for FileMode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{:04o}", self.0))
    }
}

fn database_check(service: &ServiceConfig, listed: bool) -> Result<(), String> {
    let Some(settings) = &service.database_check else {
        return if listed {
            Err("database_check needs `database_check: { files: [...], symlinks: [...] }`".into())
        } else {
            Ok(())
        };
    };
    let paths = settings.files.iter().map(|f| &f.path);
    paths
        .chain(settings.symlinks.iter().map(|l| &l.path))
        .try_for_each(|path| require_absolute(path))
}

/// `environment_check`: the env file and its required keys.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnvironmentCheckConfig {
    /// The env file; defaults to the unit's `EnvironmentFile=`.
    pub file: Option<PathBuf>,
    /// Keys that must be present and non-empty.
    #[serde(default)]
    pub required: Vec<String>,
}

fn environment_check(service: &ServiceConfig, _listed: bool) -> Result<(), String> {
    match service
        .environment_check
        .as_ref()
        .and_then(|env| env.file.as_ref())
    {
        Some(file) => require_absolute(file),
        None => Ok(()),
    }
}

/// `port_conflict` settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PortConflictConfig {
    /// Allow killing a holder that is not this service's own process.
    #[serde(default)]
    pub kill_foreign: bool,
    /// How long a SIGTERMed holder gets before SIGKILL.
    #[serde(default = "default_kill_grace")]
    pub grace: HumanDuration,
}

/// Without a `port_conflict:` section the serde defaults apply (a derived `Default` would
/// give a grace of zero: SIGKILL right after SIGTERM).
impl Default for PortConflictConfig {
    fn default() -> PortConflictConfig {
        PortConflictConfig {
            kill_foreign: false,
            grace: default_kill_grace(),
        }
    }
}

fn default_kill_grace() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

fn port_conflict(service: &ServiceConfig, listed: bool) -> Result<(), String> {
    if listed && service.port.is_none() {
        return Err("port_conflict needs `port`".into());
    }
    Ok(())
}
