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

/// `connect` of many targets at once, on this thread: each target's addresses are tried in
/// order, all targets' connections are under way together, and one `poll` waits for them
/// (one thread per bare connect was a third of a probe round's CPU at 300 services: creating,
/// mapping and unmapping its stack). The same words as `connect` when one fails.
pub(crate) fn connect_all(
    targets: &[Vec<SocketAddr>],
    timeout: Duration,
) -> Vec<Result<(), NetFailure>> {
    let deadline = Instant::now() + timeout;
    let mut attempts: Vec<Attempt> = targets.iter().map(|_| Attempt::default()).collect();
    loop {
        for (attempt, addresses) in attempts.iter_mut().zip(targets) {
            attempt.start_next(addresses, timeout);
        }
        let waiting: Vec<usize> = (0..attempts.len())
            .filter(|&index| attempts[index].socket.is_some())
            .collect();
        if waiting.is_empty() {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let ready = if left.is_zero() {
            Err(format!("timed out after {}", seconds(timeout)))
        } else {
            poll_writable(&attempts, &waiting, left)
        };
        match ready {
            Ok(ready) => {
                for index in ready {
                    let attempt = &mut attempts[index];
                    let address = targets[index][attempt.next - 1];
                    if let Some(Err(err)) = attempt.socket.take().map(|s| socket_error(&s)) {
                        attempt
                            .failures
                            .push(format!("{address}: {}", words(&err, timeout)));
                    } else {
                        attempt.done = Some(Ok(()));
                    }
                }
            }
            // Out of time (or poll failed): every connect under way ends with that.
            Err(why) => {
                for index in waiting {
                    let attempt = &mut attempts[index];
                    let address = targets[index][attempt.next - 1];
                    attempt.socket = None;
                    attempt.failures.push(format!("{address}: {why}"));
                    attempt.done = Some(Err(attempt.failed()));
                }
                break;
            }
        }
    }
    attempts
        .into_iter()
        .map(|mut attempt| attempt.done.take().unwrap_or_else(|| Err(attempt.failed())))
        .collect()
}

/// One target of `connect_all`: its next address, the connect under way, what failed.
#[derive(Default)]
struct Attempt {
    next: usize,
    socket: Option<std::os::fd::OwnedFd>,
    failures: Vec<String>,
    done: Option<Result<(), NetFailure>>,
}

impl Attempt {
    fn failed(&self) -> NetFailure {
        NetFailure(format!("cannot connect ({})", self.failures.join("; ")))
    }

    /// Starts its next address when none is under way (a connect that ends at once is done
    /// or failed, and the next one is started); done when none is left.
    fn start_next(&mut self, addresses: &[SocketAddr], timeout: Duration) {
        while self.done.is_none() && self.socket.is_none() {
            let Some(address) = addresses.get(self.next) else {
                self.done = Some(Err(self.failed()));
                return;
            };
            self.next += 1;
            match start_connect(address) {
                Ok(Some(socket)) => self.socket = Some(socket),
                Ok(None) => self.done = Some(Ok(())),
                Err(err) => self
                    .failures
                    .push(format!("{address}: {}", words(&err, timeout))),
            }
        }
    }
}

/// Waits up to `left` until some of `waiting`'s connects end: their indices.
fn poll_writable(
    attempts: &[Attempt],
    waiting: &[usize],
    left: Duration,
) -> Result<Vec<usize>, String> {
    use std::os::fd::AsRawFd;
    let mut polled: Vec<libc::pollfd> = waiting
        .iter()
        .map(|&index| libc::pollfd {
            fd: attempts[index]
                .socket
                .as_ref()
                .map_or(-1, AsRawFd::as_raw_fd),
            events: libc::POLLOUT,
            revents: 0,
        })
        .collect();
    let wait_ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
    loop {
        // SAFETY: `polled` is a valid array of its length for the whole call.
        let ready =
            unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, wait_ms) };
        if ready >= 0 {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != ErrorKind::Interrupted {
            return Err(format!("poll: {err}"));
        }
    }
    Ok(polled
        .iter()
        .zip(waiting)
        .filter(|(entry, _)| entry.revents != 0)
        .map(|(_, &index)| index)
        .collect())
}

/// The address families as a sockaddr spells them (2 and 10: no truncation).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
const INET: libc::sa_family_t = libc::AF_INET as libc::sa_family_t;
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
const INET6: libc::sa_family_t = libc::AF_INET6 as libc::sa_family_t;

/// A non-blocking connect to `address` under way (`Some`), or done at once (`None`).
// The sockaddr sizes (16 and 28 bytes) fit a socklen_t.
#[allow(clippy::cast_possible_truncation)]
fn start_connect(address: &SocketAddr) -> std::io::Result<Option<std::os::fd::OwnedFd>> {
    use std::os::fd::FromRawFd;
    let domain = if address.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let raw = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
    let socket = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
    // SAFETY: each sockaddr is fully initialised (zeroed, then its fields) and outlives the call.
    let result = unsafe {
        match address {
            SocketAddr::V4(v4) => {
                let mut sockaddr: libc::sockaddr_in = std::mem::zeroed();
                sockaddr.sin_family = INET;
                sockaddr.sin_port = v4.port().to_be();
                sockaddr.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
                libc::connect(
                    raw,
                    (&raw const sockaddr).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            SocketAddr::V6(v6) => {
                let mut sockaddr: libc::sockaddr_in6 = std::mem::zeroed();
                sockaddr.sin6_family = INET6;
                sockaddr.sin6_port = v6.port().to_be();
                sockaddr.sin6_addr.s6_addr = v6.ip().octets();
                sockaddr.sin6_scope_id = v6.scope_id();
                libc::connect(
                    raw,
                    (&raw const sockaddr).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if result == 0 {
        return Ok(None);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EINPROGRESS) {
        Ok(Some(socket))
    } else {
        Err(err)
    }
}

/// What a finished non-blocking connect on `socket` came to (`SO_ERROR`).
fn socket_error(socket: &std::os::fd::OwnedFd) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut code: libc::c_int = 0;
    // The size of `code`, a C int.
    let mut length: libc::socklen_t = 4;
    // SAFETY: `code` and `length` are valid for writes of their sizes for the call.
    let read = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&raw mut code).cast(),
            &raw mut length,
        )
    };
    if read < 0 {
        return Err(std::io::Error::last_os_error());
    }
    match code {
        0 => Ok(()),
        code => Err(std::io::Error::from_raw_os_error(code)),
    }
}

/// How a connection that took the request but never answered is said: the words a hang's
/// decision looks for (a resolver or a connect that timed out is no hang of the service).
pub(crate) const NO_ANSWER: &str = "no answer: timed out after";

/// Sends `request` on `stream` and reads its answer until `enough` says it has what it needs,
/// the peer closes, or `deadline` passes (then an error saying how long it waited).
fn converse(
    stream: &mut TcpStream,
    request: &[u8],
    deadline: Instant,
    timeout: Duration,
    enough: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, NetFailure> {
    let timed_out = || NetFailure(format!("{NO_ANSWER} {}", seconds(timeout)));
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

    /// Many bare connects at once say what one `connect` says of each: accepted, refused
    /// on every address, or no answer within the timeout.
    #[test]
    fn connects_to_many_at_once_with_the_words_of_one() {
        let open = TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        // A listener whose accept queue is full and never drained: the kernel drops the next
        // SYN, so that connect times out.
        let full = TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&full);
        // SAFETY: listen(2) on a socket this test owns, to shrink its backlog.
        let listening = unsafe { libc::listen(fd, 0) };
        assert_eq!(listening, 0);
        let silent = full.local_addr().unwrap();
        let _queued: Vec<TcpStream> = (0..2)
            .filter_map(|_| TcpStream::connect_timeout(&silent, Duration::from_millis(200)).ok())
            .collect();
        let timeout = Duration::from_millis(300);
        let results = connect_all(
            &[
                loopback(open.local_addr().unwrap().port()),
                loopback(closed_port),
                vec![silent],
            ],
            timeout,
        );
        assert_eq!(results[0], Ok(()));
        let single = connect(&loopback(closed_port), Instant::now() + timeout, timeout)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(results[1], Err(single));
        let Err(NetFailure(silent_failure)) = &results[2] else {
            panic!("{:?}", results[2]);
        };
        assert_eq!(
            silent_failure,
            &format!("cannot connect ({silent}: timed out after 300ms)")
        );
    }

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
