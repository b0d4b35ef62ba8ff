//! `receiver:`: where selfheal listens for Alertmanager's webhooks, and the file that holds
//! the bearer token Alertmanager sends.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `receiver:` (absent: no receiver is installed).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReceiverConfig {
    /// `address:port` the socket listens on (`127.0.0.1:9095`).
    pub listen: SocketAddr,
    /// The bearer token, in a file only root can read or change.
    pub token_file: PathBuf,
}

/// A problem with `receiver:`: (key, message).
pub(super) fn validate(receiver: &ReceiverConfig) -> Result<(), (&'static str, String)> {
    if !receiver.token_file.is_absolute() {
        return Err((
            "token_file",
            format!(
                "token_file {} must be an absolute path",
                receiver.token_file.display()
            ),
        ));
    }
    if receiver.listen.port() == 0 {
        return Err((
            "listen",
            "listen needs a port other than 0 (Alertmanager must know where to post)".to_owned(),
        ));
    }
    Ok(())
}
