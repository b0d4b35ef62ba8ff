//! The probe round: what systemd cannot see. A service that hangs, deadlocks or answers 500
//! stays `active`, so `OnFailure=` never fires; a round looks at every probed, active service
//! at once (its port's answer, its health URL), counts failed rounds in a row in
//! `<state>/probes.json`, and at `failures` starts the service's heal unit: the run
//! that follows has the same lock, loop protection and hardening as one `OnFailure=` starts,
//! and its report says what the probes saw.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::probe::Probe;
use crate::config::{Config, ServiceConfig};
use crate::heal::HealError;
use crate::host::listeners::{Holder, Listeners, Vouched, Wanted};
use crate::state::{StateDir, StateError};
use crate::systemd::{ActiveState, SystemdError, UnitControl, UnitOverview};
use crate::ui::when::Timestamp;

/// The probes' account is the run's evidence when they started it this recently (a run starts
/// within milliseconds of its start job).
const ACCOUNT_FRESH_FOR: Duration = Duration::from_secs(60);
/// `<state>/probes.json`.
const RECORDS: &str = "probes.json";
/// Each check runs on its own thread; a check needs little stack.
const CHECK_STACK: usize = 256 * 1024;

/// What the probes remember of one service between rounds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProbeRecord {
    /// Failed rounds in a row (a passing round resets it, and so does starting the heal unit).
    pub failures: u32,
    /// The last judged round passed.
    pub ok: Option<bool>,
    /// What the last round saw (or why it did not judge).
    pub detail: String,
    /// The last round that looked at it.
    pub checked_at: Option<Timestamp>,
    /// The first failure of the current run of failures.
    pub first_failed_at: Option<Timestamp>,
    /// The last failed round.
    pub last_failed_at: Option<Timestamp>,
    /// When the probes last started its heal unit (to the millisecond), and what they had seen.
    pub healing_started_at: Option<Timestamp>,
    pub healing_because: Option<String>,
    /// The invocation its `active_since_us` is of (`UnitControl::invocation_marks`): while it
    /// runs, when it became active is not asked again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_since_us: Option<u64>,
    /// The process that held its port for its unit last round (`Listeners::read_for`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<Holder>,
}

/// One service in one round.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ProbeOutcome {
    pub name: String,
    /// Passed, or not judged (not active, or inside its start grace).
    pub ok: bool,
    /// Looked at this round (active and past its start grace).
    pub judged: bool,
    /// Failed rounds in a row ...
    pub failures: u32,
    /// ... and how many start its heal unit.
    pub failures_to_heal: u32,
    pub detail: String,
    /// The heal unit this round started.
    pub healing_started: Option<String>,
}

/// What one look at a service found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Look {
    Passed(String),
    Failed(String),
    NotJudged(String),
}

/// Advances `record` by one round's `look`; true when it has now failed `probe.failures`
/// rounds in a row, so its heal unit is due.
pub(crate) fn advance(
    record: &mut ProbeRecord,
    look: &Look,
    probe: &Probe,
    now: SystemTime,
) -> bool {
    let now = Timestamp::seconds(now);
    match look {
        Look::NotJudged(why) => {
            // A service that is down is systemd's to report (OnFailure=); one still starting
            // gets its grace. Neither counts, and a run of failures before it is over.
            record.failures = 0;
            record.first_failed_at = None;
            record.ok = None;
            record.detail.clone_from(why);
            record.checked_at = Some(now);
            false
        }
        Look::Passed(what) => {
            *record = ProbeRecord {
                ok: Some(true),
                detail: what.clone(),
                checked_at: Some(now),
                last_failed_at: record.last_failed_at.take(),
                healing_started_at: record.healing_started_at.take(),
                healing_because: record.healing_because.take(),
                ..ProbeRecord::default()
            };
            false
        }
        Look::Failed(what) => {
            record.failures += 1;
            record.ok = Some(false);
            record.detail.clone_from(what);
            record.checked_at = Some(now);
            record.first_failed_at.get_or_insert(now);
            record.last_failed_at = Some(now);
            record.failures >= probe.failures
        }
    }
}

/// What the probes saw, in words for a report: "health URL … timed out after 2s, 3 rounds in
/// a row since 12:00:01 UTC".
fn account(record: &ProbeRecord) -> String {
    let since = record
        .first_failed_at
        .map(|at| format!(" since {}", at.readable()))
        .unwrap_or_default();
    let rounds = if record.failures == 1 {
        "in 1 round".to_owned()
    } else {
        format!("{} rounds in a row", record.failures)
    };
    format!("{}, {rounds}{since}", record.detail)
}

/// What the probes last recorded, read without creating anything (a dry run and the
/// dashboard change nothing); none when it cannot be read.
pub(crate) fn last_records(state: &StateDir) -> BTreeMap<String, ProbeRecord> {
    if !state.root().join(RECORDS).is_file() {
        return BTreeMap::new();
    }
    records(state).unwrap_or_default()
}

/// The probes' account of `service` for the run reading it: when they started its heal unit a
/// moment ago and the instance they saw failing (`active_since`, when it last became active)
/// is still the one running.
pub(crate) fn account_for_run(
    state: &StateDir,
    service: &str,
    active_since: SystemTime,
) -> Option<String> {
    let record = last_records(state).remove(service)?;
    let started = record.healing_started_at?.time();
    let age = SystemTime::now().duration_since(started).ok()?;
    (age <= ACCOUNT_FRESH_FOR && active_since < started)
        .then(|| record.healing_because.unwrap_or_default())
}

/// One round over `services` (every probed one when empty): look at each active service at
/// once, record, and start the heal unit of each that reached its `failures`.
pub(crate) fn round<U: UnitControl>(
    config: &Config,
    state: &StateDir,
    only: &[&ServiceConfig],
    connect: impl FnOnce() -> Result<U, SystemdError>,
) -> Result<Vec<ProbeOutcome>, HealError> {
    let started = std::time::Instant::now();
    let probed: Vec<(&ServiceConfig, Probe)> = config
        .monitored_services
        .iter()
        .filter(|service| only.is_empty() || only.iter().any(|o| o.name == service.name))
        .filter_map(|service| config.probe_of(service).map(|probe| (service, probe)))
        .collect();
    if probed.is_empty() {
        return Ok(Vec::new());
    }
    let systemd = connect()?;
    let units: Vec<String> = probed.iter().map(|(s, _)| s.unit_name()).collect();
    let unit_names: Vec<&str> = units.iter().map(String::as_str).collect();
    // One file for all: a round reads it once and writes it once (300 services, 300 files
    // and their fsyncs were most of a round).
    let mut records = records(state)?;
    records.retain(|name, _| config.service(name).is_some());
    // States alone, of what systemd has loaded (a stopped unit is not judged): the probes need
    // no unit's OnFailure=, and the heal units' states only of those due.
    let unit_views = systemd.loaded_states(&unit_names)?;
    let (since, marks) = active_since(&systemd, &probed, &unit_names, &unit_views, &records)?;
    tracing::debug!("systemd answered after {:?}", started.elapsed());
    let now = SystemTime::now();
    let (mut looks, holders) = look_at_all(&probed, &unit_views, &since, &records);
    not_judged_while_planned(config, state, &probed, &mut looks, now);
    tracing::debug!(
        "looked at {} services after {:?}",
        probed.len(),
        started.elapsed()
    );
    let mut candidates = Vec::new();
    for (index, ((service, probe), look)) in probed.iter().zip(&looks).enumerate() {
        let record = records.entry(service.name.clone()).or_default();
        if advance(record, look, probe, now) {
            candidates.push(index);
        }
        record.invocation.clone_from(&marks[index]);
        record.active_since_us = since[index];
        record.listener = holders[index];
    }
    let due = due_heal_units(
        config,
        state,
        &systemd,
        &probed,
        &candidates,
        &since,
        &mut records,
    )?;
    // Recorded before the start: the run reads what the probes saw.
    save_records(state, &records);
    let mut started_units = vec![None; probed.len()];
    for (index, heal) in &due {
        let index = *index;
        let service = probed[index].0;
        let record = records.entry(service.name.clone()).or_default();
        match systemd.start_no_wait(&heal.id) {
            Ok(()) => {
                started_units[index] = Some(heal.id.clone());
                tracing::warn!(
                    selfheal_service = %service.name,
                    "{} is active but does not serve: {} started ({})",
                    service.unit_name(),
                    heal.id,
                    record.healing_because.as_deref().unwrap_or_default()
                );
            }
            Err(err) => {
                record.detail = format!("starting {} failed: {err}", heal.id);
                record.healing_started_at = None;
                save_records(state, &records);
            }
        }
    }
    tracing::debug!("round over after {:?}", started.elapsed());
    Ok(probed
        .iter()
        .zip(looks)
        .enumerate()
        .map(|(index, ((service, probe), look))| {
            let record = records.get(&service.name).cloned().unwrap_or_default();
            ProbeOutcome {
                name: service.name.clone(),
                ok: !matches!(look, Look::Failed(_)),
                judged: !matches!(look, Look::NotJudged(_)),
                failures: record.failures,
                failures_to_heal: probe.failures,
                detail: record.detail,
                healing_started: started_units[index].take(),
            }
        })
        .collect())
}

/// A service paused or in a maintenance window is not judged: its failures do not count
/// (so the hold decision never sees it as a candidate).
fn not_judged_while_planned(
    config: &Config,
    state: &StateDir,
    probed: &[(&ServiceConfig, Probe)],
    looks: &mut [Look],
    now: SystemTime,
) {
    let mut plans = crate::heal::planned::Plans::read(config, state);
    for ((service, _), look) in probed.iter().zip(looks) {
        if let Some(planned) = plans.of(service, now) {
            *look = Look::NotJudged(format!("not judged: {}", planned.why));
        }
    }
    plans.keep(state);
}

/// The heal units of `candidates` (indices of `probed` whose failures reached their count)
/// that start now (each with its state), the others held and said so in their records.
fn due_heal_units<U: UnitControl>(
    config: &Config,
    state: &StateDir,
    systemd: &U,
    probed: &[(&ServiceConfig, Probe)],
    candidates: &[usize],
    since: &[Option<u64>],
    records: &mut BTreeMap<String, ProbeRecord>,
) -> Result<Vec<(usize, UnitOverview)>, SystemdError> {
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let now = SystemTime::now();
    let heal_units: Vec<String> = candidates
        .iter()
        .map(|&index| probed[index].0.heal_unit_name())
        .collect();
    let heal_names: Vec<&str> = heal_units.iter().map(String::as_str).collect();
    let mut due = Vec::new();
    for (&index, heal) in candidates.iter().zip(systemd.unit_states(&heal_names)?) {
        let service = probed[index].0;
        let record = records.entry(service.name.clone()).or_default();
        if let Some(why) = hold(config, state, service, &heal, since[index]) {
            held(record, &why, &heal);
        } else {
            mark_started(record, &heal.id, now);
            due.push((index, heal));
        }
    }
    Ok(due)
}

/// When each active unit became so, and the marks of the invocations (`active_since`).
type ActiveSince = (Vec<Option<u64>>, Vec<Option<String>>);

/// When each of `probed`'s units (`names`, `views`) that is active became so, and the mark of
/// its invocation: what the records say while the invocation is the one they saw, else asked
/// of systemd (one batch of the others; at 300 units one question a unit was a third of a
/// round's CPU).
fn active_since<U: UnitControl>(
    systemd: &U,
    probed: &[(&ServiceConfig, Probe)],
    names: &[&str],
    views: &[UnitOverview],
    records: &BTreeMap<String, ProbeRecord>,
) -> Result<ActiveSince, SystemdError> {
    let marks = systemd.invocation_marks(names);
    let mut since: Vec<Option<u64>> = vec![None; names.len()];
    let mut asked = Vec::new();
    for (index, ((service, _), view)) in probed.iter().zip(views).enumerate() {
        if view.active_state != ActiveState::Active {
            continue;
        }
        let record = records.get(&service.name);
        let known = marks[index]
            .as_ref()
            .filter(|mark| !mark.is_empty())
            .zip(record)
            .filter(|(mark, record)| record.invocation.as_ref() == Some(*mark))
            .and_then(|(_, record)| record.active_since_us);
        match known {
            Some(known) => since[index] = Some(known),
            None => asked.push(index),
        }
    }
    if !asked.is_empty() {
        let asked_names: Vec<&str> = asked.iter().map(|&index| names[index]).collect();
        for (index, answer) in asked.iter().zip(systemd.active_since(&asked_names)?) {
            since[*index] = answer;
        }
    }
    Ok((since, marks))
}

/// One look at each of `probed` (whose units are `units`, active since `since`), all at once,
/// and the process holding each one's port for its unit (those of the last round's `records`
/// vouch for their ports while they still hold them).
fn look_at_all(
    probed: &[(&ServiceConfig, Probe)],
    units: &[UnitOverview],
    since: &[Option<u64>],
    records: &BTreeMap<String, ProbeRecord>,
) -> (Vec<Look>, Vec<Option<Holder>>) {
    let read_at = std::time::Instant::now();
    // The ports of the active units: only those are judged.
    let wanted: Vec<(usize, Wanted)> = probed
        .iter()
        .enumerate()
        .filter(|&(index, _)| units[index].active_state == ActiveState::Active)
        .filter_map(|(index, (service, _))| {
            let port = service.port?;
            let seen = records
                .get(&service.name)
                .and_then(|record| record.listener);
            Some((index, (port, units[index].id.as_str(), seen)))
        })
        .collect();
    let vouched = if wanted.is_empty() {
        Vouched::default()
    } else {
        let asked: Vec<_> = wanted.iter().map(|(_, asked)| *asked).collect();
        Listeners::read_for(&asked)
    };
    let mut holders = vec![None; probed.len()];
    for ((index, _), holder) in wanted.iter().zip(&vouched.holders) {
        holders[*index] = *holder;
    }
    let listeners = vouched.listeners;
    tracing::debug!(
        "listening sockets read in {:?} ({})",
        read_at.elapsed(),
        if vouched.walked {
            "every process walked"
        } else {
            "vouched for by their holders"
        }
    );
    let now_us = monotonic_us();
    let mut looks: Vec<Option<Look>> = probed
        .iter()
        .enumerate()
        .map(|(index, (service, probe))| {
            before_asking(
                service,
                probe,
                &units[index],
                since[index],
                &listeners,
                now_us,
            )
        })
        .collect();
    let (bare, others): (Vec<usize>, Vec<usize>) = (0..probed.len())
        .filter(|&index| looks[index].is_none())
        .partition(|&index| bare_port(probed[index].0, &probed[index].1).is_some());
    std::thread::scope(|scope| {
        // The services to talk to (an exchange, a health URL): a thread each, while the bare
        // connects run on this one.
        let handles: Vec<_> = others
            .iter()
            .map(|&index| {
                let (service, probe) = (probed[index].0, &probed[index].1);
                let handle = std::thread::Builder::new()
                    .stack_size(CHECK_STACK)
                    .spawn_scoped(scope, move || ask(service, probe));
                (index, handle)
            })
            .collect();
        connect_all(probed, &bare, &mut looks);
        for (index, handle) in handles {
            looks[index] = Some(match handle {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|_| Look::NotJudged("the check panicked".into())),
                Err(err) => Look::NotJudged(format!(
                    "no thread for the check: {}",
                    crate::host::net::words(&err, Duration::ZERO)
                )),
            });
        }
    });
    let looks = looks
        .into_iter()
        .map(|look| look.unwrap_or_else(|| Look::NotJudged("not looked at".into())))
        .collect();
    (looks, holders)
}

/// `<state>/probes.json`: every probed service's record (none when it is missing or torn).
pub(crate) fn records(state: &StateDir) -> Result<BTreeMap<String, ProbeRecord>, StateError> {
    Ok(state.file(RECORDS)?.unwrap_or_default())
}

/// Writes the records; records that cannot be written are logged, never the end of a round
/// (its heal units are still started).
fn save_records(state: &StateDir, records: &BTreeMap<String, ProbeRecord>) {
    if let Err(err) = state.save_file(RECORDS, records) {
        tracing::error!("the probes' records cannot be written: {err}");
    }
}

/// A due heal unit that something holds: said in the record. A run under way judges for
/// itself, and once it is over failures count afresh.
fn held(record: &mut ProbeRecord, why: &str, heal: &UnitOverview) {
    record.detail = format!("{}; not healed: {why}", record.detail);
    if matches!(
        heal.active_state,
        ActiveState::Active | ActiveState::Activating
    ) {
        record.failures = 0;
        record.first_failed_at = None;
    }
}

/// Records that the probes start `heal_unit` now, and what they saw: the run judges from here,
/// and the next start needs as many failed rounds again.
fn mark_started(record: &mut ProbeRecord, heal_unit: &str, now: SystemTime) {
    let because = account(record);
    record.healing_started_at = Some(Timestamp::millis(now));
    record.detail = format!("{heal_unit} started: {because}");
    record.healing_because = Some(because);
    record.ok = None;
    record.failures = 0;
    record.first_failed_at = None;
}

/// Why the heal unit is not started although the probes say so: it is not installed (or
/// masked), it is running already, or the one hold decision holds the service quietly (its
/// back-off step was told already). A hold that begins a step starts the heal unit: the run
/// records it and tells the owner, as for a crash.
fn hold(
    config: &Config,
    state: &StateDir,
    service: &ServiceConfig,
    heal: &UnitOverview,
    active_since_us: Option<u64>,
) -> Option<String> {
    if heal.load_state != "loaded" {
        return Some(format!(
            "{} is {} (selfheal install writes it)",
            heal.id, heal.load_state
        ));
    }
    if matches!(
        heal.active_state,
        ActiveState::Active | ActiveState::Activating
    ) {
        return Some(format!("{} is running", heal.id));
    }
    let recorded = crate::heal::hold::Recorded::read(state, &service.name).ok()?;
    let now = SystemTime::now();
    let active_since = active_since_us.and_then(|since| {
        now.checked_sub(Duration::from_micros(monotonic_us().saturating_sub(since)))
    });
    let unit = crate::heal::hold::UnitNow {
        condition: crate::heal::hold::Condition::Active,
        disabled: false,
        active_since,
    };
    let rules = crate::heal::hold::Rules::of(config);
    // A planned service is not judged, so never a candidate.
    match recorded.decide(
        rules,
        crate::heal::hold::Starter::Probe,
        Some(unit),
        None,
        now,
    ) {
        crate::heal::hold::Decision::Hold(hold) if !hold.tell => {
            Some(hold.why.sentence(&service.name, rules))
        }
        _ => None,
    }
}

/// CLOCK_MONOTONIC in µs, the clock of systemd's `…TimestampMonotonic` (0 if unreadable,
/// which judges every service as just started: no verdict rather than a wrong one).
fn monotonic_us() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |now| {
        u64::try_from(now.tv_sec()).unwrap_or(0) * 1_000_000
            + u64::try_from(now.tv_nsec()).unwrap_or(0) / 1_000
    })
}

/// What one look at one service finds before the service is asked: not judged (not active,
/// inside its start grace) or its port not its own; `None` when it must be asked.
fn before_asking(
    service: &ServiceConfig,
    probe: &Probe,
    unit: &UnitOverview,
    active_since_us: Option<u64>,
    listeners: &Listeners,
    now_us: u64,
) -> Option<Look> {
    if unit.active_state != ActiveState::Active {
        return Some(Look::NotJudged(format!(
            "not judged: {} is {}/{}",
            unit.id, unit.active_state, unit.sub_state
        )));
    }
    // Monotonic, as systemd counts it: a wall clock stepped back must not end a grace early.
    let up_for = active_since_us.map(|since| Duration::from_micros(now_us.saturating_sub(since)));
    if let Some(up_for) = up_for.filter(|up_for| *up_for < probe.start_grace) {
        return Some(Look::NotJudged(format!(
            "not judged: active for {}, within its start_grace of {}",
            crate::ui::duration::approx(up_for),
            crate::ui::duration::HumanDuration(probe.start_grace)
        )));
    }
    if let Some(port) = service.port
        && listeners.held_by_unit(port, &unit.id) == Some(false)
    {
        return Some(Look::Failed(if listeners.is_listening(port) {
            format!("port {port} is held by a process outside {}", unit.id)
        } else {
            format!("port {port} is not listening")
        }));
    }
    None
}

/// The service asked as its clients ask it: its port's exchange or connect, its health URL.
fn ask(service: &ServiceConfig, probe: &Probe) -> Look {
    match crate::heal::verify::answers(
        service.port,
        service.health_url.as_ref(),
        probe.exchange.as_ref(),
        probe.timeout,
    ) {
        // Nothing but a health URL whose name did not resolve: the service was not asked.
        Ok(answered)
            if !answered.is_empty()
                && answered
                    .iter()
                    .all(|a| a.ends_with(crate::heal::verify::NOT_JUDGED)) =>
        {
            Look::NotJudged(answered.join(", "))
        }
        Ok(answered) => Look::Passed(answered.join(", ")),
        Err(failed) => Look::Failed(failed),
    }
}

/// A bare connect to its port is all that asking `service` is (no health URL, no exchange).
fn bare_port(service: &ServiceConfig, probe: &Probe) -> Option<u16> {
    service
        .port
        .filter(|_| service.health_url.is_none() && probe.exchange.is_none())
}

/// The bare connects of `asked` (indices of `probed`), all at once on this thread, one batch
/// per timeout; the words `verify::answers` has for them.
fn connect_all(probed: &[(&ServiceConfig, Probe)], asked: &[usize], looks: &mut [Option<Look>]) {
    let mut timeouts: Vec<Duration> = asked.iter().map(|&i| probed[i].1.timeout).collect();
    timeouts.sort();
    timeouts.dedup();
    for timeout in timeouts {
        let batch: Vec<(usize, u16)> = asked
            .iter()
            .filter(|&&i| probed[i].1.timeout == timeout)
            .filter_map(|&i| bare_port(probed[i].0, &probed[i].1).map(|port| (i, port)))
            .collect();
        let targets: Vec<Vec<std::net::SocketAddr>> = batch
            .iter()
            .map(|(_, port)| crate::host::net::loopback(*port))
            .collect();
        let results = crate::host::net::connect_all(&targets, timeout);
        for ((index, port), result) in batch.into_iter().zip(results) {
            looks[index] = Some(match result {
                Ok(()) => Look::Passed(format!("port {port} accepts connections")),
                Err(failed) => Look::Failed(format!("port {port}: {failed}")),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(failures: u32) -> Probe {
        Probe {
            timeout: Duration::from_secs(1),
            failures,
            start_grace: Duration::from_secs(30),
            exchange: None,
        }
    }

    #[test]
    fn only_failed_rounds_in_a_row_make_a_run_due() {
        let mut record = ProbeRecord::default();
        let now = SystemTime::now();
        let failed = Look::Failed("health URL timed out".into());
        assert!(!advance(&mut record, &failed, &probe(3), now));
        assert!(!advance(&mut record, &failed, &probe(3), now));
        // One good answer between two bad ones: the count starts again.
        assert!(!advance(
            &mut record,
            &Look::Passed("ok".into()),
            &probe(3),
            now
        ));
        assert_eq!((record.failures, record.ok), (0, Some(true)));
        assert!(
            record.last_failed_at.is_some(),
            "the last failure is remembered"
        );
        assert!(!advance(&mut record, &failed, &probe(3), now));
        assert!(!advance(&mut record, &failed, &probe(3), now));
        assert!(advance(&mut record, &failed, &probe(3), now));
        assert_eq!(record.failures, 3);
        assert!(account(&record).starts_with("health URL timed out, 3 rounds in a row since "));
        // A restart by systemd (not active, or within the grace) is no failure.
        assert!(!advance(
            &mut record,
            &Look::NotJudged("inactive".into()),
            &probe(3),
            now
        ));
        assert_eq!(record.failures, 0);
    }

    #[test]
    fn the_grace_counts_on_the_monotonic_clock_and_a_start_in_the_future_is_within_it() {
        let config = Config::parse(
            "probe: {}\nmonitored_services:\n  - name: web\n    health_url: http://127.0.0.1:9/\n",
            std::path::Path::new("t.yml"),
        )
        .unwrap();
        let service = &config.monitored_services[0];
        let unit = UnitOverview {
            id: "web.service".into(),
            load_state: "loaded".into(),
            active_state: ActiveState::Active,
            sub_state: "running".into(),
            on_failure: Vec::new(),
            job_queued: false,
        };
        let now_us = 1_000_000_000;
        let look_at = |since_us: u64| {
            before_asking(
                service,
                &probe(3),
                &unit,
                Some(since_us),
                &Listeners::default(),
                now_us,
            )
            .unwrap_or_else(|| ask(service, &probe(3)))
        };
        // Active for 10 s of a 30 s grace: no verdict.
        assert!(
            matches!(look_at(now_us - 10_000_000), Look::NotJudged(why) if why.contains("within its start_grace of 30s"))
        );
        // A start stamped after now (a clock that went back): still within the grace.
        assert!(matches!(look_at(now_us + 5_000_000), Look::NotJudged(_)));
        // Past the grace it is judged: nothing answers on port 9.
        assert!(
            matches!(look_at(now_us - 60_000_000), Look::Failed(why) if why.starts_with("health URL http://127.0.0.1:9/"))
        );
    }

    /// Probe rounds against a scripted systemd (web.service active since long ago, its heal
    /// unit as `heal_state` says) for a web service whose port nothing listens on: the calls
    /// each round made.
    #[test]
    fn a_service_that_fails_its_probes_gets_its_heal_unit_started_once() {
        use crate::systemd::fake::{FakeJob, FakeSystemd, unit};
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap()
            .port();
        let config = Config::parse(
            &format!(
                "probe: {{ interval: 1s, timeout: 1s, failures: 2, start_grace: 0s }}\nmonitored_services:\n  - name: web\n    port: {port}\n"
            ),
            std::path::Path::new("test.yml"),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        let overview = |id: &str, active_state: &str| UnitOverview {
            id: id.to_owned(),
            load_state: "loaded".to_owned(),
            active_state: ActiveState::parse(active_state),
            ..UnitOverview::default()
        };
        let mut systemd =
            FakeSystemd::scripted(vec![unit("active", "running", "a")], FakeJob::Done);
        systemd.states = vec![
            overview("web.service", "active"),
            overview("selfheal@web.service", "inactive"),
        ];
        let round = |systemd: &FakeSystemd| {
            let before = systemd.calls().len();
            let outcomes = super::round(&config, &state, &[], || Ok(systemd)).unwrap();
            assert!(!outcomes[0].ok, "{outcomes:?}");
            systemd.calls()[before..].to_vec()
        };
        assert_eq!(
            round(&systemd),
            Vec::<String>::new(),
            "one failed round of two"
        );
        assert_eq!(round(&systemd), ["start_no_wait selfheal@web.service"]);
        // Its run goes on: the next rounds leave it to that run.
        systemd.states[1] = overview("selfheal@web.service", "activating");
        assert_eq!(round(&systemd), Vec::<String>::new());
        assert_eq!(
            round(&systemd),
            Vec::<String>::new(),
            "the count is due again"
        );
        let records = records(&state).unwrap();
        assert_eq!(
            records["web"].detail,
            format!("port {port} is not listening; not healed: selfheal@web.service is running")
        );

        // Paused by a person: its rounds are not judged, so no number of them starts a heal.
        systemd.states[1] = overview("selfheal@web.service", "inactive");
        state
            .change_pauses(|pauses| {
                pauses.services.insert(
                    "web".into(),
                    crate::state::pauses::Pause {
                        until: Timestamp::seconds(SystemTime::now() + Duration::from_secs(600)),
                        reason: Some("deploy".into()),
                    },
                );
            })
            .unwrap();
        for _ in 0..3 {
            let before = systemd.calls().len();
            let outcomes = super::round(&config, &state, &[], || Ok(&systemd)).unwrap();
            assert!(!outcomes[0].judged, "{outcomes:?}");
            assert!(outcomes[0].detail.contains(": deploy;"), "{outcomes:?}");
            assert_eq!(systemd.calls()[before..], [] as [String; 0]);
        }
    }
}
