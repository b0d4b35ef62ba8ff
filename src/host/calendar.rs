//! systemd's calendar events (`Sun 03:00`) read by systemd's own parser, `systemd-analyze
//! calendar`: a maintenance window means exactly what an `OnCalendar=` of the same words
//! means, time zones and all (no second parser to disagree with systemd's).

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The first time `event` elapses strictly after `after` (`None`: never again), or why
/// systemd cannot say (an invalid event names systemd's own words).
pub(crate) fn next_elapse(event: &str, after: SystemTime) -> Result<Option<SystemTime>, String> {
    let base = after
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let output = Command::new("systemd-analyze")
        .args(["calendar", "--iterations=1"])
        .arg(format!("--base-time=@{base}"))
        .arg("--")
        .arg(event)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("systemd-analyze cannot run: {err}"))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr);
        let said = said.trim();
        return Err(if said.is_empty() {
            format!("systemd-analyze calendar refused {event:?}")
        } else {
            said.to_owned()
        });
    }
    match parse_next_elapse(&String::from_utf8_lossy(&output.stdout)) {
        Some(Elapse::At(at)) => Ok(Some(at)),
        Some(Elapse::Never) => Ok(None),
        None => Err(format!(
            "systemd-analyze calendar {event:?} said no next elapse"
        )),
    }
}

/// What `systemd-analyze calendar` says of the next elapse.
#[derive(Debug, PartialEq, Eq)]
enum Elapse {
    At(SystemTime),
    Never,
}

/// The next elapse in `systemd-analyze calendar`'s answer: its `(in UTC):` line, which it
/// prints when the local zone is not UTC, else its `Next elapse:` line. Without the first,
/// the zone is zero-offset all year (systemd's test), so the second is UTC whatever its
/// abbreviation says (`GMT` in Africa/Abidjan or Etc/GMT).
fn parse_next_elapse(answer: &str) -> Option<Elapse> {
    let value = |label: &str| {
        answer
            .lines()
            .find_map(|line| line.trim().strip_prefix(label).map(str::trim))
    };
    let in_utc = value("(in UTC):");
    let local_is_utc = in_utc.is_none();
    let next = in_utc.or_else(|| value("Next elapse:"))?;
    if next == "never" {
        return Some(Elapse::Never);
    }
    // "Sun 2026-12-13 03:00:00 UTC"
    let mut words = next.split_whitespace();
    let (_weekday, date, time, zone) = (words.next()?, words.next()?, words.next()?, words.next()?);
    if zone != "UTC" && !local_is_utc {
        return None;
    }
    let civil: jiff::civil::DateTime = format!("{date}T{time}").parse().ok()?;
    let stamp = civil.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    let seconds = u64::try_from(stamp.as_second()).ok()?;
    Some(Elapse::At(UNIX_EPOCH + Duration::from_secs(seconds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_utc_elapse_of_both_forms_and_never() {
        let in_utc = "  Original form: Sun 03:00\nNormalized form: Sun *-*-* 03:00:00\n    Next elapse: Sun 2026-12-13 03:00:00 UTC\n       From now: 6 days left\n";
        let expected = UNIX_EPOCH + Duration::from_secs(1_797_130_800);
        assert_eq!(parse_next_elapse(in_utc), Some(Elapse::At(expected)));
        let elsewhere = "    Next elapse: Sun 2026-12-13 04:00:00 CET\n       (in UTC): Sun 2026-12-13 03:00:00 UTC\n";
        assert_eq!(parse_next_elapse(elsewhere), Some(Elapse::At(expected)));
        assert_eq!(
            parse_next_elapse("    Next elapse: never\n"),
            Some(Elapse::Never)
        );
        // No "(in UTC)" line: the local zone is UTC under another name.
        assert_eq!(
            parse_next_elapse("    Next elapse: Sun 2026-12-13 03:00:00 GMT\n"),
            Some(Elapse::At(expected))
        );
        assert_eq!(
            parse_next_elapse("       (in UTC): Sun 2026-12-13 04:00:00 CET\n"),
            None
        );
    }

    /// systemd's own parser, asked for real.
    #[test]
    fn systemd_says_when_an_event_elapses_and_refuses_what_it_cannot_parse() {
        let base = UNIX_EPOCH + Duration::from_secs(1_797_000_000);
        let next = next_elapse("*-*-* 03:00:00 UTC", base).unwrap().unwrap();
        let seconds = next.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(seconds % 86_400, 3 * 3600);
        assert!(next > base && next <= base + Duration::from_secs(86_400));
        assert_eq!(next_elapse("2020-01-01", base).unwrap(), None);
        let refused = next_elapse("Sunn 03:00", base).unwrap_err();
        assert!(refused.contains("Sunn 03:00"), "{refused}");
    }
}
