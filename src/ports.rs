//! Who listens on a TCP port: `/proc/net/tcp{,6}` gives the listening socket's inode,
//! `/proc/*/fd` the processes holding it, `/proc/PID/cgroup` their cgroup.

use std::collections::HashSet;

use procfs::net::TcpState;
use procfs::process::FDTarget;
use serde::Serialize;

/// A process that holds a listening socket on the port.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PortHolder {
    pub pid: u32,
    /// argv, as in `/proc/PID/cmdline`.
    pub cmdline: Vec<String>,
    /// The unified (or name=systemd) cgroup path, e.g. `/system.slice/web.service`.
    pub cgroup: String,
}

/// The inodes of sockets listening on `port` (any address, IPv4 or IPv6).
pub fn listening_inodes(port: u16) -> HashSet<u64> {
    let v4 = procfs::net::tcp().unwrap_or_default();
    let v6 = procfs::net::tcp6().unwrap_or_default();
    v4.into_iter()
        .chain(v6)
        .filter(|entry| entry.state == TcpState::Listen && entry.local_address.port() == port)
        .map(|entry| entry.inode)
        .collect()
}

/// True when something listens on `port`.
pub fn is_listening(port: u16) -> bool {
    !listening_inodes(port).is_empty()
}

/// Every process that holds a socket listening on `port`.
pub fn holders(port: u16) -> Vec<PortHolder> {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return Vec::new();
    }
    let Ok(processes) = procfs::process::all_processes() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for process in processes.flatten() {
        let Ok(fds) = process.fd() else { continue };
        let holds = fds
            .flatten()
            .any(|fd| matches!(fd.target, FDTarget::Socket(inode) if inodes.contains(&inode)));
        if holds {
            let pid = u32::try_from(process.pid).unwrap_or(0);
            found.push(PortHolder {
                pid,
                cmdline: process.cmdline().unwrap_or_default(),
                cgroup: cgroup_of(pid).unwrap_or_default(),
            });
        }
    }
    found
}

/// The cgroup path of a process: the cgroup v2 entry (`0::/…`), else the `name=systemd` one.
pub fn cgroup_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    parse_cgroup(&text)
}

fn parse_cgroup(text: &str) -> Option<String> {
    let mut named = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            return Some(path.to_owned());
        }
        if controllers == "name=systemd" {
            named = Some(path.to_owned());
        }
    }
    named
}

/// True when `cgroup` is `unit_cgroup` or below it.
pub fn is_within(cgroup: &str, unit_cgroup: &str) -> bool {
    !unit_cgroup.is_empty()
        && (cgroup == unit_cgroup
            || cgroup
                .strip_prefix(unit_cgroup)
                .is_some_and(|rest| rest.starts_with('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_the_unified_cgroup() {
        let text = "12:pids:/system.slice/web.service\n1:name=systemd:/system.slice/web.service\n0::/system.slice/web.service\n";
        assert_eq!(
            parse_cgroup(text).as_deref(),
            Some("/system.slice/web.service")
        );
        assert_eq!(
            parse_cgroup("1:name=systemd:/user.slice\n").as_deref(),
            Some("/user.slice")
        );
        assert_eq!(parse_cgroup("garbage"), None);
    }

    #[test]
    fn cgroup_containment_respects_path_boundaries() {
        assert!(is_within(
            "/system.slice/web.service",
            "/system.slice/web.service"
        ));
        assert!(is_within(
            "/system.slice/web.service/worker",
            "/system.slice/web.service"
        ));
        assert!(!is_within(
            "/system.slice/web.service2",
            "/system.slice/web.service"
        ));
        assert!(!is_within("/", ""));
    }

    #[test]
    fn finds_our_own_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(is_listening(port));
        let holders = holders(port);
        assert_eq!(holders.len(), 1, "{holders:?}");
        assert_eq!(holders[0].pid, std::process::id());
        drop(listener);
        assert!(!is_listening(port));
    }
}
