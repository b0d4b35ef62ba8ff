//! What install writes, generated from the config (pure): each monitored service's heal unit
//! (under both its names) and the drop-in that arms its `OnFailure=`, the flush, watch, probe
//! and digest units and their timers, and the hardening they share.

use std::path::{Path, PathBuf};

use super::MARKER;
use crate::config::{Config, DigestSchedule, ServiceConfig};

/// How the heal units call selfheal.
#[derive(Debug, Clone)]
pub(crate) struct Invocation {
    /// Absolute path of the selfheal binary.
    pub executable: PathBuf,
    /// `--config`, only when it is not the default.
    pub config: Option<PathBuf>,
    /// `--state-dir`, only when it is not the default.
    pub state_dir: Option<PathBuf>,
}

/// One file install writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnitFile {
    pub path: PathBuf,
    pub contents: String,
}

/// The longest a heal run can legitimately take: waiting for a job systemd already runs,
/// healing an upstream unit first (up to twice `verify_timeout`), the whole chain (each
/// strategy, a restart and a verification), the journal, the mail, and a margin; rounded up
/// to whole seconds.
pub(super) fn heal_timeout(
    config: &Config,
    service: &crate::config::ServiceConfig,
) -> std::time::Duration {
    use std::time::Duration;
    let mail = config
        .email
        .as_ref()
        .and_then(|email| email.smtp.as_ref())
        .map_or(Duration::from_secs(10), |smtp| smtp.timeout.into());
    let evidence = service
        .evidence
        .signal
        .map_or(Duration::ZERO, |_| service.evidence.wait.into());
    let total = Duration::from(service.verify_timeout) * 3
        + crate::heal::strategy::worst_case(service)
        + evidence
        + Duration::from_secs(2)
        + mail
        + Duration::from_secs(30);
    Duration::from_secs(total.as_secs() + u64::from(total.subsec_nanos() > 0))
}

pub(crate) use crate::config::units::{
    DIGEST_SERVICE, DIGEST_TIMER, FLUSH_SERVICE, FLUSH_TIMER, PROBE_SERVICE, PROBE_TIMER,
    WATCH_SERVICE, WATCH_TIMER,
};

/// Makes `timers.target` want the flush timer, so it runs from boot without an enable.
pub(super) const FLUSH_WANTED_BY: &str = "timers.target.d/50-selfheal-flush.conf";

/// Makes `timers.target` want the watch timer (every 30 s, on every host).
pub(super) const WATCH_WANTED_BY: &str = "timers.target.d/50-selfheal-watch.conf";

/// Makes `timers.target` want the probe timer (written only with a top-level `probe:`).
pub(super) const PROBE_WANTED_BY: &str = "timers.target.d/50-selfheal-probe.conf";

/// Makes `timers.target` want the digest timer (written only with `digest: daily`), as
/// `systemctl enable` would, but in a file install owns.
pub(super) const DIGEST_WANTED_BY: &str = "timers.target.d/50-selfheal-digest.conf";

/// The files for every monitored service, plus the outbox flush service and timer, the watch
/// service and timer (and the digest's, when the config asks for one).
pub(crate) fn planned_files(
    config: &Config,
    invocation: &Invocation,
    unit_dir: &Path,
) -> Vec<UnitFile> {
    let command = command_line(invocation);
    let mut files: Vec<UnitFile> = config
        .monitored_services
        .iter()
        .flat_map(|service| service_files(config, invocation, &command, unit_dir, service))
        .collect();
    let mailing_oneshot = |description: &str, verb: &str| {
        format!(
            "{MARKER}\n[Unit]\nDescription=selfheal: {description}\n\
             Documentation=man:selfheal(1)\nWants=network-online.target\nAfter=network-online.target\n\n\
             [Service]\nType=oneshot\nExecStart={command} {verb}\n{}",
            hardening(config, invocation, None),
        )
    };
    files.push(UnitFile {
        path: unit_dir.join(FLUSH_SERVICE),
        contents: mailing_oneshot("deliver the reports queued in the outbox", "flush"),
    });
    files.push(UnitFile {
        path: unit_dir.join(FLUSH_TIMER),
        contents: format!(
            "{MARKER}\n[Unit]\nDescription=selfheal: retry queued reports every 5 minutes\n\
             Documentation=man:selfheal(1)\n\n\
             # Started by install, at boot (timers.target wants it) and by every heal unit.\n\
             [Timer]\nOnBootSec=1min\nOnUnitInactiveSec=5min\nRandomizedDelaySec=20s\n\n\
             [Install]\nWantedBy=timers.target\n"
        ),
    });
    files.push(UnitFile {
        path: unit_dir.join(WATCH_SERVICE),
        contents: mailing_oneshot(
            "look at the restarts systemd made by itself; report a crash loop",
            "watch",
        ),
    });
    files.push(UnitFile {
        path: unit_dir.join(WATCH_TIMER),
        contents: format!(
            "{MARKER}\n[Unit]\nDescription=selfheal: watch for restarts systemd makes by itself\n\
             Documentation=man:selfheal(1)\n\n\
             [Timer]\nOnActiveSec=30s\nOnUnitActiveSec=30s\nAccuracySec=1s\n"
        ),
    });
    files.push(UnitFile {
        path: unit_dir.join(WATCH_WANTED_BY),
        contents: format!("{MARKER}\n[Unit]\nWants={WATCH_TIMER}\n"),
    });
    files.push(UnitFile {
        path: unit_dir.join(FLUSH_WANTED_BY),
        contents: format!("{MARKER}\n[Unit]\nWants={FLUSH_TIMER}\n"),
    });
    files.extend(probe_files(config, invocation, &command, unit_dir));
    if config.digest == Some(DigestSchedule::Daily) {
        files.push(UnitFile {
            path: unit_dir.join(DIGEST_SERVICE),
            contents: mailing_oneshot("mail the summary of the last 24 hours", "digest"),
        });
        files.push(UnitFile {
            path: unit_dir.join(DIGEST_TIMER),
            contents: format!(
                "{MARKER}\n[Unit]\nDescription=selfheal: the daily digest\nDocumentation=man:selfheal(1)\n\n\
                 # Persistent: a day missed while the host was off is mailed after boot.\n\
                 [Timer]\nOnCalendar=daily\nPersistent=true\nRandomizedDelaySec=10min\n"
            ),
        });
        files.push(UnitFile {
            path: unit_dir.join(DIGEST_WANTED_BY),
            contents: format!("{MARKER}\n[Unit]\nWants={DIGEST_TIMER}\n"),
        });
    }
    files
}

/// selfheal with its paths, quoted for `ExecStart=`.
pub(super) fn command_line(invocation: &Invocation) -> String {
    let mut command = vec![quote_arg(&invocation.executable.to_string_lossy())];
    if let Some(path) = &invocation.config {
        command.push(format!("--config={}", quote_arg(&path.to_string_lossy())));
    }
    if let Some(path) = &invocation.state_dir {
        command.push(format!(
            "--state-dir={}",
            quote_arg(&path.to_string_lossy())
        ));
    }
    command.join(" ")
}

/// The probe round's service, its timer (every `probe.interval`) and the drop-in that makes
/// `timers.target` want it; none without a top-level `probe:`.
pub(super) fn probe_files(
    config: &Config,
    invocation: &Invocation,
    command: &str,
    unit_dir: &Path,
) -> Vec<UnitFile> {
    let Some(probe) = &config.probe else {
        return Vec::new();
    };
    let interval = std::time::Duration::from(probe.interval);
    vec![
        UnitFile {
            path: unit_dir.join(PROBE_SERVICE),
            contents: format!(
                "{MARKER}\n[Unit]\nDescription=selfheal: probe the services that hang while systemd sees them active\n\
                 Documentation=man:selfheal(1)\n\
                 # A round every interval (1s at least) must never meet a start limit.\n\
                 StartLimitIntervalSec=0\n\n\
                 [Service]\nType=oneshot\n\
                 # A round ends within probe.timeout; systemd's answers and the records add little.\n\
                 TimeoutStartSec={}s\nExecStart={command} probe\n\
                 # 1: a service failed its probe, which the round handled; not a failure of the unit\n\
                 # (that would make the host \"degraded\" at every round).\n\
                 SuccessExitStatus=1\n{}",
                interval.as_secs() + 30,
                hardening(config, invocation, None),
            ),
        },
        UnitFile {
            path: unit_dir.join(PROBE_TIMER),
            contents: format!(
                "{MARKER}\n[Unit]\nDescription=selfheal: a probe round every {}\nDocumentation=man:selfheal(1)\n\n\
                 # From the start of the last round; a round that outlasts it is followed at once.\n\
                 [Timer]\nOnActiveSec={0}\nOnUnitActiveSec={0}\nAccuracySec=100ms\n",
                probe.interval
            ),
        },
        UnitFile {
            path: unit_dir.join(PROBE_WANTED_BY),
            contents: format!("{MARKER}\n[Unit]\nWants={PROBE_TIMER}\n"),
        },
    ]
}

/// One service's heal unit (under both its names) and the drop-in that arms its hook.
/// `command` is selfheal with its paths, quoted for `ExecStart=`.
pub(super) fn service_files(
    config: &Config,
    invocation: &Invocation,
    command: &str,
    unit_dir: &Path,
    service: &ServiceConfig,
) -> [UnitFile; 3] {
    let unit = service.unit_name();
    let heal_unit = service.heal_unit_name();
    [
        UnitFile {
            path: unit_dir.join(&heal_unit),
            contents: heal_unit_contents(config, invocation, command, service, ""),
        },
        UnitFile {
            path: unit_dir.join(service.legacy_heal_unit_name()),
            contents: format!(
                "{MARKER}\n\
                 # The first name of {heal_unit}, kept for whoever starts it by name: starting it\n\
                 # runs {heal_unit} and waits for it. It runs nothing of its own, because systemd\n\
                 # applies drop-ins of other units to this name (those in {}).\n\
                 [Unit]\nDescription=selfheal: heal {unit} (the first name of {heal_unit})\n\
                 Documentation=man:selfheal(1)\nWants={heal_unit}\nAfter={heal_unit}\n\
                 StartLimitIntervalSec=0\n\n\
                 [Service]\nType=oneshot\nExecStart=/bin/true\n",
                family_drop_in_dirs(&service.legacy_heal_unit_name()).join(", ")
            ),
        },
        UnitFile {
            path: unit_dir.join(format!("{unit}.d")).join("50-selfheal.conf"),
            contents: format!("{MARKER}\n[Unit]\nOnFailure={heal_unit}\n"),
        },
    ]
}

/// A heal unit of `service`: a oneshot that runs `selfheal run <name>`; `note` (comment lines)
/// says what it is when that is not plain.
pub(super) fn heal_unit_contents(
    config: &Config,
    invocation: &Invocation,
    command: &str,
    service: &ServiceConfig,
    note: &str,
) -> String {
    format!(
        "{MARKER}\n{note}[Unit]\nDescription=selfheal: heal {}\nDocumentation=man:selfheal(1)\n\
         # Never let a healing run be refused by a start limit.\nStartLimitIntervalSec=0\n\
         # A report that could not be sent is retried from the outbox.\nWants={FLUSH_TIMER}\n\n\
         [Service]\nType=oneshot\n\
         # systemd gives a oneshot no start timeout: a hung run would live forever and\n\
         # fold every later OnFailure= start into itself. Its worst case, with a margin:\n\
         TimeoutStartSec={}s\nExecStart={command} run {}\n{}",
        service.unit_name(),
        heal_timeout(config, service).as_secs(),
        service.name,
        hardening(config, invocation, Some(service)),
    )
}

/// The drop-in directories besides its own that systemd applies to `unit`: its template's
/// (`web@.service.d` for `web@blue.service`) and one per `-` in its prefix (`app-.service.d`
/// for `app-self-heal.service`).
pub(crate) fn family_drop_in_dirs(unit: &str) -> Vec<String> {
    let Some((name, suffix)) = unit.rsplit_once('.') else {
        return Vec::new();
    };
    let mut dirs = Vec::new();
    let prefix = match name.split_once('@') {
        Some((prefix, _)) => {
            dirs.push(format!("{prefix}@.{suffix}.d"));
            prefix
        }
        None => name,
    };
    dirs.extend(
        prefix
            .match_indices('-')
            .map(|(at, _)| format!("{}-.{suffix}.d", &prefix[..at])),
    );
    dirs
}

/// The sandboxing of the heal, flush and digest units: everything that does not get in the way
/// of healing. What a root healer must keep: signalling any process of the service (and
/// reading every process' fds to find a port's holder), chown/chmod of the configured files,
/// running validators (arbitrary programs: no syscall or device limits that would make a
/// healthy config look broken), the bus, the journal, the network for mail and health checks.
/// In the flush and digest units `/usr`, `/etc`, `/boot` and homes are read-only too (except
/// the metrics directory, `file_dir` and a `--state-dir`), and they get the SMTP password as
/// the credential `smtp-password`. Validators may still chroot, use namespaces and raw
/// sockets.
pub(super) fn hardening(
    config: &Config,
    invocation: &Invocation,
    service: Option<&ServiceConfig>,
) -> String {
    let mut lines = vec![
        "# Hardening that leaves healing alone (docs/reference.md: \"Hardened units\").".to_owned(),
        "UMask=0077".to_owned(),
        "ProtectClock=yes".to_owned(),
        "RestrictRealtime=yes".to_owned(),
        "RestrictSUIDSGID=yes".to_owned(),
        "LockPersonality=yes".to_owned(),
        "SystemCallArchitectures=native".to_owned(),
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK".to_owned(),
        // What no healer or validator needs; a call outside the list fails with EPERM
        // instead of killing the run.
        "SystemCallFilter=~@clock @cpu-emulation @debug @module @obsolete @raw-io @reboot @swap"
            .to_owned(),
        "SystemCallErrorNumber=EPERM".to_owned(),
    ];
    // These need a mount namespace, which costs PID 1 about 40 ms at every start (measured in
    // the sandbox: 16 ms without, 58 ms with): the mail-only units get them, a heal unit,
    // whose start is the service's downtime, does not.
    let mail_only = service.is_none();
    if mail_only {
        lines.extend(
            [
                "ProtectSystem=full",
                "ProtectHome=read-only",
                "ProtectKernelTunables=yes",
                "ProtectKernelModules=yes",
                "ProtectKernelLogs=yes",
                "ProtectControlGroups=yes",
                "ProtectHostname=yes",
                "PrivateDevices=yes",
                "PrivateMounts=yes",
            ]
            .map(str::to_owned),
        );
    }
    let email = config.email.as_ref();
    if email.is_some_and(|email| email.transport == crate::notify::email::Transport::Sendmail) {
        // sendmail's postdrop is setgid: without CAP_SYS_ADMIN the options above would imply
        // NoNewPrivileges=, and the mail would never be dropped.
        lines.push("# transport sendmail: no CapabilityBoundingSet= (postdrop is setgid)".into());
    } else {
        // Implied anyway by the options above once CAP_SYS_ADMIN is out of the bounding set.
        lines.push("NoNewPrivileges=yes".into());
        // A heal unit reads the kernel's log for an OOM kill: Debian and Ubuntu set
        // kernel.dmesg_restrict=1, so /dev/kmsg needs CAP_SYSLOG. The mail-only units do not.
        let syslog = if mail_only { "" } else { " CAP_SYSLOG" };
        lines.push(format!(
            "CapabilityBoundingSet=CAP_KILL CAP_CHOWN CAP_FOWNER CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_SYS_PTRACE CAP_SETUID CAP_SETGID CAP_AUDIT_WRITE CAP_NET_BIND_SERVICE CAP_NET_RAW CAP_SYS_CHROOT CAP_SYS_RESOURCE{syslog}"
        ));
    }
    // What the mail-only units write under ProtectSystem=: the metrics file, the file
    // transport's directory, a state directory given with --state-dir.
    let mut writable: Vec<PathBuf> = Vec::new();
    writable.extend(
        config
            .metrics_file
            .iter()
            .filter_map(|p| p.parent().map(Path::to_path_buf)),
    );
    writable.extend(email.and_then(|email| email.file_dir.clone()));
    writable.extend(invocation.state_dir.clone());
    writable.sort();
    writable.dedup();
    if mail_only && !writable.is_empty() {
        let paths: Vec<String> = writable
            .iter()
            .map(|path| format!("-{}", quote_path(&path.to_string_lossy())))
            .collect();
        lines.push(format!("ReadWritePaths={}", paths.join(" ")));
    }
    // Only the mail-only units: systemd refuses to start a unit whose credential file is
    // missing, and a moved password file must never stop healing (the heal run reads
    // password_file itself). A path with whitespace cannot be written there.
    if let Some(file) = email
        .and_then(|email| email.smtp.as_ref())
        .and_then(|smtp| smtp.password_file.as_ref())
        .filter(|file| mail_only && !file.to_string_lossy().contains(char::is_whitespace))
    {
        lines.push(format!(
            "LoadCredential=smtp-password:{}",
            file.to_string_lossy().replace('%', "%%")
        ));
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// A path in a unit setting: `%` escaped, quoted when it has whitespace or quotes.
pub(super) fn quote_path(path: &str) -> String {
    let escaped = path.replace('%', "%%");
    if escaped
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\'))
    {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        escaped
    }
}

/// systemd's ExecStart= splits on whitespace, interprets quotes, expands `%` specifiers and
/// `$VARIABLE`s; escape and quote what needs it.
pub(super) fn quote_arg(arg: &str) -> String {
    let escaped = arg.replace('%', "%%").replace('$', "$$");
    if escaped
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'))
    {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        escaped
    }
}
