//! A channel's queue in the outbox: `<state>/outbox/<channel id>/<stem>.json`, one message
//! per file (the request and its delivery attempts; never the URL). A message is written
//! before the first attempt and removed once the channel accepted it. Messages go out oldest
//! first and stop at the first failure, so a channel never sees a resolve before its fire.
//! A message the channel refuses for what it is (HTTP 400, 413, 422) would block the queue
//! for good: it is set aside in `<channel id>/refused/`, said, and the queue goes on.
//! One sender at a time per channel (an flock on `.lock`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::fcntl::{Flock, FlockArg};

use super::http::Failure;
use super::{ChannelError, Message};
use crate::host::atomic_file;
use crate::host::file_error::FileError;
use crate::state::StateDir;

/// Requests carry reports: only root reads them.
const MODE: u32 = 0o600;

/// Where a channel's refused messages are set aside, under its queue.
const REFUSED: &str = "refused";

/// One channel's directory in the outbox.
pub(crate) struct Queue {
    dir: PathBuf,
    state: StateDir,
    id: String,
}

/// What one delivery round of a channel did.
#[derive(Debug, Default)]
pub(crate) struct Round {
    /// What was delivered, oldest first.
    pub delivered: Vec<Message>,
    /// The message the channel refused or did not answer, and why; the round stopped there.
    pub failed: Option<(Message, String)>,
    /// Messages behind the failed one, still queued.
    pub waiting: usize,
    /// Messages the channel refused for good, each with its answer and where it was set aside.
    pub refused: Vec<(Message, String, PathBuf)>,
    /// Files that are not a readable message: left in place, skipped.
    pub unreadable: Vec<PathBuf>,
}

impl Queue {
    /// The queue of channel `id`, created when `create` (a reader must not create it).
    pub(crate) fn open(state: &StateDir, id: &str) -> Result<Queue, ChannelError> {
        let dir = state.root().join("outbox").join(id);
        state
            .ensure("outbox")
            .and_then(|_| state.ensure(&format!("outbox/{id}")))?;
        Ok(Queue {
            dir,
            state: state.clone(),
            id: id.to_owned(),
        })
    }

    /// How many messages wait in channel `id`'s queue, and the first of them (its attempts
    /// and last error say why they wait), without creating the queue.
    pub(crate) fn backlog(state: &StateDir, id: &str) -> (usize, Option<Message>) {
        let paths = messages_in(&state.root().join("outbox").join(id)).unwrap_or_default();
        (paths.len(), paths.first().and_then(|path| read(path)))
    }

    /// How many messages channel `id` refused for good (set aside in `refused/`).
    pub(crate) fn refused(state: &StateDir, id: &str) -> usize {
        messages_in(&state.root().join("outbox").join(id).join(REFUSED))
            .map_or(0, |paths| paths.len())
    }

    /// Adds `message` at the end of the queue.
    pub(crate) fn push(&self, message: &Message) -> Result<PathBuf, ChannelError> {
        static SEQUENCE: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let stem = format!(
            "{nanos:020}-{:07}-{:04}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let path = self.dir.join(format!("{stem}.json"));
        write(&path, message)?;
        Ok(path)
    }

    /// Sends the queued messages with `send`, oldest first, until one fails, then calls
    /// `while_held` with what was done, still as the channel's one sender. Waits for another
    /// sender of this channel to finish first (each of its attempts is bounded).
    pub(crate) fn deliver<T>(
        &self,
        send: impl Fn(&Message) -> Result<(), Failure>,
        while_held: impl FnOnce(&Round) -> T,
    ) -> Result<(Round, T), ChannelError> {
        let _sender = self.lock()?;
        let mut round = Round::default();
        let mut paths = messages_in(&self.dir)
            .map_err(FileError::of("reading", &self.dir))?
            .into_iter();
        for path in paths.by_ref() {
            let Some(mut message) = read(&path) else {
                round.unreadable.push(path);
                continue;
            };
            match send(&message) {
                Ok(()) => {
                    remove(&path)?;
                    round.delivered.push(message);
                }
                Err(Failure::Retry(error)) => {
                    message.attempts += 1;
                    message.last_error = Some(error.clone());
                    write(&path, &message)?;
                    round.failed = Some((message, error));
                    break;
                }
                Err(Failure::Refused(error)) => {
                    message.attempts += 1;
                    message.last_error = Some(error.clone());
                    let aside = self.set_aside(&path, &message)?;
                    round.refused.push((message, error, aside));
                }
            }
        }
        round.waiting = paths.count();
        let after = while_held(&round);
        Ok((round, after))
    }

    /// Moves the message at `path` to `refused/`, with its last answer, out of the queue.
    fn set_aside(&self, path: &Path, message: &Message) -> Result<PathBuf, ChannelError> {
        let dir = self
            .state
            .ensure(&format!("outbox/{}/{REFUSED}", self.id))?;
        let aside = dir.join(path.file_name().unwrap_or_default());
        write(&aside, message)?;
        remove(path)?;
        Ok(aside)
    }

    fn lock(&self) -> Result<Flock<File>, ChannelError> {
        let path = self.dir.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(FileError::of("opening", &path))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| FileError::of("locking", &path)(errno.into()).into())
    }
}

/// The message files in `dir`, oldest first (their names start with the time they were
/// queued).
fn messages_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    Ok(paths)
}

fn read(path: &Path) -> Option<Message> {
    let (bytes, _) =
        crate::host::bounded_read::read(path, crate::host::bounded_read::MAX_FILE_BYTES).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn write(path: &Path, message: &Message) -> Result<(), ChannelError> {
    let bytes = serde_json::to_vec_pretty(message)?;
    atomic_file::write(path, &bytes, MODE).map_err(FileError::of("writing", path))?;
    Ok(())
}

fn remove(path: &Path) -> Result<(), ChannelError> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(FileError::of("removing", path)(err).into())
        }
        _ => Ok(()),
    }
}
