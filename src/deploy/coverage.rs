//! `all_services:` on disk: the heal units' template, the top-level drop-in
//! (`service.d/99-selfheal-all.conf`) that arms every service unit, units installed later
//! included, and the empty drop-ins of the same name that keep it off the units it must not
//! reach (systemd applies the most specific file of a name): selfheal's own (a heal unit that
//! fails starts nothing), the monitored services (their own drop-in arms them), and the
//! excluded units that exist now or whose family directory an `exclude:` glob names. An
//! excluded unit installed later is armed, and its run ends at once (`Config::entry`).

use std::path::Path;

use super::units::{UnitFile, command_line, heal_unit_contents};
use super::{Invocation, MARKER};
use crate::config::Config;
use crate::config::units::{ALL_SERVICES_DROP_IN, HEAL_TEMPLATE};

/// The files `all_services:` adds (none without it); `known_units`: the service units systemd
/// knows now, for the excluded ones among them.
pub(crate) fn all_services_files(
    config: &Config,
    invocation: &Invocation,
    unit_dir: &Path,
    known_units: &[String],
) -> Vec<UnitFile> {
    let Some(all) = &config.all_services else {
        return Vec::new();
    };
    let command = command_line(invocation);
    let template = all.entry("%i");
    let mut files = vec![
        UnitFile {
            path: unit_dir.join(HEAL_TEMPLATE),
            contents: heal_unit_contents(
                config,
                invocation,
                &command,
                &template,
                "# The heal unit of each unit all_services: covers: selfheal@foo.service heals\n\
                 # foo.service. A monitored service's heal unit is a file of its own.\n",
            ),
        },
        UnitFile {
            path: unit_dir.join("service.d").join(ALL_SERVICES_DROP_IN),
            contents: format!(
                "{MARKER}\n# all_services: every service unit's failure starts its heal unit (%N: the\n\
                 # unit's name without .service). Kept off a unit by an empty file of this name\n\
                 # in its own drop-in directory.\n[Unit]\nOnFailure=selfheal@%N.service\n"
            ),
        },
    ];
    let mut kept_off: Vec<(String, &str)> = vec![
        (
            "selfheal@.service.d".to_owned(),
            "selfheal's heal units: one that fails starts nothing",
        ),
        (
            "selfheal-.service.d".to_owned(),
            "selfheal's own units (flush, watch, probe, digest)",
        ),
    ];
    for service in &config.monitored_services {
        kept_off.push((
            format!("{}.d", service.unit_name()),
            "a monitored service: its own drop-in (50-selfheal.conf) arms it",
        ));
        kept_off.push((
            format!("{}.d", service.legacy_heal_unit_name()),
            "the first name of a heal unit",
        ));
    }
    for glob in &all.exclude {
        if let Some(dir) = glob.family_drop_in_dir() {
            kept_off.push((dir, "excluded by all_services: exclude"));
        }
    }
    let listed: Vec<String> = config
        .monitored_services
        .iter()
        .map(crate::config::ServiceConfig::unit_name)
        .collect();
    for unit in known_units {
        let excluded = all.exclude.iter().any(|glob| glob.matches(unit));
        if excluded && !listed.contains(unit) {
            kept_off.push((format!("{unit}.d"), "excluded by all_services: exclude"));
        }
    }
    kept_off.sort();
    kept_off.dedup_by(|a, b| a.0 == b.0);
    files.extend(kept_off.into_iter().map(|(dir, why)| UnitFile {
        path: unit_dir.join(dir).join(ALL_SERVICES_DROP_IN),
        contents: format!(
            "{MARKER}\n# Empty on purpose: keeps all_services:' hook (service.d/{ALL_SERVICES_DROP_IN})\n# off this unit ({why}).\n"
        ),
    }));
    files
}

/// Where systemd reads the drop-ins of system units (the ones a unit's own settings live in).
pub(crate) const DROP_IN_ROOTS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// The files under `roots` that keep all_services:' hook off a unit and that selfheal did not
/// write: a `99-selfheal-all.conf` in a unit's (or a family's) drop-in directory, such as a
/// person's `/dev/null` link. (An empty `OnFailure=` in a later drop-in does not: systemd never
/// takes a dependency away.)
pub(crate) fn hook_masks(roots: &[&Path]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for root in roots {
        let Ok(dirs) = std::fs::read_dir(root) else {
            continue;
        };
        for dir in dirs.flatten() {
            let name = dir.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".service.d") {
                continue;
            }
            let file = dir.path().join(ALL_SERVICES_DROP_IN);
            let ours = || {
                crate::host::bounded_read::read_no_symlinks(&file, 64 * 1024)
                    .is_ok_and(|(bytes, _)| bytes.starts_with(MARKER.as_bytes()))
            };
            if std::fs::symlink_metadata(&file).is_ok() && !ours() {
                found.push(file);
            }
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invocation() -> Invocation {
        Invocation {
            executable: "/usr/bin/selfheal".into(),
            config: None,
            state_dir: None,
        }
    }

    #[test]
    fn arms_every_unit_but_its_own_the_listed_and_the_excluded() {
        let config = Config::parse(
            "all_services: {exclude: ['getty@*.service', 'cron.service']}\nmonitored_services:\n  - name: web\n    unit: nginx.service\n",
            Path::new("t.yml"),
        )
        .unwrap();
        let known = ["cron.service", "nginx.service", "ssh.service"].map(String::from);
        let files = all_services_files(&config, &invocation(), Path::new("/u"), &known);
        let paths: Vec<_> = files.iter().map(|f| f.path.to_string_lossy()).collect();
        assert_eq!(
            paths,
            [
                "/u/selfheal@.service",
                "/u/service.d/99-selfheal-all.conf",
                "/u/cron.service.d/99-selfheal-all.conf",
                "/u/getty@.service.d/99-selfheal-all.conf",
                "/u/nginx.service.d/99-selfheal-all.conf",
                "/u/selfheal-.service.d/99-selfheal-all.conf",
                "/u/selfheal@.service.d/99-selfheal-all.conf",
                "/u/web-self-heal.service.d/99-selfheal-all.conf",
            ]
        );
        assert!(
            files[0]
                .contents
                .contains("ExecStart=/usr/bin/selfheal run %i\n"),
            "{}",
            files[0].contents
        );
        assert!(
            files[0]
                .contents
                .contains("Description=selfheal: heal %i.service\n")
        );
        assert!(
            files[1]
                .contents
                .ends_with("[Unit]\nOnFailure=selfheal@%N.service\n")
        );
        // A file that keeps the hook off sets nothing: comments only.
        assert!(
            files[2..]
                .iter()
                .all(|file| file.contents.lines().all(|line| line.starts_with('#')))
        );
    }

    #[test]
    fn a_hook_kept_off_by_a_file_selfheal_did_not_write_is_found() {
        let root = tempfile::tempdir().unwrap();
        for (dir, mine) in [("cron.service.d", false), ("web.service.d", true)] {
            std::fs::create_dir(root.path().join(dir)).unwrap();
            let file = root.path().join(dir).join(ALL_SERVICES_DROP_IN);
            if mine {
                std::fs::write(&file, format!("{MARKER}\n# Empty on purpose\n")).unwrap();
            } else {
                std::os::unix::fs::symlink("/dev/null", &file).unwrap();
            }
        }
        assert_eq!(
            hook_masks(&[root.path()]),
            [root
                .path()
                .join("cron.service.d")
                .join(ALL_SERVICES_DROP_IN)]
        );
    }

    #[test]
    fn without_all_services_nothing_is_added() {
        let config = Config::parse("monitored_services: []\n", Path::new("t.yml")).unwrap();
        assert!(all_services_files(&config, &invocation(), Path::new("/u"), &[]).is_empty());
    }
}
