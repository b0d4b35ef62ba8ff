//! How full the file system under a path is (`statvfs`), and where it is mounted: the facts
//! behind "/srv/data is full (256 KiB of 256 KiB, 100 %)".

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

/// How long one measurement may take: a file system that does not answer by then (a dead NFS
/// server) is not measured, and healing goes on.
const MEASURE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

/// File systems that are not measured at all: a stat of them can hang on a network (NFS, CIFS,
/// a FUSE daemon) or trigger a mount (autofs) of a path a journal line chose.
const NOT_MEASURED: [&str; 9] = [
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "autofs", "fuse", "9p", "ceph",
];

/// One line of the mount table: where, and what kind of file system.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    point: PathBuf,
    fstype: String,
}

/// `/proc/self/mountinfo`, parsed (an empty table when it cannot be read).
fn mounts() -> Vec<Mount> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|text| parse_mountinfo(&text))
        .unwrap_or_default()
}

/// `mountinfo(5)`: the 5th field is the mount point (octal escapes for spaces), the first after
/// the ` - ` separator the file system type.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let point = before.split(' ').nth(4)?;
            let fstype = after.split(' ').next()?;
            Some(Mount {
                point: PathBuf::from(unescape_octal(point)),
                fstype: fstype.to_owned(),
            })
        })
        .collect()
}

/// `\040` and friends, as mountinfo writes spaces, tabs, newlines and backslashes.
fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'\\'
            && let Some(code) = text
                .get(at + 1..at + 4)
                .and_then(|digits| u8::from_str_radix(digits, 8).ok())
        {
            out.push(code);
            at += 4;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount `path` is on, by its name alone (the longest mount point it starts with; the last
/// mounted of equals): nothing on the path is touched.
fn mount_of<'m>(mounts: &'m [Mount], path: &Path) -> Option<&'m Mount> {
    mounts
        .iter()
        .enumerate()
        .filter(|(_, mount)| path.starts_with(&mount.point))
        .max_by_key(|(index, mount)| (mount.point.as_os_str().len(), *index))
        .map(|(_, mount)| mount)
}

/// Why `path` is not measured, when it is on a network, FUSE or automount file system.
fn not_measured(mounts: &[Mount], path: &Path) -> Option<String> {
    let mount = mount_of(mounts, path)?;
    let kind = mount.fstype.split('.').next().unwrap_or_default();
    NOT_MEASURED.contains(&kind).then(|| {
        format!(
            "{} is on {} ({}), which selfheal does not measure (it could hang)",
            path.display(),
            mount.point.display(),
            mount.fstype
        )
    })
}

/// The use of the file system holding `path` (or, for a path that does not exist yet, its
/// nearest existing parent); `None` when it cannot be read, is on a file system that is not
/// measured (network, FUSE, automount), or does not answer within `MEASURE_DEADLINE` (said in
/// the journal: "could not measure …").
pub(crate) fn usage(path: &Path) -> Option<DiskUsage> {
    usage_among(&mounts(), path)
}

fn usage_among(mounts: &[Mount], path: &Path) -> Option<DiskUsage> {
    if let Some(why) = not_measured(mounts, path) {
        tracing::info!("{why}");
        return None;
    }
    let mount = mount_of(mounts, path).map(|mount| mount.point.clone());
    let asked = path.to_owned();
    let (answer_to, answer) = std::sync::mpsc::channel();
    // On a thread of its own: a hung file system leaves it blocked, not the run.
    let spawned = std::thread::Builder::new()
        .name("statvfs".into())
        .spawn(move || {
            let measured = asked
                .ancestors()
                .find(|p| p.symlink_metadata().is_ok())
                .and_then(|existing| {
                    let stats = nix::sys::statvfs::statvfs(existing).ok()?;
                    Some((existing.to_owned(), stats))
                });
            let _ = answer_to.send(measured);
        });
    if spawned.is_err() {
        return None;
    }
    let Ok(measured) = answer.recv_timeout(MEASURE_DEADLINE) else {
        tracing::warn!(
            "could not measure {} (hung file system?) within {}; healing goes on",
            path.display(),
            crate::ui::duration::HumanDuration(MEASURE_DEADLINE)
        );
        return None;
    };
    let (existing, stats) = measured?;
    let fragment = stats.fragment_size();
    let size_bytes = stats.blocks() * fragment;
    let free_bytes = stats.blocks_free() * fragment;
    let inodes = stats.files();
    Some(DiskUsage {
        path: path.to_owned(),
        mount: mount.unwrap_or(existing),
        size_bytes,
        used_bytes: size_bytes.saturating_sub(free_bytes),
        available_bytes: stats.blocks_available() * fragment,
        available_inodes: (inodes > 0).then(|| stats.files_available()),
    })
}

/// The first of `paths` whose file system is full, each file system looked at once.
pub(crate) fn first_full<'p>(paths: impl IntoIterator<Item = &'p Path>) -> Option<DiskUsage> {
    let mounts = mounts();
    let mut seen: Vec<PathBuf> = Vec::new();
    for path in paths {
        if let Some(mount) = mount_of(&mounts, path)
            && seen.contains(&mount.point)
        {
            continue;
        }
        let Some(usage) = usage_among(&mounts, path) else {
            continue;
        };
        if usage.is_full() {
            return Some(usage);
        }
        seen.push(usage.mount);
    }
    None
}

/// Where a service that says "No space left on device" and names no path most likely writes:
/// the host's own file systems, looked at when nothing it declares is full.
pub(crate) const USUAL_PLACES: [&str; 5] = ["/", "/var", "/var/lib", "/var/log", "/tmp"];

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

    const MOUNTINFO: &str = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n\
        30 22 0:40 / /srv/nfs rw shared:9 - nfs4 srv:/export rw\n\
        31 22 0:41 / /home/alice/mnt rw shared:10 - fuse.sshfs alice@h: rw\n\
        32 22 0:42 / /net rw shared:11 - autofs systemd-1 rw\n\
        33 22 0:43 / /srv/my\\040data rw shared:12 - ext4 /dev/vdb rw\n";

    /// M8: network, FUSE and automount paths are never stat'ed; the mount of a path is found
    /// by its name alone.
    #[test]
    fn network_fuse_and_automount_paths_are_not_measured() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(
            mount_of(&mounts, Path::new("/srv/my data/db")).map(|m| m.point.clone()),
            Some(PathBuf::from("/srv/my data"))
        );
        assert_eq!(
            mount_of(&mounts, Path::new("/srv/nfsx")).map(|m| m.point.clone()),
            Some(PathBuf::from("/"))
        );
        for hung in ["/srv/nfs/app/db", "/home/alice/mnt/x", "/net/host/share"] {
            assert!(not_measured(&mounts, Path::new(hung)).is_some(), "{hung}");
            assert!(usage_among(&mounts, Path::new(hung)).is_none(), "{hung}");
        }
        assert!(not_measured(&mounts, Path::new("/var/lib/app")).is_none());
    }

    #[test]
    fn a_local_path_is_measured_with_its_mount() {
        let usage = usage(Path::new("/")).expect("/ is measured");
        assert_eq!(usage.mount, PathBuf::from("/"));
        assert!(usage.size_bytes > 0);
    }

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
