//! What install's manifest vouches for without asking systemd: a file install recorded is
//! still there as a regular file, and no drop-in directory that reaches its unit (its own, its
//! template's and prefixes', the top-level `service.d`) changed since the manifest was written.
//! Asking systemd for 300 units' `OnFailure=` and 300 heal units' load states was most of a
//! dashboard; whatever is not vouched for is asked.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::units::{ALL_SERVICES_DROP_IN, HEAL_TEMPLATE};

/// The recorded files that are there, and the drop-in directories that changed since.
pub(crate) struct Vouching {
    /// Recorded drop-ins that are regular files, by (directory, file) name.
    drop_ins: BTreeSet<(String, String)>,
    /// Recorded unit files (directly in a unit directory) that are regular files, by name.
    unit_files: BTreeSet<String>,
    /// Names of drop-in directories, in any unit directory, changed after the manifest.
    changed: BTreeSet<String>,
}

impl Vouching {
    pub(super) fn new(recorded: &BTreeSet<PathBuf>, at: SystemTime) -> Vouching {
        let mut roots: BTreeSet<PathBuf> = super::DROP_IN_ROOTS.iter().map(PathBuf::from).collect();
        let mut drop_ins = BTreeSet::new();
        let mut unit_files = BTreeSet::new();
        for path in recorded {
            let regular = || std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_file());
            let (Some(file), Some(parent)) = (path.file_name(), path.parent()) else {
                continue;
            };
            let file = file.to_string_lossy().into_owned();
            let dir = parent
                .file_name()
                .map(|dir| dir.to_string_lossy().into_owned())
                .unwrap_or_default();
            if Path::new(&dir).extension().is_some_and(|ext| ext == "d") {
                roots.extend(parent.parent().map(Path::to_path_buf));
                if regular() {
                    drop_ins.insert((dir, file));
                }
            } else {
                roots.insert(parent.to_path_buf());
                if regular() {
                    unit_files.insert(file);
                }
            }
        }
        let changed = roots
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
        Vouching {
            drop_ins,
            unit_files,
            changed,
        }
    }

    /// True when a drop-in directory that reaches `unit` changed since install.
    fn reached_by_change(&self, unit: &str) -> bool {
        self.changed.contains("service.d")
            || self.changed.contains(&format!("{unit}.d"))
            || super::family_drop_in_dirs(unit)
                .iter()
                .any(|dir| self.changed.contains(dir))
    }

    /// `unit`'s `OnFailure=` starts its heal unit: its own drop-in (`listed`), or
    /// all_services:' top-level one.
    pub(crate) fn hook(&self, unit: &str, listed: bool) -> bool {
        let drop_in = if listed {
            (format!("{unit}.d"), "50-selfheal.conf".to_owned())
        } else {
            ("service.d".to_owned(), ALL_SERVICES_DROP_IN.to_owned())
        };
        self.drop_ins.contains(&drop_in) && !self.reached_by_change(unit)
    }

    /// `heal_unit` loads as install wrote it: its own file (`listed`), or the template.
    pub(crate) fn heal_unit(&self, heal_unit: &str, listed: bool) -> bool {
        let file = if listed { heal_unit } else { HEAL_TEMPLATE };
        self.unit_files.contains(file) && !self.reached_by_change(heal_unit)
    }
}
