//! The one integration-test binary: one module per area.

mod engine;
mod engine_cli;
mod engine_concurrency;
mod engine_resume;
mod project;
mod project_entrypoint;
mod project_upload;
mod upload_configs;
