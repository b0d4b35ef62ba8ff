//! `port_conflict`: the service cannot bind its port because a process holds it. A stale
//! process of this same service is terminated (SIGTERM, grace, SIGKILL) and the service is
//! restarted; anything else holding the port is named in the report and left to a person,
//! unless `kill_foreign: true`. PID 1 and selfheal itself are never signalled.

use std::fmt::Write as _;
use std::time::Duration;

use super::{Attempt, Context, StepResult, Strategy, then_restart};
use crate::duration::HumanDuration;
use crate::ports::{self, PortHolder};
use crate::process::{self, Pidfd, Termination};
use crate::systemd::UnitSnapshot;

pub struct PortConflict;

/// Why a holder may or may not be signalled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// A leftover of this service: in its cgroup while it is down, or running exactly its
    /// ExecStart= command line.
    Stale { why: String },
    /// The service's own live process: the port is not in conflict.
    Live,
    /// Another unit's process, or one outside any service.
    Foreign { unit: Option<String> },
    /// Never signalled, whatever the config says.
    Protected { why: &'static str },
}

/// Decides whose a port holder is. Pure; `holder_unit` is what systemd's GetUnitByPID says.
pub fn classify(
    holder: &PortHolder,
    holder_unit: Option<&str>,
    snapshot: &UnitSnapshot,
    self_pid: u32,
) -> Ownership {
    if holder.pid <= 1 {
        return Ownership::Protected {
            why: "PID 1, the init system",
        };
    }
    if holder.pid == self_pid {
        return Ownership::Protected {
            why: "selfheal itself",
        };
    }
    let unit = snapshot.unit.as_str();
    let in_unit = match holder_unit {
        Some(owner) => owner == unit,
        None => {
            ports::is_within(&holder.cgroup, &snapshot.control_group)
                || holder.cgroup.rsplit('/').next() == Some(unit)
        }
    };
    if in_unit {
        let running = snapshot.is_active() || snapshot.active_state == "activating";
        return if running || holder.pid == snapshot.main_pid {
            Ownership::Live
        } else {
            Ownership::Stale {
                why: format!("left over in {unit}'s cgroup while {unit} is down"),
            }
        };
    }
    if !holder.cmdline.is_empty() && snapshot.exec_start.contains(&holder.cmdline) {
        return Ownership::Stale {
            why: format!("runs exactly {unit}'s ExecStart= command line"),
        };
    }
    Ownership::Foreign {
        unit: holder_unit.map(str::to_owned),
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

impl Strategy for PortConflict {
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

        let self_pid = std::process::id();
        let mut to_stop = Vec::new();
        let mut blocking = Vec::new();
        let mut live = Vec::new();
        for holder in holders {
            let holder_unit = context.units.unit_by_pid(holder.pid).ok().flatten();
            let ownership = classify(&holder, holder_unit.as_deref(), context.snapshot, self_pid);
            match ownership {
                Ownership::Stale { why } => to_stop.push((holder, why)),
                Ownership::Live => live.push(holder),
                Ownership::Foreign { unit } if settings.kill_foreign => {
                    let whose = unit.map_or("no unit".to_owned(), |u| format!("unit {u}"));
                    to_stop.push((holder, format!("foreign ({whose}); kill_foreign is set")));
                }
                Ownership::Foreign { unit } => {
                    let whose = unit.map_or("outside any systemd unit".to_owned(), |u| {
                        format!("of unit {u}")
                    });
                    blocking.push(format!("{} {whose}", describe(&holder)));
                }
                Ownership::Protected { why } => {
                    blocking.push(format!("{} is {why}", describe(&holder)));
                }
            }
        }

        if !blocking.is_empty() {
            let mut detail = format!("port {port} is held by {}", blocking.join(", "));
            detail.push_str(
                "; selfheal only stops this service's own stale processes (port_conflict.kill_foreign: true allows others, never PID 1)",
            );
            return Attempt::new(StepResult::NeedsHuman, action, detail);
        }
        if to_stop.is_empty() {
            let pids: Vec<String> = live.iter().map(describe).collect();
            return Attempt::new(
                StepResult::NotApplicable,
                action,
                format!(
                    "port {port} is held by {} itself ({}): no conflict",
                    context.snapshot.unit,
                    pids.join(", ")
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
        for (holder, _) in &to_stop {
            match stop(holder, settings.grace) {
                Ok(change) => changes.push(change),
                Err(err) => {
                    return Attempt::new(
                        StepResult::NoFix,
                        action,
                        format!("{found}; stopping pid {} failed: {err}", holder.pid),
                    )
                    .with_changes(changes);
                }
            }
        }
        then_restart(context, "stop the stale holder", &found, changes)
    }
}

/// Terminates one holder through a pidfd, after checking that the pidfd names the process
/// that was classified (a PID recycled since the scan is left alone).
fn stop(holder: &PortHolder, grace: HumanDuration) -> std::io::Result<String> {
    let process = match Pidfd::open(holder.pid) {
        Ok(process) => process,
        Err(err) if err.raw_os_error() == Some(libc::ESRCH) => {
            return Ok(format!("pid {} had already exited", holder.pid));
        }
        Err(err) => return Err(err),
    };
    let cmdline = procfs::process::Process::new(holder.pid as i32)
        .and_then(|p| p.cmdline())
        .unwrap_or_default();
    if cmdline != holder.cmdline || ports::cgroup_of(holder.pid).as_deref() != Some(&holder.cgroup)
    {
        return Ok(format!(
            "pid {} is no longer the process that held the port; left alone",
            holder.pid
        ));
    }
    tracing::info!(pid = holder.pid, "sending SIGTERM to the stale port holder");
    let ended = process::terminate(&process, Duration::from(grace))?;
    Ok(match ended {
        Termination::Terminated => format!("SIGTERM pid {}: it exited", process.pid()),
        Termination::Killed => format!(
            "SIGTERM pid {}, then SIGKILL after {grace}: it exited",
            process.pid()
        ),
        Termination::Survived => {
            return Err(std::io::Error::other(format!(
                "pid {} survived SIGKILL (uninterruptible sleep?)",
                process.pid()
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(active: &str) -> UnitSnapshot {
        UnitSnapshot {
            unit: "web.service".into(),
            active_state: active.into(),
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
        }
    }

    #[test]
    fn a_leftover_in_the_units_cgroup_is_stale_only_while_the_unit_is_down() {
        let leftover = holder(
            40,
            &["/usr/bin/web", "--worker"],
            "/system.slice/web.service",
        );
        let down = snapshot("failed");
        assert!(matches!(
            classify(&leftover, Some("web.service"), &down, 7),
            Ownership::Stale { .. }
        ));
        // Without GetUnitByPID the cgroup decides.
        assert!(matches!(
            classify(&leftover, None, &down, 7),
            Ownership::Stale { .. }
        ));
        assert_eq!(
            classify(&leftover, Some("web.service"), &snapshot("active"), 7),
            Ownership::Live
        );
    }

    #[test]
    fn the_exact_exec_start_command_line_is_stale_anywhere() {
        let by_hand = holder(
            41,
            &["/usr/bin/web", "--port", "80"],
            "/user.slice/session-1.scope",
        );
        assert!(matches!(
            classify(&by_hand, Some("session-1.scope"), &snapshot("failed"), 7),
            Ownership::Stale { .. }
        ));
        // A different argument list is someone else's program.
        let similar = holder(
            42,
            &["/usr/bin/web", "--port", "81"],
            "/user.slice/session-1.scope",
        );
        assert_eq!(
            classify(&similar, Some("session-1.scope"), &snapshot("failed"), 7),
            Ownership::Foreign {
                unit: Some("session-1.scope".into())
            }
        );
    }

    #[test]
    fn another_units_process_is_foreign_even_with_a_similar_cgroup_name() {
        let other = holder(43, &["nginx"], "/system.slice/web.service2");
        assert_eq!(
            classify(&other, None, &snapshot("failed"), 7),
            Ownership::Foreign { unit: None }
        );
        assert_eq!(
            classify(&other, Some("web.service2"), &snapshot("failed"), 7),
            Ownership::Foreign {
                unit: Some("web.service2".into())
            }
        );
    }

    #[test]
    fn pid_1_and_selfheal_are_never_candidates() {
        let init = holder(1, &["/usr/bin/web", "--port", "80"], "/");
        assert!(matches!(
            classify(&init, None, &snapshot("failed"), 7),
            Ownership::Protected { .. }
        ));
        let itself = holder(
            7,
            &["/usr/bin/web", "--port", "80"],
            "/system.slice/web.service",
        );
        assert!(matches!(
            classify(&itself, Some("web.service"), &snapshot("failed"), 7),
            Ownership::Protected { .. }
        ));
    }
}
