//! Where a report goes: mailed now through the outbox (`email`: compose, queue, transports),
//! or held for the cascade its run joined (`cascade`, `mailing`); and posted on the channels
//! beside email, webhooks and Alertmanager (`channel`).

pub(crate) mod cascade;
pub(crate) mod channel;
pub(crate) mod email;
pub(crate) mod mailing;
pub(crate) mod policy;
pub(crate) mod remind;
pub(crate) mod tell;

use crate::notify::email::{EmailError, OutboxError};
use crate::report::RenderError;
use crate::state::StateError;

/// What keeps a report from being stored or sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Email(#[from] EmailError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Template(#[from] RenderError),
    /// The cascade ledger or a report's JSON could not be encoded.
    #[error("encoding JSON: {0}")]
    Encode(#[from] serde_json::Error),
}
