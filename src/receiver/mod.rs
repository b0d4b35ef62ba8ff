//! `selfheal receive`: Alertmanager's webhook receiver (what `selfheal-receiver.service` runs,
//! socket-activated by `selfheal-receiver.socket`). A `POST /alertmanager` with the bearer
//! token starts `selfheal@<service>.service` for each firing alert that names a service
//! selfheal heals on this host; the run does the rest as for any other start (loop
//! protection, pauses, the guard), and its report names the alert. One connection at a time,
//! each bounded in size and time; the process exits when no request came for a while, and
//! systemd starts it again at the next.

pub(crate) mod alertmanager;
pub(crate) mod http;
pub(crate) mod token;

use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::Config;
use crate::state::StateDir;
use crate::state::alerts::FiringAlert;
use crate::systemd::{ActiveState, SystemdError, UnitControl};
use alertmanager::{ThisHost, Verdict};
pub(crate) use token::Token;

/// The path Alertmanager's `webhook_configs` posts to.
pub(crate) const PATH: &str = "/alertmanager";

/// What the receiver keeps for its whole life.
pub(crate) struct Receiver<'a, U> {
    pub config: &'a Config,
    pub state: &'a StateDir,
    pub token: &'a Token,
    pub this_host: ThisHost,
    pub connect: &'a dyn Fn() -> Result<U, SystemdError>,
}

/// The answer to a post that was read: what started, what did not and why.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Answer {
    pub started: Vec<Started>,
    pub ignored: Vec<Ignored>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Started {
    pub service: String,
    pub alertname: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct Ignored {
    pub alertname: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub why: String,
}

impl<U: UnitControl> Receiver<'_, U> {
    /// Answers the connections on `listener`, one at a time, until none came for `idle`
    /// (`None`: forever).
    pub(crate) fn serve(
        &self,
        listener: &TcpListener,
        idle: Option<Duration>,
    ) -> std::io::Result<()> {
        loop {
            if !readable(listener.as_fd(), idle)? {
                tracing::debug!("no request for {idle:?}: exiting until the next one");
                return Ok(());
            }
            match listener.accept() {
                Ok((stream, _)) => self.answer(stream),
                Err(err) => tracing::warn!("accepting a connection failed: {err}"),
            }
        }
    }

    /// Reads one request from `stream` and answers it.
    fn answer(&self, mut stream: TcpStream) {
        let request = http::read_request(&mut stream, TcpStream::set_read_timeout_some, |head| {
            head.path != PATH || self.token.admits(head.header("authorization"))
        });
        let (status, content_type, body) = match request {
            Err(http::Unread::Gone) => return,
            Err(unread) => {
                let (status, text) = unread.status();
                if unread == http::Unread::Unauthorized {
                    tracing::warn!("refused a post without the receiver's token (401)");
                }
                (status, "text/plain", text.to_owned())
            }
            Ok(request) if request.path != PATH => (404, "text/plain", "not found\n".to_owned()),
            Ok(request) if request.method != "POST" => {
                (405, "text/plain", "POST only\n".to_owned())
            }
            Ok(request) => self.post(&request.body),
        };
        let _ = stream.set_write_timeout(Some(http::REQUEST_TIME));
        http::respond(&mut stream, status, content_type, &body);
        linger(&mut stream);
    }

    /// A post with the token: each alert judged, the heals started.
    fn post(&self, body: &[u8]) -> (u16, &'static str, String) {
        let now = SystemTime::now();
        let verdicts = match alertmanager::judge(body, self.config, &self.this_host, now) {
            Ok(verdicts) => verdicts,
            Err(unreadable) => return (400, "text/plain", unreadable.answer().to_owned()),
        };
        match self.start_heals(verdicts, now) {
            Ok(answer) => (
                200,
                "application/json",
                serde_json::to_string(&answer).unwrap_or_default() + "\n",
            ),
            // Alertmanager posts again after a 5xx.
            Err(err) => {
                tracing::error!("cannot start heals, systemd did not answer: {err}");
                (
                    503,
                    "text/plain",
                    "systemd did not answer; post again\n".to_owned(),
                )
            }
        }
    }

    /// Starts the heal unit of each `Heal` verdict, unless a run heals the service now or
    /// the alert is a repeat of the one that started the last heal.
    fn start_heals(&self, verdicts: Vec<Verdict>, now: SystemTime) -> Result<Answer, SystemdError> {
        let mut answer = Answer::default();
        let mut heals: Vec<(String, FiringAlert)> = Vec::new();
        let mut heal_units: Vec<String> = Vec::new();
        for verdict in verdicts {
            match verdict {
                Verdict::Heal {
                    service,
                    heal_unit,
                    alert,
                } => {
                    heals.push((service, alert));
                    heal_units.push(heal_unit);
                }
                Verdict::Ignored {
                    alertname,
                    service,
                    why,
                } => {
                    tracing::info!("alert {alertname} starts nothing: {why}");
                    answer.ignored.push(Ignored {
                        alertname,
                        service,
                        why,
                    });
                }
            }
        }
        if heals.is_empty() {
            return Ok(answer);
        }
        let systemd = (self.connect)()?;
        let names: Vec<&str> = heal_units.iter().map(String::as_str).collect();
        let states = systemd.loaded_states(&names)?;
        for (((service, alert), heal_unit), heal) in heals.into_iter().zip(&heal_units).zip(states)
        {
            let why_not = if let Some(last) = self.state.last_alert(&service).ok().flatten()
                && alert.repeats(&last, now)
            {
                Some(format!(
                    "a repeat of the alert that started its heal at {}",
                    last.received_at.readable()
                ))
            } else if heal.load_state != "loaded" {
                Some(format!(
                    "{heal_unit} is {} (selfheal install writes it)",
                    heal.load_state
                ))
            } else if matches!(
                heal.active_state,
                ActiveState::Active | ActiveState::Activating
            ) {
                Some(format!("{heal_unit} is healing it now"))
            } else {
                None
            };
            if let Some(why) = why_not {
                tracing::info!(selfheal_service = %service, "alert {} starts nothing: {why}", alert.alertname);
                answer.ignored.push(Ignored {
                    alertname: alert.alertname,
                    service: Some(service),
                    why,
                });
                continue;
            }
            // Recorded before the start: the run reads which alert started it.
            if let Err(err) = self.state.record_alert(&service, &alert) {
                tracing::error!(selfheal_service = %service, "the alert cannot be recorded, the report will not name it: {err}");
            }
            match systemd.start_no_wait(heal_unit) {
                Ok(()) => {
                    tracing::warn!(selfheal_service = %service, "alert {} is firing: {heal_unit} started", alert.alertname);
                    answer.started.push(Started {
                        service,
                        alertname: alert.alertname,
                    });
                }
                Err(err) => {
                    tracing::error!(selfheal_service = %service, "starting {heal_unit} failed: {err}");
                    answer.ignored.push(Ignored {
                        alertname: alert.alertname,
                        service: Some(service),
                        why: format!("starting {heal_unit} failed: {err}"),
                    });
                }
            }
        }
        Ok(answer)
    }
}

/// Closes after the answer without losing it: a client still sending a body that was not read
/// (a refused post) would otherwise get a reset instead of the answer. What it still sends is
/// read and dropped, for a second at most.
fn linger(stream: &mut TcpStream) {
    use std::io::Read as _;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let until = std::time::Instant::now() + LINGER;
    let mut sink = [0u8; 8192];
    let mut drained = 0;
    while drained < http::MAX_BODY_BYTES {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || stream.set_read_timeout_some(left).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(read) => drained += read,
        }
    }
}

/// How long a closing connection is drained (see `linger`).
const LINGER: Duration = Duration::from_secs(1);

/// Waits until a connection can be accepted on `fd`: false when `timeout` passed first.
fn readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> std::io::Result<bool> {
    let millis = timeout.map_or(-1, |timeout| {
        i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX)
    });
    let mut poll = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one pollfd that lives across the call, and the count says one.
        let ready = unsafe { libc::poll(&raw mut poll, 1, millis) };
        match ready {
            -1 if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            -1 => return Err(std::io::Error::last_os_error()),
            0 => return Ok(false),
            _ => return Ok(true),
        }
    }
}

/// `set_read_timeout` with a duration that is never zero (zero means "no timeout").
trait ReadTimeout {
    fn set_read_timeout_some(&self, timeout: Duration) -> std::io::Result<()>;
}

impl ReadTimeout for TcpStream {
    fn set_read_timeout_some(&self, timeout: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
    }
}
