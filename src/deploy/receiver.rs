//! What install writes for `receiver:`: `selfheal-receiver.socket` on `receiver.listen`, the
//! service it starts at the first connection (`selfheal receive`), and the drop-in that makes
//! `sockets.target` want the socket. None without `receiver:`.

use std::path::{Path, PathBuf};

use super::MARKER;
use super::units::{Invocation, UnitFile, command_line, quote_path};
use crate::config::Config;
pub(crate) use crate::config::units::{RECEIVER_SERVICE, RECEIVER_SOCKET};

/// Makes `sockets.target` want the receiver's socket, as `systemctl enable` would.
pub(super) const RECEIVER_WANTED_BY: &str = "sockets.target.d/50-selfheal-receiver.conf";

/// The receiver's socket, service and the drop-in.
pub(crate) fn receiver_files(
    config: &Config,
    invocation: &Invocation,
    unit_dir: &Path,
) -> Vec<UnitFile> {
    let Some(receiver) = &config.receiver else {
        return Vec::new();
    };
    let command = command_line(invocation);
    let listen = receiver.listen;
    let state_dir = invocation
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::state::DEFAULT_STATE_DIR));
    vec![
        UnitFile {
            path: unit_dir.join(RECEIVER_SOCKET),
            contents: format!(
                "{MARKER}\n[Unit]\nDescription=selfheal: Alertmanager's webhooks on {listen}\n\
                 Documentation=man:selfheal(1)\n\n\
                 [Socket]\nListenStream={listen}\n\
                 # One receiver process answers every connection, and exits when no post came for a while.\n\
                 Accept=no\n\
                 # An address that is not up yet at boot is bound all the same.\n\
                 FreeBind=yes\n"
            ),
        },
        UnitFile {
            path: unit_dir.join(RECEIVER_SERVICE),
            contents: format!(
                "{MARKER}\n[Unit]\nDescription=selfheal: start the heals Alertmanager's alerts ask for\n\
                 Documentation=man:selfheal(1)\nRequires={RECEIVER_SOCKET}\nAfter={RECEIVER_SOCKET}\n\n\
                 [Service]\nExecStart={command} receive\n\
                 # It reads the config and the token, writes the state directory and talks to\n\
                 # systemd over the bus: no capability, no network of its own (the socket is\n\
                 # systemd's), nothing else writable.\n\
                 UMask=0077\nCapabilityBoundingSet=\nNoNewPrivileges=yes\n\
                 ProtectSystem=strict\nReadWritePaths=-{}\nProtectHome=yes\n\
                 PrivateDevices=yes\nDevicePolicy=closed\nPrivateNetwork=yes\n\
                 RestrictAddressFamilies=AF_UNIX\n\
                 ProtectKernelTunables=yes\nProtectKernelModules=yes\nProtectKernelLogs=yes\n\
                 ProtectControlGroups=yes\nProtectClock=yes\nProtectHostname=yes\n\
                 ProtectProc=invisible\nProcSubset=pid\n\
                 RestrictNamespaces=yes\nRestrictRealtime=yes\nRestrictSUIDSGID=yes\n\
                 LockPersonality=yes\nMemoryDenyWriteExecute=yes\n\
                 SystemCallArchitectures=native\nSystemCallFilter=@system-service\n\
                 SystemCallFilter=~@privileged @resources\nSystemCallErrorNumber=EPERM\n",
                quote_path(&state_dir.to_string_lossy()),
            ),
        },
        UnitFile {
            path: unit_dir.join(RECEIVER_WANTED_BY),
            contents: format!("{MARKER}\n[Unit]\nWants={RECEIVER_SOCKET}\n"),
        },
    ]
}
