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

    /// What the manifest vouches for now (`vouching.rs`); nothing without a manifest.
    pub(crate) fn vouching(&self) -> Option<super::Vouching> {
        let at = std::fs::metadata(&self.path)
            .and_then(|meta| meta.modified())
            .ok()?;
        Some(super::Vouching::new(&self.read().files, at))
    }

    pub(crate) fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }
}
