//! Points in time as people write and read them: `--since` as journalctl takes it
//! (`yesterday`, `2026-11-18 10:00`, `-2h`, `24h`), and a record's time shown in local time
//! with how far from now it is (`2026-11-29 10:04 (2h ago)`, `(in 58min)`).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use jiff::Timestamp as Instant;
use jiff::Zoned;
use jiff::civil::{DateTime, Time};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ui::duration::HumanDuration;

/// A `--since` argument, resolved against the clock only when it is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// `24h`, `-2h`, `2h ago`: this long before now.
    Ago(Duration),
    /// `today`, `yesterday`: the start of that local day.
    DaysAgo(u8),
    /// `2026-11-18`, `2026-11-18 10:00`, `2026-11-18 10:00:30`: local time.
    Local(DateTime),
    /// `10:00`: today at this local time.
    TodayAt(Time),
    /// `2026-11-18T10:00:00Z`: an exact instant.
    Exact(Instant),
}

/// Why a `--since` did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid time {0:?}: write what journalctl --since takes: today, yesterday, 2026-11-18, \"2026-11-18 10:00\", 10:00, -2h, \"2h ago\" or 24h"
)]
pub struct SinceError(String);

impl FromStr for Since {
    type Err = SinceError;

    fn from_str(input: &str) -> Result<Since, SinceError> {
        let text = input.trim();
        let error = || SinceError(input.to_owned());
        match text {
            "now" => return Ok(Since::Ago(Duration::ZERO)),
            "today" => return Ok(Since::DaysAgo(0)),
            "yesterday" => return Ok(Since::DaysAgo(1)),
            _ => {}
        }
        let ago = text
            .strip_prefix('-')
            .or_else(|| text.strip_suffix(" ago"))
            .unwrap_or(text);
        if let Ok(duration) = ago.parse::<HumanDuration>() {
            return Ok(Since::Ago(duration.0));
        }
        if let Ok(exact) = text.parse::<Instant>() {
            return Ok(Since::Exact(exact));
        }
        // A date alone is its midnight; jiff's DateTime parser reads both forms.
        if let Ok(datetime) = text.parse::<DateTime>() {
            return Ok(Since::Local(datetime));
        }
        if let Ok(time) = text.parse::<Time>() {
            return Ok(Since::TodayAt(time));
        }
        Err(error())
    }
}

impl Since {
    /// The instant this names, with `now` as the present and its time zone as local time.
    /// A local time that does not exist (a DST gap) is taken as the next one that does.
    pub(crate) fn resolve(self, now: &Zoned) -> SystemTime {
        let local = |datetime: DateTime| {
            datetime
                .to_zoned(now.time_zone().clone())
                .map_or(Instant::MIN, |zoned| zoned.timestamp())
        };
        let timestamp = match self {
            Since::Ago(duration) => {
                return SystemTime::from(now.timestamp())
                    .checked_sub(duration)
                    .unwrap_or(SystemTime::UNIX_EPOCH);
            }
            Since::DaysAgo(days) => {
                let day = now
                    .date()
                    .checked_sub(jiff::Span::new().days(i64::from(days)));
                day.map_or(Instant::MIN, |day| local(day.to_datetime(Time::midnight())))
            }
            Since::Local(datetime) => local(datetime),
            Since::TodayAt(time) => local(now.date().to_datetime(time)),
            Since::Exact(timestamp) => timestamp,
        };
        SystemTime::from(timestamp)
    }
}

/// How far `then` is from `now`, in the largest whole unit: `just now`, `45s ago`,
/// `12min ago`, `2h ago`, `3d ago`; a time to come reads `in 45s`, `in 58min`, `in 2h`.
pub(crate) fn relative(then: SystemTime, now: SystemTime) -> String {
    let (distance, future) = match now.duration_since(then) {
        Ok(elapsed) => (elapsed, false),
        Err(ahead) => (ahead.duration(), true),
    };
    let secs = distance.as_secs();
    let amount = match secs {
        0..5 => return "just now".to_owned(),
        5..60 => format!("{secs}s"),
        60..3600 => format!("{}min", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    };
    if future {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// `then` in `zone`'s local time, to the minute: `2026-11-29 10:04`.
pub(crate) struct LocalTime<'z>(pub SystemTime, pub &'z jiff::tz::TimeZone);

impl fmt::Display for LocalTime<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Instant::try_from(self.0) {
            Ok(timestamp) => write!(
                f,
                "{}",
                timestamp
                    .to_zoned(self.1.clone())
                    .strftime("%Y-%m-%d %H:%M")
            ),
            Err(_) => f.write_str("????-??-?? ??:??"),
        }
    }
}

/// A point in time as selfheal records it: a `SystemTime` in code, RFC 3339 UTC text in every
/// file and JSON document (`2026-11-29T10:02:03Z`, or `…03.120Z` where milliseconds matter).
/// The precision is part of the value, and the time is cut to it, so a value equals itself
/// read back from its text, and a record read and written again keeps its text.
#[derive(Debug, Clone, Copy)]
pub struct Timestamp {
    at: SystemTime,
    millis: bool,
}

impl Timestamp {
    /// `at`, to the second.
    pub fn seconds(at: SystemTime) -> Timestamp {
        Timestamp {
            at: cut(at, 1_000_000_000),
            millis: false,
        }
    }

    /// `at`, to the millisecond (run starts, which order a burst of runs).
    pub fn millis(at: SystemTime) -> Timestamp {
        Timestamp {
            at: cut(at, 1_000_000),
            millis: true,
        }
    }

    /// Now, to the second.
    pub fn now() -> Timestamp {
        Timestamp::seconds(SystemTime::now())
    }

    /// Now, to the millisecond.
    pub fn now_millis() -> Timestamp {
        Timestamp::millis(SystemTime::now())
    }

    pub fn time(self) -> SystemTime {
        self.at
    }

    /// `2026-11-29 10:02:03 UTC`: for reports, which are read on other hosts and time zones.
    pub fn readable(self) -> String {
        let text = self.to_string();
        text.replacen('T', " ", 1)
            .strip_suffix('Z')
            .map_or(text.clone(), |time| format!("{time} UTC"))
    }

    /// Letters and digits only (`20261129T100203120Z`): for file names and message ids.
    pub fn compact(self) -> String {
        self.to_string()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect()
    }

    /// How far from `now`: `12min ago`, `in 58min` (see [`relative`]).
    pub fn relative_to(self, now: SystemTime) -> String {
        relative(self.at, now)
    }
}

/// `at` without what is below `nanos` (times before 1970 are not cut: selfheal writes none).
fn cut(at: SystemTime, nanos: u32) -> SystemTime {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(at, |since| {
            let kept = since.subsec_nanos() / nanos * nanos;
            SystemTime::UNIX_EPOCH + Duration::new(since.as_secs(), kept)
        })
}

impl From<SystemTime> for Timestamp {
    fn from(at: SystemTime) -> Timestamp {
        Timestamp::seconds(at)
    }
}

impl PartialEq for Timestamp {
    fn eq(&self, other: &Timestamp) -> bool {
        self.at == other.at
    }
}

impl Eq for Timestamp {}

impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Timestamp) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timestamp {
    fn cmp(&self, other: &Timestamp) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millis {
            write!(f, "{}", humantime::format_rfc3339_millis(self.at))
        } else {
            write!(f, "{}", humantime::format_rfc3339_seconds(self.at))
        }
    }
}

/// Why a recorded time did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an RFC 3339 UTC time like 2026-11-29T10:02:03Z")]
pub struct TimestampError(String);

impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(text: &str) -> Result<Timestamp, TimestampError> {
        let at = humantime::parse_rfc3339_weak(text.trim())
            .map_err(|_| TimestampError(text.to_owned()))?;
        Ok(Timestamp {
            at,
            millis: text.contains('.'),
        })
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Zoned {
        // A Sunday afternoon in a zone with an offset, so local and UTC days differ.
        "2026-11-29T15:30:00+01:00[Europe/Paris]".parse().unwrap()
    }

    fn resolved(text: &str) -> String {
        let at = text.parse::<Since>().unwrap().resolve(&now());
        Instant::try_from(at).unwrap().to_string()
    }

    #[test]
    fn takes_what_journalctl_takes() {
        let table = [
            ("today", "2026-11-28T23:00:00Z"),
            ("yesterday", "2026-11-27T23:00:00Z"),
            ("2026-11-18", "2026-11-17T23:00:00Z"),
            ("2026-11-18 10:00", "2026-11-18T09:00:00Z"),
            ("2026-11-18 10:00:30", "2026-11-18T09:00:30Z"),
            ("10:00", "2026-11-29T09:00:00Z"),
            ("-2h", "2026-11-29T12:30:00Z"),
            ("2h ago", "2026-11-29T12:30:00Z"),
            ("24h", "2026-11-28T14:30:00Z"),
            ("1h 30min", "2026-11-29T13:00:00Z"),
            ("2026-11-18T10:00:00Z", "2026-11-18T10:00:00Z"),
            ("now", "2026-11-29T14:30:00Z"),
        ];
        for (text, expected) in table {
            assert_eq!(resolved(text), expected, "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_time_with_the_choices() {
        for text in ["", "soon", "2026-13-01", "25:00", "-", "last tuesday"] {
            let err = text.parse::<Since>().unwrap_err().to_string();
            assert!(err.contains("yesterday"), "{text:?}: {err}");
        }
    }

    #[test]
    fn says_how_long_ago_in_the_largest_unit() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let table = [
            (0, "just now"),
            (42, "42s ago"),
            (12 * 60 + 5, "12min ago"),
            (2 * 3600 + 59, "2h ago"),
            (3 * 86_400, "3d ago"),
        ];
        for (secs, expected) in table {
            assert_eq!(relative(now - Duration::from_secs(secs), now), expected);
        }
        assert_eq!(relative(now + Duration::from_secs(3), now), "just now");
        // A time to come (loop protection's end, a retry) is not "just now".
        assert_eq!(relative(now + Duration::from_secs(42), now), "in 42s");
        assert_eq!(
            relative(now + Duration::from_secs(58 * 60 + 30), now),
            "in 58min"
        );
        assert_eq!(relative(now + Duration::from_secs(2 * 3600), now), "in 2h");
    }

    #[test]
    fn shows_local_time_to_the_minute() {
        let zone = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
        let at = SystemTime::from("2026-11-18T09:06:59Z".parse::<Instant>().unwrap());
        assert_eq!(LocalTime(at, &zone).to_string(), "2026-11-18 10:06");
    }

    #[test]
    fn a_timestamp_reads_as_utc() {
        let at: Timestamp = "2026-11-29T10:02:03Z".parse().unwrap();
        assert_eq!(at.readable(), "2026-11-29 10:02:03 UTC");
        assert!("not a time".parse::<Timestamp>().is_err());
    }

    #[test]
    fn a_timestamp_keeps_its_text_through_json() {
        for text in ["2026-11-29T10:02:03Z", "2026-11-29T10:02:03.120Z"] {
            let json = format!("{text:?}");
            let at: Timestamp = serde_json::from_str(&json).unwrap();
            assert_eq!(serde_json::to_string(&at).unwrap(), json);
        }
        let made = Timestamp::millis(SystemTime::UNIX_EPOCH + Duration::from_millis(1_500));
        assert_eq!(made.to_string(), "1970-01-01T00:00:01.500Z");
        assert_eq!(
            Timestamp::seconds(made.time()).to_string(),
            "1970-01-01T00:00:01Z"
        );
        // Cut to its precision, a time equals itself read back.
        let now = Timestamp::now_millis();
        assert_eq!(now.to_string().parse::<Timestamp>().unwrap(), now);
        let err = serde_json::from_str::<Timestamp>("\"soon\"").unwrap_err();
        assert!(err.to_string().contains("RFC 3339"), "{err}");
    }
}
