//! `selfheal discover`: the running services that listen on a port and are not monitored yet,
//! as `monitored_services:` entries to paste: the name, the port, and a `health_url` when the
//! port answers `GET /` with a 2xx. It reads the host (one sock_diag dump, one walk of
//! `/proc`, one HTTP request per port) and changes nothing.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::host::listeners::Listeners;

/// How long a port has to answer `GET /`.
const HTTP_TIMEOUT: Duration = Duration::from_secs(1);

/// A running service that listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// The entry's name: the unit without `.service`.
    pub name: String,
    /// Its listening ports, ascending.
    pub ports: Vec<u16>,
    /// What its first port answered to `GET /`.
    pub http: Http,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Http {
    /// A 2xx: `/` can be its health URL.
    Healthy,
    /// HTTP, but not a 2xx (`answered HTTP 404`): a health URL must be chosen by hand.
    Other(String),
    /// Not HTTP (or no answer in time).
    No,
}

/// The running services that listen on a port, but selfheal's own units, the user managers'
/// and those named in `listed` (units).
pub(crate) fn running(listed: &[String]) -> Vec<Found> {
    let services = Listeners::read().by_service();
    let wanted: Vec<(String, Vec<u16>)> = services
        .into_iter()
        .filter(|(unit, _)| {
            !listed.contains(unit)
                && !unit.starts_with("selfheal@")
                && !unit.starts_with("selfheal-")
                && !unit.starts_with("user@")
        })
        .collect();
    std::thread::scope(|scope| {
        let looks: Vec<_> = wanted
            .iter()
            .map(|(unit, ports)| scope.spawn(move || (unit, ports, http(ports[0]))))
            .collect();
        looks
            .into_iter()
            .filter_map(|look| look.join().ok())
            .map(|(unit, ports, http)| Found {
                name: unit.trim_end_matches(".service").to_owned(),
                ports: ports.clone(),
                http,
            })
            .collect()
    })
}

fn http(port: u16) -> Http {
    let addresses = crate::host::net::loopback(port);
    let deadline = Instant::now() + HTTP_TIMEOUT;
    match crate::host::net::http_get_at(&addresses, "127.0.0.1", "/", deadline, HTTP_TIMEOUT) {
        Ok(_) => Http::Healthy,
        Err(failure) if failure.0.starts_with("answered HTTP") => Http::Other(failure.0),
        Err(_) => Http::No,
    }
}

/// The entries, as YAML to paste under `monitored_services:`, with what was not guessed in
/// comments.
pub(crate) fn yaml(found: &[Found]) -> String {
    let mut out = String::from(
        "# Running services that listen on a port and are not in monitored_services\n# (selfheal discover): paste the ones to heal into the config.\nmonitored_services:\n",
    );
    if found.is_empty() {
        out.push_str("  # none: every running service that listens is monitored already\n");
    }
    for service in found {
        let _ = writeln!(out, "  - name: {}", service.name);
        let _ = write!(out, "    port: {}", service.ports[0]);
        if service.ports.len() > 1 {
            let others: Vec<String> = service.ports[1..].iter().map(u16::to_string).collect();
            let _ = write!(out, "  # it also listens on {}", others.join(", "));
        }
        out.push('\n');
        match &service.http {
            Http::Healthy => {
                let _ = writeln!(
                    out,
                    "    health_url: http://127.0.0.1:{}/",
                    service.ports[0]
                );
            }
            Http::Other(answer) => {
                let _ = writeln!(
                    out,
                    "    # health_url: / {answer}; name a path that answers 2xx"
                );
            }
            Http::No => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_name_the_first_port_and_a_health_url_only_for_a_2xx() {
        let found = [
            Found {
                name: "web".into(),
                ports: vec![8080, 8443],
                http: Http::Healthy,
            },
            Found {
                name: "api".into(),
                ports: vec![9000],
                http: Http::Other("answered HTTP 404".into()),
            },
            Found {
                name: "cache".into(),
                ports: vec![11211],
                http: Http::No,
            },
        ];
        assert_eq!(
            yaml(&found).lines().skip(2).collect::<Vec<_>>(),
            [
                "monitored_services:",
                "  - name: web",
                "    port: 8080  # it also listens on 8443",
                "    health_url: http://127.0.0.1:8080/",
                "  - name: api",
                "    port: 9000",
                "    # health_url: / answered HTTP 404; name a path that answers 2xx",
                "  - name: cache",
                "    port: 11211",
            ]
        );
    }
}
