//! `database_check`: the files a service's data lives in. A missing file is escalated (data is
//! never invented); a wrong owner, group or mode is fixed; a missing or misdirected symlink is
//! recreated. After any fix the service is restarted and verified, and every change is listed.
//!
//! Files are changed through a descriptor opened with O_NOFOLLOW: a symlink planted in place
//! of a data file cannot redirect a root chown/chmod to another file.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{Attempt, Context, StepResult, Strategy, then_restart};
use crate::config::{FileExpectation, SymlinkExpectation, parse_mode};

pub struct DatabaseCheck;

/// What is wrong with one expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Finding {
    /// Only a person can fix this.
    Blocker(String),
    /// selfheal can fix this: the change, in words.
    Fixable(Fix),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Fix {
    Chown {
        path: PathBuf,
        uid: Option<u32>,
        gid: Option<u32>,
        what: String,
    },
    Chmod {
        path: PathBuf,
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
            Fix::Chmod { path, mode, was } => {
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
                detail.push_str(&format!(
                    "; also wrong, left for after that: {}",
                    pending.join(", ")
                ));
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

/// Opens `path` itself, never what a symlink there points to.
fn open_no_follow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

fn check_file(expected: &FileExpectation) -> Vec<Finding> {
    let path = &expected.path;
    let shown = path.display();
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return vec![Finding::Blocker(format!(
                "{shown} is missing; selfheal never creates data files: restore it (e.g. from backup)"
            ))];
        }
        Err(err) => return vec![Finding::Blocker(format!("cannot inspect {shown}: {err}"))],
    };
    if metadata.file_type().is_symlink() {
        return vec![Finding::Blocker(format!(
            "{shown} is a symlink; selfheal does not change files through symlinks (list it under `symlinks:` instead)"
        ))];
    }
    let mut findings = Vec::new();
    let uid = match expected.owner.as_deref().map(user_id).transpose() {
        Ok(uid) => uid,
        Err(why) => return vec![Finding::Blocker(why)],
    };
    let gid = match expected.group.as_deref().map(group_id).transpose() {
        Ok(gid) => gid,
        Err(why) => return vec![Finding::Blocker(why)],
    };
    let wrong_uid = uid.filter(|uid| *uid != metadata.uid());
    let wrong_gid = gid.filter(|gid| *gid != metadata.gid());
    if wrong_uid.is_some() || wrong_gid.is_some() {
        let what = match (&expected.owner, &expected.group) {
            (Some(owner), Some(group)) => format!("{owner}:{group}"),
            (Some(owner), None) => owner.clone(),
            (None, Some(group)) => format!(":{group}"),
            (None, None) => unreachable!("a wrong id needs an expected one"),
        };
        findings.push(Finding::Fixable(Fix::Chown {
            path: path.clone(),
            uid: wrong_uid,
            gid: wrong_gid,
            what: format!("{what} (was {}:{})", metadata.uid(), metadata.gid()),
        }));
    }
    if let Some(mode) = expected.mode.as_deref().and_then(|m| parse_mode(m).ok()) {
        let current = metadata.permissions().mode() & 0o7777;
        // chown clears set-id bits, so a chown alone may also make the mode wrong: compare
        // with what chmod must leave, and chmod after chown either way.
        if current != mode || (!findings.is_empty() && mode & 0o6000 != 0) {
            findings.push(Finding::Fixable(Fix::Chmod {
                path: path.clone(),
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
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_symlink() => {
            let current = std::fs::read_link(path).ok()?;
            (current != expected.target).then(|| {
                Finding::Fixable(Fix::Symlink {
                    path: path.clone(),
                    target: expected.target.clone(),
                    was: Some(current),
                })
            })
        }
        Ok(_) => Some(Finding::Blocker(format!(
            "{shown} should be a symlink to {} but is a real file or directory; selfheal does not replace it",
            expected.target.display()
        ))),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let parent = path.parent().unwrap_or(Path::new("/"));
            if !parent.is_dir() {
                return Some(Finding::Blocker(format!(
                    "{shown} is missing and so is its directory {}",
                    parent.display()
                )));
            }
            Some(Finding::Fixable(Fix::Symlink {
                path: path.clone(),
                target: expected.target.clone(),
                was: None,
            }))
        }
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
    match fix {
        Fix::Chown { path, uid, gid, .. } => {
            std::os::unix::fs::fchown(open_no_follow(path)?, *uid, *gid)
        }
        Fix::Chmod { path, mode, .. } => {
            open_no_follow(path)?.set_permissions(std::fs::Permissions::from_mode(*mode))
        }
        Fix::Symlink { path, target, .. } => {
            // Build the link beside the old one and rename it into place: the path is never
            // missing for a reader, and a crash leaves either the old link or the new one.
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let temporary = path.with_file_name(format!(".{name}.selfheal-{}", std::process::id()));
            let _ = std::fs::remove_file(&temporary);
            std::os::unix::fs::symlink(target, &temporary)?;
            std::fs::rename(&temporary, path).inspect_err(|_| {
                let _ = std::fs::remove_file(&temporary);
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &Path, mode: Option<&str>) -> FileExpectation {
        FileExpectation {
            path: path.to_owned(),
            owner: Some("root".into()),
            group: None,
            mode: mode.map(str::to_owned),
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
        let fix = Fix::Chmod {
            path: planted,
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
}
