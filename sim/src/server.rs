//! `Sim::start`.
