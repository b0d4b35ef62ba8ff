//! `cargo bench --bench fleet_loop` (root; needs Debian's `prometheus`,
//! `prometheus-node-exporter` and `prometheus-alertmanager`): the whole fleet loop, timed. A
//! rule on a metric in node_exporter's textfile directory (scrape and evaluation every 1 s,
//! `for: 0s`) fires, Alertmanager (`group_wait: 0s`) posts to selfheal's receiver, the run
//! heals the demo service (a restart, verified with `stable_for: 100ms`); then the metric
//! falls back and the resolution is awaited before the next turn.
//!
//! Two times per turn: from the receiver's taking of the post to the service healed, and from
//! the metric crossing its threshold to the service healed (the second is mostly Prometheus'
//! scrape and evaluation intervals). `BENCH_RUNS` turns (default 5); prints a table.

#[path = "common.rs"]
mod bench;
#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::fleet::FleetLoop;

fn main() {
    let runs = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let fleet = FleetLoop::start(u32::MAX);
    println!(
        "selfheal {} on systemd {}, {runs} turns of the loop\n",
        env!("CARGO_PKG_VERSION"),
        common::systemd_version(&fleet.env.sandbox)
    );
    let heals: Vec<_> = (0..runs).map(|turn| fleet.one_heal(turn)).collect();
    let post: Vec<Duration> = heals.iter().map(|heal| heal.post_to_healed).collect();
    let crossing: Vec<Duration> = heals.iter().map(|heal| heal.crossing_to_healed).collect();
    println!("| the fleet loop | median | min | max |");
    println!("|---|---|---|---|");
    println!(
        "{}",
        bench::Spread::of(&post).row("Alertmanager's post taken → service healed", &[])
    );
    println!(
        "{}",
        bench::Spread::of(&crossing).row(
            "metric crosses the threshold → service healed (1 s scrape, 1 s evaluation)",
            &[]
        )
    );
}
