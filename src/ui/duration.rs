//! Durations as people write them in the config and on the command line: `500ms`, `10s`,
//! `5m`, `1h`, `24h`, and systemd's time syntax (`1h 30min`, `1h30m`, `2min`, `1.5s`,
//! `3 days`), as in `systemd.time(7)`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A [`Duration`] that parses from systemd's time syntax and prints as `<number><unit>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct HumanDuration(pub Duration);

/// Why a duration did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid duration {input:?}: write a number and a unit, as systemd does (500ms, 10s, 2min, 1h 30min, 1d)"
)]
pub struct DurationError {
    input: String,
}

/// systemd's time units (`systemd.time(7)`), in nanoseconds. A month and a year are the
/// average ones systemd uses.
const UNITS: [(&str, u128); 31] = [
    ("nsec", 1),
    ("ns", 1),
    ("usec", 1_000),
    ("us", 1_000),
    ("µs", 1_000),
    ("msec", 1_000_000),
    ("ms", 1_000_000),
    ("seconds", 1_000_000_000),
    ("second", 1_000_000_000),
    ("sec", 1_000_000_000),
    ("s", 1_000_000_000),
    ("minutes", 60_000_000_000),
    ("minute", 60_000_000_000),
    ("min", 60_000_000_000),
    ("m", 60_000_000_000),
    ("hours", 3_600_000_000_000),
    ("hour", 3_600_000_000_000),
    ("hr", 3_600_000_000_000),
    ("h", 3_600_000_000_000),
    ("days", 86_400_000_000_000),
    ("day", 86_400_000_000_000),
    ("d", 86_400_000_000_000),
    ("weeks", 604_800_000_000_000),
    ("week", 604_800_000_000_000),
    ("w", 604_800_000_000_000),
    ("months", 2_629_800_000_000_000),
    ("month", 2_629_800_000_000_000),
    ("M", 2_629_800_000_000_000),
    ("years", 31_557_600_000_000_000),
    ("year", 31_557_600_000_000_000),
    ("y", 31_557_600_000_000_000),
];

impl FromStr for HumanDuration {
    type Err = DurationError;

    /// One or more `<number>[ ]<unit>` parts, added up; a number may have a fraction
    /// (`1.5h`). A bare number is refused rather than guessed (systemd would read seconds,
    /// other tools milliseconds).
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = || DurationError {
            input: input.to_owned(),
        };
        let mut rest = input.trim();
        if rest.is_empty() {
            return Err(error());
        }
        let mut nanos: u128 = 0;
        while !rest.is_empty() {
            let number_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(error)?;
            let (number, after) = rest.split_at(number_end);
            let after = after.trim_start();
            let unit_end = after
                .find(|c: char| c.is_ascii_digit() || c.is_whitespace())
                .unwrap_or(after.len());
            let (unit, after) = after.split_at(unit_end);
            let per_unit = UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|(_, nanos)| *nanos)
                .ok_or_else(error)?;
            nanos = nanos
                .checked_add(scaled(number, per_unit).ok_or_else(error)?)
                .ok_or_else(error)?;
            rest = after.trim_start();
        }
        let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| error())?;
        let subsec = u32::try_from(nanos % 1_000_000_000).map_err(|_| error())?;
        Ok(HumanDuration(Duration::new(secs, subsec)))
    }
}

/// `number` (digits, optionally `.` and more digits) times `per_unit` nanoseconds; `None` when
/// it is not such a number or overflows.
fn scaled(number: &str, per_unit: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let digits = |text: &str| text.chars().all(|c| c.is_ascii_digit());
    if !digits(whole) || !digits(fraction) {
        return None;
    }
    // Nanoseconds are the finest unit: further digits cannot change the value.
    let fraction = &fraction[..fraction.len().min(18)];
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut value = whole.checked_mul(per_unit)?;
    if !fraction.is_empty() {
        let numerator: u128 = fraction.parse().ok()?;
        let denominator = 10u128.pow(u32::try_from(fraction.len()).ok()?);
        value = value.checked_add(numerator.checked_mul(per_unit)? / denominator)?;
    }
    Some(value)
}

/// A wait as a person reads it, to the second: `14min 59s`, `2h`, `1h 30min`, `45s` (the
/// exact `Display` of a `HumanDuration` is for config values: `899478978057ns` is exact, and
/// unreadable).
pub(crate) fn approx(wait: Duration) -> String {
    let secs = wait.as_secs() + u64::from(wait.subsec_millis() >= 500);
    let (hours, minutes, seconds) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (hours, minutes, seconds) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}min"),
        (0, m, s) => format!("{m}min {s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h {m}min"),
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.0.is_zero() && !self.0.subsec_nanos().is_multiple_of(1_000_000) {
            let micros = self.0.as_micros();
            if self.0.subsec_nanos().is_multiple_of(1_000) {
                return write!(f, "{micros}us");
            }
            return write!(f, "{}ns", self.0.as_nanos());
        }
        let millis = self.0.as_millis();
        let units = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1_000, "s"),
        ];
        for (size, unit) in units {
            if millis >= size && millis.is_multiple_of(size) {
                return write!(f, "{}{unit}", millis / size);
            }
        }
        write!(f, "{millis}ms")
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl From<HumanDuration> for Duration {
    fn from(value: HumanDuration) -> Duration {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_of_the_contract() {
        let table = [
            ("500ms", 500),
            ("10s", 10_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("24h", 86_400_000),
            ("2d", 172_800_000),
        ];
        for (text, millis) in table {
            let parsed: HumanDuration = text.parse().unwrap();
            assert_eq!(parsed.0, Duration::from_millis(millis), "{text}");
        }
    }

    #[test]
    fn parses_systemds_time_syntax() {
        let table = [
            ("1h 30min", 5_400_000),
            ("1h30m", 5_400_000),
            ("90s", 90_000),
            ("2min", 120_000),
            ("10 sec", 10_000),
            ("1.5s", 1_500),
            ("0.25h", 900_000),
            ("2 hours 5 seconds", 7_205_000),
            ("1w", 604_800_000),
            ("1d 2h 3min 4s 5ms", 93_784_005),
            (" 3 days ", 259_200_000),
        ];
        for (text, millis) in table {
            let parsed: HumanDuration =
                text.parse().unwrap_or_else(|err| panic!("{text:?}: {err}"));
            assert_eq!(parsed.0, Duration::from_millis(millis), "{text}");
        }
        assert_eq!(
            "250us".parse::<HumanDuration>().unwrap().0,
            Duration::from_micros(250)
        );
        assert_eq!(
            "100ns".parse::<HumanDuration>().unwrap().0,
            Duration::from_nanos(100)
        );
        // More fraction digits than nanoseconds need are accepted, as systemd does.
        assert_eq!(
            "0.1234567891s".parse::<HumanDuration>().unwrap().0,
            Duration::from_nanos(123_456_789)
        );
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for text in [
            "",
            "10",
            "s",
            "-1s",
            "1.2.3s",
            ".s",
            "10 parsecs",
            "1h 30",
            "99999999999999999999999999999h",
        ] {
            assert!(text.parse::<HumanDuration>().is_err(), "{text:?} parsed");
        }
        let err = "10 parsecs".parse::<HumanDuration>().unwrap_err();
        assert!(err.to_string().contains("1h 30min"), "{err}");
    }

    #[test]
    fn prints_in_the_largest_exact_unit() {
        let table = [
            (1_500, "1500ms"),
            (2_000, "2s"),
            (90_000, "90s"),
            (3_600_000, "1h"),
        ];
        assert_eq!(
            HumanDuration(Duration::from_micros(250)).to_string(),
            "250us"
        );
        assert_eq!(
            HumanDuration(Duration::from_nanos(100)).to_string(),
            "100ns"
        );
        assert_eq!(HumanDuration(Duration::ZERO).to_string(), "0ms");
        for (millis, text) in table {
            assert_eq!(
                HumanDuration(Duration::from_millis(millis)).to_string(),
                text
            );
        }
    }

    #[test]
    fn waits_read_to_the_second() {
        let approx = |secs: f64| super::approx(Duration::from_secs_f64(secs));
        assert_eq!(approx(899.478_978_057), "14min 59s");
        assert_eq!(approx(900.0), "15min");
        assert_eq!(approx(0.4), "0s");
        assert_eq!(approx(45.6), "46s");
        assert_eq!(approx(7200.0), "2h");
        assert_eq!(approx(5400.0), "1h 30min");
    }
}
