//! What the dashboard asks systemd, in one round on a thread of its own (given up on after
//! the dashboard's timeout): each service's unit and heal unit, without loading what systemd
//! has not loaded, and without asking what install's manifest vouches for.

use std::time::Duration;

use crate::config::{Config, ServiceConfig};
use crate::state::StateDir;
use crate::systemd::{Systemd, UnitOverview};
use crate::ui::terminal::SlowNotice;

use super::SYSTEMD_TIMEOUT;

/// What systemd says of each service's unit and heal unit, or why it said nothing.
pub(super) type UnitAnswer = Result<(UnitOverview, UnitOverview), String>;

pub(super) fn ask_systemd(
    config: &Config,
    state: &StateDir,
    services: &[&ServiceConfig],
) -> Vec<UnitAnswer> {
    let _waiting = SlowNotice::new("waiting for systemd to answer");
    let count = services.len();
    let units: Vec<String> = services.iter().map(|s| s.unit_name()).collect();
    let heal_units: Vec<String> = services.iter().map(|s| s.heal_unit_name()).collect();
    // What install's manifest vouches for is not asked: the hooks (the others' OnFailure= is)
    // and the heal units (the others' load state is).
    let vouching = crate::deploy::Manifest::new(state.root()).vouching();
    let listed: Vec<bool> = services
        .iter()
        .map(|service| !config.is_unlisted(&service.name))
        .collect();
    let hook_vouched: Vec<bool> = (0..count)
        .map(|i| {
            vouching
                .as_ref()
                .is_some_and(|v| v.hook(&units[i], listed[i]))
        })
        .collect();
    let heal_vouched: Vec<bool> = (0..count)
        .map(|i| {
            vouching
                .as_ref()
                .is_some_and(|v| v.heal_unit(&heal_units[i], listed[i]))
        })
        .collect();
    // Asked for OnFailure=, then listed only: the other units, the heal units not vouched for.
    let order: Vec<usize> = (0..count)
        .filter(|&i| !hook_vouched[i])
        .chain((0..count).filter(|&i| hook_vouched[i]))
        .collect();
    let asked_count = hook_vouched.iter().filter(|vouched| !**vouched).count();
    let heals_asked: Vec<usize> = (0..count).filter(|&i| !heal_vouched[i]).collect();
    // Connecting has no deadline of its own (a wedged dbus-daemon would hold it forever):
    // the whole question runs on a thread that is given up on after the dashboard's timeout.
    let (answer_to, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let in_order: Vec<&str> = order.iter().map(|&i| units[i].as_str()).collect();
        let (asked, listed_units) = in_order.split_at(asked_count);
        let listed_only: Vec<&str> = listed_units
            .iter()
            .copied()
            .chain(heals_asked.iter().map(|&i| heal_units[i].as_str()))
            .collect();
        let started = std::time::Instant::now();
        let answer = Systemd::connect().and_then(|systemd| {
            tracing::debug!("connected to the bus after {:?}", started.elapsed());
            systemd.overview_without_loading(asked, &listed_only, SYSTEMD_TIMEOUT)
        });
        tracing::debug!(
            "systemd listed {} units and {} heal units, and {} units' OnFailure=, in {:?}",
            in_order.len(),
            heals_asked.len(),
            asked.len(),
            started.elapsed()
        );
        let _ = answer_to.send(answer.map(|overviews| {
            // Back in the services' order, each with its heal unit.
            let mut rows = overviews.into_iter();
            let mut pairs = vec![(UnitOverview::default(), UnitOverview::default()); count];
            for &i in &order {
                pairs[i].0 = rows.next().unwrap_or_default();
                if hook_vouched[i] {
                    pairs[i].0.on_failure = vec![heal_units[i].clone()];
                }
            }
            for i in 0..count {
                pairs[i].1 = if heal_vouched[i] {
                    UnitOverview {
                        id: heal_units[i].clone(),
                        load_state: "loaded".to_owned(),
                        ..UnitOverview::default()
                    }
                } else {
                    rows.next().unwrap_or_default()
                };
            }
            pairs
        }));
    });
    let unknown = |why: String| (0..count).map(|_| Err(why.clone())).collect();
    let too_slow = || format!("systemd did not answer in {}s", SYSTEMD_TIMEOUT.as_secs());
    match answer.recv_timeout(SYSTEMD_TIMEOUT + Duration::from_millis(500)) {
        Ok(Ok(pairs)) => pairs.into_iter().map(Ok).collect(),
        Ok(Err(crate::systemd::SystemdError::Timeout(_))) | Err(_) => unknown(too_slow()),
        Ok(Err(err)) => unknown(err.to_string()),
    }
}
