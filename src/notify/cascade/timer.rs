//! The transient timer that delivers a burst once its window closes, through the installed
//! `selfheal-flush.service` when it flushes the same outbox, else through the command itself.

use std::path::PathBuf;
use std::time::Duration;

use super::Arrival;
use crate::config::FLUSH_SERVICE;
use crate::systemd::{Fires, UnitControl};

/// Sets the transient timer that delivers a held burst when its window closes
/// (`selfheal-cascade-<time>.timer` running `flush_command`). A timer that cannot be set is
/// logged: the last run of the burst or the periodic flush delivers it then.
pub(crate) fn schedule_delivery(
    units: &dyn UnitControl,
    arrival: &Arrival,
    after: Duration,
    flush_command: &[String],
) {
    let fires = delivery(units, flush_command);
    let id = arrival.burst.compact();
    let timer = crate::config::units::cascade_timer_name(&id);
    // A second past the window, so the flush it starts finds the window closed.
    let after = after + Duration::from_secs(1);
    if let Err(err) = units.start_later(&timer, after, fires) {
        tracing::warn!(
            "the cascade's delivery timer cannot be set ({err}); the burst goes out when its last run ends or at the next flush"
        );
    }
}

/// What delivers a held burst: the installed flush unit when it flushes this config's and this
/// state directory's outbox (its hardening and its SMTP credential come with it, so a password
/// given only as a credential works here too), else a transient unit running `flush_command`
/// (a run by hand on another config, or before `install`).
pub(super) fn delivery<'a>(units: &dyn UnitControl, flush_command: &'a [String]) -> Fires<'a> {
    let installed = units
        .snapshot(FLUSH_SERVICE)
        .ok()
        .filter(|unit| unit.load_state == "loaded")
        .and_then(|unit| unit.exec_start.into_iter().next());
    match installed {
        Some(argv) if flushes_the_same(&argv, flush_command) => Fires::Unit(FLUSH_SERVICE),
        _ => Fires::Command(flush_command),
    }
}

/// Both command lines run `flush` on the same config and state directory (an option left out
/// is its default).
pub(super) fn flushes_the_same(a: &[String], b: &[String]) -> bool {
    let files = |argv: &[String]| {
        let mut config = PathBuf::from(crate::config::DEFAULT_CONFIG_PATH);
        let mut state = PathBuf::from(crate::state::DEFAULT_STATE_DIR);
        let mut args = argv.iter().skip(1);
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (arg.as_str(), None),
            };
            let target = match name {
                "--config" => &mut config,
                "--state-dir" => &mut state,
                _ => continue,
            };
            if let Some(value) = inline.or_else(|| args.next().cloned()) {
                *target = PathBuf::from(value);
            }
        }
        (
            config,
            state,
            argv.last().is_some_and(|verb| verb == "flush"),
        )
    };
    let (a, b) = (files(a), files(b));
    a.2 && b.2 && a == b
}
