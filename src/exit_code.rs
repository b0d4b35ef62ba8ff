//! The process exit codes of `selfheal`, as fixed by the interface contract (README, "The interface").

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
        for (code, number) in table {
            assert_eq!(i32::from(code), number, "{code:?}");
        }
    }
}
