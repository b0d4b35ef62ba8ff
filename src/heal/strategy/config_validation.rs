//! `config_validation`: run the service's own config checker (`nginx -t`, `apachectl
//! configtest`, …) before starting it again. A valid config → restart + verify; an invalid
//! one → escalate with the checker's output, without another start: restarting a service on
//! a broken config only feeds a restart loop.

use std::time::Duration;

use super::{Attempt, Context, StepResult, Strategy, restart_and_verify, then_restart};
use crate::config::ServiceConfig;
use crate::host::process;

pub(super) struct ConfigValidation;

/// Most of a validator's output fits; more is cut so a runaway checker cannot flood the
/// report or memory.
const OUTPUT_CAP: usize = 16 * 1024;
/// The report shows the validator's last lines; the error is usually at the end.
const REPORT_LINES: usize = 30;

impl Strategy for ConfigValidation {
    fn extra_time(&self, service: &ServiceConfig) -> Duration {
        service
            .config_validation
            .as_ref()
            .map_or(Duration::ZERO, |settings| settings.timeout.into())
    }

    fn preflight(&self, service: &ServiceConfig) -> Vec<String> {
        let Some(program) = service
            .config_validation
            .as_ref()
            .and_then(|settings| settings.command.first())
        else {
            return Vec::new();
        };
        match process::find_executable(program) {
            Ok(_) => Vec::new(),
            Err(why) => vec![format!("config_validation.command: {program}: {why}")],
        }
    }

    fn attempt(&self, context: &Context<'_>) -> Attempt {
        let Some(settings) = context.service.config_validation.as_ref() else {
            return Attempt::new(
                StepResult::NotApplicable,
                "validate the config",
                "no validator configured",
            );
        };
        let shown = shell_words(&settings.command);
        let action = format!("validate the config with `{shown}`");
        if context.dry_run {
            // Validators only read, but a dry run runs nothing it was not asked to.
            let restart = restart_and_verify(context);
            return Attempt::new(
                StepResult::Planned,
                format!("would {action}"),
                format!(
                    "would run `{shown}` (timeout {}); if it passes: {}; if it fails: escalate with its output, no restart",
                    settings.timeout, restart.detail
                ),
            );
        }
        let timeout: Duration = settings.timeout.into();
        let run = match process::run_captured(&settings.command, timeout, OUTPUT_CAP) {
            Ok(run) => run,
            Err(err) => {
                return Attempt::new(
                    StepResult::NeedsHuman,
                    action,
                    format!("could not run `{shown}`: {err}"),
                );
            }
        };
        let output = last_lines(&run.output, REPORT_LINES, run.truncated);
        match run.status {
            Some(status) if status.success() => then_restart(
                context,
                &action,
                &format!("`{shown}` passed in {} ms", run.elapsed.as_millis()),
                Vec::new(),
            ),
            Some(status) => Attempt::new(
                StepResult::NeedsHuman,
                action,
                format!(
                    "the config is invalid: `{shown}` failed ({status}); not restarting on a broken config. Its output:\n{output}"
                ),
            ),
            None => Attempt::new(
                StepResult::NeedsHuman,
                action,
                format!(
                    "`{shown}` did not finish within {} and was killed; not restarting. Its output so far:\n{output}",
                    settings.timeout
                ),
            ),
        }
    }
}

/// The argv as a person would type it (for display only; it is never run through a shell).
fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|word| {
            if !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `count` non-empty lines of `output`, marked when there was more.
fn last_lines(output: &str, count: usize, truncated: bool) -> String {
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return "(no output)".into();
    }
    let skipped = lines.len().saturating_sub(count);
    let mut text = String::new();
    if skipped > 0 || truncated {
        text.push_str("(earlier output cut)\n");
    }
    text.push_str(&lines[skipped..].join("\n"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_is_shown_quoted_where_needed() {
        let argv = ["/usr/sbin/nginx", "-t", "-c", "/etc/my conf", "it's"].map(String::from);
        assert_eq!(
            shell_words(&argv),
            r"/usr/sbin/nginx -t -c '/etc/my conf' 'it'\''s'"
        );
    }

    #[test]
    fn keeps_the_last_lines() {
        assert_eq!(
            last_lines("a\n\nb\nc\n", 2, false),
            "(earlier output cut)\nb\nc"
        );
        assert_eq!(last_lines("a\nb\n", 5, false), "a\nb");
        assert_eq!(last_lines("", 5, false), "(no output)");
        assert_eq!(last_lines("a", 5, true), "(earlier output cut)\na");
    }
}
