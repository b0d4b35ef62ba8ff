//! Configured paths resolved component by component, following no symlink anywhere.
//!
//! selfheal runs as root and changes files that live in directories a service user often
//! owns (`/srv/app` owned by `app`). `O_NOFOLLOW` guards only the last component: a user who
//! swaps `/srv/app/data` for a symlink to `/etc` would otherwise make root chown, chmod or
//! link in `/etc`. Here every directory on the way is opened with `O_PATH | O_NOFOLLOW |
//! O_DIRECTORY` relative to the one before, so a symlink anywhere is refused, and the last
//! component is then inspected and changed relative to that directory's descriptor. This
//! works on every kernel (unlike `openat2`'s `RESOLVE_NO_SYMLINKS`, Linux 5.6+).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

/// Why a configured path cannot be used as it is.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error(
        "{0} is a symlink; selfheal follows no symlink in a configured path (configure the real path)"
    )]
    Symlink(PathBuf),
    #[error("{0} is missing")]
    Missing(PathBuf),
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("{0} is not an absolute path without `..`")]
    NotPlain(PathBuf),
    #[error("cannot open {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// The directory that holds a path's last component, reached without following a symlink,
/// and that last component's name.
#[derive(Debug)]
pub(crate) struct Parent {
    dir: OwnedFd,
    name: OsString,
    path: PathBuf,
}

/// Opens the directory holding `path`'s last component. Every component on the way must be
/// a real directory.
pub(crate) fn open_parent(path: &Path) -> Result<Parent, PathError> {
    let not_plain = || PathError::NotPlain(path.to_owned());
    let mut components = path.components();
    if components.next() != Some(Component::RootDir) {
        return Err(not_plain());
    }
    let mut names = Vec::new();
    for component in components {
        match component {
            Component::Normal(name) => names.push(name),
            Component::CurDir => {}
            _ => return Err(not_plain()),
        }
    }
    let name = names.pop().ok_or_else(not_plain)?.to_owned();
    let mut dir =
        nix::fcntl::open("/", directory_flags(), Mode::empty()).map_err(|errno| PathError::Io {
            path: "/".into(),
            source: errno.into(),
        })?;
    let mut reached = PathBuf::from("/");
    for component in names {
        reached.push(component);
        dir = open_directory_in(&dir, component, &reached)?;
    }
    Ok(Parent {
        dir,
        name,
        path: path.to_owned(),
    })
}

fn directory_flags() -> OFlag {
    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

fn open_directory_in(dir: &OwnedFd, name: &OsStr, shown: &Path) -> Result<OwnedFd, PathError> {
    match nix::fcntl::openat(dir, name, directory_flags(), Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::ENOENT) => Err(PathError::Missing(shown.to_owned())),
        // O_NOFOLLOW | O_DIRECTORY on a symlink: ELOOP or ENOTDIR; tell the two apart.
        Err(Errno::ENOTDIR | Errno::ELOOP) => {
            match nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(stat) if file_type(&stat) == SFlag::S_IFLNK => {
                    Err(PathError::Symlink(shown.to_owned()))
                }
                _ => Err(PathError::NotADirectory(shown.to_owned())),
            }
        }
        Err(errno) => Err(PathError::Io {
            path: shown.to_owned(),
            source: errno.into(),
        }),
    }
}

/// The type bits of a stat (`S_IFREG`, `S_IFLNK`, …).
pub(crate) fn file_type(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits())
}

impl Parent {
    /// The whole configured path, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `lstat` of the last component; `None` when it does not exist.
    pub(crate) fn lstat(&self) -> io::Result<Option<FileStat>> {
        match nix::sys::stat::fstatat(
            &self.dir,
            self.name.as_os_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(stat) => Ok(Some(stat)),
            Err(Errno::ENOENT) => Ok(None),
            Err(errno) => Err(errno.into()),
        }
    }

    /// Opens the last component read-only: never through a symlink, never blocking on a FIFO,
    /// never becoming a controlling terminal. The caller `fstat`s what it got.
    pub(crate) fn open_file(&self) -> io::Result<File> {
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(&self.dir, self.name.as_os_str(), flags, Mode::empty())?;
        Ok(File::from(fd))
    }

    /// Where the symlink that is the last component points.
    pub(crate) fn read_link(&self) -> io::Result<PathBuf> {
        Ok(nix::fcntl::readlinkat(&self.dir, self.name.as_os_str())?.into())
    }

    /// Makes the last component a symlink to `target`: built under a temporary name in the
    /// same directory and renamed into place, so a reader sees the old link or the new one.
    /// When the name was missing it must still be missing (`RENAME_NOREPLACE`); otherwise it
    /// must still be a symlink: a real file is never replaced.
    pub(crate) fn replace_with_symlink(&self, target: &Path) -> io::Result<()> {
        let existed = match self.lstat()? {
            None => false,
            Some(stat) if file_type(&stat) == SFlag::S_IFLNK => true,
            Some(_) => {
                return Err(io::Error::other(format!(
                    "{} is no longer a symlink; left alone",
                    self.path.display()
                )));
            }
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut temporary = OsString::from(".");
        temporary.push(&self.name);
        temporary.push(format!(".selfheal-{}-{nanos}", std::process::id()));
        nix::unistd::symlinkat(target, &self.dir, temporary.as_os_str())?;
        let flags = if existed {
            nix::fcntl::RenameFlags::empty()
        } else {
            nix::fcntl::RenameFlags::RENAME_NOREPLACE
        };
        nix::fcntl::renameat2(
            &self.dir,
            temporary.as_os_str(),
            &self.dir,
            self.name.as_os_str(),
            flags,
        )
        .map_err(|errno| {
            let _ = nix::unistd::unlinkat(
                &self.dir,
                temporary.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
            io::Error::from(errno)
        })
    }

    /// Replaces the last component with a regular file holding `bytes` (mode `mode`), written
    /// under a temporary name in the same directory and renamed into place, all relative to
    /// the directory's descriptor: a directory swapped for a symlink after the check cannot
    /// redirect the write. A symlink at the name itself is replaced, never followed.
    pub(crate) fn replace_file(&self, bytes: &[u8], mode: u32) -> io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::PermissionsExt as _;
        let mut temporary = OsString::from(".");
        temporary.push(&self.name);
        temporary.push(format!(".tmp{}", std::process::id()));
        // A leftover of a run killed with this PID long ago; ours to replace.
        let _ = nix::unistd::unlinkat(
            &self.dir,
            temporary.as_os_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(
            &self.dir,
            temporary.as_os_str(),
            flags,
            Mode::from_bits_truncate(mode),
        )?;
        let mut file = File::from(fd);
        let remove = || {
            let _ = nix::unistd::unlinkat(
                &self.dir,
                temporary.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        };
        let written = file
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .and_then(|()| file.write_all(bytes))
            .and_then(|()| file.sync_all())
            .and_then(|()| {
                nix::fcntl::renameat(
                    &self.dir,
                    temporary.as_os_str(),
                    &self.dir,
                    self.name.as_os_str(),
                )
                .map_err(io::Error::from)
            });
        if written.is_err() {
            remove();
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_through_its_directory_and_never_through_a_swapped_one() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("textfile");
        std::fs::create_dir(&real).unwrap();
        let parent = open_parent(&real.join("selfheal.prom")).unwrap();
        parent.replace_file(b"one\n", 0o644).unwrap();
        assert_eq!(
            std::fs::read_to_string(real.join("selfheal.prom")).unwrap(),
            "one\n"
        );
        // The directory is swapped for a symlink to a root-only place after it was opened:
        // the write still lands in the directory that was opened, never in the other one.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let moved = dir.path().join("moved");
        std::fs::rename(&real, &moved).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &real).unwrap();
        parent.replace_file(b"two\n", 0o644).unwrap();
        assert!(!elsewhere.join("selfheal.prom").exists());
        assert_eq!(
            std::fs::read_to_string(moved.join("selfheal.prom")).unwrap(),
            "two\n"
        );
        // Opened anew, the symlinked directory is refused.
        assert!(matches!(
            open_parent(&real.join("selfheal.prom")),
            Err(PathError::Symlink(_))
        ));
    }

    #[test]
    fn a_symlink_anywhere_on_the_way_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("file"), "x").unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();

        let through_link = dir.path().join("link/file");
        assert!(matches!(
            open_parent(&through_link),
            Err(PathError::Symlink(at)) if at == dir.path().join("link")
        ));
        let direct = open_parent(&real.join("file")).unwrap();
        assert!(direct.lstat().unwrap().is_some());
    }

    #[test]
    fn relative_paths_and_dot_dot_are_refused() {
        for path in ["relative/file", "/tmp/../etc/passwd", "/"] {
            assert!(
                matches!(open_parent(Path::new(path)), Err(PathError::NotPlain(_))),
                "{path}"
            );
        }
    }

    #[test]
    fn a_missing_or_non_directory_component_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), "x").unwrap();
        assert!(matches!(
            open_parent(&dir.path().join("nope/x")),
            Err(PathError::Missing(at)) if at == dir.path().join("nope")
        ));
        assert!(matches!(
            open_parent(&dir.path().join("file/x")),
            Err(PathError::NotADirectory(at)) if at == dir.path().join("file")
        ));
    }

    #[test]
    fn a_real_file_is_never_replaced_by_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("current.db");
        std::fs::write(&path, "real data").unwrap();
        let parent = open_parent(&path).unwrap();
        assert!(
            parent
                .replace_with_symlink(Path::new("/elsewhere"))
                .is_err()
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "real data");
        // Nothing is left behind in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
