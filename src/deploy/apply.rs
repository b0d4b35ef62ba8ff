//! Carrying out the changes: atomic writes, removals of our own files (and drop-in
//! directories left empty), and the enablement links `systemctl enable` made of them.

use std::path::{Path, PathBuf};

use super::changes::{Change, is_carried_mask, is_masked};
use super::manifest::MAX_UNIT_FILE_BYTES;
use super::units::UnitFile;
use super::{InstallError, MARKER, failed};

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

pub(super) fn remove_empty_drop_in_dir(path: &Path) {
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
