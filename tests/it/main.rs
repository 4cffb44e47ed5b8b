//! The single integration-test binary: one module per area.

mod engine;
mod engine_cli;
