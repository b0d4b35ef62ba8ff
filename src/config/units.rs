//! Every unit name selfheal uses: a monitored service's own unit, its heal unit (and that
//! unit's first name), its retry timer; selfheal's own units and timers (flush, watch, probe,
//! digest, a cascade's delivery); and the checked `UnitName` a config may give.

use serde::{Deserialize, Serialize};

use super::ServiceConfig;

/// The oneshot unit that delivers the outbox (installed with a timer; a cascade's delivery
/// starts it), and that timer (every 5 min).
pub(crate) const FLUSH_SERVICE: &str = "selfheal-flush.service";
pub(crate) const FLUSH_TIMER: &str = "selfheal-flush.timer";

/// `selfheal watch` every 30 s (the restarts systemd makes by itself), on every host.
pub(crate) const WATCH_SERVICE: &str = "selfheal-watch.service";
pub(crate) const WATCH_TIMER: &str = "selfheal-watch.timer";

/// The probe round's units, written only with a top-level `probe:`; the timer runs it every
/// `probe.interval`.
pub(crate) const PROBE_SERVICE: &str = "selfheal-probe.service";
pub(crate) const PROBE_TIMER: &str = "selfheal-probe.timer";

/// Alertmanager's webhook receiver, written only with `receiver:`: the socket systemd listens
/// on, and the service it starts at the first connection.
pub(crate) const RECEIVER_SOCKET: &str = "selfheal-receiver.socket";
pub(crate) const RECEIVER_SERVICE: &str = "selfheal-receiver.service";

/// The daily digest's units, written only with `digest: daily`.
pub(crate) const DIGEST_SERVICE: &str = "selfheal-digest.service";
pub(crate) const DIGEST_TIMER: &str = "selfheal-digest.timer";

/// The transient timer that delivers a cascade's one mail once its window closes (`id`: the
/// burst's).
pub(crate) fn cascade_timer_name(id: &str) -> String {
    format!("selfheal-cascade-{id}.timer")
}

/// The first name of `service`'s heal unit (`web-self-heal.service`).
pub(crate) fn legacy_heal_unit_name(service: &str) -> String {
    format!("{service}-self-heal.service")
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
        legacy_heal_unit_name(&self.name)
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

/// The template of the heal units of the units `all_services:` covers (`selfheal@foo.service`
/// runs `selfheal run foo`); a monitored service's heal unit is a file of its own.
pub(crate) const HEAL_TEMPLATE: &str = "selfheal@.service";

/// The top-level drop-in (`service.d/`) that arms every service unit with `all_services:`, and
/// the name of the empty drop-ins that keep it off a unit (the most specific file of a name
/// wins). It sorts after the usual `50-…` and `override.conf` is a person's to win.
pub(crate) const ALL_SERVICES_DROP_IN: &str = "99-selfheal-all.conf";
