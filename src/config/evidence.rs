//! A service's `evidence:` settings: whether its processes are described before a restart,
//! and a signal that makes it leave its own evidence first (a core, a runtime's stack dump).

use serde::{Deserialize, Serialize};

use crate::ui::duration::HumanDuration;

/// `evidence:` of one service.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EvidenceConfig {
    /// Describe its processes and cgroup before a restart (default true).
    #[serde(default = "capture_by_default")]
    pub capture: bool,
    /// Sent to its main process before a restart of a unit that still runs, so that
    /// systemd-coredump or the runtime keeps what it keeps (none by default).
    pub signal: Option<EvidenceSignal>,
    /// How long the main process may take to leave its evidence and exit after `signal`
    /// (default 5s, at most 1min); then the restart goes ahead.
    #[serde(default = "default_wait")]
    pub wait: HumanDuration,
}

impl Default for EvidenceConfig {
    fn default() -> EvidenceConfig {
        EvidenceConfig {
            capture: true,
            signal: None,
            wait: default_wait(),
        }
    }
}

/// The signals that make a process leave evidence: a core (SIGABRT, with systemd-coredump),
/// or a stack dump where the runtime prints one (SIGQUIT: the JVM, Go; SIGUSR1/SIGUSR2
/// where a service registers a handler, e.g. Python's `faulthandler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub(crate) enum EvidenceSignal {
    #[serde(rename = "SIGABRT")]
    Abort,
    #[serde(rename = "SIGQUIT")]
    Quit,
    #[serde(rename = "SIGUSR1")]
    User1,
    #[serde(rename = "SIGUSR2")]
    User2,
}

impl EvidenceSignal {
    pub(crate) fn number(self) -> i32 {
        match self {
            EvidenceSignal::Abort => libc::SIGABRT,
            EvidenceSignal::Quit => libc::SIGQUIT,
            EvidenceSignal::User1 => libc::SIGUSR1,
            EvidenceSignal::User2 => libc::SIGUSR2,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            EvidenceSignal::Abort => "SIGABRT",
            EvidenceSignal::Quit => "SIGQUIT",
            EvidenceSignal::User1 => "SIGUSR1",
            EvidenceSignal::User2 => "SIGUSR2",
        }
    }
}

fn capture_by_default() -> bool {
    true
}

fn default_wait() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_that_leaves_no_evidence_is_refused_with_the_choices() {
        let parsed: EvidenceConfig =
            serde_saphyr::from_str("signal: SIGQUIT\nwait: 10s\n").unwrap();
        assert_eq!(parsed.signal, Some(EvidenceSignal::Quit));
        assert!(parsed.capture);
        assert_eq!(std::time::Duration::from(parsed.wait).as_secs(), 10);
        let error = serde_saphyr::from_str::<EvidenceConfig>("signal: SIGKILL\n")
            .unwrap_err()
            .to_string();
        for choice in ["SIGABRT", "SIGQUIT", "SIGUSR1", "SIGUSR2"] {
            assert!(error.contains(choice), "{error}");
        }
    }
}
