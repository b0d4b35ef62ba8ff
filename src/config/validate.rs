//! The checks of a whole config, once, at load time: each entry, the rules between entries
//! (one entry per unit, one channel per URL), the windows' bounds, the places it writes to.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use super::locate::Seg;
use super::service::validate_service;
use super::{Config, RetryAfter, email, notify, probe};
use crate::ui::duration::HumanDuration;

impl Config {
    pub(super) fn validate(&self) -> Result<(), Problem> {
        if self.failure_threshold == 0 {
            return Err(Problem::at(
                &["failure_threshold".into()],
                "failure_threshold must be at least 1",
            ));
        }
        self.validate_windows()?;
        self.one_entry_per_unit()?;
        let mut seen = HashSet::new();
        let mut ports: std::collections::HashMap<u16, &str> = std::collections::HashMap::new();
        for (index, service) in self.monitored_services.iter().enumerate() {
            let at = format!("monitored_services[{index}] ({})", service.name);
            let key = |key: &str| vec![Seg::from("monitored_services"), index.into(), key.into()];
            if !seen.insert(service.name.as_str()) {
                return Err(Problem::at(
                    &key("name"),
                    format!("{at}: the name is used twice"),
                ));
            }
            if let Some(port) = service.port {
                // Two services cannot both be healthy on one port: each would be "not
                // listening" or the other's holder.
                if let Some(other) = ports.get(&port) {
                    return Err(Problem::at(
                        &key("port"),
                        format!("{at}: port {port} is also {other}'s"),
                    ));
                }
                ports.insert(port, service.name.as_str());
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
        if let Some(all) = &self.all_services {
            validate_all_services(all)?;
        }
        self.validate_maintenance()?;
        self.validate_notify_policy()?;
        if let Some(probe) = &self.probe {
            probe::validate(probe).map_err(|(name, message)| Problem {
                keys: vec![
                    vec![Seg::from("probe"), name.into()],
                    vec![Seg::from("probe")],
                ],
                message,
            })?;
        }
        if let Some(receiver) = &self.receiver {
            super::receiver::validate(receiver).map_err(|(name, message)| Problem {
                keys: vec![
                    vec![Seg::from("receiver"), name.into()],
                    vec![Seg::from("receiver")],
                ],
                message: format!("receiver: {message}"),
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

    /// Two names for one unit: install would write its drop-in twice (the last wins) and the
    /// first would never be healed.
    /// Each service's notification policy (the top-level one with its settings over it).
    fn validate_notify_policy(&self) -> Result<(), Problem> {
        let policies = std::iter::once((vec![Seg::from("notify_policy")], self.notify_policy))
            .chain(
                self.monitored_services
                    .iter()
                    .enumerate()
                    .map(|(index, service)| {
                        (
                            vec![
                                Seg::from("monitored_services"),
                                index.into(),
                                "notify_policy".into(),
                            ],
                            self.notify_policy.with(service.notify_policy.as_ref()),
                        )
                    }),
            );
        for (key, policy) in policies {
            if Duration::from(policy.min_interval) > super::notify_policy::LONGEST_INTERVAL {
                let at = super::locate::dotted(&key);
                let mut keys = vec![key.clone(), key];
                keys[0].push("min_interval".into());
                return Err(Problem {
                    keys,
                    message: format!(
                        "{at}: min_interval must be at most 1d (got {}): past it, folding reports is hiding them",
                        policy.min_interval
                    ),
                });
            }
        }
        Ok(())
    }

    /// Each maintenance window on its own (systemd's parser reads the events in `check`).
    fn validate_maintenance(&self) -> Result<(), Problem> {
        let windows = self
            .maintenance
            .iter()
            .enumerate()
            .map(|(at, window)| (vec![Seg::from("maintenance"), at.into()], window));
        let services_windows =
            self.monitored_services
                .iter()
                .enumerate()
                .flat_map(|(index, service)| {
                    service
                        .maintenance
                        .iter()
                        .enumerate()
                        .map(move |(at, window)| {
                            (
                                vec![
                                    Seg::from("monitored_services"),
                                    index.into(),
                                    "maintenance".into(),
                                    at.into(),
                                ],
                                window,
                            )
                        })
                });
        for (key, window) in windows.chain(services_windows) {
            if let Some((field, problem)) = window.problem() {
                let at = super::locate::dotted(&key);
                let mut keys = vec![key.clone(), key];
                keys[0].push(field.into());
                return Err(Problem {
                    keys,
                    message: format!("{at}: {problem}"),
                });
            }
        }
        Ok(())
    }

    /// And `web` and `web-self-heal` cannot both be monitored: web's heal unit would be
    /// web-self-heal's own unit file. (Each entry's unit is named once: at 300 entries, naming
    /// them again for each pair was a third of a probe round's CPU.)
    fn one_entry_per_unit(&self) -> Result<(), Problem> {
        let units: Vec<String> = self
            .monitored_services
            .iter()
            .map(super::ServiceConfig::unit_name)
            .collect();
        let mut first_of: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
        for (index, (service, unit)) in self.monitored_services.iter().zip(&units).enumerate() {
            let other = *first_of
                .entry(unit.as_str())
                .or_insert(service.name.as_str());
            if other != service.name {
                return Err(Problem::at(
                    &[Seg::from("monitored_services"), index.into(), "unit".into()],
                    format!(
                        "monitored_services[{index}] ({}): its unit {unit} is {other}'s too: one entry per unit",
                        service.name,
                    ),
                ));
            }
        }
        for (index, service) in self.monitored_services.iter().enumerate() {
            for heal_unit in [service.heal_unit_name(), service.legacy_heal_unit_name()] {
                if let Some(other) = first_of.get(heal_unit.as_str()) {
                    return Err(Problem::at(
                        &[Seg::from("monitored_services"), index.into(), "name".into()],
                        format!(
                            "monitored_services[{index}] ({}): its heal unit {heal_unit} is {other}'s unit: install would write one over the other; rename one of them",
                            service.name
                        ),
                    ));
                }
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

/// The longest window or wait a config may set (30 days).
pub(super) const LONGEST_WINDOW: Duration = Duration::from_secs(30 * 86_400);

/// The longest `cascade.within`: a report held longer than this is late, not grouped.
pub(super) const MAX_CASCADE_WINDOW: Duration = Duration::from_secs(600);

/// A file selfheal writes must be on a real file system: not under the kernel's /proc, /sys
/// or /dev, where a write fails or, worse, sets something.
pub(super) fn writable_place(path: &Path) -> Result<(), String> {
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
pub(super) struct Problem {
    /// Where to point, best first: the first key the file has.
    pub(super) keys: Vec<Vec<Seg>>,
    pub(super) message: String,
}

impl Problem {
    fn at(key: &[Seg], message: impl Into<String>) -> Problem {
        Problem {
            keys: vec![key.to_vec()],
            message: message.into(),
        }
    }
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

/// `all_services:`: its strategies must work without settings of their own (an unlisted unit
/// has none), each listed once.
fn validate_all_services(all: &super::all_services::AllServicesConfig) -> Result<(), Problem> {
    let at = |message: String| {
        Problem::at(
            &[Seg::from("all_services"), "healing_strategies".into()],
            format!("all_services: {message}"),
        )
    };
    let mut seen = HashSet::new();
    if let Some(twice) = all.healing_strategies.iter().find(|s| !seen.insert(**s)) {
        return Err(at(format!("healing_strategies lists {twice} twice")));
    }
    super::strategies::validate(&all.entry("all_services")).map_err(|(strategy, message)| {
        at(format!(
            "{strategy} cannot run on an unlisted unit, which has no settings of its own ({message}); list the service in monitored_services to use it"
        ))
    })
}
