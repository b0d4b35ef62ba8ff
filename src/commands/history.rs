//! `selfheal history [SERVICE] [--since DURATION] [--json]`: past healing runs, oldest first.

use std::time::SystemTime;

use crate::Error;
use crate::cli::HistoryArgs;
use crate::exit_code::ExitCode;

use super::Paths;

pub(super) fn execute(paths: &Paths, args: &HistoryArgs) -> Result<ExitCode, Error> {
    let since = args.since.map(|d| SystemTime::now() - d.0);
    let json = args.json;
    let service = args
        .service
        .as_deref()
        .map(|s| s.strip_suffix(".service").unwrap_or(s));
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
