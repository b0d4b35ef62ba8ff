//! Where a report goes: mailed now through the outbox (`email`: compose, queue, transports),
//! or held for the cascade its run joined (`cascade`, `mailing`).

pub(crate) mod cascade;
pub(crate) mod email;
pub(crate) mod mailing;
