//! Just enough HTTP/1.1 for Alertmanager's webhook: one request per connection, its size and
//! its time bounded, answered with a status and a short body, then closed.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// The request line and headers together.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Alertmanager sends every alert of a group in one post; a thousand alerts fit.
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The request line and headers must arrive within this, the whole request within
/// `REQUEST_TIME` (a client that trickles bytes holds a connection no longer).
const HEAD_TIME: Duration = Duration::from_secs(5);
pub(crate) const REQUEST_TIME: Duration = Duration::from_secs(10);

/// A request as read. (Its `Debug` leaves the headers out: one of them is the token.)
pub(crate) struct Request {
    pub method: String,
    pub path: String,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl Request {
    /// A header's value (names are case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Why a request was not read: each is answered with its status, and a fixed body that
/// quotes nothing of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unread {
    Malformed,
    TooLarge,
    LengthRequired,
    TimedOut,
    /// Refused by the look at its head (no token): its body is never read.
    Unauthorized,
    /// The client went away: nothing to answer.
    Gone,
}

impl Unread {
    pub(crate) fn status(self) -> (u16, &'static str) {
        match self {
            Unread::Malformed | Unread::Gone => (400, "malformed request\n"),
            Unread::TooLarge => (413, "request too large\n"),
            Unread::LengthRequired => (411, "Content-Length required\n"),
            Unread::TimedOut => (408, "request timed out\n"),
            Unread::Unauthorized => (401, "unauthorized\n"),
        }
    }
}

/// Reads one request from `stream` within `REQUEST_TIME`. A client that says
/// `Expect: 100-continue` (curl does, for a body over 1 KiB) is told to go on once the head is
/// read. `admitted` looks at the head before the body is read: a client without the token
/// gets its answer without sending a megabyte first.
pub(crate) fn read_request<S: Read + Write>(
    stream: &mut S,
    set_timeout: impl Fn(&S, Duration) -> std::io::Result<()>,
    admitted: impl FnOnce(&Request) -> bool,
) -> Result<Request, Unread> {
    let started = Instant::now();
    let mut buffer = Vec::with_capacity(4096);
    let head_end = loop {
        let head = &buffer[..buffer.len().min(MAX_HEAD_BYTES + 4)];
        if let Some(at) = find(head, b"\r\n\r\n") {
            break at;
        }
        if buffer.len() >= MAX_HEAD_BYTES + 4 {
            return Err(Unread::TooLarge);
        }
        read_some(stream, &mut buffer, started + HEAD_TIME, &set_timeout)?;
    };
    let head = std::str::from_utf8(&buffer[..head_end]).map_err(|_| Unread::Malformed)?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(path), Some(version)) = (
        request_line.next(),
        request_line.next(),
        request_line.next(),
    ) else {
        return Err(Unread::Malformed);
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Unread::Malformed);
    }
    let headers = lines
        .map(|line| {
            line.split_once(':')
                .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
                .ok_or(Unread::Malformed)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut request = Request {
        method: method.to_owned(),
        path: path.to_owned(),
        headers,
        body: Vec::new(),
    };
    if request.method != "POST" {
        return Ok(request);
    }
    if !admitted(&request) {
        return Err(Unread::Unauthorized);
    }
    if request.header("transfer-encoding").is_some() {
        return Err(Unread::LengthRequired);
    }
    // One Content-Length, of digits only: two that disagree (or a `+5`) are how requests
    // are smuggled past a proxy.
    let lengths: Vec<&str> = request
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| value.as_str())
        .collect();
    let length: usize = match lengths.as_slice() {
        [] => return Err(Unread::LengthRequired),
        [one] if !one.is_empty() && one.bytes().all(|b| b.is_ascii_digit()) => {
            one.parse().map_err(|_| Unread::TooLarge)?
        }
        _ => return Err(Unread::Malformed),
    };
    if length > MAX_BODY_BYTES {
        return Err(Unread::TooLarge);
    }
    if request
        .header("expect")
        .is_some_and(|expect| expect.eq_ignore_ascii_case("100-continue"))
    {
        let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let mut body = buffer.split_off(head_end + 4);
    while body.len() < length {
        read_some(stream, &mut body, started + REQUEST_TIME, &set_timeout)?;
    }
    body.truncate(length);
    request.body = body;
    Ok(request)
}

/// Reads what has arrived into `buffer`, waiting no later than `deadline`.
fn read_some<S: Read>(
    stream: &mut S,
    buffer: &mut Vec<u8>,
    deadline: Instant,
    set_timeout: &impl Fn(&S, Duration) -> std::io::Result<()>,
) -> Result<(), Unread> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Unread::TimedOut);
    }
    set_timeout(stream, left).map_err(|_| Unread::Gone)?;
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk) {
        Ok(0) => Err(Unread::Gone),
        Ok(read) => {
            buffer.extend_from_slice(&chunk[..read]);
            Ok(())
        }
        Err(err)
            if matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(Unread::TimedOut)
        }
        Err(_) => Err(Unread::Gone),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Writes the answer and closes the exchange (`Connection: close`).
pub(super) fn respond(stream: &mut impl Write, status: u16, content_type: &str, body: &str) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        _ => "Error",
    };
    let challenge = if status == 401 {
        "WWW-Authenticate: Bearer\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{challenge}Connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()))
        .and_then(|()| stream.flush());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A client's bytes, and what the receiver wrote back.
    struct Exchange {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Exchange {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Exchange {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn read(bytes: &[u8]) -> (Result<Request, Unread>, String) {
        let mut exchange = Exchange {
            input: Cursor::new(bytes.to_vec()),
            output: Vec::new(),
        };
        let request = read_request(
            &mut exchange,
            |_, _| Ok(()),
            |request| request.header("authorization").is_some(),
        );
        (request, String::from_utf8(exchange.output).unwrap())
    }

    #[test]
    fn a_post_is_read_with_its_headers_and_exactly_its_body() {
        let (request, said) = read(
            b"POST /alertmanager HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n{}{}trailing",
        );
        let request = request.unwrap();
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/alertmanager")
        );
        assert_eq!(request.header("AUTHORIZATION"), Some("Bearer t"));
        assert_eq!(request.body, b"{}{}");
        assert_eq!(said, "HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn bounds_and_malformed_requests_are_refused() {
        let big = format!(
            "POST / HTTP/1.1\r\nAuthorization: x\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        assert_eq!(read(big.as_bytes()).0.unwrap_err(), Unread::TooLarge);
        let endless_head = vec![b'a'; MAX_HEAD_BYTES + 10];
        assert_eq!(read(&endless_head).0.unwrap_err(), Unread::TooLarge);
        assert_eq!(
            read(b"POST / HTTP/1.1\r\nAuthorization: x\r\nTransfer-Encoding: chunked\r\n\r\n")
                .0
                .unwrap_err(),
            Unread::LengthRequired
        );
        assert_eq!(
            read(b"POST / HTTP/1.1\r\nAuthorization: x\r\n\r\n")
                .0
                .unwrap_err(),
            Unread::LengthRequired
        );
        assert_eq!(
            read(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
                .0
                .unwrap_err(),
            Unread::Unauthorized
        );
        assert_eq!(read(b"GARBAGE\r\n\r\n").0.unwrap_err(), Unread::Malformed);
        for lengths in [
            "Content-Length: 2\r\nContent-Length: 2",
            "Content-Length: +2",
            "Content-Length: ",
        ] {
            let request = format!("POST / HTTP/1.1\r\nAuthorization: x\r\n{lengths}\r\n\r\n{{}}");
            assert_eq!(
                read(request.as_bytes()).0.unwrap_err(),
                Unread::Malformed,
                "{lengths}"
            );
        }
        // A head is refused at its limit, not at whatever the last read brought in.
        let mut long_head = b"POST / HTTP/1.1\r\nX: ".to_vec();
        long_head.extend(vec![b'a'; MAX_HEAD_BYTES]);
        long_head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(read(&long_head).0.unwrap_err(), Unread::TooLarge);
        assert_eq!(
            read(b"POST / HTTP/1.1\r\nAuthorization: x\r\nContent-Length: 10\r\n\r\nshort")
                .0
                .unwrap_err(),
            Unread::Gone
        );
    }
}
