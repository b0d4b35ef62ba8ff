//! `install` / `uninstall`: the `<name>-self-heal.service` units and the
//! `<unit>.d/50-selfheal.conf` drop-ins that wire `OnFailure=` to them.
//!
//! Generation is pure (`planned_files`); writing is separate, and `uninstall` removes only
//! files that carry our marker line, so it never deletes what a person wrote.

use std::path::{Path, PathBuf};

use crate::config::Config;

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

/// The longest a heal run can legitimately take: waiting for a job systemd already runs, the
/// whole chain (each strategy, a restart and a verification), the journal, the mail, and a
/// margin; rounded up to whole seconds.
fn heal_timeout(config: &Config, service: &crate::config::ServiceConfig) -> std::time::Duration {
    use std::time::Duration;
    let mail = config
        .email
        .as_ref()
        .and_then(|email| email.smtp.as_ref())
        .map_or(Duration::from_secs(10), |smtp| smtp.timeout.into());
    let total = Duration::from(service.verify_timeout)
        + crate::strategy::worst_case(service)
        + Duration::from_secs(2)
        + mail
        + Duration::from_secs(30);
    Duration::from_secs(total.as_secs() + u64::from(total.subsec_nanos() > 0))
}

/// The oneshot unit that delivers queued reports, and the timer that runs it.
pub(crate) const FLUSH_SERVICE: &str = "selfheal-flush.service";
pub(crate) const FLUSH_TIMER: &str = "selfheal-flush.timer";

/// The files for every monitored service, plus the outbox flush service and timer.
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
    let mut files = Vec::new();
    for service in &config.monitored_services {
        let unit = service.unit_name();
        let heal_unit = service.heal_unit_name();
        files.push(UnitFile {
            path: unit_dir.join(&heal_unit),
            contents: format!(
                "{MARKER}\n[Unit]\nDescription=selfheal: heal {unit}\nDocumentation=man:selfheal(1)\n\
                 # Never let a healing run be refused by a start limit.\nStartLimitIntervalSec=0\n\
                 # A report that could not be sent is retried from the outbox.\nWants={FLUSH_TIMER}\n\n\
                 [Service]\nType=oneshot\n\
                 # systemd gives a oneshot no start timeout: a hung run would live forever and\n\
                 # fold every later OnFailure= start into itself. Its worst case, with a margin:\n\
                 TimeoutStartSec={}s\nExecStart={} run {}\n",
                heal_timeout(config, service).as_secs(),
                command.join(" "),
                service.name
            ),
        });
        files.push(UnitFile {
            path: unit_dir.join(format!("{unit}.d")).join("50-selfheal.conf"),
            contents: format!("{MARKER}\n[Unit]\nOnFailure={heal_unit}\n"),
        });
    }
    files.push(UnitFile {
        path: unit_dir.join(FLUSH_SERVICE),
        contents: format!(
            "{MARKER}\n[Unit]\nDescription=selfheal: deliver the reports queued in the outbox\n\
             Documentation=man:selfheal(1)\nWants=network-online.target\nAfter=network-online.target\n\n\
             [Service]\nType=oneshot\nExecStart={} flush\n",
            command.join(" ")
        ),
    });
    files.push(UnitFile {
        path: unit_dir.join(FLUSH_TIMER),
        contents: format!(
            "{MARKER}\n[Unit]\nDescription=selfheal: retry queued reports every 5 minutes\n\
             Documentation=man:selfheal(1)\n\n\
             # Started by every heal unit (Wants=) and, once enabled, at boot.\n\
             [Timer]\nOnBootSec=1min\nOnUnitInactiveSec=5min\nRandomizedDelaySec=20s\n\n\
             [Install]\nWantedBy=timers.target\n"
        ),
    });
    files
}

/// systemd's ExecStart= splits on whitespace and interprets quotes and `%`; quote what needs it.
fn quote_arg(arg: &str) -> String {
    let escaped = arg.replace('%', "%%");
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

/// Writes the files, each atomically (see `atomic_file`).
pub(crate) fn write_files(files: &[UnitFile]) -> Result<(), InstallError> {
    for file in files {
        let dir = file.path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir).map_err(failed("creating", dir))?;
        crate::atomic_file::write(&file.path, file.contents.as_bytes(), 0o644)
            .map_err(failed("writing", &file.path))?;
    }
    Ok(())
}

/// Removes the files install would write, when they carry our marker, and drop-in directories
/// left empty. Returns the removed paths.
pub(crate) fn remove_files(files: &[UnitFile]) -> Result<Vec<PathBuf>, InstallError> {
    let mut removed = Vec::new();
    for file in files {
        let Ok(contents) = std::fs::read_to_string(&file.path) else {
            continue;
        };
        if !contents.starts_with(MARKER) {
            tracing::warn!("leaving {}: not written by selfheal", file.path.display());
            continue;
        }
        std::fs::remove_file(&file.path).map_err(failed("removing", &file.path))?;
        removed.push(file.path.clone());
        if let Some(dir) = file
            .path
            .parent()
            .filter(|d| d.extension().is_some_and(|e| e == "d"))
        {
            // Only succeeds when empty, which is exactly when it should go.
            let _ = std::fs::remove_dir(dir);
        }
    }
    Ok(removed)
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
                "/etc/systemd/system/web-self-heal.service",
                "/etc/systemd/system/web.service.d/50-selfheal.conf",
                "/etc/systemd/system/db-self-heal.service",
                "/etc/systemd/system/postgresql.service.d/50-selfheal.conf",
                "/etc/systemd/system/selfheal-flush.service",
                "/etc/systemd/system/selfheal-flush.timer",
            ]
        );
        assert!(files[0].contents.contains("Wants=selfheal-flush.timer\n"));
        assert!(
            files[4].contents.contains(
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
            files[3]
                .contents
                .ends_with("[Unit]\nOnFailure=db-self-heal.service\n")
        );
    }

    /// `units/example/` shows what `install` writes for the shipped example config (for readers
    /// and for the Ansible role), and `units/selfheal-flush.*` are the flush units it writes on
    /// every host; this keeps them identical to the real output.
    #[test]
    fn the_shipped_example_units_are_what_install_writes() {
        let config = Config::parse(
            include_str!("../config/selfheal.example.yml"),
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
        assert_eq!(files.len(), 10);
        for file in &mut files[8..] {
            file.path = root.parent().unwrap().join(file.path.file_name().unwrap());
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
        std::fs::write(&files[2].path, "[Unit]\n# hand-written\n").unwrap();
        let removed = remove_files(&files).unwrap();
        assert_eq!(removed.len(), files.len() - 1);
        assert!(own.exists());
        assert!(files[2].path.exists());
        assert!(!dir.path().join("postgresql.service.d").exists());
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
        // Wait 10 + restart 10 + port_conflict (4 + 3 + 10) + journal 2 + mail 10 + margin 30.
        assert!(
            files[0].contents.contains("\nTimeoutStartSec=79s\n"),
            "{}",
            files[0].contents
        );
    }
}
