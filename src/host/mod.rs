//! Facts about this host that reports and defaults need.

pub(crate) mod atomic_file;
pub(crate) mod bounded_read;
pub(crate) mod calendar;
pub(crate) mod coredump;
pub(crate) mod disk;
pub(crate) mod evidence;
pub(crate) mod file_error;
pub(crate) mod journal;
pub(crate) mod kernel_log;
pub(crate) mod listeners;
pub(crate) mod net;
pub(crate) mod nofollow;
pub mod ports;
pub(crate) mod process;
pub(crate) mod secret;

/// `bytes` in lowercase hex (an invocation id, a digest).
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut text, b| {
        let _ = write!(text, "{b:02x}");
        text
    })
}

/// The host name, or "localhost" when it cannot be read.
pub(crate) fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned())
}
