//! Talking to a service the way its clients do, within one deadline: an HTTP GET, a
//! `send`/`expect` exchange, a bare connect. Every address a name resolves to is tried (with
//! Debian's `::1 localhost` first, a service bound to 127.0.0.1 alone must still answer), the
//! name is resolved inside the deadline (a silent resolver must not stretch a 2 s check to
//! 20 s), and a timeout reads as one ("timed out after 2s"), not as `EAGAIN`.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The most of an answer that is read: a status line, or the prefix an `expect` needs.
const ANSWER_CAP: usize = 4096;

/// Why a check failed, in words for a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NetFailure(pub String);

impl std::fmt::Display for NetFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The loopback addresses of `port`, IPv4 first: where a service on this host is reached
/// when only its port is known.
pub(crate) fn loopback(port: u16) -> Vec<SocketAddr> {
    vec![
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
    ]
}

/// Resolves `host:port` within `timeout` (the system resolver has no deadline of its own, so
/// it runs on a thread that is given up on).
pub(crate) fn resolve(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, NetFailure> {
    let host = host.trim_matches(['[', ']']).to_owned();
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    // `localhost` is the loopback, IPv4 first, without asking a resolver: Debian lists ::1
    // first, and another user listening on [::1]:port alone (IPV6_V6ONLY) would be the one
    // that answered for a service on 127.0.0.1.
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(loopback(port));
    }
    let (answer_to, answer) = std::sync::mpsc::channel();
    let name = host.clone();
    std::thread::spawn(move || {
        let _ = answer_to.send((name.as_str(), port).to_socket_addrs().map(Vec::from_iter));
    });
    match answer.recv_timeout(timeout) {
        Ok(Ok(addresses)) if !addresses.is_empty() => Ok(addresses),
        Ok(Ok(_)) => Err(NetFailure(format!("{host} does not resolve"))),
        Ok(Err(err)) => Err(NetFailure(format!("{host} does not resolve: {err}"))),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err(NetFailure(format!("resolving {host} failed")))
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(NetFailure(format!(
            "resolving {host} timed out after {}",
            seconds(timeout)
        ))),
    }
}

/// Connects to the first of `addresses` that accepts, all within `deadline` (`timeout` from
/// the start of the check: what a timeout says it waited). The error names each address and
/// what it said.
pub(crate) fn connect(
    addresses: &[SocketAddr],
    deadline: Instant,
    timeout: Duration,
) -> Result<TcpStream, NetFailure> {
    let mut failures = Vec::new();
    for address in addresses {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            failures.push(format!("{address}: no time left"));
            break;
        }
        match TcpStream::connect_timeout(address, left) {
            Ok(stream) => return Ok(stream),
            Err(err) => failures.push(format!("{address}: {}", words(&err, timeout))),
        }
    }
    Err(NetFailure(format!(
        "cannot connect ({})",
        failures.join("; ")
    )))
}

/// Sends `request` on `stream` and reads its answer until `enough` says it has what it needs,
/// the peer closes, or `deadline` passes (then an error saying how long it waited).
fn converse(
    stream: &mut TcpStream,
    request: &[u8],
    deadline: Instant,
    timeout: Duration,
    enough: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, NetFailure> {
    let timed_out = || NetFailure(format!("no answer: timed out after {}", seconds(timeout)));
    if !request.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        stream
            .set_write_timeout(Some(left.max(Duration::from_millis(1))))
            .and_then(|()| stream.write_all(request))
            .map_err(|err| NetFailure(format!("sending: {}", words(&err, timeout))))?;
    }
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    while !enough(&answer) && answer.len() < ANSWER_CAP {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|err| NetFailure(words(&err, timeout)))?;
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => answer.extend_from_slice(&buffer[..read]),
            Err(err) if is_timeout(&err) => return Err(timed_out()),
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(NetFailure(format!("reading: {}", words(&err, timeout)))),
        }
    }
    Ok(answer)
}

/// One `GET path` to `host:port` (HTTP/1.0, `Connection: close`) within `timeout`, trying
/// every address the host resolves to; the status when it is 2xx. (A health URL resolves
/// first on its own: a name that does not resolve is not a failed check.)
#[cfg(test)]
pub(crate) fn http_get(
    host: &str,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<u16, NetFailure> {
    let deadline = Instant::now() + timeout;
    let addresses = resolve(host, port, timeout)?;
    http_get_at(&addresses, host, path, deadline, timeout)
}

/// One `GET path` to the first of `addresses` that accepts (`host` for its `Host:` header),
/// by `deadline` (`timeout` from the start of the check).
pub(crate) fn http_get_at(
    addresses: &[SocketAddr],
    host: &str,
    path: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<u16, NetFailure> {
    let mut stream = connect(addresses, deadline, timeout)?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: selfheal\r\nConnection: close\r\n\r\n"
    );
    let answer = converse(&mut stream, request.as_bytes(), deadline, timeout, |got| {
        got.windows(2).any(|w| w == b"\r\n") || got.contains(&b'\n')
    })?;
    let status = parse_status_line(&answer).ok_or_else(|| {
        NetFailure(if answer.is_empty() {
            "closed the connection without an answer".to_owned()
        } else {
            "answered without an HTTP status line".to_owned()
        })
    })?;
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err(NetFailure(format!("answered HTTP {status}")))
    }
}

/// Connects to the first of `addresses` that accepts, writes `send` and expects the answer to
/// begin with `expect`, all within `timeout`. Ok with what was heard (its first line).
pub(crate) fn exchange(
    addresses: &[SocketAddr],
    send: &[u8],
    expect: &[u8],
    timeout: Duration,
) -> Result<String, NetFailure> {
    let deadline = Instant::now() + timeout;
    let mut stream = connect(addresses, deadline, timeout)?;
    let answer = converse(&mut stream, send, deadline, timeout, |got| {
        got.len() >= expect.len()
    })?;
    let first_line = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(80)
        .collect::<String>();
    if answer.starts_with(expect) {
        Ok(first_line)
    } else if answer.is_empty() {
        Err(NetFailure("closed the connection without an answer".into()))
    } else {
        Err(NetFailure(format!(
            "answered {first_line:?}, expected {:?}",
            String::from_utf8_lossy(expect)
        )))
    }
}

/// The status code of an HTTP status line.
fn parse_status_line(head: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(head);
    let mut words = text.split_whitespace();
    words.next().filter(|v| v.starts_with("HTTP/"))?;
    words.next()?.parse().ok()
}

fn is_timeout(err: &std::io::Error) -> bool {
    matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// An I/O error in words, without its errno: a timeout says how long was waited.
pub(crate) fn words(err: &std::io::Error, waited: Duration) -> String {
    if is_timeout(err) {
        format!("timed out after {}", seconds(waited))
    } else {
        err.kind().to_string().replace('_', " ")
    }
}

/// `2s`, `1.5s`, `300ms`.
fn seconds(duration: Duration) -> String {
    crate::ui::duration::HumanDuration(duration).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn reads_status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH"), None);
    }

    /// A listener that answers each connection with the next of `answers` (after reading the
    /// request), or never answers (`None`: the connection stays open until the thread is
    /// joined).
    fn server(
        answers: Vec<Option<&'static str>>,
    ) -> (u16, std::thread::JoinHandle<Vec<std::net::TcpStream>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            for answer in answers {
                let (mut conn, _) = listener.accept().unwrap();
                let mut buf = [0u8; 512];
                let _ = conn.read(&mut buf).unwrap();
                match answer {
                    Some(answer) => conn.write_all(answer.as_bytes()).unwrap(),
                    None => held.push(conn),
                }
            }
            held
        });
        (port, thread)
    }

    #[test]
    fn an_http_get_passes_on_2xx_and_says_what_else_it_got() {
        let (port, thread) = server(vec![
            Some("HTTP/1.0 200 OK\r\n\r\n"),
            Some("HTTP/1.0 503 Service Unavailable\r\n\r\n"),
            None,
        ]);
        let get = || http_get("127.0.0.1", port, "/health", Duration::from_millis(300));
        assert_eq!(get(), Ok(200));
        assert_eq!(get().unwrap_err().0, "answered HTTP 503");
        assert_eq!(get().unwrap_err().0, "no answer: timed out after 300ms");
        thread.join().unwrap();
    }

    #[test]
    fn every_address_of_a_name_is_tried() {
        // With ::1 first (Debian's `localhost`), a service on 127.0.0.1 alone is reached.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut addresses = loopback(listener.local_addr().unwrap().port());
        addresses.reverse();
        let stream = connect(
            &addresses,
            Instant::now() + Duration::from_secs(2),
            Duration::from_secs(2),
        );
        assert!(stream.is_ok(), "{stream:?}");
        let (port, thread) = server(vec![Some("HTTP/1.0 204 No Content\r\n\r\n")]);
        assert_eq!(
            http_get("localhost", port, "/", Duration::from_secs(2)),
            Ok(204)
        );
        thread.join().unwrap();
    }

    /// L10: another user listening on [::1] of the service's port, answering 500, is not the
    /// one a `localhost` health URL asks: 127.0.0.1 comes first, without a resolver.
    #[test]
    fn localhost_is_127_0_0_1_first_whatever_listens_on_ipv6() {
        let (port, thread) = server(vec![Some("HTTP/1.0 200 OK\r\n\r\n")]);
        let impostor = TcpListener::bind(("::1", port)).ok();
        let asked = resolve("localhost", port, Duration::from_secs(1)).unwrap();
        assert_eq!(asked, loopback(port));
        assert_eq!(
            http_get("localhost", port, "/health", Duration::from_secs(2)),
            Ok(200)
        );
        thread.join().unwrap();
        drop(impostor);
    }

    /// L15: a name that does not resolve is said as such (the health URL is then not judged).
    #[test]
    fn a_name_that_does_not_resolve_is_said_so() {
        let failure = resolve("no-such-host.invalid", 80, Duration::from_secs(5)).unwrap_err();
        assert!(failure.0.contains("no-such-host.invalid"), "{failure}");
    }

    #[test]
    fn an_exchange_expects_a_prefix_within_the_timeout() {
        let (port, thread) = server(vec![Some("VERSION 1.6.18\r\n"), Some("ERROR\r\n"), None]);
        let talk = || {
            exchange(
                &loopback(port),
                b"version\r\n",
                b"VERSION",
                Duration::from_millis(300),
            )
        };
        assert_eq!(talk(), Ok("VERSION 1.6.18".to_owned()));
        assert_eq!(
            talk().unwrap_err().0,
            "answered \"ERROR\", expected \"VERSION\""
        );
        assert_eq!(talk().unwrap_err().0, "no answer: timed out after 300ms");
        thread.join().unwrap();
    }

    #[test]
    fn a_refused_connection_names_each_address() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let err = connect(
            &loopback(port),
            Instant::now() + Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(err.0.starts_with("cannot connect (127.0.0.1:"), "{err}");
        assert!(err.0.contains("connection refused"), "{err}");
    }
}
