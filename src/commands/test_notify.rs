//! `selfheal test-notify`: a test through every channel at once (the mail, each webhook, each
//! Alertmanager), straight away and not queued; what each one answered.

use crate::Error;
use crate::exit_code::ExitCode;
use crate::report::{Renderer, Report};

use super::Paths;

pub(super) fn execute(paths: &Paths) -> Result<ExitCode, Error> {
    let config = paths.load_config()?;
    let renderer = Renderer::new(config.templates_dir.as_deref());
    let mut report = Report::test_email(&config);
    report.facts.reason = Some(format!(
        "This is a test sent by `selfheal test-notify` on {}: if you read it, this channel reaches you.",
        report.header.host
    ));
    let subject = renderer.subject(&report)?;
    if config.email.is_none() && config.notify.is_empty() {
        println!("nothing to test: the config has neither `email:` nor `notify:`");
        return Ok(ExitCode::Failure);
    }
    let (mail, channels) = std::thread::scope(|scope| {
        let channels = scope.spawn(|| crate::notify::channel::test(&config, &report, &subject));
        let mail = config
            .email
            .is_some()
            .then(|| super::test_email::send(&config, &renderer, &report));
        (mail, channels.join().unwrap_or_default())
    });
    let mut all_ok = true;
    match mail {
        Some(Ok(sent)) => println!("email: {sent}"),
        Some(Err(err)) => {
            all_ok = false;
            println!("email: FAILED: {err:#}");
        }
        None => {}
    }
    for (channel, answer) in channels {
        match answer {
            Ok(()) => println!("{channel}: accepted"),
            Err(err) => {
                all_ok = false;
                println!("{channel}: FAILED: {err}");
            }
        }
    }
    Ok(if all_ok {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}
