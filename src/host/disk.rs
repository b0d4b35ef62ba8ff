//! How full the file system under a path is (`statvfs`), and where it is mounted: the facts
//! behind "/srv/data is full (256 KiB of 256 KiB, 100 %)".

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The use of one file system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct DiskUsage {
    /// The path that was asked about.
    pub path: PathBuf,
    /// Where its file system is mounted.
    pub mount: PathBuf,
    pub size_bytes: u64,
    pub used_bytes: u64,
    /// What an unprivileged writer can still use (root may have a reserve beyond it).
    pub available_bytes: u64,
    /// Free inodes for unprivileged writers; `None` where the file system does not count them.
    pub available_inodes: Option<u64>,
}

impl DiskUsage {
    /// Nothing more can be written: no block, or no inode, left for the service.
    pub(crate) fn is_full(&self) -> bool {
        self.size_bytes > 0 && (self.available_bytes == 0 || self.available_inodes == Some(0))
    }

    /// Used, in percent of what a writer can have (used + available), as `df` counts it.
    pub(crate) fn percent_used(&self) -> u64 {
        let usable = self.used_bytes + self.available_bytes;
        if usable == 0 {
            return 100;
        }
        (self.used_bytes * 100).div_ceil(usable)
    }
}

/// The use of the file system holding `path` (or, for a path that does not exist yet, its
/// nearest existing parent); `None` when it cannot be read.
pub(crate) fn usage(path: &Path) -> Option<DiskUsage> {
    let existing = path.ancestors().find(|p| p.symlink_metadata().is_ok())?;
    let stats = nix::sys::statvfs::statvfs(existing).ok()?;
    let fragment = stats.fragment_size();
    let size_bytes = stats.blocks() * fragment;
    let free_bytes = stats.blocks_free() * fragment;
    let inodes = stats.files();
    Some(DiskUsage {
        path: path.to_owned(),
        mount: mount_point(existing),
        size_bytes,
        used_bytes: size_bytes.saturating_sub(free_bytes),
        available_bytes: stats.blocks_available() * fragment,
        available_inodes: (inodes > 0).then(|| stats.files_available()),
    })
}

/// The first of `paths` whose file system is full, each file system looked at once.
pub(crate) fn first_full<'p>(paths: impl IntoIterator<Item = &'p Path>) -> Option<DiskUsage> {
    let mut seen = Vec::new();
    for path in paths {
        let Some(usage) = usage(path) else { continue };
        if seen.contains(&usage.mount) {
            continue;
        }
        if usage.is_full() {
            return Some(usage);
        }
        seen.push(usage.mount);
    }
    None
}

/// The directory `path` is on whose parent is on another device (or `/`).
fn mount_point(path: &Path) -> PathBuf {
    let device = |p: &Path| std::fs::metadata(p).ok().map(|m| m.dev());
    let Ok(mut here) = path.canonicalize() else {
        return path.to_owned();
    };
    let dev = device(&here);
    while let Some(parent) = here.parent() {
        if device(parent) != dev {
            break;
        }
        here = parent.to_owned();
    }
    here
}

/// Paths that ENOSPC messages name: `No space left on device: '/srv/data/x'`,
/// `write /var/lib/app/db: no space left on device`, `cannot write to '/tmp/a'`.
pub(crate) fn paths_in(message: &str) -> Vec<PathBuf> {
    message
        .split(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | ',' | '(' | ')' | '`'))
        .map(|word| word.trim_end_matches([':', '.', ';']))
        .filter(|word| word.starts_with('/') && word.len() > 1 && !word.contains("//"))
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_system_with_nothing_left_is_full() {
        let mut usage = DiskUsage {
            path: "/srv/data".into(),
            mount: "/srv/data".into(),
            size_bytes: 262_144,
            used_bytes: 262_144,
            available_bytes: 0,
            available_inodes: Some(10),
        };
        assert!(usage.is_full());
        assert_eq!(usage.percent_used(), 100);
        usage.available_bytes = 4096;
        usage.used_bytes = 258_048;
        assert!(!usage.is_full());
        assert_eq!(usage.percent_used(), 99, "rounded up, as df does");
        usage.available_inodes = Some(0);
        assert!(usage.is_full(), "no inode left is full too");
    }

    #[test]
    fn the_root_file_system_is_measured_and_mounted_at_a_real_directory() {
        let usage = usage(Path::new("/this/does/not/exist")).expect("the root is readable");
        assert!(usage.size_bytes > 0, "{usage:?}");
        assert!(usage.mount.is_dir(), "{usage:?}");
    }

    #[test]
    fn finds_the_paths_an_enospc_message_names() {
        assert_eq!(
            paths_in("OSError: [Errno 28] No space left on device: '/srv/data/out.bin'"),
            [PathBuf::from("/srv/data/out.bin")]
        );
        assert_eq!(
            paths_in("write /var/lib/app/db.wal: no space left on device"),
            [PathBuf::from("/var/lib/app/db.wal")]
        );
        assert!(paths_in("No space left on device").is_empty());
    }
}
