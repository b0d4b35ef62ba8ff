//! The receiver's connections: each accepted at once and answered on its own thread (at most
//! `MAX_CONNECTIONS` at a time, `MAX_PER_PEER` from one address: a client that opens many and
//! sends nothing cannot keep Alertmanager out), each request bounded in size and time
//! ([`super::http`]); the process ends when no post with the token came for `idle`, and systemd
//! starts it again at the next connection.

use std::collections::HashMap;
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::http::{self, Unread};
use super::{PATH, Receiver, Token};
use crate::systemd::UnitControl;

/// Connections answered at once; one more is told 503 and closed.
const MAX_CONNECTIONS: usize = 32;
/// Connections answered at once from one address.
const MAX_PER_PEER: usize = 4;
/// How long a closing connection is drained (see `linger`).
const LINGER: Duration = Duration::from_secs(1);
/// Refusals (no token) are logged at most this often, with their count.
const REFUSALS_LOGGED_EVERY: Duration = Duration::from_secs(60);

/// Lets a connection's count go when its thread ends, however it ends.
struct Slot<'m> {
    open: &'m Mutex<HashMap<IpAddr, usize>>,
    peer: IpAddr,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

/// Posts refused for want of the token since the last log line about them.
struct Refusals {
    unlogged: u64,
    logged_at: Option<Instant>,
}

impl<U: UnitControl> Receiver<'_, U> {
    /// Answers the connections on `listener` until no post with the token came for `idle`
    /// (`None`: forever).
    pub(crate) fn serve(
        &self,
        listener: &TcpListener,
        idle: Option<Duration>,
    ) -> std::io::Result<()> {
        let last_post = Mutex::new(Instant::now());
        let open: Mutex<HashMap<IpAddr, usize>> = Mutex::default();
        let refusals = Mutex::new(Refusals {
            unlogged: 0,
            logged_at: None,
        });
        let (last_post, open, refusals) = (&last_post, &open, &refusals);
        std::thread::scope(|scope| {
            loop {
                let quiet_for = last_post
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .elapsed();
                let left = idle.map(|idle| idle.saturating_sub(quiet_for));
                if left == Some(Duration::ZERO) {
                    tracing::debug!("no post for {idle:?}: exiting until the next one");
                    return Ok(());
                }
                if !readable(listener.as_fd(), left)? {
                    continue;
                }
                let (stream, peer) = match listener.accept() {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::warn!("accepting a connection failed: {err}");
                        continue;
                    }
                };
                let Some(slot) = take_slot(open, peer.ip()) else {
                    busy(stream);
                    continue;
                };
                scope.spawn(move || {
                    let _slot = slot;
                    if self.answer(stream, refusals) {
                        *last_post
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
                    }
                });
            }
        })
    }

    /// Reads one request from `stream` and answers it; true when it was a post with the token.
    fn answer(&self, mut stream: TcpStream, refusals: &Mutex<Refusals>) -> bool {
        let token = match Token::read(self.token_file) {
            Ok(token) => token,
            Err(problem) => {
                tracing::error!("receiver: {problem}");
                http::respond(
                    &mut stream,
                    503,
                    "text/plain",
                    "the receiver cannot read its token\n",
                );
                return false;
            }
        };
        let request = http::read_request(&mut stream, TcpStream::set_read_timeout_some, |head| {
            token.admits(head.header("authorization"))
        });
        let mut with_token = false;
        let (status, content_type, body) = match request {
            Err(Unread::Gone) => return false,
            Err(unread) => {
                if unread == Unread::Unauthorized {
                    refused(refusals);
                }
                let (status, text) = unread.status();
                (status, "text/plain", text.to_owned())
            }
            Ok(request) if request.method != "POST" => {
                (405, "text/plain", "POST only\n".to_owned())
            }
            Ok(request) if request.path != PATH => (404, "text/plain", "not found\n".to_owned()),
            Ok(request) => {
                with_token = true;
                self.post(&request.body)
            }
        };
        let _ = stream.set_write_timeout(Some(http::REQUEST_TIME));
        http::respond(&mut stream, status, content_type, &body);
        linger(&mut stream);
        with_token
    }
}

/// A place for one more connection from `peer`, if there is one.
fn take_slot(open: &Mutex<HashMap<IpAddr, usize>>, peer: IpAddr) -> Option<Slot<'_>> {
    let mut counts = open
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let total: usize = counts.values().sum();
    let from_peer = counts.entry(peer).or_default();
    if total >= MAX_CONNECTIONS || *from_peer >= MAX_PER_PEER {
        return None;
    }
    *from_peer += 1;
    Some(Slot { open, peer })
}

/// One connection too many: told so at once (Alertmanager posts again after a 5xx, or after
/// a reset). What it already sent is dropped first, without waiting, so that the answer is
/// more likely read than reset.
fn busy(mut stream: TcpStream) {
    use std::io::Read as _;
    if stream.set_nonblocking(true).is_ok() {
        let mut sink = [0u8; 8192];
        let mut drained = 0;
        while drained < 64 * 1024 {
            match stream.read(&mut sink) {
                Ok(read) if read > 0 => drained += read,
                _ => break,
            }
        }
    }
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    http::respond(&mut stream, 503, "text/plain", "busy; post again\n");
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Counts a post refused for want of the token, and logs the refusals at most once a minute:
/// a scanner must not flood the journal (nor push the receiver's own lines past journald's
/// rate limit). The line names no token, and nothing the client sent.
fn refused(refusals: &Mutex<Refusals>) {
    let mut refusals = refusals
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    refusals.unlogged += 1;
    if refusals
        .logged_at
        .is_none_or(|at| at.elapsed() >= REFUSALS_LOGGED_EVERY)
    {
        tracing::warn!(
            "refused {} post(s) without the receiver's token (401)",
            refusals.unlogged
        );
        refusals.unlogged = 0;
        refusals.logged_at = Some(Instant::now());
    }
}

/// Closes after the answer without losing it: a client still sending a body that was not read
/// (a refused post) would otherwise get a reset instead of the answer. What it still sends is
/// read and dropped, for a second at most, on this connection's own thread.
fn linger(stream: &mut TcpStream) {
    use std::io::Read as _;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let until = Instant::now() + LINGER;
    let mut sink = [0u8; 8192];
    let mut drained = 0;
    while drained < http::MAX_BODY_BYTES {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout_some(left).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(read) => drained += read,
        }
    }
}

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
