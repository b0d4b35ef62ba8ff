//! `selfheal receive`: Alertmanager's webhook receiver, on the socket systemd passes
//! (`selfheal-receiver.socket`), or on `receiver.listen` when started by hand.

use std::net::TcpListener;
use std::os::fd::FromRawFd;
use std::time::Duration;

use crate::cli::ReceiveArgs;
use crate::exit_code::ExitCode;
use crate::receiver::alertmanager::ThisHost;
use crate::receiver::{Receiver, Token};
use crate::systemd::Systemd;
use crate::{Error, UsageError};

use super::Paths;

/// The first file descriptor systemd passes (`SD_LISTEN_FDS_START`).
const FIRST_PASSED_FD: i32 = 3;

pub(super) fn execute(paths: &Paths, args: &ReceiveArgs) -> Result<ExitCode, Error> {
    let config = paths.load_config()?;
    let Some(settings) = &config.receiver else {
        return Err(UsageError(format!(
            "{} has no receiver: section (listen: and token_file:)",
            paths.config.display()
        ))
        .into());
    };
    // Refused now, with the reason, rather than at every post.
    Token::read(&settings.token_file).map_err(UsageError)?;
    let listener = match passed_socket() {
        Some(listener) => listener,
        None => TcpListener::bind(settings.listen).map_err(|err| {
            Error::Internal(anyhow::anyhow!("listening on {}: {err}", settings.listen))
        })?,
    };
    let hostname = nix::unistd::gethostname()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let state = paths.state();
    let receiver = Receiver::new(
        &config,
        &state,
        &settings.token_file,
        ThisHost::named(&hostname, &settings.names),
        &Systemd::connect,
    );
    let idle = Duration::from(args.idle);
    tracing::info!(
        "receiving Alertmanager's webhooks on {}",
        listener
            .local_addr()
            .map_or_else(|_| "the passed socket".to_owned(), |a| a.to_string())
    );
    receiver
        .serve(&listener, (!idle.is_zero()).then_some(idle))
        .map_err(|err| Error::Internal(anyhow::anyhow!("waiting for a connection: {err}")))?;
    Ok(ExitCode::Success)
}

/// The listening socket systemd passed to this process (socket activation: `LISTEN_PID` is
/// ours and `LISTEN_FDS` at least 1), if any.
fn passed_socket() -> Option<TcpListener> {
    let for_us = std::env::var("LISTEN_PID").ok()?.parse::<u32>().ok()? == std::process::id();
    let count: i32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if !for_us || count < 1 {
        return None;
    }
    // SAFETY: systemd passed fd 3 to this process for it to own (LISTEN_PID is ours), and
    // nothing else in this process has taken it: it is read once, here.
    Some(unsafe { TcpListener::from_raw_fd(FIRST_PASSED_FD) })
}
