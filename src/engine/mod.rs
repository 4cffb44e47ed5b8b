//! The workflow engine: DAG definitions, step trait, retry policy, executor and run lifecycle.
//!
//! **Architecture invariant:** nothing here knows Kubernetes, S3 or sled.

pub mod run_id;

pub use run_id::RunId;
