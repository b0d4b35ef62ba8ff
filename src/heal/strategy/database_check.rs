//! `database_check`: the files a service's data lives in. A missing file is escalated (data is
//! never invented); a wrong owner, group or mode is fixed; a missing or misdirected symlink is
//! recreated. After any fix the service is restarted and verified, and every change is listed.
//!
//! Every configured path is resolved with no symlink in any component (`crate::host::nofollow`):
//! a service user who owns a parent directory cannot redirect a root chown, chmod or link
//! creation by swapping a directory for a symlink. A file is changed only through a
//! descriptor that `fstat` shows to be the regular, singly linked file that was inspected.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::{FileStat, SFlag};

use super::{Attempt, Context, StepResult, Strategy, then_restart};
use crate::config::ServiceConfig;
use crate::config::strategies::{FileExpectation, FileMode, SymlinkExpectation};
use crate::host::nofollow::{self, Parent, PathError, file_type};

pub(super) struct DatabaseCheck;

/// What is wrong with one expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Finding {
    /// Only a person can fix this.
    Blocker(String),
    /// selfheal can fix this: the change, in words.
    Fixable(Fix),
}

/// The device and inode a file had when it was inspected: a fix applies only to that file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
}

impl Identity {
    fn of(stat: &FileStat) -> Identity {
        Identity {
            dev: stat.st_dev,
            ino: stat.st_ino,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Fix {
    Chown {
        path: PathBuf,
        identity: Identity,
        uid: Option<u32>,
        gid: Option<u32>,
        what: String,
    },
    Chmod {
        path: PathBuf,
        identity: Identity,
        mode: u32,
        was: u32,
    },
    Symlink {
        path: PathBuf,
        target: PathBuf,
        was: Option<PathBuf>,
    },
}

impl Fix {
    fn describe(&self) -> String {
        match self {
            Fix::Chown { path, what, .. } => format!("chown {what} {}", path.display()),
            Fix::Chmod {
                path, mode, was, ..
            } => {
                format!("chmod {mode:04o} {} (was {was:04o})", path.display())
            }
            Fix::Symlink {
                path,
                target,
                was: None,
            } => format!(
                "ln -s {} {} (was missing)",
                target.display(),
                path.display()
            ),
            Fix::Symlink {
                path,
                target,
                was: Some(old),
            } => format!(
                "ln -sfn {} {} (pointed to {})",
                target.display(),
                path.display(),
                old.display()
            ),
        }
    }
}

impl Strategy for DatabaseCheck {
    fn preflight(&self, service: &ServiceConfig) -> Vec<String> {
        let Some(settings) = &service.database_check else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        for file in &settings.files {
            let at = |why: String| format!("database_check.files: {}: {why}", file.path.display());
            if let Some(Err(why)) = file.owner.as_deref().map(user_id) {
                problems.push(at(why));
            }
            if let Some(Err(why)) = file.group.as_deref().map(group_id) {
                problems.push(at(why));
            }
        }
        problems
    }

    fn attempt(&self, context: &Context<'_>) -> Attempt {
        let Some(settings) = context.service.database_check.as_ref() else {
            return Attempt::new(
                StepResult::NotApplicable,
                "check data files",
                "no files configured",
            );
        };
        let action = format!(
            "check {} file(s) and {} symlink(s)",
            settings.files.len(),
            settings.symlinks.len()
        );
        let mut findings: Vec<Finding> = settings.files.iter().flat_map(check_file).collect();
        findings.extend(settings.symlinks.iter().filter_map(check_symlink));

        let blockers: Vec<&str> = findings
            .iter()
            .filter_map(|f| match f {
                Finding::Blocker(why) => Some(why.as_str()),
                Finding::Fixable(_) => None,
            })
            .collect();
        let fixes: Vec<&Fix> = findings
            .iter()
            .filter_map(|f| match f {
                Finding::Fixable(fix) => Some(fix),
                Finding::Blocker(_) => None,
            })
            .collect();
        if !blockers.is_empty() {
            let mut detail = blockers.join("; ");
            if !fixes.is_empty() {
                let pending: Vec<String> = fixes.iter().map(|f| f.describe()).collect();
                detail = format!(
                    "{detail}; also wrong, left for after that: {}",
                    pending.join(", ")
                );
            }
            return Attempt::new(StepResult::NeedsHuman, action, detail);
        }
        if fixes.is_empty() {
            return Attempt::new(
                StepResult::NotApplicable,
                action,
                "every file and symlink is as configured",
            );
        }

        let found = format!("{} thing(s) to fix", fixes.len());
        if context.dry_run {
            let changes = fixes.iter().map(|f| f.describe()).collect();
            return then_restart(context, "fix files", &found, changes);
        }
        let mut changes = Vec::new();
        for fix in fixes {
            if let Err(err) = apply(fix) {
                return Attempt::new(
                    StepResult::NeedsHuman,
                    action,
                    format!("{} failed: {err}", fix.describe()),
                )
                .with_changes(changes);
            }
            tracing::info!("database_check: {}", fix.describe());
            changes.push(fix.describe());
        }
        then_restart(context, "fix files", &found, changes)
    }
}

/// A configured path that cannot be resolved safely is a finding for a person.
fn path_blocker(err: &PathError) -> Finding {
    Finding::Blocker(match err {
        PathError::Missing(dir) => format!("{} is missing", dir.display()),
        other => other.to_string(),
    })
}

/// Why a file that exists is not one selfheal may change, if it is not.
fn unchangeable(stat: &FileStat, shown: &str) -> Option<String> {
    let kind = file_type(stat);
    if kind == SFlag::S_IFLNK {
        return Some(format!(
            "{shown} is a symlink; selfheal does not change files through symlinks (list it under `symlinks:` instead)"
        ));
    }
    if kind != SFlag::S_IFREG {
        return Some(format!(
            "{shown} is not a regular file; selfheal leaves it alone"
        ));
    }
    if stat.st_nlink != 1 {
        return Some(format!(
            "{shown} has {} hard links; selfheal changes only a file with a single name (another name may be a file of someone else's)",
            stat.st_nlink
        ));
    }
    None
}

fn check_file(expected: &FileExpectation) -> Vec<Finding> {
    let path = &expected.path;
    let shown = path.display().to_string();
    let parent = match nofollow::open_parent(path) {
        Ok(parent) => parent,
        Err(err) => return vec![path_blocker(&err)],
    };
    let stat = match parent.lstat() {
        Ok(Some(stat)) => stat,
        Ok(None) => {
            return vec![Finding::Blocker(format!(
                "{shown} is missing; selfheal never creates data files: restore it (e.g. from backup)"
            ))];
        }
        Err(err) => return vec![Finding::Blocker(format!("cannot inspect {shown}: {err}"))],
    };
    if let Some(why) = unchangeable(&stat, &shown) {
        return vec![Finding::Blocker(why)];
    }
    let identity = Identity::of(&stat);
    let mut findings = Vec::new();
    let uid = match expected.owner.as_deref().map(user_id).transpose() {
        Ok(uid) => uid,
        Err(why) => return vec![Finding::Blocker(why)],
    };
    let gid = match expected.group.as_deref().map(group_id).transpose() {
        Ok(gid) => gid,
        Err(why) => return vec![Finding::Blocker(why)],
    };
    let wrong_uid = uid.filter(|uid| *uid != stat.st_uid);
    let wrong_gid = gid.filter(|gid| *gid != stat.st_gid);
    if wrong_uid == Some(0) {
        // Content another user wrote (and may still hold open) does not become root's.
        return vec![Finding::Blocker(format!(
            "{shown} belongs to uid {} but should belong to root; selfheal does not hand a file another user wrote to root",
            stat.st_uid
        ))];
    }
    if wrong_uid.is_some() || wrong_gid.is_some() {
        let what = match (&expected.owner, &expected.group) {
            (Some(owner), Some(group)) => format!("{owner}:{group}"),
            (Some(owner), None) => owner.clone(),
            (None, Some(group)) => format!(":{group}"),
            (None, None) => unreachable!("a wrong id needs an expected one"),
        };
        findings.push(Finding::Fixable(Fix::Chown {
            path: path.clone(),
            identity,
            uid: wrong_uid,
            gid: wrong_gid,
            what: format!("{what} (was {}:{})", stat.st_uid, stat.st_gid),
        }));
    }
    if let Some(FileMode(mode)) = expected.mode {
        let current = stat.st_mode & 0o7777;
        if current != mode {
            findings.push(Finding::Fixable(Fix::Chmod {
                path: path.clone(),
                identity,
                mode,
                was: current,
            }));
        }
    }
    findings
}

fn check_symlink(expected: &SymlinkExpectation) -> Option<Finding> {
    let path = &expected.path;
    let shown = path.display();
    let parent = match nofollow::open_parent(path) {
        Ok(parent) => parent,
        Err(PathError::Missing(dir)) => {
            return Some(Finding::Blocker(format!(
                "{shown} is missing and so is its directory {}",
                dir.display()
            )));
        }
        Err(err) => return Some(path_blocker(&err)),
    };
    match parent.lstat() {
        Ok(Some(stat)) if file_type(&stat) == SFlag::S_IFLNK => {
            let current = match parent.read_link() {
                Ok(current) => current,
                Err(err) => {
                    return Some(Finding::Blocker(format!(
                        "cannot read the link {shown}: {err}"
                    )));
                }
            };
            (current != expected.target).then(|| {
                Finding::Fixable(Fix::Symlink {
                    path: path.clone(),
                    target: expected.target.clone(),
                    was: Some(current),
                })
            })
        }
        Ok(Some(_)) => Some(Finding::Blocker(format!(
            "{shown} should be a symlink to {} but is a real file or directory; selfheal does not replace it",
            expected.target.display()
        ))),
        Ok(None) => Some(Finding::Fixable(Fix::Symlink {
            path: path.clone(),
            target: expected.target.clone(),
            was: None,
        })),
        Err(err) => Some(Finding::Blocker(format!("cannot inspect {shown}: {err}"))),
    }
}

fn user_id(name: &str) -> Result<u32, String> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(format!("user {name:?} does not exist on this host")),
        Err(err) => Err(format!("cannot look up user {name:?}: {err}")),
    }
}

fn group_id(name: &str) -> Result<u32, String> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(format!("group {name:?} does not exist on this host")),
        Err(err) => Err(format!("cannot look up group {name:?}: {err}")),
    }
}

fn apply(fix: &Fix) -> io::Result<()> {
    let parent = |path: &Path| nofollow::open_parent(path).map_err(io::Error::other);
    match fix {
        Fix::Chown {
            path,
            identity,
            uid,
            gid,
            ..
        } => std::os::unix::fs::fchown(open_inspected(&parent(path)?, *identity)?, *uid, *gid),
        Fix::Chmod {
            path,
            identity,
            mode,
            ..
        } => open_inspected(&parent(path)?, *identity)?
            .set_permissions(std::fs::Permissions::from_mode(*mode)),
        Fix::Symlink { path, target, .. } => parent(path)?.replace_with_symlink(target),
    }
}

/// Opens the file to change and proves through its descriptor that it is still the regular,
/// singly linked file that was inspected.
fn open_inspected(parent: &Parent, identity: Identity) -> io::Result<std::fs::File> {
    let file = parent.open_file()?;
    let stat = nix::sys::stat::fstat(&file)?;
    let shown = parent.path().display().to_string();
    if let Some(why) = unchangeable(&stat, &shown) {
        return Err(io::Error::other(why));
    }
    if Identity::of(&stat) != identity {
        return Err(io::Error::other(format!(
            "{shown} was replaced since it was inspected; left alone"
        )));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &Path, mode: Option<&str>) -> FileExpectation {
        FileExpectation {
            path: path.to_owned(),
            owner: Some("root".into()),
            group: None,
            mode: mode.map(|m| FileMode::parse(m).unwrap()),
        }
    }

    #[test]
    fn a_missing_file_is_a_blocker_and_is_never_created() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("app.db");
        let findings = check_file(&file(&missing, Some("0640")));
        assert!(matches!(&findings[..], [Finding::Blocker(why)] if why.contains("missing")));
        assert!(!missing.exists());
    }

    #[test]
    fn a_wrong_mode_is_found_and_fixed_through_the_file_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        std::fs::write(&path, "data").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let findings = check_file(&file(&path, Some("0640")));
        let [Finding::Fixable(fix)] = &findings[..] else {
            panic!("{findings:?}")
        };
        assert_eq!(
            fix.describe(),
            format!("chmod 0640 {} (was 0600)", path.display())
        );
        apply(fix).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        assert!(check_file(&file(&path, Some("0640"))).is_empty());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "data");
    }

    #[test]
    fn a_symlink_in_place_of_a_file_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        let planted = dir.path().join("app.db");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let findings = check_file(&file(&planted, Some("0666")));
        assert!(matches!(&findings[..], [Finding::Blocker(why)] if why.contains("symlink")));
        // Even a fix computed earlier cannot go through the link.
        let stat = nix::sys::stat::stat(&victim).unwrap();
        let fix = Fix::Chmod {
            path: planted,
            identity: Identity::of(&stat),
            mode: 0o666,
            was: 0o600,
        };
        assert!(apply(&fix).is_err());
        let mode = std::fs::metadata(&victim).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn symlinks_are_recreated_or_redirected_but_files_are_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("data.db");
        let link = dir.path().join("current.db");
        let expected = SymlinkExpectation {
            path: link.clone(),
            target: target.clone(),
        };
        let Some(Finding::Fixable(fix)) = check_symlink(&expected) else {
            panic!("a missing link is fixable")
        };
        apply(&fix).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), target);
        assert_eq!(check_symlink(&expected), None);

        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("/elsewhere", &link).unwrap();
        let Some(Finding::Fixable(fix)) = check_symlink(&expected) else {
            panic!("a misdirected link is fixable")
        };
        assert!(fix.describe().contains("pointed to /elsewhere"));
        apply(&fix).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), target);

        std::fs::remove_file(&link).unwrap();
        std::fs::write(&link, "real data").unwrap();
        assert!(matches!(
            check_symlink(&expected),
            Some(Finding::Blocker(_))
        ));
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "real data");
    }

    #[test]
    fn an_unknown_owner_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        std::fs::write(&path, "").unwrap();
        let mut expected = file(&path, None);
        expected.owner = Some("no-such-user-selfheal".into());
        let findings = check_file(&expected);
        assert!(
            matches!(&findings[..], [Finding::Blocker(why)] if why.contains("no-such-user-selfheal"))
        );
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    /// `/srv/app` owned by the app user: it swaps `data/` for a symlink to a root directory.
    #[test]
    fn a_symlinked_parent_directory_cannot_redirect_a_root_chmod() {
        let dir = tempfile::tempdir().unwrap();
        let victim_dir = dir.path().join("etc");
        std::fs::create_dir(&victim_dir).unwrap();
        let victim = victim_dir.join("app.db");
        std::fs::write(&victim, "secret").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::create_dir(dir.path().join("app")).unwrap();
        std::os::unix::fs::symlink(&victim_dir, dir.path().join("app/data")).unwrap();
        let configured = dir.path().join("app/data/app.db");

        let findings = check_file(&file(&configured, Some("0666")));
        assert!(
            matches!(&findings[..], [Finding::Blocker(why)] if why.contains("app/data is a symlink")),
            "{findings:?}"
        );
        // A fix computed before the swap is refused as well.
        let fix = Fix::Chmod {
            path: configured,
            identity: Identity::of(&nix::sys::stat::stat(&victim).unwrap()),
            mode: 0o666,
            was: 0o600,
        };
        assert!(apply(&fix).is_err());
        assert_eq!(mode_of(&victim), 0o600);
    }

    #[test]
    fn a_symlinked_parent_directory_cannot_redirect_link_creation() {
        let dir = tempfile::tempdir().unwrap();
        let root_only = dir.path().join("root-only");
        std::fs::create_dir(&root_only).unwrap();
        std::os::unix::fs::symlink(&root_only, dir.path().join("current")).unwrap();
        let expected = SymlinkExpectation {
            path: dir.path().join("current/app.db"),
            target: dir.path().join("data/app.db"),
        };
        assert!(
            matches!(check_symlink(&expected), Some(Finding::Blocker(why)) if why.contains("is a symlink")),
        );
        let fix = Fix::Symlink {
            path: expected.path.clone(),
            target: expected.target.clone(),
            was: None,
        };
        assert!(apply(&fix).is_err());
        assert_eq!(std::fs::read_dir(&root_only).unwrap().count(), 0);
    }

    #[test]
    fn a_hard_linked_file_is_not_changed() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("shadow");
        std::fs::write(&other, "x").unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
        let configured = dir.path().join("app.db");
        std::fs::hard_link(&other, &configured).unwrap();
        let findings = check_file(&file(&configured, Some("0644")));
        assert!(
            matches!(&findings[..], [Finding::Blocker(why)] if why.contains("2 hard links")),
            "{findings:?}"
        );
        assert_eq!(mode_of(&other), 0o600);
    }

    #[test]
    fn a_file_replaced_after_inspection_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let configured = dir.path().join("app.db");
        std::fs::write(&configured, "old").unwrap();
        std::fs::set_permissions(&configured, std::fs::Permissions::from_mode(0o600)).unwrap();
        let findings = check_file(&file(&configured, Some("0640")));
        let [Finding::Fixable(fix)] = &findings[..] else {
            panic!("{findings:?}")
        };
        let replacement = dir.path().join("new");
        std::fs::write(&replacement, "new").unwrap();
        std::fs::set_permissions(&replacement, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::rename(&replacement, &configured).unwrap();
        let err = apply(fix).unwrap_err();
        assert!(
            err.to_string().contains("replaced since it was inspected"),
            "{err}"
        );
        assert_eq!(mode_of(&configured), 0o600);
    }

    #[test]
    fn set_id_modes_are_refused_when_the_config_is_read() {
        for mode in ["4755", "2750", "6777"] {
            let err = FileMode::parse(mode).unwrap_err();
            assert!(err.contains("setuid/setgid"), "{err}");
        }
        assert_eq!(FileMode::parse("0640"), Ok(FileMode(0o640)));
    }

    #[test]
    fn a_file_another_user_wrote_is_not_handed_to_root() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        std::fs::write(&path, "attacker content").unwrap();
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        } else {
            return;
        }
        let findings = check_file(&file(&path, None));
        assert!(
            matches!(&findings[..], [Finding::Blocker(why)] if why.contains("does not hand a file another user wrote to root")),
            "{findings:?}"
        );
        assert_eq!(
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&path).unwrap()),
            65534
        );
    }
}
