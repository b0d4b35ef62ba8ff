//! The host guard in a run (`heal::guard`): between loop protection's "act" and the chain, a
//! run that would restart asks for the guard's turn; a storm's other services wait (`held`),
//! and the run that had the turn hands it on once its heal is verified (or has failed).

use std::ops::ControlFlow;

use crate::heal::diagnose::Diagnosis;
use crate::heal::facts::{GuardStorm, PostStatus, RunFacts};
use crate::heal::guard::{self, Entry};
use crate::outcome::Outcome;
use crate::systemd::UnitControl;

use super::{Look, Run};

/// What the guard said to a run that heals: whether it has the turn (to hand on), and
/// whether it tells the host (the storm's one report).
pub(super) struct Guarded {
    has_turn: bool,
    storm: Option<GuardStorm>,
    entered_at: std::time::SystemTime,
}

impl Run<'_> {
    /// Asks the guard (not for a dry run, a person's run, or a run that restarts nothing):
    /// `None` when it does not ask, `Guarded` (to hand on the turn when it has it), or the end of
    /// the run (`held`) when another service has the turn.
    pub(super) fn guard_turn<U: UnitControl>(
        &self,
        look: &Look<U>,
        diagnosis: &Diagnosis,
    ) -> ControlFlow<RunFacts, Option<Guarded>> {
        let (config, service) = (self.config, self.service);
        if self.options.dry_run || self.options.manual || service.healing_strategies.is_empty() {
            return ControlFlow::Continue(None);
        }
        let storm = |failing: Vec<String>| GuardStorm {
            failing,
            max_failing: config.guard.max_failing,
            within: config.guard.within.to_string(),
            cause: shared_cause(&Self::told(look, diagnosis)),
        };
        let entered_at = std::time::SystemTime::now();
        match guard::enter(self.state, config.guard, &service.name) {
            Entry::Clear => ControlFlow::Continue(Some(Guarded {
                has_turn: false,
                storm: None,
                entered_at,
            })),
            Entry::Turn { tell } => ControlFlow::Continue(Some(Guarded {
                has_turn: true,
                storm: tell.map(storm),
                entered_at,
            })),
            Entry::Wait {
                turn,
                failing,
                tell,
            } => {
                let mut facts = self
                    .facts(Outcome::Held)
                    .diagnosis(Self::told(look, diagnosis))
                    .reason(format!(
                        "host guard: {} services failing within {} (more than max_failing {}); they are healed one at a time, and {turn} is being healed now. selfheal starts this one's heal when its turn comes",
                        failing.len(),
                        config.guard.within,
                        config.guard.max_failing
                    ));
                facts.post_status = Some(PostStatus::from(&look.snapshot));
                facts.guard = tell.map(storm);
                ControlFlow::Break(self.end(facts))
            }
        }
    }

    /// After the heal of a run that had the turn: the next waiting service gets it. The run
    /// that found the storm tells the host; the others' heals that worked are the storm's,
    /// told by its one report (a failure is still told on its own).
    pub(super) fn hand_on<U: UnitControl>(
        &self,
        look: &Look<U>,
        guarded: Guarded,
        facts: &mut RunFacts,
    ) {
        let storms = if guarded.has_turn {
            let (next, over) =
                guard::leave(self.config, self.state, &look.systemd, &self.service.name);
            facts.guard_over = over;
            if let Some(next) = next {
                tracing::info!(selfheal_service = %self.service.name, "host guard: the turn goes to {next}");
            }
            true
        } else {
            if facts.outcome == Outcome::Resolved {
                guard::healed(self.state, &self.service.name);
            }
            // It began before the storm was found: its heal is the storm's all the same.
            guard::told_since(self.state, guarded.entered_at)
        };
        match guarded.storm {
            Some(storm) => facts.guard = Some(storm),
            None if storms && facts.outcome == Outcome::Resolved => facts.episode_reported = true,
            None => {}
        }
    }
}

/// What this run's diagnosis found on the host that would fail many services at once.
fn shared_cause(diagnosis: &Diagnosis) -> Option<String> {
    if let Some(full) = &diagnosis.full_disk {
        return Some(format!(
            "the file system at {} is full",
            full.mount.display()
        ));
    }
    diagnosis.oom_kill.as_ref().map(|kill| {
        format!(
            "the kernel's OOM killer (it killed {}, PID {})",
            kill.task, kill.pid
        )
    })
}
