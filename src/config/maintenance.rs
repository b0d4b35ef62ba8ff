//! `maintenance:` windows, top-level (every service) or per service: a systemd calendar event
//! (`Sun 03:00`, as `OnCalendar=` reads it) and how long each occurrence lasts. Inside one,
//! selfheal holds back as under `selfheal pause`: nothing is restarted or told.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ui::duration::HumanDuration;

/// One window.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MaintenanceWindow {
    /// When each occurrence begins: systemd calendar syntax (`systemd.time(7)`), e.g.
    /// `Sun 03:00` or `*-*-01 02:30`. Its validity is checked by `selfheal check`, with
    /// systemd's own parser.
    pub on: String,
    /// How long each occurrence lasts.
    #[serde(rename = "for")]
    pub lasts: HumanDuration,
    /// Said in the records and on the dashboard ("weekly backups").
    pub reason: Option<String>,
}

/// The longest one occurrence may last: a pause's bound too (`selfheal pause --for`).
pub(crate) const LONGEST: Duration = Duration::from_secs(7 * 24 * 3600);

impl MaintenanceWindow {
    /// The window in words: "Sun 03:00 for 1h (weekly backups)".
    pub(crate) fn describe(&self) -> String {
        let reason = self
            .reason
            .as_ref()
            .map(|reason| format!(" ({reason})"))
            .unwrap_or_default();
        format!("{} for {}{reason}", self.on, self.lasts)
    }

    /// Where the window cannot be a window, whatever the calendar says: an empty event, a
    /// length of 0 or over 7 days, a control character.
    /// (The key at fault, and what is wrong.)
    pub(crate) fn problem(&self) -> Option<(&'static str, String)> {
        let lasts = Duration::from(self.lasts);
        if self.on.trim().is_empty() {
            Some((
                "on",
                "`on` needs a calendar event, e.g. \"Sun 03:00\"".into(),
            ))
        } else if self.on.chars().any(char::is_control) {
            Some((
                "on",
                format!("`on` ({:?}) holds a control character", self.on),
            ))
        } else if lasts.is_zero() || lasts > LONGEST {
            Some((
                "for",
                format!(
                    "`for` must be longer than 0s and at most 7d (got {})",
                    self.lasts
                ),
            ))
        } else {
            None
        }
    }
}
