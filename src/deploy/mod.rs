//! `install` / `uninstall`: the heal units (`selfheal@<name>.service`, and the stub under its
//! first name) and the `<unit>.d/50-selfheal.conf` drop-ins that wire `OnFailure=` to them,
//! with the flush, watch, probe and digest units. In four steps, one file each:
//!
//! 1. [`units`]: the files, generated from the config (pure, `planned_files`);
//! 2. [`changes`]: what that changes in the unit directory (`plan_changes`; only files that
//!    carry our marker line are ever replaced or removed, so nothing a person wrote is lost);
//! 3. [`apply`]: the writes and removals;
//! 4. [`manifest`]: what was written, in the state directory, for `uninstall`.

use std::path::Path;

use crate::host::file_error::FileError;

/// First line of every file selfheal writes; `uninstall` removes only files that start with it.
pub(crate) const MARKER: &str = "# Written by `selfheal install`; `selfheal uninstall` removes it.";

mod apply;
mod changes;
mod coverage;
mod manifest;
mod receiver;
mod units;
mod vouching;

pub(crate) use apply::*;
pub(crate) use changes::*;
pub(crate) use coverage::*;
pub(crate) use manifest::*;
pub(crate) use receiver::{RECEIVER_SERVICE, RECEIVER_SOCKET, receiver_files};
pub(crate) use units::*;
pub(crate) use vouching::Vouching;

/// A unit file or directory that could not be written or removed (exit 73).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct InstallError(#[from] pub FileError);

/// `map_err` for an I/O step on `path`.
fn failed(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstallError {
    let failed = FileError::of(action, path);
    move |cause| InstallError(failed(cause))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::Config;

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
