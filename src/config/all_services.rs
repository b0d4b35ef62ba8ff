//! `all_services:`: every service unit on the host that `monitored_services` does not list,
//! armed by one top-level drop-in, and what a run of such a unit is (its entry, made from the
//! section); the `exclude:` globs and selfheal's own units, which are never armed.

use serde::{Deserialize, Serialize};

use super::ServiceConfig;
use super::strategies::StrategyName;

/// `all_services:` (`{}` takes the defaults).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AllServicesConfig {
    /// What an unlisted unit's run tries; none (the default): diagnosis and report only.
    #[serde(default)]
    pub healing_strategies: Vec<StrategyName>,
    /// Unit-name globs (`*`, `?`) never armed, e.g. `getty@*.service`.
    #[serde(default)]
    pub exclude: Vec<UnitGlob>,
}

/// `all_services:` with no value means the defaults, as `{}` does.
pub(super) fn on_with_defaults<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<AllServicesConfig>, D::Error> {
    Ok(Some(
        Option::<AllServicesConfig>::deserialize(deserializer)?.unwrap_or_default(),
    ))
}

impl AllServicesConfig {
    /// True when `unit` is excluded by a glob or is one of selfheal's own units.
    pub(crate) fn excludes(&self, unit: &str) -> bool {
        is_selfheal_unit(unit) || self.exclude.iter().any(|glob| glob.matches(unit))
    }

    /// The entry an unlisted unit's run uses: `{name}` with the section's strategies and the
    /// defaults of everything else.
    pub(crate) fn entry(&self, name: &str) -> ServiceConfig {
        ServiceConfig::unlisted(name, self.healing_strategies.clone())
    }
}

/// What `all_services:` does with the service units systemd knows.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Coverage<'a> {
    /// Armed by the top-level drop-in: a failure starts `selfheal@<unit>`.
    pub armed: Vec<&'a str>,
    /// Kept off by an `exclude:` glob (selfheal's own units are not counted).
    pub excluded: Vec<&'a str>,
    /// Listed in `monitored_services`: armed by a drop-in of their own.
    pub listed: Vec<&'a str>,
}

impl super::Config {
    /// How `all_services:` covers `units` (names of service units); `None` when it is off.
    pub(crate) fn coverage<'a>(&self, units: &'a [String]) -> Option<Coverage<'a>> {
        let all = self.all_services.as_ref()?;
        let listed: Vec<String> = self
            .monitored_services
            .iter()
            .map(ServiceConfig::unit_name)
            .collect();
        let mut coverage = Coverage::default();
        for unit in units {
            if listed.contains(unit) {
                coverage.listed.push(unit);
            } else if is_selfheal_unit(unit) {
            } else if all.excludes(unit) {
                coverage.excluded.push(unit);
            } else {
                coverage.armed.push(unit);
            }
        }
        Some(coverage)
    }
}

/// selfheal's own units: the heal units (both names), flush, watch, probe, digest, a
/// cascade's delivery, the receiver. A heal unit that fails must start nothing.
pub(crate) fn is_selfheal_unit(unit: &str) -> bool {
    unit.starts_with("selfheal@")
        || unit.starts_with("selfheal-")
        || unit.ends_with("-self-heal.service")
}

/// A unit-name glob of `exclude:`: `*` any run of characters, `?` one; it names service
/// units (ends in `.service` or `*`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct UnitGlob(String);

impl TryFrom<String> for UnitGlob {
    type Error = String;
    fn try_from(glob: String) -> Result<UnitGlob, String> {
        let allowed = |c: char| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':' | '\\' | '*' | '?')
        };
        if glob.is_empty() || !glob.chars().all(allowed) {
            return Err(format!(
                "exclude glob {glob:?} may only contain the characters of unit names and * ?"
            ));
        }
        if !(glob.ends_with(".service") || glob.ends_with('*')) {
            return Err(format!(
                "exclude glob {glob:?} must name service units: end it in .service (e.g. {glob}.service) or *"
            ));
        }
        Ok(UnitGlob(glob))
    }
}

impl From<UnitGlob> for String {
    fn from(glob: UnitGlob) -> String {
        glob.0
    }
}

impl UnitGlob {
    /// True when `unit` matches the whole glob.
    pub(crate) fn matches(&self, unit: &str) -> bool {
        matches_glob(self.0.as_bytes(), unit.as_bytes())
    }

    /// The drop-in directory that reaches every unit the glob names, when one does: a
    /// template's (`getty@*.service`: `getty@.service.d`) or a prefix's (`backup-*.service`:
    /// `backup-.service.d`).
    pub(crate) fn family_drop_in_dir(&self) -> Option<String> {
        let family = self.0.strip_suffix("*.service")?;
        (family.ends_with('@') || family.ends_with('-'))
            .then_some(family)
            .filter(|family| !family.contains(['*', '?']))
            .map(|family| format!("{family}.service.d"))
    }
}

/// Glob matching with `*` and `?`, iterative with one backtrack point (linear in practice).
fn matches_glob(glob: &[u8], text: &[u8]) -> bool {
    let (mut g, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match glob.get(g) {
            Some(b'*') => {
                star = Some((g, t));
                g += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                g += 1;
                t += 1;
            }
            _ => match star {
                Some((star_g, star_t)) => {
                    g = star_g + 1;
                    t = star_t + 1;
                    star = Some((star_g, star_t + 1));
                }
                None => return false,
            },
        }
    }
    glob[g..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(text: &str) -> UnitGlob {
        UnitGlob::try_from(text.to_owned()).unwrap()
    }

    #[test]
    fn globs_match_whole_unit_names() {
        assert!(glob("getty@*.service").matches("getty@tty1.service"));
        assert!(!glob("getty@*.service").matches("serial-getty@ttyS0.service"));
        assert!(glob("*getty@*.service").matches("serial-getty@ttyS0.service"));
        assert!(glob("systemd-*").matches("systemd-journald.service"));
        assert!(glob("a?c.service").matches("abc.service"));
        assert!(!glob("a?c.service").matches("ac.service"));
        assert!(!glob("web.service").matches("web.service.bak"));
        assert!(glob("*").matches("anything.service"));
    }

    #[test]
    fn a_glob_names_service_units_with_unit_name_characters() {
        let err = UnitGlob::try_from("getty@*".to_owned()).map(|_| ());
        assert_eq!(err, Ok(()));
        let err = UnitGlob::try_from("nginx".to_owned()).unwrap_err();
        assert!(
            err.contains("end it in .service (e.g. nginx.service)"),
            "{err}"
        );
        let err = UnitGlob::try_from("a b.service".to_owned()).unwrap_err();
        assert!(err.contains("characters of unit names"), "{err}");
    }

    #[test]
    fn a_template_or_prefix_glob_has_a_family_drop_in_directory() {
        let dir = |text: &str| glob(text).family_drop_in_dir();
        assert_eq!(dir("getty@*.service").as_deref(), Some("getty@.service.d"));
        assert_eq!(
            dir("backup-*.service").as_deref(),
            Some("backup-.service.d")
        );
        assert_eq!(dir("backup*.service"), None);
        assert_eq!(dir("web.service"), None);
    }

    fn parse(text: &str) -> Result<crate::config::Config, String> {
        crate::config::Config::parse(text, std::path::Path::new("/etc/selfheal/selfheal.yml"))
            .map_err(|err| err.to_string())
    }

    #[test]
    fn the_section_is_on_with_its_defaults_when_written_bare_or_empty() {
        for text in ["all_services:\n", "all_services: {}\n"] {
            let config = parse(text).unwrap();
            let all = config.all_services.as_ref().unwrap();
            assert!(all.healing_strategies.is_empty() && all.exclude.is_empty());
        }
        assert!(
            parse("monitored_services: []\n")
                .unwrap()
                .all_services
                .is_none()
        );
    }

    #[test]
    fn an_unlisted_units_entry_is_the_sections_unless_listed_or_excluded() {
        let config = parse(
            "all_services: {healing_strategies: [service_restart], exclude: ['cron*']}\nmonitored_services:\n  - name: web\n    unit: nginx.service\n",
        )
        .unwrap();
        let entry = config.entry("redis-server.service").unwrap();
        assert_eq!(entry.name, "redis-server");
        assert_eq!(entry.healing_strategies, [StrategyName::ServiceRestart]);
        assert!(config.is_unlisted("redis-server"));
        assert_eq!(config.entry("web").unwrap().unit_name(), "nginx.service");
        assert!(!config.is_unlisted("web"));
        // The listed service's unit, an excluded unit, selfheal's own: no entry of the section.
        assert!(config.entry("nginx").is_none());
        assert!(config.entry("cron").is_none() && config.is_excluded("cron"));
        assert!(config.entry("selfheal-flush").is_none());
    }

    #[test]
    fn bad_sections_are_refused_in_words_at_their_place() {
        let err = parse("all_services:\n  exclude: [nginx]\n").unwrap_err();
        assert!(
            err.contains("end it in .service (e.g. nginx.service)"),
            "{err}"
        );
        let err = parse("all_services:\n  heal: yes\n").unwrap_err();
        assert!(
            err.contains("healing_strategies") && err.contains("exclude"),
            "{err}"
        );
        let err = parse("all_services:\n  healing_strategies: [config_validation]\n").unwrap_err();
        assert!(
            err.starts_with(
                "/etc/selfheal/selfheal.yml:2:23: all_services: config_validation cannot run on an unlisted unit"
            ),
            "{err}"
        );
        let err = parse("all_services:\n  healing_strategies: [restart]\n").unwrap_err();
        assert!(err.contains("service_restart"), "{err}");
    }

    #[test]
    fn selfheal_never_arms_its_own_units() {
        let all = AllServicesConfig::default();
        for own in [
            "selfheal@web.service",
            "selfheal@getty@tty1.service",
            "selfheal-flush.service",
            "selfheal-receiver.service",
            "web-self-heal.service",
        ] {
            assert!(all.excludes(own), "{own}");
        }
        assert!(!all.excludes("nginx.service"));
    }
}
