//! A scripted systemd for fast tests of the decisions made on its answers (the chain runner,
//! verification's timing rules): no root, no bus, no sandbox. The sandbox tests prove the
//! behaviour against the real thing; these cover the branches.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::Duration;

use super::{JobResult, SystemdError, UnitControl, UnitSnapshot};

/// How the fake's restart job ends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FakeJob {
    /// `done`: the unit then reads as the `after_restart` script says.
    Done,
    /// systemd's job result, e.g. `failed` or `timeout`.
    Ended(&'static str),
    /// No JobRemoved within the caller's timeout.
    Hangs,
}

pub(crate) struct FakeSystemd {
    /// What `snapshot` answers, one entry per call; the last one repeats.
    script: RefCell<VecDeque<UnitSnapshot>>,
    /// The script after a restart whose job is done.
    after_restart: RefCell<Option<Vec<UnitSnapshot>>>,
    job: FakeJob,
    /// What `version` answers (252 unless a test says otherwise).
    pub version: u32,
    /// The `Restart=` and `RestartMode=` settings `restart_facts` answers.
    pub restart: (String, Option<String>),
    /// What `unit_states` answers (the units it knows; others are `not-found`).
    pub states: Vec<super::UnitOverview>,
    /// Every call that changes something, in order: `reset_failed web.service`, …
    pub calls: RefCell<Vec<String>>,
}

impl FakeSystemd {
    pub(crate) fn new(now: UnitSnapshot, job: FakeJob, after_restart: Vec<UnitSnapshot>) -> Self {
        FakeSystemd {
            script: RefCell::new(VecDeque::from([now])),
            after_restart: RefCell::new(Some(after_restart)),
            job,
            version: 252,
            restart: ("no".to_owned(), None),
            states: Vec::new(),
            calls: RefCell::new(Vec::new()),
        }
    }

    /// A fake whose snapshots follow `script` from the start (the last one repeats).
    pub(crate) fn scripted(script: Vec<UnitSnapshot>, job: FakeJob) -> Self {
        FakeSystemd {
            script: RefCell::new(script.into()),
            after_restart: RefCell::new(None),
            job,
            version: 252,
            restart: ("no".to_owned(), None),
            states: Vec::new(),
            calls: RefCell::new(Vec::new()),
        }
    }

    pub(crate) fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
}

/// A snapshot of `web.service` in this state, of this invocation.
pub(crate) fn unit(active_state: &str, sub_state: &str, invocation: &str) -> UnitSnapshot {
    UnitSnapshot {
        unit: "web.service".into(),
        load_state: "loaded".into(),
        active_state: super::ActiveState::parse(active_state),
        sub_state: sub_state.into(),
        result: if active_state == "failed" {
            "exit-code"
        } else {
            "success"
        }
        .into(),
        invocation_id: invocation.into(),
        control_group: "/system.slice/web.service".into(),
        ..UnitSnapshot::default()
    }
}

impl UnitControl for FakeSystemd {
    fn snapshot(&self, _unit: &str) -> Result<UnitSnapshot, SystemdError> {
        let mut script = self.script.borrow_mut();
        let next = if script.len() > 1 {
            script.pop_front()
        } else {
            script.front().cloned()
        };
        Ok(next.expect("the script is never empty"))
    }

    fn reset_failed(&self, unit: &str) -> Result<(), SystemdError> {
        self.calls.borrow_mut().push(format!("reset_failed {unit}"));
        Ok(())
    }

    fn restart(&self, unit: &str, timeout: Duration) -> Result<JobResult, SystemdError> {
        self.calls.borrow_mut().push(format!("restart {unit}"));
        match self.job {
            FakeJob::Done => {
                if let Some(after) = self.after_restart.borrow_mut().take() {
                    *self.script.borrow_mut() = after.into();
                }
                Ok(JobResult("done".into()))
            }
            FakeJob::Ended(result) => Ok(JobResult(result.into())),
            FakeJob::Hangs => Err(SystemdError::Timeout(timeout)),
        }
    }

    fn wait_for_job(&self, _unit: &str, _timeout: Duration) -> Result<(), SystemdError> {
        Ok(())
    }

    fn unit_by_pid(&self, _pid: u32) -> Result<Option<String>, SystemdError> {
        Ok(None)
    }

    fn reload(&self) -> Result<(), SystemdError> {
        self.calls.borrow_mut().push("reload".into());
        Ok(())
    }

    fn version(&self) -> Result<u32, SystemdError> {
        Ok(self.version)
    }

    fn unit_states(&self, units: &[&str]) -> Result<Vec<super::UnitOverview>, SystemdError> {
        Ok(units
            .iter()
            .map(|unit| {
                self.states
                    .iter()
                    .find(|state| state.id == *unit)
                    .cloned()
                    .unwrap_or_else(|| super::UnitOverview {
                        id: (*unit).to_owned(),
                        load_state: "not-found".to_owned(),
                        ..super::UnitOverview::default()
                    })
            })
            .collect())
    }

    fn active_since(&self, units: &[&str]) -> Result<Vec<Option<u64>>, SystemdError> {
        // Long enough ago for any start grace: the first microsecond of the boot.
        Ok(units.iter().map(|_| Some(1)).collect())
    }

    fn start_no_wait(&self, unit: &str) -> Result<(), SystemdError> {
        self.calls
            .borrow_mut()
            .push(format!("start_no_wait {unit}"));
        Ok(())
    }

    fn restart_facts(
        &self,
        units: &[&str],
    ) -> Result<Vec<Option<super::RestartFacts>>, SystemdError> {
        Ok(units
            .iter()
            .map(|unit| {
                let snapshot = self.snapshot(unit).ok()?;
                Some(super::RestartFacts {
                    invocation_id: snapshot.invocation_id,
                    n_restarts: snapshot.n_restarts,
                    restart: self.restart.0.clone(),
                    restart_mode: self.restart.1.clone(),
                })
            })
            .collect())
    }

    fn start_later(
        &self,
        timer: &str,
        after: Duration,
        _fires: crate::systemd::Fires<'_>,
    ) -> Result<(), SystemdError> {
        self.calls
            .borrow_mut()
            .push(format!("start_later {timer} {}s", after.as_secs()));
        Ok(())
    }
}
