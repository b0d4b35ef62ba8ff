//! `probe:`, top-level (it turns probing on and sets the defaults) and per service (overrides,
//! or `probe: false`), and the settings one service is probed with.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Config, ServiceConfig};
use crate::ui::duration::HumanDuration;

/// The top-level `probe:` section. Defaults: a round every 10 s, 2 s per check, 3 failed
/// rounds in a row, no verdict in the first 30 s after a start (Kubernetes' liveness probe
/// is 10 s / 1 s / 3; Docker's HEALTHCHECK 30 s / 30 s / 3; Monit's cycle 30 s).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProbeConfig {
    /// One round every interval (`selfheal-probe.timer`).
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// How long one check may take.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Consecutive failed rounds before the heal unit is started.
    #[serde(default = "default_failures")]
    pub failures: u32,
    /// A unit active for less than this is not judged (it may still be starting).
    #[serde(default = "default_start_grace")]
    pub start_grace: HumanDuration,
}

fn default_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}
fn default_failures() -> u32 {
    3
}
fn default_start_grace() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

/// A service's `probe:`: `false` opts it out, a map overrides the top-level settings and may
/// add an exchange for services that do not speak HTTP.
#[derive(Debug, Clone)]
pub(crate) enum ServiceProbe {
    Off,
    On(ProbeOverrides),
}

/// A service's own probe settings; what it leaves out comes from the top-level `probe:`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProbeOverrides {
    pub timeout: Option<HumanDuration>,
    pub failures: Option<u32>,
    pub start_grace: Option<HumanDuration>,
    /// Written to the port once connected (`"version\r\n"`): a stopped process still completes
    /// TCP handshakes, only an answer shows it works.
    pub send: Option<String>,
    /// What the answer must begin with (`"VERSION"`); alone, a greeting the service sends
    /// first (SMTP's `220`, SSH's `SSH-`).
    pub expect: Option<String>,
}

impl<'de> Deserialize<'de> for ServiceProbe {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ServiceProbe;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("false, true, or a map of timeout, failures, start_grace, send, expect")
            }
            fn visit_bool<E: serde::de::Error>(self, on: bool) -> Result<ServiceProbe, E> {
                Ok(if on {
                    ServiceProbe::On(ProbeOverrides::default())
                } else {
                    ServiceProbe::Off
                })
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                map: M,
            ) -> Result<ServiceProbe, M::Error> {
                ProbeOverrides::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ServiceProbe::On)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl Serialize for ServiceProbe {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ServiceProbe::Off => serializer.serialize_bool(false),
            ServiceProbe::On(overrides) => overrides.serialize(serializer),
        }
    }
}

/// How one service is probed: the top-level settings with its overrides applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Probe {
    pub timeout: Duration,
    pub failures: u32,
    pub start_grace: Duration,
    /// The exchange on its port, when it has one.
    pub exchange: Option<Exchange>,
}

/// Bytes to send and the prefix the answer must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exchange {
    pub send: Vec<u8>,
    pub expect: Vec<u8>,
}

impl Config {
    /// How `service` is probed; `None` without a top-level `probe:`, with `probe: false`, or
    /// when it has neither a port nor a health URL to look at.
    pub(crate) fn probe_of(&self, service: &ServiceConfig) -> Option<Probe> {
        let defaults = self.probe.as_ref()?;
        let overrides = match &service.probe {
            Some(ServiceProbe::Off) => return None,
            Some(ServiceProbe::On(overrides)) => overrides.clone(),
            None => ProbeOverrides::default(),
        };
        if service.port.is_none() && service.health_url.is_none() {
            return None;
        }
        Some(Probe {
            timeout: overrides.timeout.unwrap_or(defaults.timeout).into(),
            failures: overrides.failures.unwrap_or(defaults.failures),
            start_grace: overrides.start_grace.unwrap_or(defaults.start_grace).into(),
            exchange: exchange_of(&overrides),
        })
    }
}

fn exchange_of(overrides: &ProbeOverrides) -> Option<Exchange> {
    let expect = overrides.expect.as_ref()?;
    Some(Exchange {
        send: overrides.send.clone().unwrap_or_default().into_bytes(),
        expect: expect.clone().into_bytes(),
    })
}

/// The top-level section's problems: an interval under a second, a check that may outlast
/// the interval, no failures needed.
pub(crate) fn validate(probe: &ProbeConfig) -> Result<(), (&'static str, String)> {
    let interval = Duration::from(probe.interval);
    if interval < Duration::from_secs(1) {
        return Err((
            "interval",
            format!("probe.interval must be at least 1s, not {}", probe.interval),
        ));
    }
    check_timeout(probe.timeout, probe.interval)?;
    if probe.failures == 0 {
        return Err((
            "failures",
            "probe.failures must be at least 1 (failed rounds in a row before healing)".into(),
        ));
    }
    Ok(())
}

fn check_timeout(
    timeout: HumanDuration,
    interval: HumanDuration,
) -> Result<(), (&'static str, String)> {
    if Duration::from(timeout).is_zero() || Duration::from(timeout) > Duration::from(interval) {
        return Err((
            "timeout",
            format!(
                "probe.timeout must be longer than 0s and no longer than probe.interval ({interval}), not {timeout}: a round must end before the next begins"
            ),
        ));
    }
    Ok(())
}

/// A service's `probe:` problems, given the top-level section (if any).
pub(crate) fn validate_service(
    service: &ServiceConfig,
    top: Option<&ProbeConfig>,
) -> Result<(), (&'static str, String)> {
    let Some(ServiceProbe::On(overrides)) = &service.probe else {
        return Ok(());
    };
    let Some(top) = top else {
        return Err((
            "probe",
            "probe: on a service needs the top-level probe: section, which turns probing on and sets its interval (probe: {} takes the defaults)".into(),
        ));
    };
    if service.port.is_none() && service.health_url.is_none() {
        return Err((
            "probe",
            "probe needs something to look at: a port or a health_url".into(),
        ));
    }
    if let Some(timeout) = overrides.timeout {
        check_timeout(timeout, top.interval)?;
    }
    if overrides.failures == Some(0) {
        return Err((
            "failures",
            "probe.failures must be at least 1 (failed rounds in a row before healing)".into(),
        ));
    }
    if overrides.send.is_some() && overrides.expect.is_none() {
        return Err((
            "send",
            "probe.send needs expect: the prefix the answer must begin with".into(),
        ));
    }
    if overrides.expect.as_deref() == Some("") {
        return Err(("expect", "probe.expect must not be empty".into()));
    }
    if overrides.expect.is_some() && service.port.is_none() {
        return Err((
            "expect",
            "probe.send/expect talk to the service's port: set port".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(yaml: &str) -> Result<Config, String> {
        Config::parse(yaml, Path::new("probe.yml")).map_err(|err| err.to_string())
    }

    #[test]
    fn a_service_takes_the_defaults_and_its_own_overrides() {
        let config = parse(
            "probe: { interval: 5s }\nmonitored_services:\n  - name: web\n    port: 8080\n  - name: cache\n    port: 11211\n    probe: { failures: 2, send: \"version\\r\\n\", expect: VERSION }\n  - name: quiet\n    port: 9000\n    probe: false\n  - name: batch\n",
        )
        .unwrap();
        let probe = |name: &str| config.probe_of(config.service(name).unwrap());
        assert_eq!(
            probe("web"),
            Some(Probe {
                timeout: Duration::from_secs(2),
                failures: 3,
                start_grace: Duration::from_secs(30),
                exchange: None,
            })
        );
        let cache = probe("cache").unwrap();
        assert_eq!(cache.failures, 2);
        assert_eq!(
            cache.exchange,
            Some(Exchange {
                send: b"version\r\n".to_vec(),
                expect: b"VERSION".to_vec(),
            })
        );
        assert_eq!(probe("quiet"), None, "probe: false");
        assert_eq!(probe("batch"), None, "nothing to look at");
        let off = parse("monitored_services:\n  - name: web\n    port: 8080\n").unwrap();
        assert_eq!(
            off.probe_of(&off.monitored_services[0]),
            None,
            "no probe: section"
        );
    }

    #[test]
    fn impossible_settings_are_refused_at_their_key() {
        for (yaml, expected) in [
            (
                "probe: { interval: 500ms }\n",
                "probe.yml:1:20: probe.interval must be at least 1s, not 500ms",
            ),
            (
                "probe: { interval: 10s, timeout: 20s }\n",
                "probe.timeout must be longer than 0s and no longer than probe.interval (10s), not 20s",
            ),
            (
                "probe: { failures: 0 }\n",
                "probe.failures must be at least 1",
            ),
            (
                "probe: {}\nmonitored_services:\n  - name: web\n    port: 80\n    probe: { timeout: 11s }\n",
                "monitored_services[0] (web): probe.timeout must be longer than 0s and no longer than probe.interval (10s), not 11s",
            ),
            (
                "probe: {}\nmonitored_services:\n  - name: web\n    port: 80\n    probe: { send: x }\n",
                "probe.send needs expect",
            ),
            (
                "probe: {}\nmonitored_services:\n  - name: web\n    health_url: http://127.0.0.1/\n    probe: { expect: x }\n",
                "talk to the service's port: set port",
            ),
            (
                "probe: {}\nmonitored_services:\n  - name: web\n    probe: {}\n",
                "a port or a health_url",
            ),
            (
                "monitored_services:\n  - name: web\n    port: 80\n    probe: { failures: 2 }\n",
                "probe.yml:4:12: monitored_services[0] (web): probe: on a service needs the top-level probe: section",
            ),
        ] {
            let err = parse(yaml).unwrap_err();
            assert!(err.contains(expected), "{yaml}\n{err}");
        }
        let err = parse("probe: {}\nmonitored_services:\n  - name: web\n    port: 80\n    probe: { interval: 5s }\n").unwrap_err();
        assert!(err.contains("unknown field `interval`"), "{err}");
        assert!(err.contains("timeout"), "the valid keys: {err}");
    }
}
