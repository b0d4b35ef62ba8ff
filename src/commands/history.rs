//! `selfheal history [SERVICE] [--since DURATION] [--json]`: past healing runs, oldest first.

use std::time::SystemTime;

use crate::Error;
use crate::cli::HistoryArgs;
use crate::exit_code::ExitCode;

use super::Paths;

pub(super) fn execute(paths: &Paths, args: &HistoryArgs) -> Result<ExitCode, Error> {
    let since = args.since.map(|d| SystemTime::now() - d.0);
    let json = args.json;
    // A name that is not monitored is a mistake, named like `run` names it.
    let config = args
        .service
        .as_ref()
        .map(|_| paths.load_config())
        .transpose()?;
    let service = match (&config, &args.service) {
        (Some(config), Some(name)) => Some(super::find_service(config, name)?.name.as_str()),
        _ => None,
    };
    let records = paths.state().history()?;
    let shown = records.iter().filter(|r| {
        service.is_none_or(|s| r.service == s)
            && since.is_none_or(|since| r.started().is_some_and(|t| t >= since))
    });
    for record in shown {
        if json {
            println!("{}", serde_json::to_string(record)?);
        } else {
            println!(
                "{}  {:<24} {:<10} {:>7} ms  {}",
                record.started_at,
                record.service,
                record.outcome,
                record.duration_ms,
                record.healed_by.as_deref().unwrap_or("-")
            );
        }
    }
    Ok(ExitCode::Success)
}
