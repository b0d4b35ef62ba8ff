//! The receivers the tests and benchmarks send to: a real SMTP server, a webhook receiver and
//! Debian's Alertmanager, each a process of its own outside the sandbox (the sandbox shares the
//! host's network).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{free_port, wait_until};

/// A real SMTP server (aiosmtpd, `tests/smtp_server.py`): STARTTLS required before AUTH
/// PLAIN/LOGIN, its own CA, accepted messages saved as files.
pub(crate) struct SmtpServer {
    child: Option<std::process::Child>,
    pub port: u16,
    root: PathBuf,
    pub user: String,
    password: String,
    /// How long it takes to accept a message.
    delay: Duration,
    /// Serves a self-signed CA:TRUE certificate instead of one signed by its CA.
    self_signed: bool,
}

impl SmtpServer {
    /// Starts a server with its files under `root`, accepting `user` / `password`.
    pub(crate) fn start(root: &Path, user: &str, password: &str) -> SmtpServer {
        SmtpServer::start_slow(root, user, password, Duration::ZERO)
    }

    /// A slow relay: it takes `delay` to accept each message, and creates `data_started()`
    /// when a message begins to arrive.
    pub(crate) fn start_slow(
        root: &Path,
        user: &str,
        password: &str,
        delay: Duration,
    ) -> SmtpServer {
        SmtpServer::launch(root, user, password, delay, false)
    }

    /// A relay whose certificate is self-signed and also a CA (what `openssl req -x509`
    /// makes by default); `self_signed_certificate()` is that certificate.
    pub(crate) fn start_self_signed(root: &Path, user: &str, password: &str) -> SmtpServer {
        SmtpServer::launch(root, user, password, Duration::ZERO, true)
    }

    fn launch(
        root: &Path,
        user: &str,
        password: &str,
        delay: Duration,
        self_signed: bool,
    ) -> SmtpServer {
        std::fs::create_dir_all(root).unwrap();
        let mut server = SmtpServer {
            child: None,
            port: free_port(),
            root: root.to_owned(),
            user: user.to_owned(),
            password: password.to_owned(),
            delay,
            self_signed,
        };
        server.resume();
        server
    }

    /// The self-signed certificate of `start_self_signed`.
    pub(crate) fn self_signed_certificate(&self) -> PathBuf {
        self.root.join("self-signed.pem")
    }

    /// Starts it again (same port, same CA) after `stop`.
    pub(crate) fn resume(&mut self) {
        use std::io::BufRead;
        let password_file = self.root.join("server-password");
        std::fs::write(&password_file, &self.password).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_server.py");
        let mut child = std::process::Command::new("/usr/bin/python3")
            .arg(script)
            .args(["--port", &self.port.to_string(), "--user", &self.user])
            .args(["--delay", &self.delay.as_secs_f64().to_string()])
            .arg("--dir")
            .arg(self.messages_dir())
            .arg("--password-file")
            .arg(&password_file)
            .args(self.self_signed.then_some("--self-signed"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("starting tests/smtp_server.py (apt install python3-aiosmtpd)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the SMTP server did not start");
        self.child = Some(child);
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn messages_dir(&self) -> PathBuf {
        self.root.join("received")
    }

    /// Exists once a slow server has started receiving a message.
    pub(crate) fn data_started(&self) -> PathBuf {
        self.root.join("data-started")
    }

    /// The CA that signed the server's certificate (for `ca_file`).
    pub(crate) fn ca_file(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    /// Every message the server accepted, in order, as raw bytes.
    pub(crate) fn messages(&self) -> Vec<Vec<u8>> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.messages_dir())
            .map(|dir| dir.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        paths.retain(|p| p.extension().is_some_and(|e| e == "eml"));
        paths.sort();
        paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
    }

    /// Waits until the server has accepted `count` messages.
    #[track_caller]
    pub(crate) fn wait_for_messages(&self, count: usize, timeout: Duration) -> Vec<Vec<u8>> {
        wait_until(timeout, &format!("{count} mail(s)"), || {
            self.messages().len() >= count
        });
        self.messages()
    }

    /// The config's `email:` section for this server (as `email_yaml`), for `Config::with`.
    pub(crate) fn email_config(&self, password_file: &Path, password: &str) -> serde_json::Value {
        std::fs::write(password_file, format!("{password}\n")).unwrap();
        std::fs::set_permissions(password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        serde_json::json!({
            "to": ["ops@example.org"],
            "from": "selfheal@testhost.example",
            "transport": "smtp",
            "smtp": {
                "host": "127.0.0.1",
                "port": self.port,
                "security": "starttls",
                "username": self.user,
                "password_file": password_file,
                "ca_file": self.ca_file(),
                "timeout": "5s",
            },
        })
    }

    /// The config's `email:` section for this server, with the client's password in
    /// `password_file` (written root-owned, mode 0600, as selfheal requires).
    pub(crate) fn email_yaml(&self, password_file: &Path, password: &str) -> String {
        std::fs::write(password_file, format!("{password}\n")).unwrap();
        std::fs::set_permissions(password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        format!(
            "email:\n  to: [ops@example.org]\n  from: selfheal@testhost.example\n  transport: smtp\n  smtp:\n    host: 127.0.0.1\n    port: {}\n    security: starttls\n    username: {}\n    password_file: {}\n    ca_file: {}\n    timeout: 5s\n",
            self.port,
            self.user,
            password_file.display(),
            self.ca_file().display()
        )
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A parsed mail: decoded headers and the text and HTML parts.
pub(crate) struct Mail {
    pub subject: String,
    pub headers: Vec<(String, String)>,
    pub content_type: String,
    pub text: String,
    pub html: String,
}

impl Mail {
    pub(crate) fn parse(raw: &[u8]) -> Mail {
        let parsed = mailparse::parse_mail(raw).unwrap();
        let header = |name: &str| {
            parsed
                .headers
                .iter()
                .find(|h| h.get_key().eq_ignore_ascii_case(name))
                .map(mailparse::MailHeader::get_value)
                .unwrap_or_default()
        };
        let part = |mime: &str| {
            parsed
                .subparts
                .iter()
                .find(|p| p.ctype.mimetype == mime)
                .map(|p| p.get_body().unwrap())
                .unwrap_or_default()
        };
        Mail {
            subject: header("Subject"),
            headers: parsed
                .headers
                .iter()
                .map(|h| (h.get_key(), h.get_value()))
                .collect(),
            content_type: parsed.ctype.mimetype.clone(),
            text: part("text/plain"),
            html: part("text/html"),
        }
    }

    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map_or("", |(_, value)| value)
    }
}

/// Part of every webhook URL: it stands for a Slack or ntfy token, and must never be written.
pub(crate) const TOKEN: &str = "tok-5f2a9c-never-shown";

/// A webhook receiver (`tests/webhook_server.py`): every accepted POST is a JSON file.
pub(crate) struct WebhookServer {
    pub child: std::process::Child,
    pub port: u16,
    pub dir: PathBuf,
}

/// One POST the receiver accepted.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Post {
    pub path: String,
    pub headers: std::collections::HashMap<String, String>,
    pub body: String,
}

impl Post {
    /// A header, by its name in any case (HTTP's names are case-insensitive).
    #[track_caller]
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map_or_else(
                || panic!("no {name} header in {:?}", self.headers),
                |(_, value)| value.as_str(),
            )
    }
}

impl WebhookServer {
    pub(crate) fn start(dir: &Path) -> WebhookServer {
        use std::io::BufRead as _;
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhook_server.py");
        let mut child = std::process::Command::new("/usr/bin/python3")
            .arg(script)
            .args(["--port", &port.to_string(), "--dir"])
            .arg(dir)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the webhook receiver did not start");
        WebhookServer {
            child,
            port,
            dir: dir.to_owned(),
        }
    }

    /// Answers every POST with 503 (down) or accepts them again.
    pub(crate) fn set_down(&self, down: bool) {
        self.answer(if down { 503 } else { 200 });
    }

    /// Answers every POST with `status` from now on (200 accepts and records them).
    pub(crate) fn answer(&self, status: u16) {
        let file = self.dir.join("status");
        if status == 200 {
            let _ = std::fs::remove_file(file);
        } else {
            std::fs::write(file, status.to_string()).unwrap();
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}/{TOKEN}", self.port)
    }

    /// What it accepted, in arrival order.
    pub(crate) fn posts(&self) -> Vec<Post> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }

    #[track_caller]
    pub(crate) fn wait_for_posts(&self, count: usize) -> Vec<Post> {
        wait_until(
            Duration::from_secs(30),
            &format!("{count} webhook post(s)"),
            || self.posts().len() >= count,
        );
        self.posts()
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's Alertmanager on a port of its own, routing every alert nowhere.
pub(crate) struct Alertmanager {
    pub child: Option<std::process::Child>,
    pub port: u16,
    pub dir: PathBuf,
}

impl Alertmanager {
    /// A port for it, not listening yet.
    pub(crate) fn reserve(dir: &Path) -> Alertmanager {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("alertmanager.yml"),
            "route:\n  receiver: nowhere\nreceivers:\n  - name: nowhere\n",
        )
        .unwrap();
        Alertmanager {
            child: None,
            port: free_port(),
            dir: dir.to_owned(),
        }
    }

    pub(crate) fn start(&mut self) {
        let child = std::process::Command::new("/usr/bin/prometheus-alertmanager")
            .arg(format!(
                "--config.file={}",
                self.dir.join("alertmanager.yml").display()
            ))
            .arg(format!(
                "--storage.path={}",
                self.dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--cluster.listen-address=")
            .stderr(std::fs::File::create(self.dir.join("log")).unwrap())
            .spawn()
            .expect("starting prometheus-alertmanager (apt install prometheus-alertmanager)");
        self.child = Some(child);
        wait_until(Duration::from_secs(30), "Alertmanager to be ready", || {
            self.get("/-/ready")
                .is_some_and(|body| body.starts_with("OK"))
        });
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn get(&self, path: &str) -> Option<String> {
        http_get(self.port, path)
    }

    /// The alerts it holds active (resolved ones are not listed).
    pub(crate) fn active_alerts(&self) -> Vec<serde_json::Value> {
        let body = self.get("/api/v2/alerts?active=true").unwrap_or_default();
        serde_json::from_str(&body).unwrap_or_default()
    }

    pub(crate) fn active_for(&self, service: &str) -> Option<serde_json::Value> {
        self.active_alerts()
            .into_iter()
            .find(|alert| alert["labels"]["service"] == service)
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The body of `GET path` from 127.0.0.1:`port` (HTTP/1.0), `None` when nothing answers.
pub(crate) fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

/// Writes a webhook URL file as selfheal requires it: root's, mode 0600.
pub(crate) fn url_file(dir: &Path, name: &str, url: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{url}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}
