//! `selfheal discover`: prints `monitored_services:` entries for the running services that
//! listen on a port and are not monitored yet (`crate::status::discover`). Works before there
//! is a config; with one, leaves out the services it lists. Exit 0; changes nothing.

use crate::Error;
use crate::exit_code::ExitCode;
use crate::status::discover;

use super::Paths;

pub(super) fn execute(paths: &Paths) -> Result<ExitCode, Error> {
    let listed: Vec<String> = if paths.config.exists() {
        let config = paths.load_config()?;
        config
            .monitored_services
            .iter()
            .map(crate::config::ServiceConfig::unit_name)
            .collect()
    } else {
        Vec::new()
    };
    print!("{}", discover::yaml(&discover::running(&listed)));
    Ok(ExitCode::Success)
}
