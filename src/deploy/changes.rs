//! What install would change in a unit directory: the planned files against what is there
//! (create, update, remove, keep masked, mask), only ever touching files that carry our
//! marker; and the dry run's description of it.

use std::path::{Path, PathBuf};

use super::receiver::{RECEIVER_SERVICE, RECEIVER_SOCKET, RECEIVER_WANTED_BY};
use super::units::{
    DIGEST_SERVICE, DIGEST_TIMER, DIGEST_WANTED_BY, FLUSH_WANTED_BY, PROBE_SERVICE, PROBE_TIMER,
    PROBE_WANTED_BY, UnitFile, WATCH_SERVICE, WATCH_TIMER, WATCH_WANTED_BY,
};
use super::{InstallError, MARKER};

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

pub(super) fn not_ours(path: &Path) -> InstallError {
    InstallError(crate::host::file_error::FileError {
        action: "refusing to overwrite",
        path: path.to_owned(),
        cause: std::io::Error::other(
            "selfheal did not write it (its first line is not selfheal's marker); move it away or remove it, then run install again",
        ),
    })
}

pub(super) fn refuse_unless_ours_or_absent(path: &Path) -> Result<(), InstallError> {
    match std::fs::read_to_string(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Ok(text) if text.starts_with(MARKER) => Ok(()),
        _ => Err(not_ours(path)),
    }
}

/// `<dir>/selfheal@web.service` → `<dir>/web-self-heal.service`.
pub(super) fn legacy_heal_unit(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let service = name.strip_prefix("selfheal@")?.strip_suffix(".service")?;
    Some(path.with_file_name(crate::config::units::legacy_heal_unit_name(service)))
}

/// `systemctl mask` puts a symlink to /dev/null where the unit file would be.
pub(super) fn is_masked(path: &Path) -> bool {
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
            RECEIVER_SOCKET,
            RECEIVER_SERVICE,
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
        } else if name == "sockets.target.d" && ours(&unit_dir.join(RECEIVER_WANTED_BY)) {
            found.push(unit_dir.join(RECEIVER_WANTED_BY));
        } else if name.ends_with(".service.d") || name == "service.d" {
            for drop_in in [
                "50-selfheal.conf",
                crate::config::units::ALL_SERVICES_DROP_IN,
            ] {
                let drop_in = path.join(drop_in);
                if ours(&drop_in) {
                    found.push(drop_in);
                }
            }
        }
    }
    found.sort();
    found
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

/// `selfheal@web.service` masked because `web-self-heal.service` is (`Change::Mask`).
pub(super) fn is_carried_mask(path: &Path) -> bool {
    is_masked(path) && legacy_heal_unit(path).is_some_and(|legacy| is_masked(&legacy))
}
