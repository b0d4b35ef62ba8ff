//! `selfheal check`: what would fail at 3 a.m., found now, like `nginx -t`. Loads and validates
//! the config, renders every template (built-in and overrides) against a sample report, and
//! checks on this host what the config only names: the SMTP password file (owner, mode), the
//! CA file (PEM), each validator command (exists, executable), the owners and groups of
//! `database_check`. Exit 0 when all is well (warnings on stderr), 2 when not.

use crate::exit_code::ExitCode;
use crate::report::{Renderer, Report};
use crate::{Error, UsageError};

use super::Paths;

pub(super) fn execute(paths: &Paths) -> Result<ExitCode, Error> {
    let config = paths.load_config()?;
    // A broken override would not stop a run (it falls back to the built-in template), but
    // the owner would get reports that say so: catch it here first.
    let mut problems =
        Renderer::new(config.templates_dir.as_deref()).problems(&Report::test_email(&config));
    let file = paths.config.display();
    for (index, service) in config.monitored_services.iter().enumerate() {
        problems.extend(
            crate::strategy::preflight(service)
                .into_iter()
                .map(|problem| {
                    format!(
                        "{file}: monitored_services[{index}] ({}): {problem}",
                        service.name
                    )
                }),
        );
    }
    let mut warnings = Vec::new();
    match &config.email {
        None => warnings.push(
            "there is no `email:` section: reports are printed and logged, but nobody is mailed"
                .to_owned(),
        ),
        Some(email) => match crate::email::preflight(email) {
            Ok(found) => warnings.extend(found),
            Err(problem) => problems.push(format!("{file}: email: {problem}")),
        },
    }
    for warning in &warnings {
        eprintln!("selfheal: warning: {warning}");
    }
    if !problems.is_empty() {
        return Err(UsageError(problems.join("\n")).into());
    }
    if config.monitored_services.is_empty() {
        println!(
            "{}: valid, but there are no monitored services: list them under monitored_services: for selfheal to heal anything",
            paths.config.display()
        );
    } else {
        println!(
            "{}: valid, {} monitored service(s): {}",
            paths.config.display(),
            config.monitored_services.len(),
            config.service_names().join(", ")
        );
    }
    Ok(ExitCode::Success)
}
