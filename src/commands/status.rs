//! `selfheal status`: the dashboard (`crate::status` gathers and renders it), or its JSON.
//! Exit 0 when every shown service is active and healthy, 1 otherwise.

use crate::Error;
use crate::config::ServiceConfig;
use crate::exit_code::ExitCode;

use super::{Paths, find_service};

pub(super) fn execute(paths: &Paths, args: &crate::cli::StatusArgs) -> Result<ExitCode, Error> {
    let config = paths.load_config()?;
    let only = args
        .services
        .iter()
        .map(|name| find_service(&config, name))
        .collect::<Result<Vec<_>, _>>()?;
    // All monitored services when none is named.
    let services: Vec<&ServiceConfig> = if only.is_empty() {
        config.monitored_services.iter().collect()
    } else {
        only
    };
    let status = crate::status::gather(&config, &paths.state(), &services)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!(
            "{}",
            crate::status::dashboard(
                &status,
                crate::ui::terminal::Terminal::stdout(),
                std::time::SystemTime::now()
            )
        );
    }
    // 0 when every shown service is active and healthy.
    Ok(if status.services.iter().all(|s| s.healthy) {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}
