//! `port_conflict`: the service cannot bind its port because a process holds it. A stale
//! process of this same service is terminated (SIGTERM, grace, SIGKILL) and the service is
//! restarted; anything else holding the port is named in the report and left to a person,
//! unless `kill_foreign: true`. PID 1 and selfheal itself are never signalled.

use std::fmt::Write as _;
use std::time::Duration;

use super::{Attempt, Context, StepResult, Strategy, then_restart};
use crate::config::ServiceConfig;
use crate::config::strategies::PortConflictConfig;
use crate::host::ports::{self, PortHolder};
use crate::host::process::{self, Pidfd, Termination};
use crate::systemd::{ActiveState, UnitSnapshot};
use crate::ui::duration::HumanDuration;

pub(super) struct PortConflict;

/// What systemd's `GetUnitByPID` said about a port holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HolderUnit {
    /// systemd places it in this unit.
    Unit(String),
    /// systemd says it belongs to no unit.
    NoUnit,
    /// The question could not be answered (a D-Bus error): nothing is known, so nothing is
    /// signalled.
    Unknown(String),
}

/// Why a holder may or may not be signalled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ownership {
    /// A leftover of this service: in its cgroup while it is really down, or running exactly
    /// its ExecStart= command line outside any service.
    Stale { why: String },
    /// The service's own live process: the port is not in conflict.
    Live,
    /// Another unit's process, or one outside any service.
    Foreign { unit: Option<String> },
    /// Never signalled, whatever the config says.
    Protected { why: String },
}

/// A unit state in which the unit has no live invocation: anything left in its cgroup is a
/// leftover. `activating` (which includes `auto-restart`), `reloading` and `deactivating` all
/// mean systemd is working on a live invocation.
fn is_really_down(unit: &UnitSnapshot) -> bool {
    matches!(
        unit.active_state,
        ActiveState::Failed | ActiveState::Inactive
    )
}

/// A login session's scope: "started by a person". Only there (or in no unit at all) may a
/// process be recognised by its command line alone; a process of any other unit is that
/// unit's business. (The root slice is not such a place: containers run there too.)
fn is_login_session(unit: &str) -> bool {
    unit.strip_suffix(".scope")
        .is_some_and(|scope| scope.starts_with("session-"))
}

/// Units whose processes are the host itself: PID 1's scope, the bus, systemd's own daemons
/// (journal, logind, udev, …) and users' service managers. Never signalled, even with
/// `kill_foreign`: a socket can be handed to any of them (SCM_RIGHTS), and holding the
/// port is then no sign of owning it.
fn is_core_unit(unit: &str) -> bool {
    unit == "init.scope"
        || unit == "-.slice"
        || unit.starts_with("dbus")
        || unit.starts_with("systemd-")
        || unit.starts_with("user@")
}

/// Why a holder outside this unit must not be signalled although it holds the port: it did not
/// create the socket it holds (another uid did), so it may have been handed it.
fn handed_the_socket(holder: &PortHolder) -> Option<String> {
    match (holder.uid, holder.socket_uid) {
        (Some(uid), Some(creator)) if uid != creator => Some(format!(
            "not signalled: its socket was created by uid {creator} and it runs as uid {uid}, so it may have been handed the port"
        )),
        _ => None,
    }
}

/// Decides whose a port holder is. Pure: `holder_unit` is what systemd's GetUnitByPID said
/// and `unit` is the service's state read just now (never a snapshot from before the chain).
pub(super) fn classify(
    holder: &PortHolder,
    holder_unit: &HolderUnit,
    unit: &UnitSnapshot,
    self_pid: u32,
) -> Ownership {
    if holder.pid <= 1 {
        return Ownership::Protected {
            why: "PID 1, the init system".into(),
        };
    }
    if holder.pid == self_pid {
        return Ownership::Protected {
            why: "selfheal itself".into(),
        };
    }
    let name = unit.unit.as_str();
    let owner = match holder_unit {
        HolderUnit::Unknown(error) => {
            return Ownership::Protected {
                why: format!("of an owner systemd could not tell ({error})"),
            };
        }
        HolderUnit::Unit(owner) if owner == name => {
            return if holder.pid == unit.main_pid || !is_really_down(unit) {
                Ownership::Live
            } else {
                Ownership::Stale {
                    why: format!(
                        "is left over in {name}'s cgroup while {name} is {}",
                        unit.active_state
                    ),
                }
            };
        }
        HolderUnit::Unit(owner) if is_core_unit(owner) => {
            return Ownership::Protected {
                why: format!("part of the host itself ({owner})"),
            };
        }
        HolderUnit::Unit(owner) if !is_login_session(owner) => Some(owner.clone()),
        HolderUnit::Unit(scope) => Some(scope.clone()),
        HolderUnit::NoUnit => None,
    };
    if let Some(why) = handed_the_socket(holder) {
        return Ownership::Protected { why };
    }
    let in_another_service = owner.as_deref().is_some_and(|o| !is_login_session(o));
    if in_another_service {
        return Ownership::Foreign { unit: owner };
    }
    if !holder.cmdline.is_empty() && unit.exec_start.contains(&holder.cmdline) {
        return Ownership::Stale {
            why: format!("runs exactly {name}'s ExecStart= command line outside any service"),
        };
    }
    Ownership::Foreign { unit: owner }
}

/// What systemd says about `pid`, a D-Bus error kept as "unknown".
fn holder_unit(context: &Context<'_>, pid: u32) -> HolderUnit {
    match context.units.unit_by_pid(pid) {
        Ok(Some(unit)) => HolderUnit::Unit(unit),
        Ok(None) => HolderUnit::NoUnit,
        Err(err) => HolderUnit::Unknown(err.to_string()),
    }
}

/// `pid 4242 (python3 -m http.server 8080)`, commands cut to stay readable.
fn describe(holder: &PortHolder) -> String {
    let mut command = holder.cmdline.join(" ");
    if command.is_empty() {
        command = "command line unknown".into();
    }
    if command.chars().count() > 120 {
        command = command.chars().take(117).collect::<String>() + "…";
    }
    format!("pid {} ({command})", holder.pid)
}

/// Whether a holder classified this way may be signalled under these settings; `Some(why)`.
fn may_signal(ownership: Ownership, settings: &PortConflictConfig) -> Result<String, Ownership> {
    match ownership {
        Ownership::Stale { why } => Ok(why),
        Ownership::Foreign { unit } if settings.kill_foreign => {
            let whose = unit.map_or("no unit".to_owned(), |u| format!("unit {u}"));
            Ok(format!("is foreign ({whose}); kill_foreign is set"))
        }
        other => Err(other),
    }
}

impl Strategy for PortConflict {
    fn extra_time(&self, service: &ServiceConfig) -> Duration {
        // One shared grace for all holders, then at most 3 s for SIGKILL to land.
        let grace = service.port_conflict.clone().unwrap_or_default().grace;
        Duration::from(grace) + Duration::from_secs(3)
    }

    // Find, classify, refuse or stop, restart: one decision read top to bottom (the sorting
    // and the stopping are their own functions).
    fn attempt(&self, context: &Context<'_>) -> Attempt {
        let Some(port) = context.service.port else {
            return Attempt::new(
                StepResult::NotApplicable,
                "look for a port holder",
                "no port configured",
            );
        };
        let settings = context.service.port_conflict.clone().unwrap_or_default();
        let action = format!("find who holds port {port}");
        let holders = ports::holders(port);
        if holders.is_empty() {
            return Attempt::new(
                StepResult::NotApplicable,
                action,
                format!("port {port} is free"),
            );
        }
        // The snapshot taken before the chain is stale by now: an earlier strategy may have
        // restarted the unit, and its new main process is what holds the port.
        let unit = match context.units.snapshot(&context.snapshot.unit) {
            Ok(unit) => unit,
            Err(err) => {
                return Attempt::new(
                    StepResult::NeedsHuman,
                    action,
                    format!(
                        "port {port} is held, but the state of {} cannot be read ({err}); nothing is signalled without it",
                        context.snapshot.unit
                    ),
                );
            }
        };

        let Sorted {
            to_stop,
            blocking,
            live,
        } = sort_holders(context, holders, &unit, &settings);

        if !blocking.is_empty() {
            let mut detail = format!("port {port} is held by {}", blocking.join(", "));
            detail.push_str(
                "; selfheal only stops this service's own stale processes (port_conflict.kill_foreign: true allows other units' processes, never PID 1 or the host's own daemons)",
            );
            return Attempt::new(StepResult::NeedsHuman, action, detail);
        }
        if to_stop.is_empty() {
            let pids: Vec<String> = live.iter().map(describe).collect();
            return Attempt::new(
                StepResult::NotApplicable,
                action,
                format!(
                    "port {port} is held by {} itself ({}, {}): no conflict",
                    unit.unit,
                    pids.join(", "),
                    unit.active_state
                ),
            );
        }

        if to_stop.len() > MAX_HOLDERS {
            return Attempt::new(
                StepResult::NeedsHuman,
                action,
                format!(
                    "port {port} is held by {} processes; more than {MAX_HOLDERS} is not a stale instance selfheal stops",
                    to_stop.len()
                ),
            );
        }
        let mut found = format!("port {port} is held by ");
        let mut changes = Vec::new();
        for (index, (holder, why)) in to_stop.iter().enumerate() {
            if index > 0 {
                found.push_str(", ");
            }
            let _ = write!(found, "{}, which {why}", describe(holder));
        }
        if context.dry_run {
            for (holder, _) in &to_stop {
                changes.push(format!(
                    "SIGTERM pid {}, SIGKILL after {} if it is still there",
                    holder.pid, settings.grace
                ));
            }
            return then_restart(context, "stop the stale holder", &found, changes);
        }
        stop_then_restart(context, &unit, to_stop, &settings, &found, action)
    }
}

/// The port's holders, by what selfheal may do about each.
struct Sorted {
    /// This service's stale processes (or, with `kill_foreign`, other units'), and why each
    /// may be stopped.
    to_stop: Vec<(PortHolder, String)>,
    /// Why the others must not be signalled: "nginx.service: pid 812 (nginx)".
    blocking: Vec<String>,
    /// The unit's own live processes: no conflict.
    live: Vec<PortHolder>,
}

/// Classifies every holder (`classify`, then `may_signal` with the settings).
fn sort_holders(
    context: &Context<'_>,
    holders: Vec<PortHolder>,
    unit: &crate::systemd::UnitSnapshot,
    settings: &PortConflictConfig,
) -> Sorted {
    let self_pid = std::process::id();
    let mut sorted = Sorted {
        to_stop: Vec::new(),
        blocking: Vec::new(),
        live: Vec::new(),
    };
    for holder in holders {
        let owner = holder_unit(context, holder.pid);
        // "haproxy.service: pid 812 (/usr/sbin/haproxy -f …)": the unit first, as a person
        // would look for it.
        let who = match &owner {
            HolderUnit::Unit(name) => format!("{name}: {}", describe(&holder)),
            HolderUnit::NoUnit => format!("{}, outside any systemd unit", describe(&holder)),
            HolderUnit::Unknown(_) => describe(&holder),
        };
        match may_signal(classify(&holder, &owner, unit, self_pid), settings) {
            Ok(why) => sorted.to_stop.push((holder, why)),
            Err(Ownership::Live) => sorted.live.push(holder),
            Err(Ownership::Foreign { .. }) => sorted.blocking.push(who),
            Err(Ownership::Protected { why }) => {
                let why = if why.starts_with("not signalled") {
                    why
                } else {
                    format!("not signalled: it is {why}")
                };
                sorted.blocking.push(format!("{who}, {why}"));
            }
            Err(Ownership::Stale { .. }) => {
                unreachable!("may_signal accepts every stale holder")
            }
        }
    }
    sorted
}

/// Stops the stale holders `found` describes (each asked again right before its signal),
/// then restarts and verifies the service; a holder that is no longer stale stops the step
/// for a person.
fn stop_then_restart(
    context: &Context<'_>,
    unit: &crate::systemd::UnitSnapshot,
    to_stop: Vec<(PortHolder, String)>,
    settings: &PortConflictConfig,
    found: &str,
    action: String,
) -> Attempt {
    let self_pid = std::process::id();
    // Asked again right before each signal: the unit may have come up meanwhile.
    let still_signallable = |holder: &PortHolder| -> Result<(), String> {
        let unit = context
            .units
            .snapshot(&unit.unit)
            .map_err(|err| format!("the unit's state cannot be read ({err})"))?;
        let owner = holder_unit(context, holder.pid);
        may_signal(classify(holder, &owner, &unit, self_pid), settings)
            .map(drop)
            .map_err(|now| {
                format!(
                    "it is no longer a stale holder ({now:?}, unit {})",
                    unit.state()
                )
            })
    };
    let holders: Vec<PortHolder> = to_stop.into_iter().map(|(holder, _)| holder).collect();
    let stopped = stop(&holders, settings.grace, &still_signallable);
    let (changes, left_alone) = match stopped {
        Ok(stopped) => stopped,
        Err(err) => {
            return Attempt::new(
                StepResult::NoFix,
                action,
                format!("{found}; stopping them failed: {err}"),
            );
        }
    };
    if !left_alone.is_empty() {
        // Restarting now would race whatever changed: a person should look.
        return Attempt::new(
            StepResult::NeedsHuman,
            action,
            format!("{found}; {}", left_alone.join("; ")),
        )
        .with_changes(changes);
    }
    then_restart(context, "stop the stale holder", found, changes)
}

/// More holders than this is not a stale instance but something a person must look at (and
/// it bounds how long stopping can take).
const MAX_HOLDERS: usize = 64;

/// Stops the holders together: each is pinned by a pidfd and checked to be the process that
/// was classified (a PID recycled since the scan is left alone) and to be still signallable
/// (`recheck`), then all get SIGTERM, one shared `grace`, and SIGKILL for those still there
/// that `recheck` still allows. Returns the changes made and the holders left alone.
fn stop(
    holders: &[PortHolder],
    grace: HumanDuration,
    recheck: &dyn Fn(&PortHolder) -> Result<(), String>,
) -> std::io::Result<(Vec<String>, Vec<String>)> {
    let mut left_alone = Vec::new();
    let mut pinned = Vec::new();
    for holder in holders {
        let process = match Pidfd::open(holder.pid) {
            Ok(process) => process,
            Err(err) if err.raw_os_error() == Some(libc::ESRCH) => continue,
            Err(err) => return Err(err),
        };
        let cmdline = procfs::process::Process::new(holder.pid as libc::pid_t)
            .and_then(|p| p.cmdline())
            .unwrap_or_default();
        if cmdline != holder.cmdline
            || ports::cgroup_of(holder.pid).as_deref() != Some(&holder.cgroup)
        {
            // Exited, and the PID now names another process: nothing to stop.
            continue;
        }
        match recheck(holder) {
            Ok(()) => pinned.push((holder, process)),
            Err(why) => left_alone.push(format!("pid {} left alone: {why}", holder.pid)),
        }
    }
    if pinned.is_empty() {
        return Ok((Vec::new(), left_alone));
    }
    let (pinned, processes): (Vec<&PortHolder>, Vec<Pidfd>) = pinned.into_iter().unzip();
    tracing::info!(
        pids = ?pinned.iter().map(|h| h.pid).collect::<Vec<_>>(),
        "sending SIGTERM to the stale port holder(s)"
    );
    // Asked again before SIGKILL: during the grace the unit may have come up and made one of
    // them its main process (NotifyAccess=all, PIDFile=).
    let allowed_at_kill = |process: &Pidfd| {
        pinned
            .iter()
            .find(|holder| holder.pid == process.pid())
            .is_some_and(|holder| recheck(holder).is_ok())
    };
    let ended = process::terminate_all(&processes, Duration::from(grace), allowed_at_kill)?;
    let mut changes = Vec::new();
    for (holder, end) in pinned.iter().zip(ended) {
        let pid = holder.pid;
        match end {
            Termination::Terminated => changes.push(format!("SIGTERM pid {pid}: it exited")),
            Termination::Killed => changes.push(format!(
                "SIGTERM pid {pid}, then SIGKILL after {grace}: it exited"
            )),
            Termination::Spared => {
                changes.push(format!("SIGTERM pid {pid}"));
                left_alone.push(format!(
                    "pid {pid} outlived SIGTERM and was no longer a stale holder: not killed"
                ));
            }
            Termination::Survived => {
                return Err(std::io::Error::other(format!(
                    "pid {pid} survived SIGKILL (uninterruptible sleep?)"
                )));
            }
        }
    }
    Ok((changes, left_alone))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(active: &str, main_pid: u32) -> UnitSnapshot {
        UnitSnapshot {
            unit: "web.service".into(),
            active_state: ActiveState::parse(active),
            main_pid,
            control_group: "/system.slice/web.service".into(),
            exec_start: vec![vec!["/usr/bin/web".into(), "--port".into(), "80".into()]],
            ..UnitSnapshot::default()
        }
    }

    fn holder(pid: u32, cmdline: &[&str], cgroup: &str) -> PortHolder {
        PortHolder {
            pid,
            cmdline: cmdline.iter().map(|s| (*s).to_owned()).collect(),
            cgroup: cgroup.into(),
            uid: Some(1000),
            socket_uid: Some(1000),
        }
    }

    fn in_unit(name: &str) -> HolderUnit {
        HolderUnit::Unit(name.into())
    }

    fn is_stale(ownership: &Ownership) -> bool {
        matches!(ownership, Ownership::Stale { .. })
    }

    #[test]
    fn a_leftover_in_the_units_cgroup_is_stale_only_while_the_unit_is_really_down() {
        let leftover = holder(
            40,
            &["/usr/bin/web", "--worker"],
            "/system.slice/web.service",
        );
        for down in ["failed", "inactive"] {
            assert!(is_stale(&classify(
                &leftover,
                &in_unit("web.service"),
                &unit(down, 0),
                7
            )));
        }
        for up in ["active", "activating", "reloading", "deactivating"] {
            assert_eq!(
                classify(&leftover, &in_unit("web.service"), &unit(up, 0), 7),
                Ownership::Live,
                "{up}"
            );
        }
    }

    #[test]
    fn the_current_main_process_is_never_stale() {
        // What service_restart leaves behind when verification fails: the new main process
        // holds the port. Even a unit state read a moment too early must not make it stale.
        let main = holder(
            50,
            &["/usr/bin/web", "--port", "80"],
            "/system.slice/web.service",
        );
        assert_eq!(
            classify(&main, &in_unit("web.service"), &unit("failed", 50), 7),
            Ownership::Live
        );
    }

    #[test]
    fn the_exact_exec_start_command_line_is_stale_only_outside_any_service() {
        let by_hand = holder(
            41,
            &["/usr/bin/web", "--port", "80"],
            "/user.slice/session-1.scope",
        );
        assert!(is_stale(&classify(
            &by_hand,
            &in_unit("session-1.scope"),
            &unit("failed", 0),
            7
        )));
        assert!(is_stale(&classify(
            &by_hand,
            &HolderUnit::NoUnit,
            &unit("failed", 0),
            7
        )));
        // The root slice is not a login session: containers run there too.
        assert!(!is_stale(&classify(
            &by_hand,
            &in_unit("-.slice"),
            &unit("failed", 0),
            7
        )));
        // A different argument list is someone else's program.
        let similar = holder(
            42,
            &["/usr/bin/web", "--port", "81"],
            "/user.slice/session-1.scope",
        );
        assert_eq!(
            classify(&similar, &in_unit("session-1.scope"), &unit("failed", 0), 7),
            Ownership::Foreign {
                unit: Some("session-1.scope".into())
            }
        );
    }

    #[test]
    fn another_units_process_is_foreign_whatever_its_command_line() {
        // Blue/green units and template instances run the very same command line.
        let green = holder(
            43,
            &["/usr/bin/web", "--port", "80"],
            "/system.slice/web-green.service",
        );
        assert_eq!(
            classify(&green, &in_unit("web-green.service"), &unit("failed", 0), 7),
            Ownership::Foreign {
                unit: Some("web-green.service".into())
            }
        );
        // A cgroup whose last component looks like ours is not ours either.
        let lookalike = holder(44, &["nginx"], "/other.slice/web.service");
        assert_eq!(
            classify(
                &lookalike,
                &in_unit("web.service-2.service"),
                &unit("failed", 0),
                7
            ),
            Ownership::Foreign {
                unit: Some("web.service-2.service".into())
            }
        );
    }

    #[test]
    fn an_owner_systemd_could_not_tell_is_never_signalled() {
        let unknown = HolderUnit::Unknown("systemd call GetUnitByPID failed: timeout".into());
        let stray = holder(
            45,
            &["/usr/bin/web", "--port", "80"],
            "/system.slice/web.service",
        );
        let ownership = classify(&stray, &unknown, &unit("failed", 0), 7);
        assert!(
            matches!(ownership, Ownership::Protected { .. }),
            "{ownership:?}"
        );
        let kill_foreign = PortConflictConfig {
            kill_foreign: true,
            ..PortConflictConfig::default()
        };
        assert!(may_signal(ownership, &kill_foreign).is_err());
    }

    #[test]
    fn kill_foreign_allows_foreign_holders_but_never_protected_ones() {
        let cautious = PortConflictConfig::default();
        let bold = PortConflictConfig {
            kill_foreign: true,
            ..PortConflictConfig::default()
        };
        let foreign = Ownership::Foreign {
            unit: Some("x.service".into()),
        };
        assert!(may_signal(foreign.clone(), &cautious).is_err());
        assert!(may_signal(foreign, &bold).is_ok());
        assert!(may_signal(Ownership::Live, &bold).is_err());
    }

    #[test]
    fn pid_1_and_selfheal_are_never_candidates() {
        let init = holder(1, &["/usr/bin/web", "--port", "80"], "/");
        assert!(matches!(
            classify(&init, &HolderUnit::NoUnit, &unit("failed", 0), 7),
            Ownership::Protected { .. }
        ));
        let itself = holder(
            7,
            &["/usr/bin/web", "--port", "80"],
            "/system.slice/web.service",
        );
        assert!(matches!(
            classify(&itself, &in_unit("web.service"), &unit("failed", 0), 7),
            Ownership::Protected { .. }
        ));
    }

    #[test]
    fn a_holder_handed_a_socket_it_did_not_create_is_never_signalled() {
        // The service user passes its listening socket to a root daemon (SCM_RIGHTS): the
        // daemon now "holds the port", but killing it would be killing what the attacker chose.
        let mut daemon = holder(
            60,
            &["/usr/bin/web", "--port", "80"],
            "/system.slice/cron.service",
        );
        daemon.uid = Some(0);
        daemon.socket_uid = Some(1000);
        let bold = PortConflictConfig {
            kill_foreign: true,
            ..PortConflictConfig::default()
        };
        for owner in [
            in_unit("cron.service"),
            in_unit("session-3.scope"),
            HolderUnit::NoUnit,
        ] {
            let ownership = classify(&daemon, &owner, &unit("failed", 0), 7);
            assert!(
                matches!(ownership, Ownership::Protected { .. }),
                "{owner:?}: {ownership:?}"
            );
            assert!(may_signal(ownership, &bold).is_err());
        }
    }

    #[test]
    fn the_hosts_own_daemons_are_never_signalled_even_with_kill_foreign() {
        let bold = PortConflictConfig {
            kill_foreign: true,
            ..PortConflictConfig::default()
        };
        for core in [
            "dbus.service",
            "systemd-journald.service",
            "systemd-logind.service",
            "init.scope",
            "user@1000.service",
        ] {
            let process = holder(61, &["/usr/bin/dbus-daemon"], "/system.slice/x");
            let ownership = classify(&process, &in_unit(core), &unit("failed", 0), 7);
            assert!(matches!(ownership, Ownership::Protected { .. }), "{core}");
            assert!(may_signal(ownership, &bold).is_err(), "{core}");
        }
        // An ordinary other service is foreign, and kill_foreign may stop it.
        let other = classify(
            &holder(62, &["nginx"], "/system.slice/nginx.service"),
            &in_unit("nginx.service"),
            &unit("failed", 0),
            7,
        );
        assert!(may_signal(other, &bold).is_ok());
    }
}
