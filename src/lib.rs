//! # vast
//!
//! A Rust re-implementation of RoboVAST's *cluster execution*, built as a workflow engine with
//! resumable persisted runs.
//!
//! Overview:
//! - [`project`] reads the user's `.vast` file and generates the scenario configurations;
//! - [`manifests`] renders everything sent to a cluster (pure functions);
//! - [`engine`] executes an operation, defined as data in `workflows/`, as a DAG of idempotent
//!   steps, journaling every transition through [`store`] (backed by the `vast-state` crate);
//! - [`cluster`] talks to Kubernetes and the in-cluster S3; [`ops`] binds the steps of each
//!   operation to the names used in `workflows/`; [`share`] holds the share providers;
//! - [`progress`] shows all progress (bars on a terminal, plain lines elsewhere);
//! - [`notify`] POSTs campaign events to a webhook (best effort, bounded);
//! - [`cli`] is the command line (clap types, one file per command, output); [`console`]
//!   decides which human lines `-q`/`-qq`/`--log-format json` let through.
//!
//! See `ARCHITECTURE.md` for the invariants.

pub mod cli;
pub mod cluster;
pub mod console;
pub mod engine;
pub mod manifests;
pub mod notify;
pub mod ops;
pub mod pod;
pub mod progress;
pub mod project;
pub mod results;
pub mod share;
pub mod store;
