//! The whole fleet loop with Debian's own daemons on 127.0.0.1: a rule on a metric the test
//! controls fires in Prometheus, Alertmanager posts it to selfheal's receiver (socket-activated
//! in the sandbox), the service is healed; the metric falls back, the rule resolves,
//! Alertmanager posts the resolution, and nothing more happens. (Times: bench/fleet_loop.rs.)
mod common;

use common::assert_contains;
use common::fleet::FleetLoop;
use selfheal::outcome::Outcome;

#[test]
fn prometheus_and_alertmanager_drive_a_heal_and_stay_quiet_once_resolved() {
    let fleet = FleetLoop::start(3);
    fleet.one_heal(0);
    let history = fleet.env.history();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].outcome, Outcome::Resolved, "{history:?}");
    let report = fleet.env.heal_report("web");
    assert_contains(
        &report,
        "Alert:     WebErrors (Alertmanager), firing since ",
    );
    assert_contains(&report, "web answers 0.5 of its requests with an error");
    // Prometheus' link to the rule, as Alertmanager passed it on.
    assert_contains(&report, "/graph?g0.expr=web_errors_ratio");
}
