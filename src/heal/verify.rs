//! Verification that a service is really back: the unit is active, its own process listens on
//! the port, the health URL answers 2xx, and all of that still holds after `stable_for`.
//! Short polls with a growing interval, bounded by `verify_timeout`; no fixed sleeps.

use std::time::{Duration, Instant};

use serde::Serialize;

pub(crate) use crate::config::health_url::HealthUrl;

use crate::config::probe::Exchange;
use crate::config::{Config, ServiceConfig};
use crate::host::{net, ports};
use crate::systemd::{UnitControl, UnitSnapshot};

/// What "healthy" means for one service.
#[derive(Debug, Clone)]
pub(crate) struct HealthTarget {
    pub unit: String,
    pub port: Option<u16>,
    pub health_url: Option<HealthUrl>,
    pub timeout: Duration,
    pub stable_for: Duration,
    /// The probe's exchange on the port, when it has one: a run judges as the probes do.
    pub exchange: Option<Exchange>,
    /// How long one look at the port's answer or the health URL may take.
    pub check_timeout: Duration,
}

/// A look at a health URL without a probe's own timeout.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

impl HealthTarget {
    /// What "healthy" means for `service`, from its config (and its probe settings).
    pub(crate) fn of(config: &Config, service: &ServiceConfig) -> HealthTarget {
        let probe = config.probe_of(service);
        HealthTarget {
            unit: service.unit_name(),
            port: service.port,
            health_url: service.health_url.clone(),
            timeout: service.verify_timeout.into(),
            stable_for: service.stable_for.into(),
            check_timeout: probe.as_ref().map_or(CHECK_TIMEOUT, |probe| probe.timeout),
            exchange: probe.and_then(|probe| probe.exchange),
        }
    }
}

/// The result of a verification.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Verification {
    /// Active, listening, answering, and stayed so.
    pub healthy: bool,
    /// What was checked, or what was missing.
    pub detail: String,
}

/// Polls start fast, since a restarted service is often ready within milliseconds, and back
/// off so that a slow one does not cost CPU.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(Duration::from_millis(2))
    }
    fn pause(&mut self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        std::thread::sleep(self.0.min(left));
        self.0 = (self.0 * 2).min(Duration::from_millis(100));
    }
}

/// One look, without waiting: is the service healthy right now? Its port counts only when
/// the unit's own process listens on it (the rule `status` applies too): another unit's
/// listener is a port conflict, not health.
pub(crate) fn check_now(snapshot: &UnitSnapshot, target: &HealthTarget) -> Result<String, String> {
    if !snapshot.is_active() {
        return Err(format!("{} is {}", snapshot.unit, snapshot.state()));
    }
    let mut passed = vec![format!("{} active/{}", snapshot.unit, snapshot.sub_state)];
    if let Some(port) = target.port {
        let holders = ports::holders(port);
        if holders.is_empty() && !ports::is_listening(port) {
            return Err(format!("port {port} is not listening"));
        }
        // Listening, but no holder could be read (not root, `hidepid`): as `status`, the port
        // counts as the unit's own rather than as a problem nobody can see.
        if !holders.is_empty()
            && !holders
                .iter()
                .any(|h| ports::is_within(&h.cgroup, &snapshot.control_group))
        {
            let holder = &holders[0];
            return Err(format!(
                "port {port} is held by pid {} ({}), not by {}",
                holder.pid,
                holder.cmdline.join(" "),
                snapshot.unit
            ));
        }
        passed.push(format!("port {port} listening"));
    }
    passed.extend(answers(
        target.port,
        target.health_url.as_ref(),
        target.exchange.as_ref(),
        target.check_timeout,
    )?);
    Ok(passed.join(", "))
}

/// What the service's clients would see, all within `timeout`: the exchange on its port (or,
/// with neither an exchange nor a health URL, a connection accepted: a hung process with a full
/// backlog accepts none), then its health URL. What passed, or what failed. The probes and a
/// run judge by this one function.
pub(crate) fn answers(
    port: Option<u16>,
    health_url: Option<&HealthUrl>,
    exchange: Option<&Exchange>,
    timeout: Duration,
) -> Result<Vec<String>, String> {
    let deadline = Instant::now() + timeout;
    let mut passed = Vec::new();
    if let Some(port) = port {
        match (exchange, health_url) {
            (Some(exchange), _) => {
                let heard = net::exchange(
                    &net::loopback(port),
                    &exchange.send,
                    &exchange.expect,
                    timeout,
                )
                .map_err(|failed| format!("port {port}: {failed}"))?;
                passed.push(format!("port {port} answered {heard:?}"));
            }
            (None, None) => {
                net::connect(&net::loopback(port), deadline, timeout)
                    .map_err(|failed| format!("port {port}: {failed}"))?;
                passed.push(format!("port {port} accepts connections"));
            }
            (None, Some(_)) => {}
        }
    }
    if let Some(url) = health_url {
        // What the port's check left of the time, to the millisecond.
        let left = deadline.saturating_duration_since(Instant::now());
        let left = Duration::from_millis(u64::try_from(left.as_millis()).unwrap_or(u64::MAX));
        match url.check(if exchange.is_some() { left } else { timeout }) {
            Ok(status) => passed.push(format!("{} answered {status}", url.raw)),
            Err(UrlFailure::Failed(failed)) => return Err(format!("health URL {failed}")),
            // Said, not counted: the service was not asked.
            Err(UrlFailure::Unresolved(why)) => {
                passed.push(format!("health URL {why} {NOT_JUDGED}"));
            }
        }
    }
    Ok(passed)
}

/// Waits until the service is healthy and has stayed so for `stable_for`, or `timeout` has
/// passed since `started`.
pub(crate) fn verify(
    units: &dyn UnitControl,
    target: &HealthTarget,
    started: Instant,
) -> Verification {
    let deadline = started + target.timeout;
    let _waiting = crate::ui::terminal::SlowNotice::new(format!(
        "waiting for {} to be healthy and stay up (up to {})",
        target.unit,
        crate::ui::duration::HumanDuration(target.timeout)
    ));
    let mut backoff = Backoff::new();
    let failed = |detail: String| Verification {
        healthy: false,
        detail,
    };
    // Phase 1: until every check passes once.
    let (ready_snapshot, passed) = loop {
        let snapshot = match units.snapshot(&target.unit) {
            Ok(snapshot) => snapshot,
            Err(err) => return failed(format!("cannot read the unit: {err}")),
        };
        if snapshot.is_down() {
            return failed(format!("{} went {}", snapshot.unit, snapshot.state()));
        }
        match check_now(&snapshot, target) {
            Ok(passed) => {
                tracing::debug!("healthy: {passed}");
                break (snapshot, passed);
            }
            Err(missing) if Instant::now() >= deadline => {
                return failed(format!(
                    "not healthy within {:?}: {missing}",
                    target.timeout
                ));
            }
            Err(_) => backoff.pause(deadline),
        }
    };
    // Phase 2: it must stay up (same invocation, still active) for `stable_for`.
    let stable_until = Instant::now() + target.stable_for;
    let mut backoff = Backoff::new();
    while Instant::now() < stable_until {
        backoff.pause(stable_until);
        match units.snapshot(&target.unit) {
            Ok(now) if now.is_active() && now.invocation_id == ready_snapshot.invocation_id => {}
            Ok(now) => {
                return failed(format!(
                    "came up, then went {} within stable_for {:?}",
                    now.state(),
                    target.stable_for
                ));
            }
            Err(err) => return failed(format!("cannot read the unit: {err}")),
        }
    }
    Verification {
        healthy: true,
        detail: format!("{passed}; stayed up for {:?}", target.stable_for),
    }
}

/// How `answers` marks a check it could not make (the health URL's host did not resolve).
pub(crate) const NOT_JUDGED: &str = "(not judged)";

/// Why a health URL did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UrlFailure {
    /// Its host name did not resolve: that says nothing of the service (a resolver outage
    /// must not restart every service whose URL has a name), so it is not judged.
    Unresolved(String),
    /// It was asked and did not answer 2xx.
    Failed(String),
}

impl HealthUrl {
    /// Sends one GET within `timeout` (every address the host resolves to, resolution
    /// included); Ok with the status when it is 2xx, else what went wrong after the URL.
    pub(crate) fn check(&self, timeout: Duration) -> Result<u16, UrlFailure> {
        let deadline = Instant::now() + timeout;
        let addresses = net::resolve(&self.host, self.port, timeout)
            .map_err(|failure| UrlFailure::Unresolved(format!("{}: {failure}", self.raw)))?;
        net::http_get_at(&addresses, &self.host, &self.path, deadline, timeout)
            .map_err(|failure| UrlFailure::Failed(format!("{}: {failure}", self.raw)))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// L15: a health URL whose host does not resolve is not judged (neither passed nor
    /// failed): a resolver outage must not restart the services whose URLs have names.
    #[test]
    fn a_health_url_whose_name_does_not_resolve_is_not_judged() {
        let url = HealthUrl::parse("http://no-such-host.invalid:8080/health").unwrap();
        assert!(matches!(
            url.check(Duration::from_secs(5)),
            Err(UrlFailure::Unresolved(_))
        ));
        let said = answers(None, Some(&url), None, Duration::from_secs(5)).unwrap();
        assert!(said[0].ends_with(NOT_JUDGED), "{said:?}");
    }

    #[test]
    fn checks_a_real_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut conn, _) = listener.accept().unwrap();
                let mut buf = [0u8; 512];
                let _ = conn.read(&mut buf).unwrap();
                conn.write_all(format!("HTTP/1.0 {status}\r\n\r\n").as_bytes())
                    .unwrap();
            }
        });
        let url = HealthUrl::parse(&format!("http://127.0.0.1:{port}/health")).unwrap();
        assert_eq!(url.check(Duration::from_secs(2)), Ok(200));
        let err = url.check(Duration::from_secs(2)).unwrap_err();
        assert!(
            matches!(&err, UrlFailure::Failed(why) if why.contains("HTTP 503")),
            "{err:?}"
        );
        server.join().unwrap();
    }
}
