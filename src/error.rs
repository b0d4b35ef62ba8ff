//! The one error type of selfheal's commands, and the only place where an error becomes an exit
//! code: `Error::exit_code` matches every variant, so a new kind of error cannot be added
//! without deciding its code (the compiler asks).
//!
//! Each domain keeps its own typed error (`ConfigError`, `SystemdError`, …) and the variants
//! here wrap them. Causes are part of each message, never a `source` chain, so printing an
//! error once prints every cause once.

use crate::config::ConfigError;
use crate::deploy::InstallError;
use crate::exit_code::ExitCode;
use crate::notify::email::{EmailError, OutboxError};
use crate::report::RenderError;
use crate::state::StateError;
use crate::systemd::SystemdError;

/// A mistake on the command line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A template override that does not compile or render: configuration, like the YAML.
    #[error(transparent)]
    Template(#[from] RenderError),
    #[error(transparent)]
    Systemd(#[from] SystemdError),
    #[error(transparent)]
    State(#[from] StateError),
    /// The outbox lives in the state directory.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error(transparent)]
    Email(#[from] EmailError),
    #[error(transparent)]
    Install(#[from] InstallError),
    /// Writing the command's own output failed.
    #[error("writing the output: {0}")]
    Output(std::io::Error),
    /// The demo and the sandbox: selfheal's own machinery, not the host's services.
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

impl Error {
    /// The exit code this error ends the process with (see the table in docs/reference.md).
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) | Error::Config(_) | Error::Template(_) => ExitCode::Usage,
            Error::Systemd(_) => ExitCode::SystemdUnavailable,
            Error::State(_) | Error::Outbox(_) => ExitCode::StateError,
            Error::Email(_) => ExitCode::EmailError,
            Error::Install(_) => ExitCode::CannotWrite,
            Error::Output(_) | Error::Internal(_) => ExitCode::Internal,
        }
    }
}

// A layer's error becomes the variant of what it wraps: `exit_code` stays one exhaustive match.
impl From<crate::heal::HealError> for Error {
    fn from(err: crate::heal::HealError) -> Error {
        match err {
            crate::heal::HealError::Systemd(err) => Error::Systemd(err),
            crate::heal::HealError::State(err) => Error::State(err),
        }
    }
}

impl From<crate::notify::NotifyError> for Error {
    fn from(err: crate::notify::NotifyError) -> Error {
        use crate::notify::NotifyError;
        match err {
            NotifyError::Email(err) => Error::Email(err),
            NotifyError::Outbox(err) => Error::Outbox(err),
            NotifyError::State(err) => Error::State(err),
            NotifyError::Template(err) => Error::Template(err),
            NotifyError::Encode(err) => Error::Output(err.into()),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Error {
        Error::Output(err.into())
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Error {
        Error::Output(err)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::host::file_error::FileError;

    fn io() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::NotFound)
    }

    /// One of each variant, with the code docs/reference.md promises for it. A new variant fails to
    /// compile in `exit_code` until its code is decided, and this table names it.
    #[test]
    fn every_error_has_its_documented_exit_code() {
        let table: Vec<(Error, i32)> = vec![
            (UsageError("unknown service".into()).into(), 2),
            (
                ConfigError::Invalid {
                    path: PathBuf::from("/etc/selfheal/selfheal.yml"),
                    message: "x".into(),
                }
                .into(),
                2,
            ),
            (
                RenderError::Read {
                    path: PathBuf::from("/etc/selfheal/templates/report.txt.j2"),
                    cause: io(),
                }
                .into(),
                2,
            ),
            (
                SystemdError::Timeout(std::time::Duration::from_secs(1)).into(),
                4,
            ),
            (
                StateError::Untrusted {
                    path: PathBuf::from("/var/lib/selfheal"),
                    why: "x".into(),
                }
                .into(),
                5,
            ),
            (
                OutboxError(FileError {
                    action: "writing",
                    path: PathBuf::from("/var/lib/selfheal/outbox/x.eml"),
                    cause: io(),
                })
                .into(),
                5,
            ),
            (EmailError::NotConfigured.into(), 6),
            (
                InstallError(FileError {
                    action: "writing",
                    path: PathBuf::from("/etc/systemd/system/x.service"),
                    cause: io(),
                })
                .into(),
                73,
            ),
            (Error::Output(io()), 70),
            (Error::Internal(anyhow::anyhow!("sandbox")), 70),
        ];
        for (error, code) in table {
            assert_eq!(i32::from(error.exit_code()), code, "{error:?}");
        }
    }

    #[test]
    fn a_cause_is_printed_once() {
        let error = Error::from(ConfigError::Read {
            path: PathBuf::from("/nonexistent.yml"),
            cause: crate::host::bounded_read::ReadError::Io(std::io::Error::from_raw_os_error(2)),
        });
        let text = error.to_string();
        assert_eq!(
            text.matches("No such file or directory").count(),
            1,
            "{text}"
        );
    }
}
