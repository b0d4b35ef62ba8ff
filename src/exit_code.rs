//! The process exit codes of `selfheal`, as fixed by the interface contract (docs/reference.md, "The interface").

/// Why the process ends. `run` maps its healing outcome onto the first four; the rest are the
/// tool's own failures, so a wrapper can tell "the service is broken" from "selfheal is broken".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Healed and verified, already healthy, or a command that succeeded.
    Success,
    /// Every applicable strategy ran and the service is still not healthy (`run`), or a
    /// monitored service is down (`status`).
    Failure,
    /// Usage or configuration error.
    Usage,
    /// Not healed on purpose: loop protection, or a concurrent run holds the service.
    Suppressed,
    /// systemd or the D-Bus system bus could not be reached or answered with an error.
    SystemdUnavailable,
    /// The state directory could not be read or written.
    StateError,
    /// A report could not be delivered (`test-email`).
    EmailError,
    /// `install`/`uninstall` could not write or remove a unit file (sysexits' EX_CANTCREAT).
    CannotWrite,
    /// Any other failure of selfheal itself.
    Internal,
}

impl TryFrom<i32> for ExitCode {
    type Error = i32;

    /// The documented code a process ended with; the number itself when it is not one.
    fn try_from(code: i32) -> Result<ExitCode, i32> {
        ExitCode::ALL
            .into_iter()
            .find(|known| i32::from(*known) == code)
            .ok_or(code)
    }
}

impl ExitCode {
    /// Every exit code, for lookups and tests.
    pub const ALL: [ExitCode; 9] = [
        ExitCode::Success,
        ExitCode::Failure,
        ExitCode::Usage,
        ExitCode::Suppressed,
        ExitCode::SystemdUnavailable,
        ExitCode::StateError,
        ExitCode::EmailError,
        ExitCode::CannotWrite,
        ExitCode::Internal,
    ];
}

impl From<ExitCode> for i32 {
    fn from(code: ExitCode) -> i32 {
        match code {
            ExitCode::Success => 0,
            ExitCode::Failure => 1,
            ExitCode::Usage => 2,
            ExitCode::Suppressed => 3,
            ExitCode::SystemdUnavailable => 4,
            ExitCode::StateError => 5,
            ExitCode::EmailError => 6,
            ExitCode::CannotWrite => 73,
            ExitCode::Internal => 70,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ExitCode;

    #[test]
    fn codes_match_the_contract() {
        let table = [
            (ExitCode::Success, 0),
            (ExitCode::Failure, 1),
            (ExitCode::Usage, 2),
            (ExitCode::Suppressed, 3),
            (ExitCode::SystemdUnavailable, 4),
            (ExitCode::StateError, 5),
            (ExitCode::EmailError, 6),
            (ExitCode::CannotWrite, 73),
            (ExitCode::Internal, 70),
        ];
        assert_eq!(table.len(), ExitCode::ALL.len());
        for (code, number) in table {
            assert_eq!(i32::from(code), number, "{code:?}");
            assert_eq!(ExitCode::try_from(number), Ok(code));
        }
        assert_eq!(ExitCode::try_from(42), Err(42));
    }
}
