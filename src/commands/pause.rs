//! `selfheal pause` and `resume`: a person holds healing back for a while (a deploy, a
//! backup, an upgrade), and ends that early. A pause lives in the state directory (a reboot
//! keeps it); when it ends, by `resume` or by its time (the watch's next round), a service
//! that is still down is healed.

use std::time::{Duration, SystemTime};

use crate::cli::{PauseArgs, ResumeArgs};
use crate::exit_code::ExitCode;
use crate::state::Timestamp;
use crate::state::pauses::Pause;
use crate::{Error, UsageError};

use super::{Paths, find_entry};

/// The longest pause: one forgotten must not switch healing off for good.
const LONGEST: Duration = Duration::from_secs(7 * 24 * 3600);

pub(super) fn pause(paths: &Paths, args: &PauseArgs) -> Result<ExitCode, Error> {
    let config = paths.load_config()?;
    let length = Duration::from(args.duration);
    if length.is_zero() || length > LONGEST {
        return Err(UsageError(format!(
            "--for {}: a pause lasts more than 0s and at most 7d (resume ends one early)",
            args.duration
        ))
        .into());
    }
    let names = args
        .services
        .iter()
        .map(|name| find_entry(&config, name).map(|entry| entry.name.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let pause = Pause {
        until: Timestamp::seconds(SystemTime::now() + length),
        reason: args.reason.clone(),
    };
    paths.state().change_pauses(|pauses| {
        if args.all {
            pauses.all = Some(pause.clone());
        }
        for name in &names {
            pauses.services.insert(name.clone(), pause.clone());
        }
    })?;
    let what = if args.all {
        "every service".to_owned()
    } else {
        names.join(", ")
    };
    let why = args
        .reason
        .as_ref()
        .map(|reason| format!(": {reason}"))
        .unwrap_or_default();
    println!(
        "paused {what} until {}{why}; their failures are recorded, not healed or told (selfheal resume ends it)",
        pause.until.readable()
    );
    Ok(ExitCode::Success)
}

pub(super) fn resume(paths: &Paths, args: &ResumeArgs) -> Result<ExitCode, Error> {
    let config = paths.load_config()?;
    let names = args
        .services
        .iter()
        .map(|name| find_entry(&config, name).map(|entry| entry.name.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let state = paths.state();
    let ended = state.change_pauses(|pauses| {
        let mut ended: Vec<String> = names
            .iter()
            .filter(|name| pauses.services.remove(*name).is_some())
            .cloned()
            .collect();
        if args.all {
            ended.extend(std::mem::take(&mut pauses.services).into_keys());
            if pauses.all.take().is_some() {
                ended.extend(config.service_names().into_iter().map(str::to_owned));
            }
        }
        ended.sort();
        ended.dedup();
        ended
    })?;
    if ended.is_empty() {
        println!("nothing was paused");
        return Ok(ExitCode::Success);
    }
    println!("resumed {}", ended.join(", "));
    let systemd = crate::systemd::Systemd::connect()?;
    for started in crate::heal::pause::heal_the_down(&config, &systemd, &ended) {
        println!("{started}");
    }
    Ok(ExitCode::Success)
}
