//! A file or directory that could not be read, written or removed: what was being done, where,
//! and the system's answer. The one shape of the errors of the modules that own files
//! (install's units, the outbox); each wraps it in its own type, for its own exit code.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {cause}")]
pub struct FileError {
    pub action: &'static str,
    pub path: PathBuf,
    pub cause: std::io::Error,
}

impl FileError {
    /// `map_err` for an I/O step (`action`: "writing", "removing", …) on `path`.
    pub(crate) fn of(
        action: &'static str,
        path: &Path,
    ) -> impl FnOnce(std::io::Error) -> FileError {
        let path = path.to_owned();
        move |cause| FileError {
            action,
            path,
            cause,
        }
    }
}
