//! `<state>/pauses.json`: the services a person paused (`selfheal pause`), or all of them,
//! until when and why; and the services held down by a pause or a window, to heal after it. In the state directory, so a pause outlives a reboot; written under
//! its own lock (pause, resume and the watch's release of ended pauses may meet).

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{StateDir, StateError, Timestamp};

const FILE: &str = "pauses.json";
/// Not a service's name: those start with a letter or digit.
const LOCK: &str = ".pauses.lock";

/// One pause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pause {
    pub until: Timestamp,
    pub reason: Option<String>,
}

/// Every pause: of all services at once, and of single services.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pauses {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Pause>,
    #[serde(default)]
    pub services: BTreeMap<String, Pause>,
    /// The services a run found down and held for a pause or a maintenance window: the watch
    /// heals those still down once nothing is planned for them any more.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub held: std::collections::BTreeSet<String>,
}

impl Pauses {
    /// The pause `service` is under at `now` (its own or all services', the one that lasts
    /// longer).
    pub(crate) fn of(&self, service: &str, now: SystemTime) -> Option<&Pause> {
        [self.services.get(service), self.all.as_ref()]
            .into_iter()
            .flatten()
            .filter(|pause| pause.until.time() > now)
            .max_by_key(|pause| pause.until.time())
    }

    /// Takes out the pauses that have ended by `now`: the services whose pause ended, and
    /// whether the pause of all ended.
    pub(crate) fn take_ended(&mut self, now: SystemTime) -> (Vec<String>, bool) {
        let ended: Vec<String> = self
            .services
            .iter()
            .filter(|(_, pause)| pause.until.time() <= now)
            .map(|(name, _)| name.clone())
            .collect();
        for name in &ended {
            self.services.remove(name);
        }
        let all_ended = self.all.as_ref().is_some_and(|all| all.until.time() <= now);
        if all_ended {
            self.all = None;
        }
        (ended, all_ended)
    }
}

impl StateDir {
    /// The pauses (none when there is no file, or it cannot be read).
    pub(crate) fn pauses(&self) -> Pauses {
        if !self.root().join(FILE).is_file() {
            return Pauses::default();
        }
        self.file(FILE).ok().flatten().unwrap_or_default()
    }

    /// Changes the pauses under their lock and writes them; returns what `change` returned.
    pub(crate) fn change_pauses<T>(
        &self,
        change: impl FnOnce(&mut Pauses) -> T,
    ) -> Result<T, StateError> {
        let _lock = self.lock_exclusive(LOCK)?;
        let mut pauses: Pauses = self.file(FILE)?.unwrap_or_default();
        let before = pauses.clone();
        let answer = change(&mut pauses);
        if pauses != before {
            self.save_file(FILE, &pauses)?;
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_service_is_paused_by_its_own_pause_or_all_until_the_later_ends() {
        let now = SystemTime::now();
        let at = |secs: u64| Timestamp::seconds(now + Duration::from_secs(secs));
        let mut pauses = Pauses::default();
        pauses.services.insert(
            "web".into(),
            Pause {
                until: at(60),
                reason: Some("deploy".into()),
            },
        );
        pauses.all = Some(Pause {
            until: at(600),
            reason: None,
        });
        assert_eq!(pauses.of("web", now).unwrap().until, at(600));
        assert_eq!(pauses.of("db", now).unwrap().until, at(600));
        let later = now + Duration::from_secs(120);
        assert_eq!(pauses.take_ended(later), (vec!["web".to_owned()], false));
        assert!(
            pauses.of("web", later).is_some(),
            "all services' pause goes on"
        );
        let end = now + Duration::from_secs(601);
        assert_eq!(pauses.take_ended(end), (Vec::new(), true));
        assert!(pauses.of("web", end).is_none());
    }

    #[test]
    fn pauses_are_kept_in_the_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let until = Timestamp::seconds(SystemTime::now() + Duration::from_secs(60));
        state
            .change_pauses(|pauses| {
                pauses.services.insert(
                    "web".into(),
                    Pause {
                        until,
                        reason: None,
                    },
                );
            })
            .unwrap();
        let read = StateDir::new(dir.path()).pauses();
        assert_eq!(read.services["web"].until, until);
    }
}
