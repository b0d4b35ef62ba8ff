//! One healing run and what it rests on: the run's phases (`run`), the diagnosis from
//! systemd's facts, verification, loop protection's episodes, the strategies, and the watch of
//! the restarts systemd makes by itself.

pub(crate) mod diagnose;
pub(crate) mod episode;
pub(crate) mod facts;
pub(crate) mod guard;
pub(crate) mod hold;
pub(crate) mod pause;
pub(crate) mod planned;
pub(crate) mod probe;
pub(crate) mod run;
pub(crate) mod strategy;
pub(crate) mod verify;
pub(crate) mod watch;

use crate::state::StateError;
use crate::systemd::SystemdError;

/// What stops a run before it can heal: systemd cannot be asked, or the state directory
/// cannot be trusted. (Everything else a run meets is a fact of its report.)
#[derive(Debug, thiserror::Error)]
pub enum HealError {
    #[error(transparent)]
    Systemd(#[from] SystemdError),
    #[error(transparent)]
    State(#[from] StateError),
}
