//! Who listens on many ports at once: one sock_diag dump, then the processes that hold the
//! sockets and their cgroups, for the dashboard, `discover` and the probes' rounds.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::ports::{all_listening_sockets, cgroup_of, unit_of, unit_owns};

/// Every listening TCP port of the host and the cgroups of the processes that hold its
/// sockets, from one sock_diag dump and one walk of `/proc/*/fd`: what the dashboard needs
/// for any number of services.
#[derive(Debug, Default)]
pub(crate) struct Listeners {
    /// port → cgroups of the processes that hold a socket listening on it (possibly none
    /// known, when the holder could not be read).
    by_port: HashMap<u16, Vec<String>>,
}

impl Listeners {
    /// Reads them now.
    pub(crate) fn read() -> Listeners {
        let sockets = all_listening_sockets(None);
        let mut by_port: HashMap<u16, Vec<String>> = HashMap::new();
        for (port, _) in sockets.values() {
            by_port.entry(*port).or_default();
        }
        for (pid, held) in socket_holders() {
            let mut ports: Vec<u16> = held
                .iter()
                .filter_map(|(_, inode)| sockets.get(inode).map(|(port, _)| *port))
                .collect();
            ports.dedup();
            if ports.is_empty() {
                continue;
            }
            let cgroup = cgroup_of(pid).unwrap_or_default();
            for port in ports {
                by_port.entry(port).or_default().push(cgroup.clone());
            }
        }
        Listeners { by_port }
    }

    /// The system services that hold a listening socket, each with its ports (ascending):
    /// a service is the first unit below the slices of a holder's cgroup.
    pub(crate) fn by_service(&self) -> std::collections::BTreeMap<String, Vec<u16>> {
        let mut services: std::collections::BTreeMap<String, Vec<u16>> =
            std::collections::BTreeMap::new();
        for (port, cgroups) in &self.by_port {
            for cgroup in cgroups {
                let service = unit_of(cgroup).filter(|unit| {
                    std::path::Path::new(unit)
                        .extension()
                        .is_some_and(|suffix| suffix == "service")
                });
                if let Some(unit) = service {
                    let ports = services.entry(unit.to_owned()).or_default();
                    if !ports.contains(port) {
                        ports.push(*port);
                    }
                }
            }
        }
        for ports in services.values_mut() {
            ports.sort_unstable();
        }
        services
    }

    /// Whether anything listens on `port`.
    pub(crate) fn is_listening(&self, port: u16) -> bool {
        self.by_port.contains_key(&port)
    }

    /// Whether a process of the system unit `unit` listens on `port`: one whose cgroup is
    /// the unit's own or below it. systemd puts a unit's cgroup under its slices and nothing
    /// else, so only slices may come before it: `user@1000.service/…/web.service` is a user's
    /// unit of the same name, `outer.service/payload/web.service` a cgroup that a delegated
    /// unit named so. `None` when something listens but its owner could not be read (not
    /// root, `hidepid`).
    pub(crate) fn held_by_unit(&self, port: u16, unit: &str) -> Option<bool> {
        let Some(cgroups) = self.by_port.get(&port) else {
            return Some(false);
        };
        if cgroups.is_empty() {
            return None;
        }
        Some(cgroups.iter().any(|cgroup| unit_owns(cgroup, unit)))
    }
}

/// A process that held a port's listening socket when a round last looked, and by which
/// descriptor: the next round checks it with two small reads instead of a walk of every
/// process' descriptors (at 300 services the walk was a fifth of a probe round's CPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Holder {
    pub pid: u32,
    pub fd: u32,
    pub inode: u64,
}

/// A port to vouch for: the port, the unit that should hold it, its holder seen last.
pub(crate) type Wanted<'u> = (u16, &'u str, Option<Holder>);

/// What `Listeners::read_for` found: the listeners of the ports asked about, the holder of
/// each that its unit holds (to give the next round), and whether every process had to be
/// walked.
#[derive(Debug, Default)]
pub(crate) struct Vouched {
    pub listeners: Listeners,
    pub holders: Vec<Option<Holder>>,
    pub walked: bool,
}

impl Listeners {
    /// Whether each of `wanted` (a port, the unit that should hold it, the holder seen last)
    /// is held by its unit. A holder seen last still vouches for its port when the kernel still
    /// lists its socket listening there, the process still holds it by the same descriptor and
    /// its cgroup is still the unit's: all true now, so the answer is the walk's. Only when one
    /// does not vouch (new, restarted, someone else's) is every process walked, as `read`
    /// does. Ports not in `wanted` are listed without their holders.
    pub(crate) fn read_for(wanted: &[Wanted]) -> Vouched {
        Self::read_owned_by(wanted, unit_owns)
    }

    /// `read_for`, with `owns(cgroup, unit)` saying whether a cgroup is the unit's.
    fn read_owned_by(wanted: &[Wanted], owns: impl Fn(&str, &str) -> bool) -> Vouched {
        let sockets = all_listening_sockets(None);
        let mut by_port: HashMap<u16, Vec<String>> = HashMap::new();
        for (port, _) in sockets.values() {
            by_port.entry(*port).or_default();
        }
        let mut holders = vec![None; wanted.len()];
        let mut all_vouched = true;
        for (index, (port, unit, seen)) in wanted.iter().enumerate() {
            if !by_port.contains_key(port) {
                continue;
            }
            let vouched = seen
                .filter(|holder| sockets.get(&holder.inode).is_some_and(|(p, _)| p == port))
                .filter(holds)
                .and_then(|holder| Some((holder, cgroup_of(holder.pid)?)))
                .filter(|(_, cgroup)| owns(cgroup, unit));
            let Some((holder, cgroup)) = vouched else {
                all_vouched = false;
                break;
            };
            by_port.entry(*port).or_default().push(cgroup);
            holders[index] = Some(holder);
        }
        if all_vouched {
            return Vouched {
                listeners: Listeners { by_port },
                holders,
                walked: false,
            };
        }
        let mut by_port: HashMap<u16, Vec<String>> = HashMap::new();
        for (port, _) in sockets.values() {
            by_port.entry(*port).or_default();
        }
        let mut holders = vec![None; wanted.len()];
        for (pid, held) in socket_holders() {
            let held: Vec<(u16, Holder)> = held
                .iter()
                .filter_map(|&(fd, inode)| {
                    let (port, _) = sockets.get(&inode)?;
                    Some((*port, Holder { pid, fd, inode }))
                })
                .collect();
            if held.is_empty() {
                continue;
            }
            let cgroup = cgroup_of(pid).unwrap_or_default();
            for (port, holder) in held {
                let cgroups = by_port.entry(port).or_default();
                if !cgroups.contains(&cgroup) {
                    cgroups.push(cgroup.clone());
                }
                for (index, (wanted_port, unit, _)) in wanted.iter().enumerate() {
                    if *wanted_port == port && holders[index].is_none() && owns(&cgroup, unit) {
                        holders[index] = Some(holder);
                    }
                }
            }
        }
        Vouched {
            listeners: Listeners { by_port },
            holders,
            walked: true,
        }
    }
}

/// Whether `holder`'s process still holds its socket by its descriptor.
fn holds(holder: &Holder) -> bool {
    std::fs::read_link(format!("/proc/{}/fd/{}", holder.pid, holder.fd))
        .ok()
        .and_then(|target| socket_inode(target.to_str()?))
        == Some(holder.inode)
}

/// Every process and the sockets it holds (descriptor, inode), from one walk of `/proc/*/fd`:
/// one `readlinkat` a descriptor, relative to its directory (procfs' `fd()` opens, stats and
/// closes each one too: four calls where one tells).
fn socket_holders() -> Vec<(u32, Vec<(u32, u64)>)> {
    use std::os::fd::AsFd;
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut holders = Vec::new();
    for process in processes.flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(dir) = nix::dir::Dir::open(
            format!("/proc/{pid}/fd").as_str(),
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ) else {
            continue;
        };
        let Ok(dir_fd) = dir.as_fd().try_clone_to_owned() else {
            continue;
        };
        let sockets: Vec<(u32, u64)> = dir
            .into_iter()
            .flatten()
            .filter_map(|entry| {
                let fd: u32 = entry.file_name().to_str().ok()?.parse().ok()?;
                let target = nix::fcntl::readlinkat(&dir_fd, entry.file_name()).ok()?;
                Some((fd, socket_inode(target.to_str()?)?))
            })
            .collect();
        if !sockets.is_empty() {
            holders.push((pid, sockets));
        }
    }
    holders
}

/// The inode of a descriptor's target when it is a socket (`socket:[4242]`).
fn socket_inode(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_unit_of_the_same_name_is_not_the_system_unit() {
        let listeners = Listeners {
            by_port: HashMap::from([
                (
                    80,
                    vec![
                        "/user.slice/user-1000.slice/user@1000.service/app.slice/web.service"
                            .to_owned(),
                    ],
                ),
                (81, vec!["/system.slice/web.service".to_owned()]),
                (82, Vec::new()),
            ]),
        };
        assert_eq!(listeners.held_by_unit(80, "web.service"), Some(false));
        assert_eq!(listeners.held_by_unit(81, "web.service"), Some(true));
        assert_eq!(
            listeners.held_by_unit(82, "web.service"),
            None,
            "owner unknown"
        );
        assert_eq!(listeners.held_by_unit(83, "web.service"), Some(false));
    }

    #[test]
    fn reads_our_own_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let all = Listeners::read();
        assert!(all.is_listening(port));
        let mine = cgroup_of(std::process::id()).unwrap();
        let my_unit = mine.rsplit('/').find(|part| !part.is_empty()).unwrap_or("");
        if !my_unit.is_empty() && !mine.contains("/user@") {
            assert_eq!(all.held_by_unit(port, my_unit), Some(true), "{all:?}");
        }
        assert_eq!(all.held_by_unit(port, "other.service"), Some(false));
        drop(listener);
        assert!(!Listeners::read().is_listening(port));
    }

    /// The holder a walk found vouches for its port next time, with no walk; a holder that no
    /// longer holds the socket by that descriptor does not, and the walk finds the real one.
    #[test]
    fn a_holder_seen_last_vouches_for_its_port_while_it_still_holds_the_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // This process' cgroup stands for its unit: it may be the root, in no unit.
        let my_unit = cgroup_of(std::process::id()).unwrap();
        let read_for =
            |wanted: &[Wanted]| Listeners::read_owned_by(wanted, |cgroup, unit| cgroup == unit);
        let first = read_for(&[(port, &my_unit, None)]);
        assert!(first.walked);
        let holder = first.holders[0].expect("the walk finds this process holding it");
        assert_eq!(holder.pid, std::process::id());
        assert_eq!(
            first.listeners.by_port[&port],
            std::slice::from_ref(&my_unit)
        );

        let again = read_for(&[(port, &my_unit, Some(holder))]);
        assert!(!again.walked, "vouched for without a walk");
        assert_eq!(again.holders[0], Some(holder));
        assert_eq!(
            again.listeners.by_port[&port],
            std::slice::from_ref(&my_unit)
        );

        let moved = Holder {
            fd: holder.fd + 1000,
            ..holder
        };
        let walked = read_for(&[(port, &my_unit, Some(moved))]);
        assert!(
            walked.walked,
            "a descriptor that does not hold it vouches for nothing"
        );
        assert_eq!(walked.holders[0], Some(holder));

        let others = read_for(&[(port, "other.service", Some(holder))]);
        assert!(others.walked);
        assert_eq!(others.holders[0], None);
        assert_eq!(
            others.listeners.held_by_unit(port, "other.service"),
            Some(false)
        );
        drop(listener);
        let gone = read_for(&[(port, &my_unit, Some(holder))]);
        assert!(!gone.walked, "nothing listens: nothing to walk for");
        assert_eq!(gone.listeners.held_by_unit(port, &my_unit), Some(false));
    }
}
