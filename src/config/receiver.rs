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
    #[serde(deserialize_with = "socket_address")]
    pub listen: SocketAddr,
    /// The bearer token, in a file only root can read or change.
    pub token_file: PathBuf,
    /// Other names an alert's `host` or `instance` label may give this host (its addresses,
    /// aliases), besides its host name.
    #[serde(default)]
    pub names: Vec<String>,
}

/// An IP address and a port, said plainly when it is not one (a host name is not resolved:
/// the socket must not move with DNS).
fn socket_address<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "listen {text:?} is not an IP address and port (127.0.0.1:9095, [::1]:9095, 0.0.0.0:9095); a host name is not resolved"
        ))
    })
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
    if let Some(name) = receiver
        .names
        .iter()
        .find(|name| name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err((
            "names",
            format!("names: {name:?} is not a host name or address"),
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
