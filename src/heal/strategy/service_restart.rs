//! `service_restart`: the seed's strategy 1. Heals crashes, hangs and kills by restarting the
//! unit over D-Bus (after reset-failed when needed), then verifying.

use super::{Attempt, Context, Strategy, restart_and_verify};

pub(super) struct ServiceRestart;

impl Strategy for ServiceRestart {
    fn attempt(&self, context: &Context<'_>) -> Attempt {
        restart_and_verify(context)
    }
}
