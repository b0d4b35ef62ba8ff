//! `selfheal check`: load and validate the config; exit 0 when valid, 2 when not.

use crate::Error;
use crate::exit_code::ExitCode;

use super::Paths;

pub(super) fn execute(paths: &Paths) -> Result<ExitCode, Error> {
    let config = paths.load_config()?;
    println!(
        "{}: valid, {} monitored service(s): {}",
        paths.config.display(),
        config.monitored_services.len(),
        config.service_names().join(", ")
    );
    Ok(ExitCode::Success)
}
