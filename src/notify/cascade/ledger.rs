//! The ledger of bursts (`<state>/cascade.json`), read and written only under its lock, and a
//! run's arrival in it.

use super::{
    Arrival, Burst, FORGET_AFTER, Ledger, Member, MemberState, Rule, alive, now, started_ticks,
};
use crate::config::Config;
use crate::notify::email::Outbox;
use crate::state::StateDir;
use crate::ui::when::Timestamp;

pub(super) const LEDGER: &str = "cascade.json";

pub(super) const LOCK: &str = ".cascade.lock";

/// Reads, changes and writes the ledger under its lock.
pub(super) fn with_ledger<T>(
    state: &StateDir,
    change: impl FnOnce(&mut Ledger) -> Result<T, crate::notify::NotifyError>,
) -> Result<T, crate::notify::NotifyError> {
    let _lock = state.lock_exclusive(LOCK)?;
    let path = state.ensure("")?.join(LEDGER);
    let read =
        match crate::host::bounded_read::read(&path, crate::host::bounded_read::MAX_FILE_BYTES) {
            Ok((bytes, _)) => serde_json::from_slice(&bytes).map_err(|err| err.to_string()),
            Err(crate::host::bounded_read::ReadError::Io(err))
                if err.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(Ledger::default())
            }
            Err(err) => Err(err.to_string()),
        };
    let mut ledger = read.unwrap_or_else(|why| {
        // A torn or foreign ledger costs a fold, never a report: whatever is held goes out
        // on its own, and the ledger starts afresh.
        tracing::error!(
            "the cascade ledger {} cannot be read ({why}); held reports are released",
            path.display()
        );
        if let Err(err) = release_all_held(state) {
            tracing::error!("held reports cannot be released: {err}");
        }
        Ledger::default()
    });
    let result = change(&mut ledger)?;
    let bytes = serde_json::to_vec(&ledger)?;
    crate::host::atomic_file::write(&path, &bytes, 0o600).map_err(|cause| {
        crate::state::StateError::Io {
            path: path.clone(),
            cause,
        }
    })?;
    Ok(result)
}

/// Joins `service`'s run to the open burst, or starts one. `None` when cascades are off or the
/// ledger cannot be written (logged: the report is then mailed on its own).
pub(crate) fn arrive(config: &Config, state: &StateDir, service: &str) -> Option<Arrival> {
    let rule = Rule::of(config)?;
    let pid = std::process::id();
    let since = started_ticks(pid)?;
    let joined = with_ledger(state, |ledger| {
        let now = now();
        let forgotten = |burst: &Burst| burst.started_at.time() + FORGET_AFTER < now;
        // A burst left for a day (its runs long gone) is forgotten, its held reports sent on
        // their own rather than lost.
        for burst in ledger.bursts.iter_mut().filter(|b| forgotten(b)) {
            release_held(state, burst);
        }
        ledger.bursts.retain(|burst| {
            let settled = burst.complete(rule, now, &alive) && !burst.holds();
            !settled && !forgotten(burst)
        });
        let open = ledger
            .bursts
            .iter_mut()
            .find(|burst| burst.window_open(rule, now));
        let burst = if let Some(burst) = open {
            burst
        } else {
            ledger.bursts.push(Burst {
                started_at: Timestamp::millis(now),
                members: Vec::new(),
            });
            ledger.bursts.last_mut().expect("just pushed")
        };
        burst.members.push(Member {
            service: service.to_owned(),
            pid,
            since,
            state: MemberState::Running,
        });
        Ok(burst.started_at)
    });
    match joined {
        Ok(burst) => Some(Arrival { burst, pid }),
        Err(err) => {
            tracing::error!(selfheal_service = %service, "the cascade ledger cannot be written, this report goes on its own: {err}");
            None
        }
    }
}

/// Sends a burst's held reports on their own (into the outbox); returns how many.
pub(super) fn release_held(state: &StateDir, burst: &mut Burst) -> usize {
    let (Ok(held), Ok(outbox)) = (Outbox::held(state), Outbox::open(state)) else {
        return 0;
    };
    let mut released = 0;
    for member in &mut burst.members {
        if let MemberState::Held { stem } = &member.state {
            match held.release(stem, &outbox) {
                Ok(()) => {
                    member.state = MemberState::Mailed;
                    released += 1;
                }
                Err(err) => tracing::error!("a held report cannot be released: {err}"),
            }
        }
    }
    released
}

/// Every held message into the outbox: what a broken ledger leaves behind goes out on its own.
pub(super) fn release_all_held(state: &StateDir) -> Result<(), crate::notify::NotifyError> {
    let held = Outbox::held(state)?;
    let outbox = Outbox::open(state)?;
    for stem in held.stems() {
        held.release(&stem, &outbox)?;
    }
    Ok(())
}
