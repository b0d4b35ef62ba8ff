//! `selfheal check`: load and validate the config, and render every template (built-in and
//! overrides) against a sample report, like `nginx -t`; exit 0 when valid, 2 when not.

use crate::exit_code::ExitCode;
use crate::report::{Renderer, Report};
use crate::{Error, UsageError};

use super::Paths;

pub(super) fn execute(paths: &Paths) -> Result<ExitCode, Error> {
    let config = paths.load_config()?;
    // A broken override would not stop a run (it falls back to the built-in template), but
    // the owner would get reports that say so: catch it here first.
    let problems =
        Renderer::new(config.templates_dir.as_deref()).problems(&Report::test_email(&config));
    if !problems.is_empty() {
        return Err(UsageError(problems.join("\n")).into());
    }
    println!(
        "{}: valid, {} monitored service(s): {}",
        paths.config.display(),
        config.monitored_services.len(),
        config.service_names().join(", ")
    );
    Ok(ExitCode::Success)
}
