//! Reading a file that someone else may have planted: it cannot block the run (a FIFO), eat
//! memory (`/dev/zero`, a huge file) or redirect the read (a symlink as the last component).
//!
//! The file is opened once (`O_NONBLOCK | O_NOFOLLOW | O_NOCTTY`), the descriptor is
//! `fstat`ed (a regular file, within the size cap) and read with the cap enforced again, so a
//! caller's permission check and the read see the very same file.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The cap for config and env files: far above any real one, far below a memory problem.
pub(crate) const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Why a file was not read. The messages name no path: callers say which file it was.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("it is a symlink (selfheal does not follow one here; point at the real file)")]
    Symlink,
    #[error("it is {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("it is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("{0}")]
    Io(io::Error),
    /// A component of the path is not what it should be (`read_no_symlinks`).
    #[error("{0}")]
    Path(crate::host::nofollow::PathError),
}

impl ReadError {
    /// True when the file does not exist.
    pub(crate) fn is_not_found(&self) -> bool {
        match self {
            ReadError::Io(err) => err.kind() == io::ErrorKind::NotFound,
            ReadError::Path(crate::host::nofollow::PathError::Missing(_)) => true,
            _ => false,
        }
    }
}

/// The bytes of a regular file of at most `limit` bytes, and the metadata of the descriptor
/// they were read from.
pub(crate) fn read(path: &Path, limit: u64) -> Result<(Vec<u8>, Metadata), ReadError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)
        .map_err(opening)?;
    read_open(file, limit)
}

/// As [`read`], for a file in directories someone else may own (a service's env file): no
/// symlink is followed in any component of the path (`crate::host::nofollow`), so a swapped
/// directory can neither show root a file elsewhere nor lead the lookup into an automounter.
pub(crate) fn read_no_symlinks(path: &Path, limit: u64) -> Result<(Vec<u8>, Metadata), ReadError> {
    let parent = crate::host::nofollow::open_parent(path).map_err(ReadError::Path)?;
    read_open(parent.open_file().map_err(opening)?, limit)
}

fn opening(err: io::Error) -> ReadError {
    match err.raw_os_error() {
        Some(libc::ELOOP) => ReadError::Symlink,
        _ => ReadError::Io(err),
    }
}

/// The checks and the capped read, on the descriptor that was opened.
fn read_open(file: File, limit: u64) -> Result<(Vec<u8>, Metadata), ReadError> {
    let metadata = file.metadata().map_err(ReadError::Io)?;
    let kind = metadata.file_type();
    if !kind.is_file() {
        return Err(ReadError::NotRegular(describe(kind)));
    }
    if metadata.len() > limit {
        return Err(ReadError::TooLarge { limit });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    // The file may grow after the fstat: read at most one byte past the cap to notice.
    Read::by_ref(&mut capped(file, limit))
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    Ok((bytes, metadata))
}

fn capped(file: File, limit: u64) -> io::Take<File> {
    file.take(limit.saturating_add(1))
}

fn describe(kind: std::fs::FileType) -> &'static str {
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("env");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = read(&fifo, MAX_FILE_BYTES).unwrap_err();
        assert!(matches!(err, ReadError::NotRegular("a FIFO")), "{err}");
    }

    #[test]
    fn a_device_a_symlink_and_an_oversized_file_are_refused() {
        let err = read(Path::new("/dev/zero"), MAX_FILE_BYTES).unwrap_err();
        assert!(
            matches!(err, ReadError::NotRegular("a character device")),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 101]).unwrap();
        assert!(matches!(
            read(&big, 100),
            Err(ReadError::TooLarge { limit: 100 })
        ));
        assert_eq!(read(&big, 101).unwrap().0.len(), 101);

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&big, &link).unwrap();
        assert!(matches!(read(&link, 1000), Err(ReadError::Symlink)));
        assert!(
            read(&dir.path().join("missing"), 1)
                .unwrap_err()
                .is_not_found()
        );
    }

    #[test]
    fn a_symlinked_directory_on_the_way_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let secret_dir = dir.path().join("root-only");
        std::fs::create_dir(&secret_dir).unwrap();
        std::fs::write(secret_dir.join(".env"), "SECRET=1\n").unwrap();
        std::os::unix::fs::symlink(&secret_dir, dir.path().join("app")).unwrap();
        let err = read_no_symlinks(&dir.path().join("app/.env"), MAX_FILE_BYTES).unwrap_err();
        assert!(err.to_string().contains("is a symlink"), "{err}");
        assert_eq!(
            read_no_symlinks(&secret_dir.join(".env"), MAX_FILE_BYTES)
                .unwrap()
                .0,
            b"SECRET=1\n"
        );
        assert!(
            read_no_symlinks(&dir.path().join("nope/.env"), 10)
                .unwrap_err()
                .is_not_found()
        );
    }
}
