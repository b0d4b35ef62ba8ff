//! The outbox: `<state>/outbox/<stem>.eml` (the message exactly as it will be sent) plus
//! `<stem>.json` (envelope and delivery attempts). A message is written before the first send
//! and removed only after the server accepted it, so a report survives a down network, a
//! killed run and a reboot.
//!
//! Each send holds an flock on the `.eml` file: a `flush` racing a `run` (or another flush)
//! skips a message someone is already sending, so nothing is delivered twice.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::compose::{Composed, Envelope};
use crate::host::atomic_file;
use crate::host::file_error::FileError;
use crate::state::StateDir;

/// Reports carry log lines: only root reads the outbox.
const MODE: u32 = 0o600;

/// An outbox file or directory that could not be written, read or removed (exit 5: the
/// outbox lives in the state directory).
#[derive(Debug, thiserror::Error)]
#[error("outbox: {0}")]
pub struct OutboxError(#[from] pub FileError);

/// `map_err` for an I/O step on `path`.
fn failed(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError {
    let failed = FileError::of(action, path);
    move |cause| OutboxError(failed(cause))
}

/// The envelope and delivery record of a queued message (its `.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct QueueMeta {
    #[serde(flatten)]
    pub envelope: Envelope,
    /// To the millisecond.
    pub queued_at: crate::ui::when::Timestamp,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// One message in the outbox.
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    pub eml: PathBuf,
    pub meta: QueueMeta,
}

impl Queued {
    fn meta_path(&self) -> PathBuf {
        self.eml.with_extension("json")
    }

    /// The message exactly as it will be sent.
    pub(crate) fn bytes(&self) -> Result<Vec<u8>, OutboxError> {
        std::fs::read(&self.eml).map_err(failed("reading", &self.eml))
    }

    /// Its file name, for transports that keep one.
    pub(crate) fn name(&self) -> String {
        self.eml
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    }
}

/// What a flush did.
#[derive(Debug, Default)]
pub(crate) struct FlushSummary {
    pub delivered: Vec<QueueMeta>,
    /// Messages that stay queued, with the reason.
    pub failed: Vec<(QueueMeta, String)>,
    /// Messages another process was sending at that moment.
    pub busy: usize,
    /// Messages whose envelope (`.json`) is missing or unreadable: skipped, left in place.
    pub unreadable: Vec<Unreadable>,
}

/// A queued `.eml` that cannot be sent because its envelope is missing or torn.
#[derive(Debug)]
pub(crate) struct Unreadable {
    pub eml: PathBuf,
    pub why: String,
}

pub(crate) struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    pub(crate) fn open(state: &StateDir) -> Result<Outbox, crate::notify::NotifyError> {
        Ok(Outbox {
            dir: state.ensure("outbox")?,
        })
    }

    /// The outbox's `held/` directory: reports kept back while a cascade may still fold them
    /// into one mail. `flush` does not send them; the cascade's delivery releases or discards
    /// them.
    pub(crate) fn held(state: &StateDir) -> Result<Outbox, crate::notify::NotifyError> {
        state.ensure("outbox")?;
        Ok(Outbox {
            dir: state.ensure("outbox/held")?,
        })
    }

    /// Moves the held message `stem` into `to`, envelope first (a listed `.eml` always has
    /// one). A message already moved or removed is no error.
    pub(crate) fn release(&self, stem: &str, to: &Outbox) -> Result<(), OutboxError> {
        for extension in ["json", "eml"] {
            let from = self.dir.join(format!("{stem}.{extension}"));
            match std::fs::rename(&from, to.dir.join(format!("{stem}.{extension}"))) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    return Err(failed("moving", &from)(err));
                }
                _ => {}
            }
        }
        remove_if_present(&self.report_path(stem))
    }

    /// Removes the held message `stem` (folded into a cascade mail).
    pub(crate) fn discard(&self, stem: &str) -> Result<(), OutboxError> {
        remove_if_present(&self.dir.join(format!("{stem}.eml")))?;
        remove_if_present(&self.dir.join(format!("{stem}.json")))?;
        remove_if_present(&self.report_path(stem))
    }

    fn report_path(&self, stem: &str) -> PathBuf {
        self.dir.join(format!("{stem}.report.json"))
    }

    /// Keeps the report (its JSON) beside the held message `stem`, for the cascade mail.
    pub(crate) fn keep_report(&self, stem: &str, report: &[u8]) -> Result<(), OutboxError> {
        let path = self.report_path(stem);
        atomic_file::write(&path, report, MODE).map_err(failed("writing", &path))
    }

    /// The report kept beside the held message `stem`; `None` when it is gone or torn.
    pub(crate) fn kept_report(&self, stem: &str) -> Option<serde_json::Value> {
        let (bytes, _) = crate::host::bounded_read::read(
            &self.report_path(stem),
            crate::host::bounded_read::MAX_FILE_BYTES,
        )
        .ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The stems of every message in this directory.
    pub(crate) fn stems(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut stems: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|name| name.strip_suffix(".eml"))
                    .map(str::to_owned)
            })
            .collect();
        stems.sort();
        stems
    }

    /// Stores the message: meta first, then the `.eml` (each written to a temporary name and
    /// renamed into place), so a listed `.eml` is always complete. The returned claim is taken
    /// before the `.eml` becomes visible: no flush can send it while the caller does.
    pub(crate) fn queue(&self, composed: &Composed) -> Result<(Queued, Flock<File>), OutboxError> {
        let queued = Queued {
            eml: self.dir.join(format!("{}.eml", composed.stem)),
            meta: QueueMeta {
                envelope: composed.envelope.clone(),
                queued_at: crate::ui::when::Timestamp::now_millis(),
                attempts: 0,
                last_error: None,
            },
        };
        write_meta(&queued.meta_path(), &queued.meta)?;
        let pending = atomic_file::prepare(&queued.eml, &composed.bytes, MODE)
            .map_err(failed("writing", &queued.eml))?;
        // The claim is on the file's open description, so it outlives the descriptor that
        // commit() hands back and holds until the caller drops it.
        let description = pending
            .file
            .try_clone()
            .map_err(failed("writing", &queued.eml))?;
        let claim = Flock::lock(description, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| failed("locking", &queued.eml)(errno.into()))?;
        pending.commit().map_err(failed("writing", &queued.eml))?;
        Ok((queued, claim))
    }

    /// How many messages wait in `state`'s outbox, without creating it.
    /// How many reports wait, and when the oldest was queued (its file's time).
    /// Held reports (waiting for their cascade) count too.
    pub(crate) fn backlog(state: &StateDir) -> (usize, Option<std::time::SystemTime>) {
        let outbox = state.root().join("outbox");
        let queued: Vec<std::time::SystemTime> = [outbox.clone(), outbox.join("held")]
            .iter()
            .filter_map(|dir| std::fs::read_dir(dir).ok())
            .flat_map(std::iter::Iterator::flatten)
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .filter_map(|e| e.metadata().and_then(|m| m.modified()).ok())
            .collect();
        (queued.len(), queued.iter().min().copied())
    }

    /// Queued messages, oldest first, and those whose envelope cannot be read (one torn
    /// `.json` must not keep every other report from being delivered).
    pub(crate) fn pending(&self) -> Result<(Vec<Queued>, Vec<Unreadable>), OutboxError> {
        let mut found = Vec::new();
        let mut unreadable = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(failed("reading", &self.dir))? {
            let path = entry.map_err(failed("reading", &self.dir))?.path();
            if path.extension().is_some_and(|e| e == "eml") {
                let meta_path = path.with_extension("json");
                let meta = crate::host::bounded_read::read(
                    &meta_path,
                    crate::host::bounded_read::MAX_FILE_BYTES,
                )
                .map_err(|err| err.to_string())
                .and_then(|(bytes, _)| {
                    serde_json::from_slice(&bytes).map_err(|err| err.to_string())
                });
                match meta {
                    Ok(meta) => found.push(Queued { eml: path, meta }),
                    Err(why) => unreadable.push(Unreadable {
                        why: format!("its envelope {} cannot be read: {why}", meta_path.display()),
                        eml: path,
                    }),
                }
            }
        }
        found.sort_by(|a, b| a.eml.cmp(&b.eml));
        unreadable.sort_by(|a, b| a.eml.cmp(&b.eml));
        Ok((found, unreadable))
    }

    /// The server accepted it: remove it (the `.eml` first: without it nothing is resent).
    #[allow(clippy::unused_self)] // a method of the outbox, like queue and flush, though it needs no field
    pub(crate) fn delivered(&self, queued: &Queued) -> Result<(), OutboxError> {
        remove_if_present(&queued.eml)?;
        remove_if_present(&queued.meta_path())
    }

    /// Records a failed attempt in the message's meta.
    #[allow(clippy::unused_self)] // a method of the outbox, like queue and flush, though it needs no field
    pub(crate) fn failed(&self, queued: &Queued, error: &str) -> Result<(), OutboxError> {
        let mut meta = queued.meta.clone();
        meta.attempts += 1;
        meta.last_error = Some(error.to_owned());
        write_meta(&queued.meta_path(), &meta)
    }

    /// Sends every queued message with `send`, removing each one the server accepted.
    /// With `only`, just the messages of those stems.
    pub(crate) fn flush<E: std::fmt::Display>(
        &self,
        only: Option<&[String]>,
        send: impl Fn(&Queued) -> Result<(), E>,
    ) -> Result<FlushSummary, OutboxError> {
        let (mut pending, unreadable) = self.pending()?;
        if let Some(stems) = only {
            pending.retain(|queued| {
                stems
                    .iter()
                    .any(|stem| queued.eml.file_stem().is_some_and(|s| s == stem.as_str()))
            });
        }
        let mut summary = FlushSummary {
            unreadable,
            ..FlushSummary::default()
        };
        for queued in pending {
            let Some(_claim) = claim(&queued.eml)? else {
                summary.busy += 1;
                continue;
            };
            match send(&queued) {
                Ok(()) => {
                    self.delivered(&queued)?;
                    summary.delivered.push(queued.meta);
                }
                Err(error) => {
                    let error = error.to_string();
                    self.failed(&queued, &error)?;
                    summary.failed.push((queued.meta, error));
                }
            }
        }
        Ok(summary)
    }
}

/// An exclusive, non-blocking flock on the `.eml`, valid only if the file is still the one at
/// that path (a sender that finished may have removed it in between).
fn claim(eml: &Path) -> Result<Option<Flock<File>>, OutboxError> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(eml)
    {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(failed("opening", eml)(err)),
    };
    let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
        Err((_, errno)) => return Err(failed("locking", eml)(errno.into())),
    };
    let still_there = std::fs::metadata(eml)
        .is_ok_and(|now| lock.metadata().is_ok_and(|held| held.ino() == now.ino()));
    Ok(still_there.then_some(lock))
}

/// Writes a queue entry's `.json` in place. Serializing plain strings and numbers cannot fail.
fn write_meta(path: &Path, meta: &QueueMeta) -> Result<(), OutboxError> {
    let bytes = serde_json::to_vec_pretty(meta).unwrap_or_default();
    atomic_file::write(path, &bytes, MODE).map_err(failed("writing", path))
}

fn remove_if_present(path: &Path) -> Result<(), OutboxError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(failed("removing", path)(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn composed(stem: &str) -> Composed {
        Composed {
            stem: stem.into(),
            envelope: Envelope {
                message_id: format!("<{stem}@test>"),
                subject: format!("report {stem}"),
                service: "web".into(),
                outcome: "resolved".into(),
                from: "selfheal@test".into(),
                to: vec!["ops@test".into()],
            },
            bytes: b"Subject: x\r\n\r\nbody\r\n".to_vec(),
        }
    }

    #[test]
    fn a_missing_or_torn_envelope_skips_that_message_and_delivers_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&StateDir::new(dir.path())).unwrap();
        for stem in ["1-a", "2-b", "3-c"] {
            outbox.queue(&composed(stem)).unwrap();
        }
        std::fs::remove_file(dir.path().join("outbox/1-a.json")).unwrap();
        std::fs::write(dir.path().join("outbox/2-b.json"), b"{\"message_id\":").unwrap();

        let sent = std::cell::RefCell::new(Vec::new());
        let summary = outbox
            .flush(None, |queued| {
                sent.borrow_mut()
                    .push(queued.meta.envelope.message_id.clone());
                Ok::<(), String>(())
            })
            .unwrap();

        assert_eq!(*sent.borrow(), ["<3-c@test>"]);
        assert_eq!(summary.delivered.len(), 1);
        let skipped: Vec<_> = summary.unreadable.iter().map(|u| u.eml.clone()).collect();
        assert_eq!(
            skipped,
            [
                dir.path().join("outbox/1-a.eml"),
                dir.path().join("outbox/2-b.eml")
            ]
        );
        // Skipped messages stay for a person to look at.
        assert!(dir.path().join("outbox/1-a.eml").exists());
        assert!(!dir.path().join("outbox/3-c.eml").exists());
    }

    #[test]
    fn a_message_being_sent_is_skipped_and_a_failed_send_keeps_it_with_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&StateDir::new(dir.path())).unwrap();
        let (_, claim) = outbox.queue(&composed("1-a")).unwrap();

        // A run is still sending it: flush must not send it a second time.
        let summary = outbox
            .flush(None, |_| -> Result<(), String> {
                panic!("sent while claimed")
            })
            .unwrap();
        assert_eq!(summary.busy, 1);
        drop(claim);

        // The relay refuses: the message stays, with the attempt and the reason.
        let summary = outbox.flush(None, |_| Err("421 try again later")).unwrap();
        assert_eq!(summary.failed.len(), 1);
        let (pending, _) = outbox.pending().unwrap();
        assert_eq!(pending[0].meta.attempts, 1);
        assert_eq!(
            pending[0].meta.last_error.as_deref(),
            Some("421 try again later")
        );

        // Accepted: gone, .eml and .json.
        let summary = outbox.flush(None, |_| Ok::<(), String>(())).unwrap();
        assert_eq!(summary.delivered.len(), 1);
        assert_eq!(
            std::fs::read_dir(dir.path().join("outbox"))
                .unwrap()
                .count(),
            0
        );
    }
}
