//! Who listens on a TCP port: netlink sock_diag (or `/proc/net/tcp{,6}` as a fallback) gives
//! the listening socket's inode and the uid that created it, `/proc/*/fd` the processes holding
//! it, `/proc/PID/cgroup` their cgroup.

use std::collections::{HashMap, HashSet};

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
    /// The process' effective uid.
    pub uid: Option<u32>,
    /// The uid that created the listening socket (the kernel records it). A process that holds
    /// a socket created by another uid may have been handed it (SCM_RIGHTS).
    pub socket_uid: Option<u32>,
}

/// The inodes of sockets listening on `port` (any address, IPv4 or IPv6).
///
/// Asks the kernel over netlink sock_diag for listening sockets only (what `ss -lt` does).
/// Reading /proc/net/tcp instead makes the kernel walk its whole TCP hash table, sized by RAM:
/// ~5 ms per read on a 24 GiB host, most of a healthy run. /proc stays as the fallback.
pub fn listening_inodes(port: u16) -> HashSet<u64> {
    listening_sockets(port).into_keys().collect()
}

/// The sockets listening on `port`: inode → the uid that created the socket.
fn listening_sockets(port: u16) -> HashMap<u64, u32> {
    all_listening_sockets(Some(port))
        .into_iter()
        .map(|(inode, (_, uid))| (inode, uid))
        .collect()
}

/// The sockets listening on `port`, or on any port: inode → (port, uid that created it).
pub(super) fn all_listening_sockets(port: Option<u16>) -> HashMap<u64, (u16, u32)> {
    match sock_diag::listening(port) {
        Ok(sockets) => sockets,
        Err(err) => {
            tracing::debug!("sock_diag unavailable ({err}); reading /proc/net/tcp");
            ["/proc/net/tcp", "/proc/net/tcp6"]
                .iter()
                .filter_map(|path| std::fs::read_to_string(path).ok())
                .flat_map(|table| listening_sockets_in(&table, port))
                .collect()
        }
    }
}

/// Whether `cgroup` is system unit `unit`'s own cgroup or below it: `unit` comes after the
/// root and slices alone (`/system.slice/web.service/…`).
pub(crate) fn unit_owns(cgroup: &str, unit: &str) -> bool {
    unit_of(cgroup) == Some(unit)
}

/// The system unit whose cgroup `cgroup` is or is below: the first part after the root and
/// the slices (`web.service` of `/system.slice/web.service/worker`).
pub(crate) fn unit_of(cgroup: &str) -> Option<&str> {
    cgroup
        .split('/')
        .filter(|part| !part.is_empty())
        .find(|part| {
            // systemd spells unit types in lower case: `.slice` is exact.
            std::path::Path::new(part)
                .extension()
                .is_none_or(|suffix| suffix != "slice")
        })
}

/// A minimal netlink sock_diag client: one dump request per address family.
// The netlink wire format has fixed-size fields: the casts below are exact by construction.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
mod sock_diag {
    use std::collections::HashMap;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    const NETLINK_SOCK_DIAG: i32 = 4;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 0x1;
    const NLM_F_DUMP: u16 = 0x300;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const TCP_LISTEN: u32 = 10;
    const NLMSG_HEADER: usize = 16;
    /// inet_diag_msg: family, state, timer, retrans, then inet_diag_sockid (48 bytes: sport
    /// and dport big-endian first), expires, rqueue, wqueue, uid, inode.
    const SPORT_OFFSET: usize = 4;
    const UID_OFFSET: usize = 4 + 48 + 12;
    const INODE_OFFSET: usize = 4 + 48 + 16;

    /// Listening TCP sockets (IPv4 and IPv6), on `port` or on any: inode → (port, uid).
    pub(super) fn listening(port: Option<u16>) -> io::Result<HashMap<u64, (u16, u32)>> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut sockets = HashMap::new();
        for family in [libc::AF_INET, libc::AF_INET6] {
            request(&socket, family as u8)?;
            read_dump(&socket, port, &mut sockets)?;
        }
        Ok(sockets)
    }

    fn request(socket: &OwnedFd, family: u8) -> io::Result<()> {
        // nlmsghdr (16) + inet_diag_req_v2 (family, protocol, ext, pad, states, sockid[48]).
        let mut message = [0u8; NLMSG_HEADER + 56];
        let length = message.len() as u32;
        message[0..4].copy_from_slice(&length.to_ne_bytes());
        message[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        message[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        message[16] = family;
        message[17] = libc::IPPROTO_TCP as u8;
        message[20..24].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
        // SAFETY: the buffer is valid for its length; a zeroed sockaddr_nl addresses the kernel.
        let sent = unsafe {
            let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
            kernel.nl_family = libc::AF_NETLINK as u16;
            libc::sendto(
                socket.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                (&raw const kernel).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn read_dump(
        socket: &OwnedFd,
        port: Option<u16>,
        sockets: &mut HashMap<u64, (u16, u32)>,
    ) -> io::Result<()> {
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            // SAFETY: the buffer is valid for its length.
            let read = unsafe {
                libc::recv(
                    socket.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                )
            };
            if read < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut rest = &buffer[..read as usize];
            while rest.len() >= NLMSG_HEADER {
                let length = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes(rest[4..6].try_into().expect("2 bytes"));
                if length < NLMSG_HEADER || length > rest.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink message",
                    ));
                }
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => return Err(io::Error::other("sock_diag request refused")),
                    _ => {
                        let body = &rest[NLMSG_HEADER..length];
                        if body.len() >= INODE_OFFSET + 4 {
                            let sport =
                                u16::from_be_bytes([body[SPORT_OFFSET], body[SPORT_OFFSET + 1]]);
                            let inode = u32::from_ne_bytes(
                                body[INODE_OFFSET..INODE_OFFSET + 4]
                                    .try_into()
                                    .expect("4 bytes"),
                            );
                            let uid = u32::from_ne_bytes(
                                body[UID_OFFSET..UID_OFFSET + 4]
                                    .try_into()
                                    .expect("4 bytes"),
                            );
                            if port.is_none_or(|port| port == sport) {
                                sockets.insert(u64::from(inode), (sport, uid));
                            }
                        }
                    }
                }
                // Messages are 4-byte aligned.
                let advance = (length + 3) & !3;
                rest = &rest[advance.min(rest.len())..];
            }
        }
    }
}

/// `TCP_LISTEN` in the `st` column.
const TCP_LISTEN: &str = "0A";

/// Lines look like `0: 0100007F:1F90 00000000:0000 0A … uid timeout inode …`.
fn listening_sockets_in(table: &str, port: Option<u16>) -> Vec<(u64, (u16, u32))> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(fields.get(1)?.rsplit_once(':')?.1, 16).ok()?;
            let listening = *fields.get(3)? == TCP_LISTEN;
            if !listening || port.is_some_and(|port| port != local_port) {
                return None;
            }
            Some((
                fields.get(9)?.parse().ok()?,
                (local_port, fields.get(7)?.parse().ok()?),
            ))
        })
        .collect()
}

/// True when something listens on `port`.
pub fn is_listening(port: u16) -> bool {
    !listening_inodes(port).is_empty()
}

/// Every process that holds a socket listening on `port`.
pub fn holders(port: u16) -> Vec<PortHolder> {
    let sockets = listening_sockets(port);
    if sockets.is_empty() {
        return Vec::new();
    }
    let Ok(processes) = procfs::process::all_processes() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for process in processes.flatten() {
        let Ok(fds) = process.fd() else { continue };
        let held = fds.flatten().find_map(|fd| match fd.target {
            FDTarget::Socket(inode) => sockets.get(&inode).copied(),
            _ => None,
        });
        if let Some(socket_uid) = held {
            let pid = u32::try_from(process.pid).unwrap_or(0);
            found.push(PortHolder {
                pid,
                cmdline: process.cmdline().unwrap_or_default(),
                cgroup: cgroup_of(pid).unwrap_or_default(),
                uid: process.status().ok().map(|status| status.euid),
                socket_uid: Some(socket_uid),
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
    fn a_unit_owns_its_cgroup_under_its_slices_and_nothing_else() {
        assert!(unit_owns("/system.slice/web.service", "web.service"));
        assert!(unit_owns("/system.slice/web.service/worker", "web.service"));
        assert!(unit_owns("/web.service", "web.service"));
        assert!(unit_owns(
            "/system.slice/app.slice/web.service",
            "web.service"
        ));
        // A cgroup a delegated unit named after it, and a user's unit of the same name.
        assert!(!unit_owns(
            "/system.slice/outer.service/payload/web.service",
            "web.service"
        ));
        assert!(!unit_owns(
            "/system.slice/outer.service/web.service",
            "web.service"
        ));
        assert!(!unit_owns(
            "/user.slice/user-1000.slice/user@1000.service/app.slice/web.service",
            "web.service"
        ));
        assert!(!unit_owns("/system.slice/webx.service", "web.service"));
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
    fn parses_the_proc_net_tcp_format() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0
";
        assert_eq!(listening_sockets_in(table, Some(8080)), [(4242, (8080, 0))]);
        assert_eq!(listening_sockets_in(table, Some(80)), [(4444, (80, 0))]);
        assert!(listening_sockets_in(table, Some(443)).is_empty());
        assert_eq!(listening_sockets_in(table, None).len(), 2);
    }

    #[test]
    fn sock_diag_and_proc_agree() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let v6 = std::net::TcpListener::bind(("::1", v4.local_addr().unwrap().port())).ok();
        let port = v4.local_addr().unwrap().port();
        let from_netlink = sock_diag::listening(Some(port)).unwrap();
        let from_proc: HashMap<u64, (u16, u32)> = ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .filter_map(|path| std::fs::read_to_string(path).ok())
            .flat_map(|table| listening_sockets_in(&table, Some(port)))
            .collect();
        assert_eq!(from_netlink.len(), 1 + usize::from(v6.is_some()));
        assert_eq!(from_netlink, from_proc);
    }

    #[test]
    fn finds_our_own_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(is_listening(port));
        let holders = holders(port);
        assert_eq!(holders.len(), 1, "{holders:?}");
        assert_eq!(holders[0].pid, std::process::id());
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(holders[0].uid, Some(me));
        assert_eq!(holders[0].socket_uid, Some(me));
        drop(listener);
        assert!(!is_listening(port));
    }
}
