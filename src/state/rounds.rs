//! `<state>/rounds/<name>`: when each of selfheal's rounds (watch, probe, flush, digest) last
//! ran, as the file's modification time: a host whose healer stopped looks like a healthy one
//! unless something says when it last looked.

use std::time::SystemTime;

use super::StateDir;

impl StateDir {
    /// Notes that the round `name` ran now (a failure to note it is logged, never fatal).
    pub(crate) fn mark_round(&self, name: &str) {
        let written = self
            .ensure("rounds")
            .map_err(|err| err.to_string())
            .and_then(|dir| std::fs::write(dir.join(name), b"").map_err(|err| err.to_string()));
        if let Err(err) = written {
            tracing::warn!("the {name} round's time is not noted: {err}");
        }
    }

    /// When the round `name` last ran, if it ever did.
    pub(crate) fn last_round(&self, name: &str) -> Option<SystemTime> {
        std::fs::metadata(self.root().join("rounds").join(name))
            .and_then(|meta| meta.modified())
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_is_noted_when_it_runs() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        assert_eq!(state.last_round("watch"), None);
        let before = SystemTime::now() - std::time::Duration::from_secs(1);
        state.mark_round("watch");
        assert!(state.last_round("watch").is_some_and(|at| at >= before));
    }
}
