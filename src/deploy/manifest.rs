//! `<state-dir>/installed.json`: every file any install wrote, so that `uninstall` removes
//! them all, in any unit directory.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::changes::{Change, our_files};

/// Larger than any file install writes.
pub(super) const MAX_UNIT_FILE_BYTES: u64 = 1024 * 1024;

/// Every file installs wrote, in any unit directory (`<state-dir>/installed.json`), so that
/// `uninstall` removes them all: also those of services the config no longer names, and those
/// in a unit directory given to an earlier install.
pub(crate) struct Manifest {
    path: PathBuf,
}

/// `<state-dir>/installed.json`.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Recorded {
    /// Every file installs wrote (absolute paths).
    files: BTreeSet<PathBuf>,
    /// The masks install carried over from a heal unit's first name (`Change::Mask`): install
    /// lifts one once its first name is unmasked, `uninstall` removes them. A mask a person
    /// put on a heal unit is never in this list.
    #[serde(default)]
    masks: BTreeSet<PathBuf>,
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
                    masks: BTreeSet::default(),
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

    /// Which of `units` (each with the drop-in that arms it: `50-selfheal.conf`, or
    /// all_services:' top-level one) are armed as the last install left them, known without
    /// asking systemd: the drop-in install recorded is there, and no drop-in directory that
    /// reaches the unit (its own, its family's, `service.d`) in any unit directory changed
    /// since. Asking systemd for 300 units' `OnFailure=` is most of a dashboard; a unit that is
    /// not known here is asked. Nothing is known without a manifest.
    pub(crate) fn hooks_as_installed(&self, units: &[(String, bool)]) -> Vec<bool> {
        let no = || vec![false; units.len()];
        let Ok(at) = std::fs::metadata(&self.path).and_then(|meta| meta.modified()) else {
            return no();
        };
        let recorded = self.read();
        let mut roots: BTreeSet<PathBuf> = super::DROP_IN_ROOTS.iter().map(PathBuf::from).collect();
        roots.extend(
            recorded
                .files
                .iter()
                .filter_map(|file| file.parent()?.parent().map(Path::to_path_buf)),
        );
        let changed: BTreeSet<String> = roots
            .iter()
            .filter_map(|root| std::fs::read_dir(root).ok())
            .flatten()
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".d"))
            .filter(|entry| {
                entry
                    .metadata()
                    .and_then(|meta| meta.modified())
                    .map_or(true, |modified| modified > at)
            })
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        // The drop-ins install recorded that are there, by (directory, file) name.
        let hooks = [
            "50-selfheal.conf",
            crate::config::units::ALL_SERVICES_DROP_IN,
        ];
        let present: BTreeSet<(String, String)> = recorded
            .files
            .iter()
            .filter_map(|path| {
                let file = path.file_name()?.to_string_lossy().into_owned();
                let dir = path.parent()?.file_name()?.to_string_lossy().into_owned();
                let regular = std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_file());
                (hooks.contains(&file.as_str()) && regular).then_some((dir, file))
            })
            .collect();
        let in_place = |dir: &str, file: &str| present.contains(&(dir.to_owned(), file.to_owned()));
        let top_level_changed = changed.contains("service.d");
        units
            .iter()
            .map(|(unit, listed)| {
                let armed_by = if *listed {
                    in_place(&format!("{unit}.d"), "50-selfheal.conf")
                } else {
                    in_place("service.d", crate::config::units::ALL_SERVICES_DROP_IN)
                };
                let reached_by_change = top_level_changed
                    || changed.contains(&format!("{unit}.d"))
                    || super::family_drop_in_dirs(unit)
                        .iter()
                        .any(|dir| changed.contains(dir));
                armed_by && !reached_by_change
            })
            .collect()
    }

    pub(crate) fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }
}
