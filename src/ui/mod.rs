//! How things read for people: terminals (colour, width, "waiting for …"), durations, and
//! points in time.

pub(crate) mod duration;
pub(crate) mod size;
pub(crate) mod terminal;
pub(crate) mod when;
