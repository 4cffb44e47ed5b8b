//! The one integration-test binary: one module per area.

mod architecture;
mod campaign;
mod cli_docs;
mod cluster_faults;
mod cluster_ops;
mod cluster_resume;
mod cluster_support;
mod doctor;
mod engine;
mod engine_cli;
mod engine_concurrency;
mod engine_props;
mod engine_resume;
mod output;
mod pod_scripts;
mod preflight;
mod project;
mod project_entrypoint;
mod project_upload;
mod results_download;
mod results_share;
mod snapshots_errors;
mod snapshots_help;
mod upload_configs;
