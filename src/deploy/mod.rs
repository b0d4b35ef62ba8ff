//! `install` / `uninstall`: the `<name>-self-heal.service` units and the
//! `<unit>.d/50-selfheal.conf` drop-ins that wire `OnFailure=` to them.
//!
//! Generation is pure (`planned_files`); writing is separate, and `uninstall` removes only
//! files that carry our marker line, so it never deletes what a person wrote.

use std::path::{Path, PathBuf};

use crate::config::{Config, DigestSchedule, ServiceConfig};

/// First line of every file selfheal writes; `uninstall` removes only files that start with it.
pub(crate) const MARKER: &str = "# Written by `selfheal install`; `selfheal uninstall` removes it.";

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
fn heal_timeout(config: &Config, service: &crate::config::ServiceConfig) -> std::time::Duration {
    use std::time::Duration;
    let mail = config
        .email
        .as_ref()
        .and_then(|email| email.smtp.as_ref())
        .map_or(Duration::from_secs(10), |smtp| smtp.timeout.into());
    let total = Duration::from(service.verify_timeout) * 3
        + crate::heal::strategy::worst_case(service)
        + Duration::from_secs(2)
        + mail
        + Duration::from_secs(30);
    Duration::from_secs(total.as_secs() + u64::from(total.subsec_nanos() > 0))
}

/// The oneshot unit that delivers queued reports, and the timer that runs it.
pub(crate) use crate::config::FLUSH_SERVICE;
pub(crate) const FLUSH_TIMER: &str = "selfheal-flush.timer";
/// Makes `timers.target` want the flush timer, so it runs from boot without an enable.
const FLUSH_WANTED_BY: &str = "timers.target.d/50-selfheal-flush.conf";

/// `selfheal watch` every 30 s (the restarts systemd makes by itself), on every host; the
/// drop-in makes `timers.target` want the timer, so it runs from boot without an enable.
pub(crate) const WATCH_SERVICE: &str = "selfheal-watch.service";
pub(crate) const WATCH_TIMER: &str = "selfheal-watch.timer";
const WATCH_WANTED_BY: &str = "timers.target.d/50-selfheal-watch.conf";

/// The probe round's units, written only with a top-level `probe:`; the timer runs it every
/// `probe.interval`, from boot (the drop-in).
pub(crate) const PROBE_SERVICE: &str = "selfheal-probe.service";
pub(crate) const PROBE_TIMER: &str = "selfheal-probe.timer";
const PROBE_WANTED_BY: &str = "timers.target.d/50-selfheal-probe.conf";

/// The daily digest's units, written only with `digest: daily`; the drop-in makes
/// `timers.target` want the timer, as `systemctl enable` would, but in a file install owns.
pub(crate) const DIGEST_SERVICE: &str = "selfheal-digest.service";
pub(crate) const DIGEST_TIMER: &str = "selfheal-digest.timer";
const DIGEST_WANTED_BY: &str = "timers.target.d/50-selfheal-digest.conf";

/// The files for every monitored service, plus the outbox flush service and timer, the watch
/// service and timer (and the digest's, when the config asks for one).
pub(crate) fn planned_files(
    config: &Config,
    invocation: &Invocation,
    unit_dir: &Path,
) -> Vec<UnitFile> {
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
    let command = command.join(" ");
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

/// The probe round's service, its timer (every `probe.interval`) and the drop-in that makes
/// `timers.target` want it; none without a top-level `probe:`.
fn probe_files(
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
fn service_files(
    config: &Config,
    invocation: &Invocation,
    command: &str,
    unit_dir: &Path,
    service: &ServiceConfig,
) -> [UnitFile; 3] {
    let unit = service.unit_name();
    let heal_unit = service.heal_unit_name();
    let contents = |note: &str| {
        format!(
            "{MARKER}\n{note}[Unit]\nDescription=selfheal: heal {unit}\nDocumentation=man:selfheal(1)\n\
             # Never let a healing run be refused by a start limit.\nStartLimitIntervalSec=0\n\
             # A report that could not be sent is retried from the outbox.\nWants={FLUSH_TIMER}\n\n\
             [Service]\nType=oneshot\n\
             # systemd gives a oneshot no start timeout: a hung run would live forever and\n\
             # fold every later OnFailure= start into itself. Its worst case, with a margin:\n\
             TimeoutStartSec={}s\nExecStart={command} run {}\n{}",
            heal_timeout(config, service).as_secs(),
            service.name,
            hardening(config, invocation, Some(service)),
        )
    };
    [
        UnitFile {
            path: unit_dir.join(&heal_unit),
            contents: contents(""),
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
fn hardening(config: &Config, invocation: &Invocation, service: Option<&ServiceConfig>) -> String {
    let mut lines = vec![
        "# Hardening that leaves healing alone (README: \"Hardened units\").".to_owned(),
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
fn quote_path(path: &str) -> String {
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
fn quote_arg(arg: &str) -> String {
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

/// A unit file or directory that could not be written or removed.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {cause}")]
pub struct InstallError {
    pub action: &'static str,
    pub path: PathBuf,
    pub cause: std::io::Error,
}

fn failed(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstallError {
    let path = path.to_owned();
    move |cause| InstallError {
        action,
        path,
        cause,
    }
}

/// What `install` does to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// It does not exist yet.
    Create(UnitFile),
    /// It is ours and says something else: the old contents, and the new file.
    Update { old: String, file: UnitFile },
    /// Ours, for a service that is no longer in the config.
    Remove(PathBuf),
    /// A heal unit masked by a person (`systemctl mask`): healing stays disabled.
    KeepMasked(PathBuf),
    /// A heal unit masked because a person masked its first name (`<name>-self-heal.service`,
    /// the one they knew): healing stays disabled under the name `OnFailure=` now starts.
    Mask { path: PathBuf, as_masked: PathBuf },
}

/// Compares the planned files with what `unit_dir` holds: what to create or update (only
/// files that carry our marker are ever replaced), which of our files belong to services no
/// longer configured, and which heal units a person masked. `carried_masks` (from the
/// manifest) are the masks install put on heal units (`Change::Mask`): one goes once its first
/// name is unmasked. Unchanged files are left out: a second install changes nothing.
pub(crate) fn plan_changes(
    files: &[UnitFile],
    unit_dir: &Path,
    carried_masks: &[PathBuf],
) -> Result<Vec<Change>, InstallError> {
    let mut changes = Vec::new();
    for file in files {
        let carried_mask_released = is_masked(&file.path)
            && legacy_heal_unit(&file.path).is_some_and(|legacy| !is_masked(&legacy))
            && std::path::absolute(&file.path).is_ok_and(|path| carried_masks.contains(&path));
        if carried_mask_released {
            changes.push(Change::Create(file.clone()));
            continue;
        }
        if let Some(legacy) = legacy_heal_unit(&file.path).filter(|legacy| is_masked(legacy))
            && !is_masked(&file.path)
        {
            refuse_unless_ours_or_absent(&file.path)?;
            changes.push(Change::Mask {
                path: file.path.clone(),
                as_masked: legacy,
            });
            continue;
        }
        if is_masked(&file.path) {
            changes.push(Change::KeepMasked(file.path.clone()));
            continue;
        }
        match std::fs::read_to_string(&file.path) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                changes.push(Change::Create(file.clone()));
            }
            Ok(old) if old == file.contents => {}
            Ok(old) if old.starts_with(MARKER) => changes.push(Change::Update {
                old,
                file: file.clone(),
            }),
            // Not ours, or not even readable as text: never replaced.
            _ => return Err(not_ours(&file.path)),
        }
    }
    for path in our_files(unit_dir) {
        if !files.iter().any(|file| file.path == path) {
            changes.push(Change::Remove(path));
        }
    }
    Ok(changes)
}

fn not_ours(path: &Path) -> InstallError {
    InstallError {
        action: "refusing to overwrite",
        path: path.to_owned(),
        cause: std::io::Error::other(
            "selfheal did not write it (its first line is not selfheal's marker); move it away or remove it, then run install again",
        ),
    }
}

fn refuse_unless_ours_or_absent(path: &Path) -> Result<(), InstallError> {
    match std::fs::read_to_string(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Ok(text) if text.starts_with(MARKER) => Ok(()),
        _ => Err(not_ours(path)),
    }
}

/// `<dir>/selfheal@web.service` → `<dir>/web-self-heal.service`.
fn legacy_heal_unit(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let service = name.strip_prefix("selfheal@")?.strip_suffix(".service")?;
    Some(path.with_file_name(format!("{service}-self-heal.service")))
}

/// `systemctl mask` puts a symlink to /dev/null where the unit file would be.
fn is_masked(path: &Path) -> bool {
    std::fs::read_link(path).is_ok_and(|target| target == Path::new("/dev/null"))
}

/// The heal units and drop-ins in `unit_dir` that carry our marker (written by an earlier
/// install, perhaps for a service since removed from the config), and the masks install
/// carried over from a heal unit's first name.
pub(crate) fn our_files(unit_dir: &Path) -> Vec<PathBuf> {
    let ours = |path: &Path| {
        std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
            && std::fs::read_to_string(path).is_ok_and(|text| text.starts_with(MARKER))
    };
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(unit_dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let heal_unit = name.ends_with("-self-heal.service")
            || (name.starts_with("selfheal@") && name.ends_with(".service"));
        let timer_unit = [
            DIGEST_SERVICE,
            DIGEST_TIMER,
            WATCH_SERVICE,
            WATCH_TIMER,
            PROBE_SERVICE,
            PROBE_TIMER,
        ]
        .contains(&name.as_str());
        if (heal_unit || timer_unit) && ours(&path) || is_carried_mask(&path) {
            found.push(path);
        } else if name == "timers.target.d" {
            for drop_in in [
                DIGEST_WANTED_BY,
                WATCH_WANTED_BY,
                PROBE_WANTED_BY,
                FLUSH_WANTED_BY,
            ] {
                let drop_in = unit_dir.join(drop_in);
                if ours(&drop_in) {
                    found.push(drop_in);
                }
            }
        } else if name.ends_with(".service.d") {
            let drop_in = path.join("50-selfheal.conf");
            if ours(&drop_in) {
                found.push(drop_in);
            }
        }
    }
    found.sort();
    found
}

/// Carries out `changes`; returns whether anything on disk changed.
pub(crate) fn apply(changes: &[Change]) -> Result<bool, InstallError> {
    let mut changed = false;
    for change in changes {
        match change {
            Change::Create(file) | Change::Update { file, .. } => {
                write_files(std::slice::from_ref(file))?;
                changed = true;
            }
            Change::Remove(path) => {
                std::fs::remove_file(path).map_err(failed("removing", path))?;
                remove_empty_drop_in_dir(path);
                changed = true;
            }
            Change::Mask { path, .. } => {
                if let Err(err) = std::fs::remove_file(path)
                    && err.kind() != std::io::ErrorKind::NotFound
                {
                    return Err(failed("removing", path)(err));
                }
                std::os::unix::fs::symlink("/dev/null", path).map_err(failed("masking", path))?;
                changed = true;
            }
            Change::KeepMasked(_) => {}
        }
    }
    Ok(changed)
}

/// What `install --dry-run` prints: each change, with a unified diff for an update.
pub(crate) fn describe(changes: &[Change]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for change in changes {
        match change {
            Change::Create(file) => {
                let _ = writeln!(out, "create {}", file.path.display());
                for line in file.contents.lines() {
                    let _ = writeln!(out, "+{line}");
                }
            }
            Change::Update { old, file } => {
                let _ = writeln!(out, "update {}", file.path.display());
                let diff = similar::TextDiff::from_lines(old.as_str(), file.contents.as_str());
                let _ = write!(out, "{}", diff.unified_diff().context_radius(2));
            }
            Change::Remove(path) => {
                let _ = writeln!(
                    out,
                    "remove {} (its service is no longer configured)",
                    path.display()
                );
            }
            Change::KeepMasked(path) => {
                let _ = writeln!(
                    out,
                    "keep {} masked (healing disabled by hand)",
                    path.display()
                );
            }
            Change::Mask { path, as_masked } => {
                let _ = writeln!(
                    out,
                    "mask {} as {} is (healing disabled by hand)",
                    path.display(),
                    as_masked.display()
                );
            }
        }
    }
    if changes.iter().all(|c| matches!(c, Change::KeepMasked(_))) {
        out.push_str("nothing to change\n");
    }
    out
}

fn remove_empty_drop_in_dir(path: &Path) {
    if let Some(dir) = path
        .parent()
        .filter(|d| d.extension().is_some_and(|e| e == "d"))
    {
        // Only succeeds when empty, which is exactly when it should go.
        let _ = std::fs::remove_dir(dir);
    }
}

/// Writes the files, each atomically (see `atomic_file`).
pub(crate) fn write_files(files: &[UnitFile]) -> Result<(), InstallError> {
    for file in files {
        let dir = file.path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir).map_err(failed("creating", dir))?;
        crate::host::atomic_file::write(&file.path, file.contents.as_bytes(), 0o644)
            .map_err(failed("writing", &file.path))?;
    }
    Ok(())
}

/// Removes `<unit_dir>/*.wants/<unit>` links that point at `<unit_dir>/<unit>` (what
/// `systemctl enable` made of a unit install wrote), and their directory when it is left
/// empty. Returns the removed links.
pub(crate) fn remove_enablement(unit_dir: &Path, unit: &str) -> Result<Vec<PathBuf>, InstallError> {
    let ours = unit_dir.join(unit);
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(unit_dir) else {
        return Ok(removed);
    };
    for wants in entries.flatten().map(|e| e.path()) {
        if wants.extension().is_none_or(|e| e != "wants") {
            continue;
        }
        let link = wants.join(unit);
        let points_at_ours = std::fs::read_link(&link).is_ok_and(|target| {
            target == ours || target == Path::new("..").join(unit) || target == Path::new(unit)
        });
        if points_at_ours {
            std::fs::remove_file(&link).map_err(failed("removing", &link))?;
            let _ = std::fs::remove_dir(&wants);
            removed.push(link);
        }
    }
    Ok(removed)
}

/// `selfheal@web.service` masked because `web-self-heal.service` is (`Change::Mask`).
fn is_carried_mask(path: &Path) -> bool {
    is_masked(path) && legacy_heal_unit(path).is_some_and(|legacy| is_masked(&legacy))
}

/// Removes `paths` that are ours (they carry our marker, or are a mask install carried over:
/// one whose first name is masked too, or one of `carried_masks` from the manifest), and
/// drop-in directories left empty. Returns the removed paths.
pub(crate) fn remove_files(
    paths: &[PathBuf],
    carried_masks: &[PathBuf],
) -> Result<Vec<PathBuf>, InstallError> {
    let mut removed = Vec::new();
    for path in paths {
        let our_mask = is_masked(path)
            && std::path::absolute(path).is_ok_and(|path| carried_masks.contains(&path));
        if !is_carried_mask(path) && !our_mask {
            // A regular file of unit-file size only: a path from the manifest is never a FIFO
            // or a device to block on.
            let regular = std::fs::symlink_metadata(path)
                .is_ok_and(|meta| meta.is_file() && meta.len() <= MAX_UNIT_FILE_BYTES);
            let Some(contents) = regular
                .then(|| std::fs::read_to_string(path).ok())
                .flatten()
            else {
                continue;
            };
            if !contents.starts_with(MARKER) {
                tracing::warn!("leaving {}: not written by selfheal", path.display());
                continue;
            }
        }
        std::fs::remove_file(path).map_err(failed("removing", path))?;
        removed.push(path.clone());
        remove_empty_drop_in_dir(path);
    }
    Ok(removed)
}

/// Larger than any file install writes.
const MAX_UNIT_FILE_BYTES: u64 = 1024 * 1024;

/// Every file installs wrote, in any unit directory (`<state-dir>/installed.json`), so that
/// `uninstall` removes them all: also those of services the config no longer names, and those
/// in a unit directory given to an earlier install.
pub(crate) struct Manifest {
    path: PathBuf,
}

/// `<state-dir>/installed.json`.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Recorded {
    /// Every file installs wrote (absolute paths).
    files: std::collections::BTreeSet<PathBuf>,
    /// The masks install carried over from a heal unit's first name (`Change::Mask`): install
    /// lifts one once its first name is unmasked, `uninstall` removes them. A mask a person
    /// put on a heal unit is never in this list.
    #[serde(default)]
    masks: std::collections::BTreeSet<PathBuf>,
}

impl Manifest {
    pub(crate) fn new(state_dir: &Path) -> Manifest {
        Manifest {
            path: state_dir.join("installed.json"),
        }
    }

    /// What was recorded (nothing when there is no manifest, or it cannot be read).
    fn read(&self) -> Recorded {
        let Ok(bytes) = std::fs::read(&self.path) else {
            return Recorded::default();
        };
        serde_json::from_slice(&bytes)
            // Before install carried masks, the manifest was a bare list of files.
            .or_else(|_| {
                serde_json::from_slice(&bytes).map(|files| Recorded {
                    files,
                    masks: std::collections::BTreeSet::default(),
                })
            })
            .unwrap_or_default()
    }

    /// The recorded files, masks included.
    pub(crate) fn files(&self) -> Vec<PathBuf> {
        let recorded = self.read();
        recorded.files.into_iter().chain(recorded.masks).collect()
    }

    /// The masks install carried over.
    pub(crate) fn masks(&self) -> Vec<PathBuf> {
        self.read().masks.into_iter().collect()
    }

    /// Records what an install in `unit_dir` left: what was recorded, plus every file of ours
    /// now there, less what it removed.
    pub(crate) fn record(&self, unit_dir: &Path, changes: &[Change]) -> std::io::Result<()> {
        let mut recorded = self.read();
        // Absolute: an uninstall run from another directory must find the same files.
        let unit_dir = std::path::absolute(unit_dir)?;
        recorded.files.extend(our_files(&unit_dir));
        for change in changes {
            match change {
                Change::Create(file) | Change::Update { file, .. } => {
                    let path = std::path::absolute(&file.path)?;
                    recorded.masks.remove(&path);
                    recorded.files.insert(path);
                }
                Change::Mask { path, .. } => {
                    recorded.masks.insert(std::path::absolute(path)?);
                }
                Change::Remove(path) => {
                    let path = std::path::absolute(path)?;
                    recorded.files.remove(&path);
                    recorded.masks.remove(&path);
                }
                Change::KeepMasked(_) => {}
            }
        }
        recorded.files.retain(|path| !recorded.masks.contains(path));
        let json = serde_json::to_vec_pretty(&recorded).map_err(std::io::Error::other)?;
        crate::host::atomic_file::write(&self.path, &json, 0o640)
    }

    pub(crate) fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(
            "monitored_services:\n  - name: web\n  - name: db\n    unit: postgresql.service\n",
            Path::new("t.yml"),
        )
        .unwrap()
    }

    #[test]
    fn writes_a_heal_unit_and_a_drop_in_per_service() {
        let invocation = Invocation {
            executable: "/usr/local/bin/selfheal".into(),
            config: Some("/srv/my config.yml".into()),
            state_dir: None,
        };
        let files = planned_files(&config(), &invocation, Path::new("/etc/systemd/system"));
        let paths: Vec<_> = files
            .iter()
            .map(|f| f.path.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            paths,
            [
                "/etc/systemd/system/selfheal@web.service",
                "/etc/systemd/system/web-self-heal.service",
                "/etc/systemd/system/web.service.d/50-selfheal.conf",
                "/etc/systemd/system/selfheal@db.service",
                "/etc/systemd/system/db-self-heal.service",
                "/etc/systemd/system/postgresql.service.d/50-selfheal.conf",
                "/etc/systemd/system/selfheal-flush.service",
                "/etc/systemd/system/selfheal-flush.timer",
                "/etc/systemd/system/selfheal-watch.service",
                "/etc/systemd/system/selfheal-watch.timer",
                "/etc/systemd/system/timers.target.d/50-selfheal-watch.conf",
                "/etc/systemd/system/timers.target.d/50-selfheal-flush.conf",
            ]
        );
        assert!(files[0].contents.contains("Wants=selfheal-flush.timer\n"));
        // L14: the first spelling runs nothing of its own (drop-ins of its family reach it):
        // it pulls in the heal unit and waits for it; its comment says which families reach it.
        assert!(
            files[1]
                .contents
                .contains("Wants=selfheal@web.service\nAfter=selfheal@web.service\n"),
            "{}",
            files[1].contents
        );
        assert!(files[1].contents.contains("ExecStart=/bin/true\n"));
        assert!(!files[1].contents.contains(" run web"));
        assert!(
            files[1]
                .contents
                .contains("(those in web-.service.d, web-self-.service.d)"),
            "{}",
            files[1].contents
        );
        assert!(
            files[6].contents.contains(
                "ExecStart=/usr/local/bin/selfheal --config=\"/srv/my config.yml\" flush\n"
            )
        );
        assert!(files[0].contents.contains("Type=oneshot\n"));
        assert!(
            files[0].contents.contains(
                "ExecStart=/usr/local/bin/selfheal --config=\"/srv/my config.yml\" run web\n"
            ),
            "{}",
            files[0].contents
        );
        assert!(
            files[5]
                .contents
                .ends_with("[Unit]\nOnFailure=selfheal@db.service\n")
        );
    }

    #[test]
    fn the_drop_in_directories_systemd_applies_to_a_unit_are_named() {
        assert_eq!(
            family_drop_in_dirs("web@blue-self-heal.service"),
            ["web@.service.d"]
        );
        assert_eq!(
            family_drop_in_dirs("my-app-self-heal.service"),
            [
                "my-.service.d",
                "my-app-.service.d",
                "my-app-self-.service.d"
            ]
        );
        // Only selfheal's own template's: the prefix `selfheal` has no `-`.
        for heal_unit in ["selfheal@my-app.service", "selfheal@web@blue.service"] {
            assert_eq!(family_drop_in_dirs(heal_unit), ["selfheal@.service.d"]);
        }
    }

    /// `units/example/` shows what `install` writes for the shipped example config (for readers
    /// and for the Ansible role), and `units/selfheal-flush.*` are the flush units it writes on
    /// every host; this keeps them identical to the real output.
    #[test]
    fn the_shipped_example_units_are_what_install_writes() {
        let config = Config::parse(
            include_str!("../../config/selfheal.example.yml"),
            Path::new("example"),
        )
        .unwrap();
        let invocation = Invocation {
            executable: "/usr/local/bin/selfheal".into(),
            config: None,
            state_dir: None,
        };
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("units/example");
        let mut files = planned_files(&config, &invocation, &root);
        assert_eq!(files.len(), 18);
        // The units every host gets are shipped once, in units/.
        for file in &mut files[12..] {
            let relative = file.path.strip_prefix(&root).unwrap().to_owned();
            file.path = root.parent().unwrap().join(relative);
        }
        for file in files {
            if std::env::var_os("SELFHEAL_WRITE_EXAMPLE_UNITS").is_some() {
                write_files(std::slice::from_ref(&file)).unwrap();
            }
            let shipped = std::fs::read_to_string(&file.path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (regenerate with SELFHEAL_WRITE_EXAMPLE_UNITS=1)",
                    file.path.display()
                )
            });
            assert_eq!(shipped, file.contents, "{}", file.path.display());
        }
    }

    #[test]
    fn uninstall_removes_only_our_files() {
        let dir = tempfile::tempdir().unwrap();
        let invocation = Invocation {
            executable: "/bin/selfheal".into(),
            config: None,
            state_dir: None,
        };
        let files = planned_files(&config(), &invocation, dir.path());
        write_files(&files).unwrap();
        // A person's own drop-in beside ours survives, and so does its directory.
        let own = dir.path().join("web.service.d/10-mine.conf");
        std::fs::write(&own, "[Service]\nRestart=always\n").unwrap();
        std::fs::write(&files[3].path, "[Unit]\n# hand-written\n").unwrap();
        let paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
        let removed = remove_files(&paths, &[]).unwrap();
        assert_eq!(removed.len(), files.len() - 1);
        assert!(own.exists());
        assert!(files[3].path.exists());
        assert!(!dir.path().join("postgresql.service.d").exists());
    }

    /// A path from the manifest that is not a regular file (a FIFO would block the read) is
    /// left alone, and so is a file without the marker.
    #[test]
    fn uninstall_reads_only_regular_files_and_removes_only_marked_ones() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("web.service");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let foreign = dir.path().join("db.service");
        std::fs::write(&foreign, "[Service]\nExecStart=/bin/true\n").unwrap();
        let removed = remove_files(&[fifo.clone(), foreign.clone()], &[]).unwrap();
        assert!(removed.is_empty());
        assert!(fifo.exists() && foreign.exists());
    }

    fn plain_invocation() -> Invocation {
        Invocation {
            executable: "/bin/selfheal".into(),
            config: None,
            state_dir: None,
        }
    }

    #[test]
    fn a_second_install_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let files = planned_files(&config(), &plain_invocation(), dir.path());
        let changes = plan_changes(&files, dir.path(), &[]).unwrap();
        assert_eq!(changes.len(), files.len());
        assert!(changes.iter().all(|c| matches!(c, Change::Create(_))));
        assert!(apply(&changes).unwrap());
        let again = plan_changes(&files, dir.path(), &[]).unwrap();
        assert!(again.is_empty(), "{again:?}");
        assert!(!apply(&again).unwrap(), "nothing written, so no reload");
        assert_eq!(describe(&again), "nothing to change\n");
    }

    #[test]
    fn a_file_selfheal_did_not_write_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let files = planned_files(&config(), &plain_invocation(), dir.path());
        let foreign = &files[0].path;
        std::fs::write(foreign, "[Service]\nExecStart=/usr/bin/my-own-healer\n").unwrap();
        let err = plan_changes(&files, dir.path(), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("refusing to overwrite {}", foreign.display())),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(foreign).unwrap(),
            "[Service]\nExecStart=/usr/bin/my-own-healer\n"
        );
    }

    #[test]
    fn units_of_a_removed_service_are_removed_and_a_masked_heal_unit_stays_masked() {
        let dir = tempfile::tempdir().unwrap();
        let before = planned_files(&config(), &plain_invocation(), dir.path());
        apply(&plan_changes(&before, dir.path(), &[]).unwrap()).unwrap();
        // db leaves the config; web's healing is disabled by hand.
        let web_heal = dir.path().join("selfheal@web.service");
        std::fs::remove_file(&web_heal).unwrap();
        std::os::unix::fs::symlink("/dev/null", &web_heal).unwrap();
        let only_web =
            Config::parse("monitored_services:\n  - name: web\n", Path::new("t.yml")).unwrap();
        let after = planned_files(&only_web, &plain_invocation(), dir.path());
        let changes = plan_changes(&after, dir.path(), &[]).unwrap();
        assert!(
            changes.contains(&Change::KeepMasked(web_heal.clone())),
            "{changes:?}"
        );
        assert!(changes.contains(&Change::Remove(dir.path().join("selfheal@db.service"))));
        assert!(changes.contains(&Change::Remove(dir.path().join("db-self-heal.service"))));
        let text = describe(&changes);
        assert!(text.contains("keep "), "{text}");
        assert!(text.contains("no longer configured"), "{text}");
        apply(&changes).unwrap();
        assert_eq!(
            std::fs::read_link(&web_heal).unwrap(),
            Path::new("/dev/null")
        );
        assert!(!dir.path().join("db-self-heal.service").exists());
        assert!(!dir.path().join("postgresql.service.d").exists());
        assert!(dir.path().join("web.service.d/50-selfheal.conf").exists());
    }

    /// Before `selfheal@web.service`, healing was disabled with `systemctl mask
    /// web-self-heal.service`: an upgrade must not turn it back on under the new name.
    #[test]
    fn a_mask_of_the_first_name_carries_over_to_the_heal_unit() {
        let dir = tempfile::tempdir().unwrap();
        let only_web =
            Config::parse("monitored_services:\n  - name: web\n", Path::new("t.yml")).unwrap();
        let legacy = dir.path().join("web-self-heal.service");
        std::os::unix::fs::symlink("/dev/null", &legacy).unwrap();
        let files = planned_files(&only_web, &plain_invocation(), dir.path());
        let changes = plan_changes(&files, dir.path(), &[]).unwrap();
        let heal = dir.path().join("selfheal@web.service");
        assert!(
            changes.contains(&Change::Mask {
                path: heal.clone(),
                as_masked: legacy.clone()
            }),
            "{changes:?}"
        );
        assert!(changes.contains(&Change::KeepMasked(legacy.clone())));
        assert!(describe(&changes).contains("mask "));
        apply(&changes).unwrap();
        assert_eq!(std::fs::read_link(&heal).unwrap(), Path::new("/dev/null"));
        let again = plan_changes(&files, dir.path(), &[]).unwrap();
        assert!(
            again.iter().all(|c| matches!(c, Change::KeepMasked(_))),
            "{again:?}"
        );
        // `systemctl unmask web-self-heal.service`: the carried mask (in the manifest) goes;
        // a mask a person put on the new name (not in it) stays.
        std::fs::remove_file(&legacy).unwrap();
        let person_s = plan_changes(&files, dir.path(), &[]).unwrap();
        assert!(
            person_s.contains(&Change::KeepMasked(heal.clone())),
            "{person_s:?}"
        );
        let recorded = [std::path::absolute(&heal).unwrap()];
        let released = plan_changes(&files, dir.path(), &recorded).unwrap();
        assert!(
            released
                .iter()
                .any(|c| matches!(c, Change::Create(file) if file.path == heal)),
            "{released:?}"
        );
        apply(&released).unwrap();
        assert!(std::fs::read_to_string(&heal).unwrap().starts_with(MARKER));
    }

    #[test]
    fn a_dry_run_shows_an_update_as_a_diff() {
        let dir = tempfile::tempdir().unwrap();
        let files = planned_files(&config(), &plain_invocation(), dir.path());
        apply(&plan_changes(&files, dir.path(), &[]).unwrap()).unwrap();
        let moved = Invocation {
            executable: "/usr/local/bin/selfheal".into(),
            ..plain_invocation()
        };
        let changes = plan_changes(
            &planned_files(&config(), &moved, dir.path()),
            dir.path(),
            &[],
        )
        .unwrap();
        let text = describe(&changes);
        assert!(
            text.contains("-ExecStart=/bin/selfheal run web\n"),
            "{text}"
        );
        assert!(
            text.contains("+ExecStart=/usr/local/bin/selfheal run web\n"),
            "{text}"
        );
        assert!(text.contains("update "), "{text}");
    }

    #[test]
    fn dollar_and_percent_in_paths_reach_selfheal_unexpanded() {
        assert_eq!(
            quote_arg("/opt/$HOME/50%/selfheal"),
            "/opt/$$HOME/50%%/selfheal"
        );
    }

    #[test]
    fn a_heal_unit_times_out_after_its_worst_case() {
        let config = Config::parse(
            "monitored_services:\n  - name: web\n    port: 80\n    verify_timeout: 10s\n    healing_strategies: [service_restart, port_conflict]\n    port_conflict: { grace: 4s }\n",
            Path::new("test.yml"),
        )
        .unwrap();
        let invocation = Invocation {
            executable: "/bin/selfheal".into(),
            config: None,
            state_dir: None,
        };
        let files = planned_files(&config, &invocation, Path::new("/etc/systemd/system"));
        // Wait 10 + upstream 2 × 10 + restart 10 + port_conflict (4 + 3 + 10) + journal 2 +
        // mail 10 + margin 30.
        assert!(
            files[0].contents.contains("\nTimeoutStartSec=99s\n"),
            "{}",
            files[0].contents
        );
    }
}
