//! One POST to a channel, bounded in time, its verdict in words that never carry the URL (a
//! Slack or ntfy URL is the credential): the status, a timeout, a refused connection.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::Request;

/// How much of an error answer is kept for the message: enough for Alertmanager's
/// `{"code":400,"message":"…"}`.
const ANSWER_BYTES: u64 = 300;

/// Why a message did not go through, in words that never carry the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The channel is down, slow, misconfigured or refuses everyone (401, 404, 503…): the
    /// message waits for it.
    Retry(String),
    /// The channel refused this request itself (HTTP 400, 413, 422): the same bytes would be
    /// refused again, so waiting would only hold every message behind it.
    Refused(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Retry(words) | Failure::Refused(words) => f.write_str(words),
        }
    }
}

/// The answers that refuse a request for what it is, not for when or by whom it was sent.
fn refuses_the_request(status: ureq::http::StatusCode) -> bool {
    matches!(status.as_u16(), 400 | 413 | 422)
}

/// Whether an error answer's body may be kept in what selfheal says of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Only its status line: a receiver may quote any part of the URL it was sent to (a token
    /// segment, a query value, percent-decoded), and the URL is the secret (webhooks).
    StatusOnly,
    /// The status and up to `ANSWER_BYTES` of the body: the URL is no secret (Alertmanager).
    WithBody,
}

/// POSTs `request` to `url`; Ok on 2xx. An error is phrased without `url` or any part of its
/// path (where tokens live), and with the answer's body only where `answer` allows it.
pub(crate) fn post(
    url: &str,
    request: &Request,
    timeout: Duration,
    answer: Answer,
) -> Result<(), Failure> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        // A redirect would repeat the POST somewhere the config does not name.
        .max_redirects(0)
        .user_agent(format!("selfheal/{}", env!("CARGO_PKG_VERSION")))
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(host_roots()))
                .build(),
        )
        .build()
        .into();
    let mut post = agent.post(url).content_type(&request.content_type);
    for (name, value) in &request.headers {
        post = post.header(name, value);
    }
    let sent = post.send(request.body.as_bytes());
    let mut response = match sent {
        Ok(response) => response,
        Err(err) => return Err(Failure::Retry(redact(&words(&err, timeout), url))),
    };
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = match answer {
        Answer::StatusOnly => String::new(),
        Answer::WithBody => response
            .body_mut()
            .with_config()
            .limit(ANSWER_BYTES)
            .read_to_string()
            .unwrap_or_default(),
    };
    let body: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let body = body.trim();
    let words = redact(
        &if body.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {body}")
        },
        url,
    );
    Err(if refuses_the_request(status) {
        Failure::Refused(words)
    } else {
        Failure::Retry(words)
    })
}

/// The CAs this host trusts (`/etc/ssl/certs`, where `update-ca-certificates` puts a private
/// CA too), loaded once per process.
fn host_roots() -> Arc<Vec<ureq::tls::Certificate<'static>>> {
    static ROOTS: OnceLock<Arc<Vec<ureq::tls::Certificate<'static>>>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            Arc::new(
                found
                    .certs
                    .iter()
                    .map(|der| ureq::tls::Certificate::from_der(der.as_ref()).to_owned())
                    .collect(),
            )
        })
        .clone()
}

/// What went wrong, in words; ureq's own text can quote the URL, so only its kind is used
/// where it might.
fn words(err: &ureq::Error, timeout: Duration) -> String {
    match err {
        ureq::Error::Timeout(_) => format!(
            "no answer within {}",
            crate::ui::duration::HumanDuration(timeout)
        ),
        ureq::Error::HostNotFound => "its host name does not resolve".to_owned(),
        ureq::Error::ConnectionFailed => "the connection failed".to_owned(),
        ureq::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
            std::io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
            std::io::ErrorKind::TimedOut => format!(
                "no answer within {}",
                crate::ui::duration::HumanDuration(timeout)
            ),
            kind => format!("network error ({kind})"),
        },
        ureq::Error::BadUri(_) => "the URL is not valid".to_owned(),
        ureq::Error::Tls(why) => format!("TLS: {why}"),
        ureq::Error::Rustls(why) => format!("TLS: {why}"),
        ureq::Error::TooManyRedirects | ureq::Error::RedirectFailed => {
            "it answered with a redirect, which selfheal does not follow".to_owned()
        }
        other => other.to_string(),
    }
}

/// `text` without `url`, its path or its query: what is left cannot leak a token.
pub(crate) fn redact(text: &str, url: &str) -> String {
    let mut clean = text.replace(url, "<url>");
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    if let Some(at) = after_scheme.find(['/', '?']) {
        let secret_part = &after_scheme[at..];
        if secret_part.len() > 1 {
            clean = clean.replace(secret_part, "/<redacted>");
        }
    }
    if let Some(at) = after_scheme.find('@') {
        clean = clean.replace(&after_scheme[..at], "<redacted>");
    }
    clean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_never_carries_the_url_or_its_token() {
        let url = "https://hooks.slack.example/services/T0/B1/s3cr3tT0ken";
        let said = redact(
            &format!("bad request to {url}: /services/T0/B1/s3cr3tT0ken refused"),
            url,
        );
        assert!(!said.contains("s3cr3tT0ken"), "{said}");
        assert!(said.contains("<url>"), "{said}");
        let with_login = "http://ops:pw@am:9093";
        assert!(!redact("to ops:pw@am", with_login).contains("pw"));
    }

    #[test]
    fn a_refused_connection_and_an_error_status_are_said_in_words() {
        // A port nothing listens on: bind, learn the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let request = Request {
            path: String::new(),
            content_type: "application/json".into(),
            headers: Vec::new(),
            body: "{}".into(),
        };
        let url = format!("http://127.0.0.1:{port}/topic-s3cret");
        let refused = post(&url, &request, Duration::from_secs(2), Answer::WithBody).unwrap_err();
        assert_eq!(refused, Failure::Retry("connection refused".into()));

        let (url, answer) = answer_once(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 28\r\nConnection: close\r\n\r\nmaintenance on /topic-s3cret");
        let refused = post(&url, &request, Duration::from_secs(5), Answer::WithBody).unwrap_err();
        answer.join().unwrap();
        assert_eq!(
            refused,
            Failure::Retry("HTTP 503 Service Unavailable: maintenance on /<redacted>".into())
        );

        // M7: a webhook receiver that quotes the last segment of its URL, or a query value,
        // percent-decoded: only the status line is kept.
        let (url, answer) = answer_once(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 33\r\nConnection: close\r\n\r\ninvalid_token: s3cret (topic-s3c)");
        let refused = post(&url, &request, Duration::from_secs(5), Answer::StatusOnly).unwrap_err();
        answer.join().unwrap();
        assert_eq!(refused, Failure::Retry("HTTP 401 Unauthorized".into()));

        // Alertmanager's answer to an alert it will never take.
        let (url, answer) = answer_once(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 43\r\nConnection: close\r\n\r\n{\"message\":\"start time must be before end\"}");
        let refused = post(&url, &request, Duration::from_secs(5), Answer::WithBody).unwrap_err();
        answer.join().unwrap();
        assert!(
            matches!(&refused, Failure::Refused(words) if words.starts_with("HTTP 400 Bad Request: {")),
            "{refused:?}"
        );
    }

    /// A server on a port of its own that reads one request and sends `response`; its URL.
    fn answer_once(response: &'static [u8]) -> (String, std::thread::JoinHandle<()>) {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://127.0.0.1:{}/topic-s3cret",
            server.local_addr().unwrap().port()
        );
        let answer = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut stream, _) = server.accept().unwrap();
            let mut seen = Vec::new();
            let mut buf = [0; 4096];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            stream.write_all(response).unwrap();
        });
        (url, answer)
    }
}
