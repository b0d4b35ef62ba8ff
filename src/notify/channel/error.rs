//! Why a channel's own machinery failed: its queue or alert files, its URL file, the key that
//! tags URLs. Never a channel's answer (that is `http::Failure`) and never a URL: a webhook's URL
//! is its secret, so an error names the file it is in.

use crate::host::file_error::FileError;
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ChannelError {
    /// The state directory refused a directory the channel keeps there.
    #[error(transparent)]
    State(#[from] StateError),
    /// A queue, alert or key file that could not be read, written, removed or locked.
    #[error(transparent)]
    File(#[from] FileError),
    /// A message or an alert that could not be encoded.
    #[error("encoding: {0}")]
    Encoding(#[from] serde_json::Error),
    /// A root-only file (the URL file, the URL key) that is missing, unsafe or unreadable, or
    /// a URL in it that is not usable: the sentence names the file.
    #[error("{0}")]
    Secret(String),
    /// The system gave no random bytes for the URL key.
    #[error("the system gave no random bytes for the outbox key")]
    NoRandom,
}
