//! The one way selfheal replaces a file: the bytes go to a temporary file in the same
//! directory (explicit mode, never through a symlink), which is fsynced and renamed over the
//! target, and the directory is fsynced too. A reader, or a crash, sees the old file or the
//! whole new one, never half of either. The outbox, the file transport, `install` and the
//! history compaction all write through here.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A written and synced temporary file, not yet in place: the caller may lock it first (the
/// outbox claims a message before anyone can see it), then `commit`.
pub(crate) struct Pending {
    pub file: File,
    temporary: PathBuf,
    target: PathBuf,
}

/// Writes `bytes` to a fresh temporary file beside `target`, with `mode`, and syncs it.
pub(crate) fn prepare(target: &Path, bytes: &[u8], mode: u32) -> io::Result<Pending> {
    prepare_synced(target, bytes, mode, true)
}

fn prepare_synced(target: &Path, bytes: &[u8], mode: u32, sync: bool) -> io::Result<Pending> {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let temporary = target.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    // A leftover of a run killed with this PID long ago; ours to replace.
    let _ = std::fs::remove_file(&temporary);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(mode)
        .open(&temporary)?;
    // The mode is exactly `mode`, whatever the umask: the units set UMask=0077, and the
    // metrics file must stay readable by node_exporter.
    let written = file
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| if sync { file.sync_all() } else { Ok(()) });
    if let Err(err) = written {
        // A full disk must not leave a half-written file behind.
        let _ = std::fs::remove_file(&temporary);
        return Err(err);
    }
    Ok(Pending {
        file,
        temporary,
        target: target.to_owned(),
    })
}

impl Pending {
    /// Renames the temporary file over the target and syncs the directory; returns the open
    /// file (still holding any lock the caller took).
    pub(crate) fn commit(self) -> io::Result<File> {
        self.put_in_place()?;
        // The file is in place now, whatever happens next: a directory that cannot be synced
        // costs durability across a power cut, not the write, so it is logged, not an error.
        let dir = self.target.parent().unwrap_or(Path::new("/"));
        if let Err(err) = File::open(dir).and_then(|dir| dir.sync_all()) {
            tracing::warn!(
                "{} written, but its directory could not be synced: {err}",
                self.target.display()
            );
        }
        Ok(self.file)
    }

    /// Renames the temporary file over the target; a temporary file left behind by a failed
    /// rename is removed.
    fn put_in_place(&self) -> io::Result<()> {
        std::fs::rename(&self.temporary, &self.target).inspect_err(|_| {
            let _ = std::fs::remove_file(&self.temporary);
        })
    }
}

/// Replaces `target` with `bytes` (mode `mode`), atomically.
pub(crate) fn write(target: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    prepare(target, bytes, mode)?.commit().map(drop)
}

/// `write`, atomic for readers and against a killed writer but not across a power cut (no
/// fsync): for advisory state on the path to a restart, where two fsyncs cost milliseconds
/// and losing the file costs nothing.
pub(crate) fn write_volatile(target: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    prepare_synced(target, bytes, mode, false)?.put_in_place()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn replaces_the_whole_file_with_its_mode_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("unit.service");
        std::fs::write(&target, "old").unwrap();
        write(&target, b"new", 0o640).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_symlink_planted_at_the_temporary_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x.eml");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        // The planted link is removed, not written through.
        let temporary = dir.path().join(format!(".x.eml.tmp{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &temporary).unwrap();
        write(&target, b"report", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "report");
    }
}
