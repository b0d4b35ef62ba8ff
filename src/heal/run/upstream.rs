//! What the service depends on: the required or wanted units that are down, each healed
//! first through its own heal unit when selfheal monitors it.

use crate::config::Config;
use crate::heal::diagnose::Upstream;
use crate::heal::verify::HealthTarget;
use crate::systemd::{ActiveState, UnitControl, UnitSnapshot};

use super::RunOptions;

/// The units `snapshot`'s service depends on that are down: a `Requires=`/`BindsTo=` unit
/// that is failed, inactive or missing, a `Wants=`+`After=` unit that failed. One that is
/// itself monitored is healed first through its own heal unit (a start of a heal unit that
/// is already running waits for that run), within twice this service's `verify_timeout`;
/// the entry says what came of it (`heal_first`: false for a run that changes nothing). Nothing
/// here stops the run: a question systemd cannot answer leaves the list empty.
pub(super) fn upstream_problems(
    config: &Config,
    systemd: &dyn UnitControl,
    snapshot: &UnitSnapshot,
    target: &HealthTarget,
    options: RunOptions,
    heal_first: bool,
) -> Vec<Upstream> {
    // Targets and slices are synchronization points and resource groups, not causes (every
    // service requires sysinit.target and its slice): leaving them out usually leaves
    // nothing to ask, and the restart waits for no extra round trip.
    let cause = |unit: &&String| {
        !matches!(
            unit.rsplit_once('.').map(|(_, kind)| kind),
            Some("target" | "slice")
        )
    };
    let mut asked: Vec<(&str, &'static str)> = Vec::new();
    for unit in snapshot.requires.iter().filter(cause) {
        if !asked.iter().any(|(u, _)| u == unit) {
            asked.push((unit, "requires"));
        }
    }
    for unit in snapshot.ordered_wants.iter().filter(cause) {
        if !asked.iter().any(|(u, _)| u == unit) {
            asked.push((unit, "wants"));
        }
    }
    if asked.is_empty() {
        return Vec::new();
    }
    let names: Vec<&str> = asked.iter().map(|(unit, _)| *unit).collect();
    let states = match systemd.unit_states(&names) {
        Ok(states) => states,
        Err(err) => {
            tracing::warn!(
                "cannot read the states of {}'s dependencies: {err}",
                snapshot.unit
            );
            return Vec::new();
        }
    };
    let mut problems = Vec::new();
    for ((unit, relation), state) in asked.iter().zip(&states) {
        // What it cannot run without must exist and be up; what it merely wants must not
        // have failed. A wanted unit that does not exist is no cause: systemd starts the
        // service without it (Debian ships no tmp.mount, which every PrivateTmp= unit wants).
        let down = state.active_state == ActiveState::Failed
            || (*relation == "requires"
                && (state.load_state == "not-found"
                    || state.active_state == ActiveState::Inactive));
        if !down {
            continue;
        }
        let described = |state: &crate::systemd::UnitOverview| {
            if state.load_state == "not-found" {
                "not-found".to_owned()
            } else {
                format!("{}/{}", state.active_state, state.sub_state)
            }
        };
        let monitored = config
            .monitored_services
            .iter()
            .find(|other| other.unit_name() == *unit)
            .filter(|_| heal_first);
        let action = monitored.map(|other| {
            let heal = other.heal_unit_name();
            if options.dry_run {
                return format!("A real run would heal {unit} first with {heal}");
            }
            tracing::info!("healing {unit} first: {} depends on it", snapshot.unit);
            let ran = systemd.start(&heal, target.timeout * 2);
            let now = systemd
                .unit_states(&[unit])
                .ok()
                .and_then(|states| states.into_iter().next());
            match (ran, now) {
                (Ok(_), Some(now)) => format!(
                    "selfheal healed {unit} first with {heal}; it is now {}",
                    described(&now)
                ),
                (Err(err), _) => format!("healing {unit} first with {heal} failed: {err}"),
                (Ok(_), None) => format!("{heal} ran for {unit}"),
            }
        });
        problems.push(Upstream {
            unit: (*unit).to_owned(),
            relation,
            state: described(state),
            action,
        });
    }
    problems
}
