//! Logging: tracing to journald (`SYSLOG_IDENTIFIER=selfheal`, fields such as
//! `SELFHEAL_SERVICE`), or to stderr when journald is not there (a container, a dev shell).

use tracing::level_filters::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The syslog identifier of every journal entry selfheal writes.
pub const SYSLOG_IDENTIFIER: &str = "selfheal";

/// Installs the global subscriber. `verbosity`: -1 quiet, 0 normal, 1 debug, 2+ trace.
///
/// When journald is reachable, log lines go there, and to stderr only for `-v`/`-vv` on a
/// terminal: stdout carries the report and stderr stays for errors, so the heal unit's
/// journal is not doubled. Colour only on a terminal, never with `NO_COLOR`.
pub fn init(verbosity: i8) {
    let level = match verbosity {
        i8::MIN..=-1 => LevelFilter::ERROR,
        0 => LevelFilter::INFO,
        1 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let filter = EnvFilter::builder()
        .with_default_directive(level.into())
        .with_env_var("SELFHEAL_LOG")
        .from_env_lossy()
        // Our own logs only: zbus' internals are noise at debug level, and the HTTP stack's
        // trace quotes request lines and URIs, where a webhook's token lives.
        .add_directive("zbus=warn".parse().expect("static directive"))
        .add_directive("ureq=warn".parse().expect("static directive"))
        .add_directive("ureq_proto=warn".parse().expect("static directive"))
        .add_directive("rustls=warn".parse().expect("static directive"));
    let journald = tracing_journald::layer().ok().map(|layer| {
        layer
            .with_syslog_identifier(SYSLOG_IDENTIFIER.to_owned())
            .with_field_prefix(None)
    });
    // A person who asks for -v at a terminal reads the log there too; a pipe or a file never
    // gets escape codes.
    let terminal = crate::ui::terminal::Terminal::stderr();
    let on_stderr = journald.is_none() || (verbosity > 0 && terminal.is_tty);
    let stderr = on_stderr.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(terminal.color)
            .with_target(false)
            .without_time()
    });
    let _ = tracing_subscriber::registry()
        .with(journald.with_filter(filter.clone()))
        .with(stderr.with_filter(filter))
        .try_init();
}
