//! `environment_check`: the service's env file must exist and define every required key with a
//! non-empty value; otherwise a person has to supply the secret. Only key names are ever kept:
//! values are dropped as the file is parsed, so no report, log or history record can carry one.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::{Attempt, Context, StepResult, Strategy};
use crate::host::bounded_read;

pub(super) struct EnvironmentCheck;

/// An env file to check, and whether the unit tolerates it missing (`EnvironmentFile=-…`).
#[derive(Debug)]
struct EnvFile {
    path: PathBuf,
    optional: bool,
}

impl Strategy for EnvironmentCheck {
    fn attempt(&self, context: &Context<'_>) -> Attempt {
        let settings = context
            .service
            .environment_check
            .clone()
            .unwrap_or_default();
        let files: Vec<EnvFile> = match &settings.file {
            Some(path) => vec![EnvFile {
                path: path.clone(),
                optional: false,
            }],
            None => context
                .snapshot
                .environment_files
                .iter()
                .map(|(path, optional)| EnvFile {
                    path: PathBuf::from(path),
                    optional: *optional,
                })
                .collect(),
        };
        let action = "check the environment file".to_owned();
        if files.is_empty() {
            return if settings.required.is_empty() {
                Attempt::new(
                    StepResult::NotApplicable,
                    action,
                    "no env file configured and the unit has no EnvironmentFile=",
                )
            } else {
                Attempt::new(
                    StepResult::NeedsHuman,
                    action,
                    format!(
                        "{} required but there is no env file: set environment_check.file or the unit's EnvironmentFile=",
                        settings.required.join(", ")
                    ),
                )
            };
        }

        let mut problems = Vec::new();
        let mut defined = BTreeSet::new();
        let mut checked = Vec::new();
        for file in &files {
            let shown = file.path.display();
            // Opened once, non-blocking, capped and with no symlink anywhere on the way: a FIFO,
            // /dev/zero or a swapped directory planted by the service user cannot hang the run
            // (which holds the service's lock), eat memory or show root another file.
            match bounded_read::read_no_symlinks(&file.path, bounded_read::MAX_FILE_BYTES) {
                Ok((bytes, _)) => {
                    defined.extend(keys_with_values(&bytes));
                    checked.push(shown.to_string());
                }
                Err(err) if err.is_not_found() && file.optional => {}
                Err(err) if err.is_not_found() => {
                    problems.push(format!("env file {shown} is missing"));
                }
                // The error says only what failed, never the file's content.
                Err(err) => problems.push(format!("env file {shown} is not readable: {err}")),
            }
        }
        let missing: Vec<&str> = settings
            .required
            .iter()
            .map(String::as_str)
            .filter(|key| !defined.contains(*key))
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "missing or empty in {}: {}",
                if checked.is_empty() {
                    "the env file".to_owned()
                } else {
                    checked.join(", ")
                },
                missing.join(", ")
            ));
        }
        if problems.is_empty() {
            Attempt::new(
                StepResult::NotApplicable,
                action,
                format!(
                    "{} define(s) all {} required key(s)",
                    checked.join(", "),
                    settings.required.len()
                ),
            )
        } else {
            Attempt::new(StepResult::NeedsHuman, action, problems.join("; "))
        }
    }
}

/// The names of the keys that have a non-empty value, in systemd's EnvironmentFile= syntax:
/// `KEY=VALUE` lines, `#`/`;` comments, optional quotes, backslash continuations. The values
/// are looked at only to see whether they are empty.
pub(crate) fn keys_with_values(bytes: &[u8]) -> BTreeSet<String> {
    entries(bytes).into_iter().map(|(key, _)| key).collect()
}

/// The values of `environment_check.required` keys in the service's env files: secrets, as
/// far as a report is concerned (evidence hides them from the command lines it shows).
pub(crate) fn required_values(
    service: &crate::config::ServiceConfig,
    snapshot: &crate::systemd::UnitSnapshot,
) -> Vec<String> {
    let Some(settings) = &service.environment_check else {
        return Vec::new();
    };
    let files: Vec<PathBuf> = match &settings.file {
        Some(path) => vec![path.clone()],
        None => snapshot
            .environment_files
            .iter()
            .map(|(path, _)| PathBuf::from(path))
            .collect(),
    };
    files
        .iter()
        .filter_map(|file| bounded_read::read_no_symlinks(file, bounded_read::MAX_FILE_BYTES).ok())
        .flat_map(|(bytes, _)| entries(&bytes))
        .filter(|(key, _)| settings.required.contains(key))
        .map(|(_, value)| value)
        .collect()
}

/// The `KEY=VALUE` entries with a non-empty value, unquoted.
fn entries(bytes: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(bytes);
    let mut keys = Vec::new();
    let mut logical = String::new();
    for line in text.lines() {
        if let Some(continued) = line.strip_suffix('\\') {
            logical.push_str(continued);
            continue;
        }
        logical.push_str(line);
        let entry = std::mem::take(&mut logical);
        let entry = entry.trim();
        if entry.is_empty() || entry.starts_with('#') || entry.starts_with(';') {
            continue;
        }
        let Some((key, value)) = entry.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let valid_key = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let value = value.trim();
        let unquoted = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        if valid_key && !unquoted.trim().is_empty() {
            keys.push((key.to_owned(), unquoted.to_owned()));
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_with_values_only() {
        let file = b"# comment\n; also a comment\nDATABASE_URL=postgres://u:p@h/db\nSECRET_KEY=\nEMPTY_QUOTED=\"\"\n  SPACED = x \nMULTI=a\\\nb\nQUOTED='s3cret'\nexport EXPORTED=1\n1BAD=x\nno_equals\n";
        let keys = keys_with_values(file);
        assert_eq!(
            keys.into_iter().collect::<Vec<_>>(),
            ["DATABASE_URL", "MULTI", "QUOTED", "SPACED"]
        );
    }

    #[test]
    fn later_lines_are_read_after_a_continuation() {
        let keys = keys_with_values(b"A=1\\\n\nB=2\n");
        assert!(keys.contains("A") && keys.contains("B"), "{keys:?}");
    }
}
