//! The transient timer behind timed retries and a cascade's delivery: one timer, started
//! over D-Bus (`StartTransientUnit`), firing once, with the oneshot service it starts when it
//! must run a command or pull in another unit.

use std::time::Duration;

use zbus::zvariant::Value;

use super::{Fires, METHOD_TIMEOUT, Systemd, SystemdError};

impl Systemd {
    /// A transient timer `timer` that fires once, `after` from now, and starts what `fires`
    /// names (`UnitControl::start_later`).
    pub(super) fn start_timer(
        &self,
        timer: &str,
        after: Duration,
        fires: Fires<'_>,
    ) -> Result<(), SystemdError> {
        // A timer still waiting from an earlier schedule is replaced: stopping it (and waiting
        // for the stop) unloads it, so its name is free again.
        self.stop(timer)?;
        let after_us = u64::try_from(after.as_micros()).unwrap_or(u64::MAX);
        let service = service_of(timer);
        let properties = [
            (
                "Description",
                Value::from(format!("selfheal: start {service} later")),
            ),
            ("OnActiveSec", Value::from(after_us)),
            // The default accuracy is a minute: a retry due in 5 s must not wait for one.
            ("AccuracyUSec", Value::from(1_000_000_u64)),
            ("RemainAfterElapse", Value::from(false)),
        ];
        // A timer starts the service of its own name (systemd 252 cannot set a transient
        // timer's Unit=). For another unit, that service is a oneshot that pulls it in with
        // Wants=, so the unit runs as installed, with its own hardening and credentials.
        let (command, wants): (Vec<String>, Vec<String>) = match fires {
            Fires::ItsService => (Vec::new(), Vec::new()),
            Fires::Command(argv) => (argv.to_vec(), Vec::new()),
            Fires::Unit(unit) => (vec![TRUE.to_owned()], vec![unit.to_owned()]),
        };
        let description = match fires {
            Fires::Unit(unit) => format!("selfheal: start {unit}"),
            _ => format!("selfheal: {}", command.join(" ")),
        };
        let exec: Vec<(String, Vec<String>, bool)> = command
            .first()
            .map(|program| vec![(program.clone(), command.clone(), false)])
            .unwrap_or_default();
        let mut service_properties = vec![
            ("Description", Value::from(description)),
            ("Type", Value::from("oneshot")),
            ("ExecStart", Value::from(exec)),
            // Gone once it ran, also when it failed: no failed unit is left behind.
            ("CollectMode", Value::from("inactive-or-failed")),
        ];
        if !wants.is_empty() {
            service_properties.push(("Wants", Value::from(wants)));
        }
        let aux: Vec<(&str, &[(&str, Value<'_>)])> = if fires == Fires::ItsService {
            Vec::new()
        } else {
            vec![(service.as_str(), &service_properties[..])]
        };
        // Waited for: once this returns the timer is active, so the run that says "timed retry
        // at …" (and `status`, and `uninstall`'s stop) finds it.
        self.run_job("StartTransientUnit", METHOD_TIMEOUT, || {
            self.manager
                .start_transient_unit(timer, "replace", &properties, &aux)
        })
        .map(drop)
    }
}

/// A program that does nothing, for a transient service that only pulls in another unit.
const TRUE: &str = "/usr/bin/true";

/// `x.timer` → `x.service`.
fn service_of(timer: &str) -> String {
    format!("{}.service", timer.strip_suffix(".timer").unwrap_or(timer))
}
