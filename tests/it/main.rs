//! The one integration-test binary: one module per area.

mod engine;
mod engine_cli;
mod project;
mod project_entrypoint;
mod project_upload;
mod upload_configs;
