//! `notify_policy:` what is worth a message now, top-level and per service: RESOLVED heals told
//! in the digest only, reports folded within a minimum interval, reminders while a service
//! stays down. Bad news is never held back by it (see `notify::policy`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ui::duration::HumanDuration;

/// When a RESOLVED heal is told.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ResolvedPolicy {
    /// At once, as any report (the default).
    #[default]
    Now,
    /// In the daily digest only (history has it; nothing is mailed or posted). An all-clear
    /// after a down report that was told still goes out at once.
    Digest,
}

/// `remind:` never, or one reminder per this interval while a service stays down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) enum Remind {
    #[default]
    Never,
    Every(HumanDuration),
}

impl TryFrom<String> for Remind {
    type Error = String;
    fn try_from(text: String) -> Result<Remind, String> {
        if text == "never" {
            return Ok(Remind::Never);
        }
        let every: HumanDuration = text.parse().map_err(|err| format!("{err}, or never"))?;
        if Duration::from(every) < Duration::from_secs(60) {
            return Err(format!(
                "at least 1m, not {text} (a reminder is a mail); write never for none"
            ));
        }
        Ok(Remind::Every(every))
    }
}

impl From<Remind> for String {
    fn from(remind: Remind) -> String {
        match remind {
            Remind::Never => "never".to_owned(),
            Remind::Every(every) => every.to_string(),
        }
    }
}

/// The policy as it applies to one service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NotifyPolicy {
    #[serde(default)]
    pub resolved: ResolvedPolicy,
    /// Reports of one service within this interval of the last one told are folded into the
    /// next (0s: none are).
    #[serde(default)]
    pub min_interval: HumanDuration,
    #[serde(default)]
    pub remind: Remind,
}

/// A service's `notify_policy:`: what it sets over the top-level one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyOverride {
    pub resolved: Option<ResolvedPolicy>,
    pub min_interval: Option<HumanDuration>,
    pub remind: Option<Remind>,
}

impl NotifyPolicy {
    /// This policy with `service`'s settings over it.
    pub(crate) fn with(self, service: Option<&PolicyOverride>) -> NotifyPolicy {
        let Some(over) = service else {
            return self;
        };
        NotifyPolicy {
            resolved: over.resolved.unwrap_or(self.resolved),
            min_interval: over.min_interval.unwrap_or(self.min_interval),
            remind: over.remind.unwrap_or(self.remind),
        }
    }
}

/// The longest `min_interval`: past it, folding is hiding.
pub(crate) const LONGEST_INTERVAL: Duration = Duration::from_secs(24 * 3600);
